/**
 * The event envelope: the value of every record and the data of every SSE event
 */
export interface Envelope {
    stream: string;
    seq: number;
    type: string;
    ts: number;
    data: {
        [k: string]: unknown;
    };
}
/**
 * data of a status event
 */
export interface StatusData {
    state: string;
    message?: string;
    /**
     * with state waiting_for_input (the interactive generator): the reply asked for, sent as POST /v1/streams/{id}/input {"data": {<field>: <reply>}}
     */
    input?: {
        field?: string;
        choices?: string[];
        [k: string]: unknown;
    };
    /**
     * on a stream's first event: the A/B variants it was assigned (experiment name to variant name)
     */
    experiments?: {
        [k: string]: string;
    };
    [k: string]: unknown;
}
/**
 * data of a progress event
 */
export interface ProgressData {
    percentage: number;
    estimatedTimeRemaining?: number | null;
    currentStep?: string;
    completedSteps?: number;
    [k: string]: unknown;
}
/**
 * data of a partial_result event
 */
export interface PartialResultData {
    chunk: string;
    chunkIndex: number;
    isComplete?: boolean;
    chunkCount?: number;
    lastChunkIndex?: number;
    firstSeq?: number;
    [k: string]: unknown;
}
/**
 * what the sentiment, relevance and language processors found (docs/content.md), in metadata and result events
 */
export interface AnalysisData {
    sentiment?: {
        /**
         * VADER's normalised score
         */
        compound: number;
        positive?: number;
        negative?: number;
        neutral?: number;
        label: "positive" | "negative" | "neutral";
        [k: string]: unknown;
    };
    relevance?: {
        /**
         * cosine of the query's and the answer's sentence embeddings (all-MiniLM-L6-v2)
         */
        score: number;
        /**
         * whether score reaches the policy's threshold
         */
        relevant: boolean;
        [k: string]: unknown;
    };
    language?: {
        /**
         * ISO 639-1, or und
         */
        query?: string;
        /**
         * ISO 639-1, or und
         */
        answer?: string;
        [k: string]: unknown;
    };
    /**
     * the chunks scored so far
     */
    chunks?: number;
    [k: string]: unknown;
}
/**
 * data of a metadata event: free-form context (model, sources, usage ...)
 */
export interface MetadataData {
    /**
     * a content filter with action flag found a term (docs/content.md): the term itself is not repeated
     */
    contentFlag?: {
        processor: string;
        /**
         * email, phone, card, profanity, or a plugin's own
         */
        kind: string;
        /**
         * where the term starts in the answer, in code points
         */
        start: number;
        /**
         * its length, in code points
         */
        length: number;
        /**
         * the chunk that completed it
         */
        chunkIndex: number;
        [k: string]: unknown;
    };
    analysis?: AnalysisData;
    [k: string]: unknown;
}
/**
 * data of a result event (terminal)
 */
export interface ResultData {
    text?: string;
    /**
     * per content filter that found terms (docs/content.md): its action and how many of each kind
     */
    content?: {
        [k: string]: {
            action?: "redact" | "block" | "flag";
            found?: {
                [k: string]: number;
            };
            [k: string]: unknown;
        };
    };
    analysis?: AnalysisData;
    [k: string]: unknown;
}
/**
 * data of an error event (terminal)
 */
export interface ErrorData {
    /**
     * a machine-readable reason, e.g. content_blocked (a content filter stopped the answer), processor_unavailable, processor_error, content_policy_invalid (docs/content.md)
     */
    code: string;
    message: string;
    retryable?: boolean;
    [k: string]: unknown;
}
/**
 * data of a cancelled event (terminal)
 */
export interface CancelledData {
    reason?: string;
    [k: string]: unknown;
}
/**
 * data of an input event: what a client sent back mid-stream, as it sent it. Any JSON object; its encoded size is bounded by TIDEMARK_INPUT_MAX_BYTES (checked by the gateway, which JSON Schema cannot express).
 */
export interface InputData {
    [k: string]: unknown;
}
/**
 * data of the in-band reset notice a gateway sends before resuming from the earliest held event
 */
export interface ResetData {
    reason: "retention" | "epoch";
    earliest: string;
}
/**
 * POST /v1/streams request body
 */
export interface CreateStreamRequest {
    query: string;
    generator?: string;
    options?: {
        tokens?: number;
        tokens_per_second?: number;
        /**
         * demo generator: end with an error at this seq
         */
        fail_at_seq?: number | null;
        /**
         * demo generator: how long it thinks before its first token, in milliseconds (default 0; a model's time to first token)
         */
        first_token_ms?: number;
        /**
         * interactive generator: longest wait for the reply to its question, in seconds (default 60); past it the stream ends with error input_timeout
         */
        reply_timeout_s?: number;
        /**
         * openai generator: the chat's earlier turns, sent before the query (the last user message)
         *
         * @maxItems 200
         */
        messages?: {
            role: "system" | "user" | "assistant";
            content: string;
        }[];
        /**
         * openai generator: the most tokens the model may answer with
         */
        max_tokens?: number;
        /**
         * openai generator: sampling temperature
         */
        temperature?: number;
    };
    /**
     * The similar-query cache (docs/cache.md), when the operator turned it on
     */
    cache?: {
        /**
         * false: always generate, and cache nothing of this stream
         */
        use?: boolean;
        /**
         * a cached answer is replayed at once (instant) or with the source's own gaps between events (original); default TIDEMARK_CACHE_PACING
         */
        pacing?: "instant" | "original";
    };
    /**
     * Per-user context: whose session the stream belongs to and how it is delivered (docs/context.md)
     */
    context?: {
        sessionId?: string;
        preferences?: {
            updateFrequency?: "realtime" | "batched";
            responseFormat?: "detailed" | "concise";
            includeMetadata?: boolean;
        };
    };
}
/**
 * Talking back: the body of POST /v1/streams/{id}/input (and of the WebSocket's input op, without its "op")
 */
export interface InputRequest {
    data: InputData;
}
/** The built-in event types and the type of each one's `data`. */
export interface EventDataMap {
    status: StatusData;
    progress: ProgressData;
    partial_result: PartialResultData;
    metadata: MetadataData;
    result: ResultData;
    error: ErrorData;
    cancelled: CancelledData;
    input: InputData;
}
/** The built-in event types. */
export declare const EVENT_TYPES: readonly ["status", "progress", "partial_result", "metadata", "result", "error", "cancelled", "input"];
/** The types that end a stream. */
export declare const TERMINAL_TYPES: readonly ["result", "error", "cancelled"];
