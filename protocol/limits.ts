// Bounds shared by both sides of the wire: what one side may send, the other enforces.

/** Bumped on any incompatible change to the WebSocket messages; sent in the agent's hello. */
export const PROTOCOL_VERSION = 2;

/** Largest WebSocket frame either side accepts. */
export const MAX_MESSAGE_BYTES = 1024 * 1024;

/** Largest log chunk an agent sends in one message (bytes of UTF-8). */
export const MAX_LOG_CHUNK_BYTES = 256 * 1024;

/** Largest spec of a work order, as JSON: it goes to its agent whole, in one message. */
export const MAX_SPEC_BYTES = 512 * 1024;

/** Largest metadata of a work order, as JSON: it comes back with the work order in every listing. */
export const MAX_METADATA_BYTES = 64 * 1024;

/** Largest HTTP request body the coordinator reads. */
export const MAX_BODY_BYTES = 1024 * 1024;

/** Largest body of a bulk enqueue (up to 10,000 work orders). */
export const MAX_BULK_BODY_BYTES = 32 * 1024 * 1024;

/**
 * Most pieces (each `{`, `[`, `,` and `:` outside a string: about one a key or value) of a body,
 * of each work order in a bulk enqueue, of a whole bulk enqueue, and of a WebSocket message.
 * Parsing costs by what the text builds, not its bytes: these bound how long one takes.
 */
export const MAX_BODY_PIECES = 65_536;
export const MAX_BULK_PIECES = 2 * 1024 * 1024;
export const MAX_MESSAGE_PIECES = 1024;

export const MAX_CAPACITY = 1000;

/** Most jobs an agent holds beyond its capacity, queued to start as slots free. */
export const MAX_PREFETCH = 1000;

/** Longest status line, error and external run id and address a job message carries. */
export const MAX_STATUS_CHARS = 1024;
export const MAX_ERROR_CHARS = 4096;
export const MAX_EXTERNAL_ID_CHARS = 512;
export const MAX_URL_CHARS = 2048;

/** Longest a job may run (`timeoutSeconds`): a week. */
export const MAX_TIMEOUT_SECONDS = 7 * 24 * 3600;

/** Bounds of the heartbeat and the lease a coordinator may give: timers the agent sets from them. */
export const MIN_BEAT_SECONDS = 0.05;
export const MAX_LEASE_SECONDS = 86_400;

/** Exit codes are stored as Postgres int: a 32-bit exit code (Windows') travels as its signed value. */
export const INT32 = { min: -(2 ** 31), max: 2 ** 31 - 1 };
