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
export declare class TidemarkError extends Error {
    /** Whether the same request may succeed later (the SDK retries these itself). */
    readonly retriable: boolean;
    constructor(message: string, options?: {
        cause?: unknown;
    });
}
/** The gateway refused the request: an HTTP status (or a WebSocket close 4000 + status)
 * with the problem's `detail`. */
export declare class ProblemError extends TidemarkError {
    readonly status: number;
    readonly detail: string;
    readonly problem: Problem;
    readonly retriable: boolean;
    constructor(status: number, detail: string, problem?: Problem);
}
/** 400: a malformed position or parameter. */
export declare class BadRequestError extends ProblemError {
}
/** 401: no token, or one that does not verify. */
export declare class UnauthorizedError extends ProblemError {
}
/** 403: the token lacks the scope, or reads another stream. */
export declare class ForbiddenError extends ProblemError {
}
/** 404: no such stream, or not the caller's. */
export declare class NotFoundError extends ProblemError {
}
/** 410: the stream was deleted by retention. */
export declare class GoneError extends ProblemError {
}
/** The typed error of a refused request. */
export declare function problemError(status: number, detail: string, problem?: Problem): ProblemError;
/** Reconnecting gave up: `maxRetries` attempts in a row made no progress. */
export declare class RetriesExhaustedError extends TidemarkError {
    readonly attempts: number;
    readonly lastReason: string;
    constructor(attempts: number, lastReason: string, cause?: unknown);
}
/** The gateway sent something this SDK cannot read (not the wire format). */
export declare class ProtocolError extends TidemarkError {
}
/** The problem of an HTTP answer that is not a success. */
export declare function problemOf(res: Response): Promise<ProblemError>;
