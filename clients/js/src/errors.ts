/** The SDK's errors: one root, a `retriable` flag, the problem's `detail` kept. */

/** A problem+json body (RFC 9457) as the gateway sends it. */
export interface Problem {
  type?: string;
  title?: string;
  status?: number;
  detail?: string;
  [k: string]: unknown;
}

/** The root of every error this SDK throws. */
export class TidemarkError extends Error {
  /** Whether the same request may succeed later (the SDK retries these itself). */
  readonly retriable: boolean = false;
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** The gateway refused the request: an HTTP status (or a WebSocket close 4000 + status)
 * with the problem's `detail`. */
export class ProblemError extends TidemarkError {
  readonly status: number;
  readonly detail: string;
  readonly problem: Problem;
  override readonly retriable: boolean;
  constructor(status: number, detail: string, problem: Problem = {}) {
    super(`${status}: ${detail}`);
    this.status = status;
    this.detail = detail;
    this.problem = problem;
    this.retriable = status === 429 || status === 503;
  }
}

/** 400: a malformed position or parameter. */
export class BadRequestError extends ProblemError {}
/** 401: no token, or one that does not verify. */
export class UnauthorizedError extends ProblemError {}
/** 403: the token lacks the scope, or reads another stream. */
export class ForbiddenError extends ProblemError {}
/** 404: no such stream, or not the caller's. */
export class NotFoundError extends ProblemError {}
/** 410: the stream was deleted by retention. */
export class GoneError extends ProblemError {}

const BY_STATUS: Record<number, typeof ProblemError> = {
  400: BadRequestError, 401: UnauthorizedError, 403: ForbiddenError, 404: NotFoundError,
  410: GoneError,
};

/** The typed error of a refused request. */
export function problemError(status: number, detail: string, problem: Problem = {}): ProblemError {
  const Cls = BY_STATUS[status] ?? ProblemError;
  return new Cls(status, detail || `HTTP ${status}`, problem);
}

/** Reconnecting gave up: `maxRetries` attempts in a row made no progress. */
export class RetriesExhaustedError extends TidemarkError {
  readonly attempts: number;
  readonly lastReason: string;
  constructor(attempts: number, lastReason: string, cause?: unknown) {
    super(`gave up after ${attempts} attempts without progress: ${lastReason}`, { cause });
    this.attempts = attempts;
    this.lastReason = lastReason;
  }
}

/** The gateway sent something this SDK cannot read (not the wire format). */
export class ProtocolError extends TidemarkError {}

/** The problem of an HTTP answer that is not a success. */
export async function problemOf(res: Response): Promise<ProblemError> {
  let problem: Problem = {};
  try {
    const text = await res.text();
    const parsed: unknown = JSON.parse(text);
    if (parsed && typeof parsed === "object") problem = parsed as Problem;
  } catch {
    /* not JSON: keep the status */
  }
  const detail = typeof problem.detail === "string" ? problem.detail
    : typeof problem.title === "string" ? problem.title : `HTTP ${res.status} ${res.statusText}`;
  return problemError(res.status, detail, problem);
}
