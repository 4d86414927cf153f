// The coordinator's HTTP API as the CLI uses it: JSON requests, API errors as CliErrors, and
// server-sent events read as an async stream.
import { PASSING_NETWORK_ERRORS } from "../protocol/network-errors.ts";
import { CliError } from "./errors.ts";

export type SseEvent = { event: string; data: string; id?: string };

export type EventsOptions = {
  /** Sent as `Last-Event-ID`: the stream carries on after the event with this id. */
  lastEventId?: string;
  /** A stream silent this long (the server's keepalives included) is taken for lost. */
  idleMs: number;
  /** Called once the stream is open. */
  onOpen?: () => void;
};

/**
 * A failure that trying again may cure: the coordinator unreachable, restarting or rate-limiting,
 * or the stream cut.
 * `retryAfterMs`: how long the coordinator asked to be left alone (`Retry-After`), if it did.
 */
export class Interrupted extends CliError {
  constructor(
    message: string,
    readonly retryAfterMs?: number,
  ) {
    super(message);
    this.name = "Interrupted";
  }
}

/** The longest `Retry-After` heeded: a wrong header must not hold a CI job for long. */
const MAX_RETRY_AFTER_MS = 60_000;

/** `Retry-After` in ms (delay-seconds or an HTTP date), within 0 and MAX_RETRY_AFTER_MS; undefined if absent or unreadable. */
export function retryAfterMs(header: string | null, now = Date.now()): number | undefined {
  if (header === null) return undefined;
  const ms = /^\d+$/.test(header.trim()) ? Number(header.trim()) * 1000 : Date.parse(header) - now;
  return Number.isNaN(ms) ? undefined : Math.min(MAX_RETRY_AFTER_MS, Math.max(0, ms));
}

/**
 * Network failures that pass: the coordinator restarting or not up yet, the network or DNS down a
 * while; with fetch's own (undici) codes, and an address refused for a while (a dual-stack try).
 */
const TRANSIENT = new Set<string>([
  ...PASSING_NETWORK_ERRORS,
  "ECONNABORTED",
  "EADDRNOTAVAIL",
  "UND_ERR_SOCKET",
  "UND_ERR_CLOSED",
  "UND_ERR_CONNECT_TIMEOUT",
  "UND_ERR_HEADERS_TIMEOUT",
  "UND_ERR_BODY_TIMEOUT",
]);

/** Statuses of a coordinator restarting or rate-limiting, or a proxy in front of it: they pass. */
const PASSING = new Set([429, 502, 503, 504]);

/**
 * The flag that sets each field the coordinator may name in an error, so the message names what
 * the user typed. Only fields no request takes from anywhere but these flags (`labels` is not
 * here: it is `--labels` to `work-orders list` but `--label` to `run`).
 */
const FLAG_OF: Record<string, string> = {
  workOrder: "work-order",
  state: "state",
  limit: "limit",
  before: "before",
  after: "after",
  connected: "connected",
  selector: "selector",
  agent: "agent",
  adapter: "adapter",
  priority: "priority",
  timeoutSeconds: "timeout",
  maxAttempts: "max-attempts",
  retryOn: "retry-on",
  retryBackoffSeconds: "retry-backoff",
  queueTimeoutSeconds: "queue-timeout",
  idempotencyKey: "idempotency-key",
  name: "name",
  role: "role",
};

/** The message of an error answer, naming the flag that set the field it names. */
function messageOf(failure: unknown): string | undefined {
  const error = (failure as { error?: { message?: unknown; field?: unknown } } | null | undefined)?.error;
  if (typeof error?.message !== "string") return undefined;
  const { message, field } = error;
  const flag = typeof field === "string" ? FLAG_OF[field.split(".")[0]!] : undefined;
  return flag && message.startsWith(`${field}: `) ? `--${flag}: ${message.slice(`${field}: `.length)}` : message;
}

export class Client {
  constructor(
    readonly url: string,
    private readonly token: string,
  ) {}

  async request<T>(method: string, path: string, body?: unknown): Promise<T> {
    const response = await this.fetch(method, path, body);
    if (response.status === 204) return undefined as T;
    try {
      return (await response.json()) as T;
    } catch (error) {
      if (error instanceof SyntaxError) throw new CliError(`the coordinator at ${this.url} answered ${method} ${path} with something other than JSON`);
      throw this.lost(error);
    }
  }

  async *text(path: string): AsyncGenerator<Uint8Array> {
    const response = await this.fetch("GET", path);
    try {
      yield* response.body!;
    } catch (error) {
      throw this.lost(error);
    }
  }

  async *events(path: string, { lastEventId, idleMs, onOpen }: EventsOptions): AsyncGenerator<SseEvent> {
    const abort = new AbortController();
    let idle: NodeJS.Timeout | undefined;
    const watch = () => {
      clearTimeout(idle);
      idle = setTimeout(() => abort.abort(), idleMs);
    };
    watch();
    const decoder = new TextDecoder();
    let buffer = "";
    try {
      const headers: Record<string, string> = lastEventId === undefined ? {} : { "last-event-id": lastEventId };
      const response = await this.fetch("GET", path, undefined, abort.signal, headers);
      onOpen?.();
      for await (const chunk of response.body!) {
        watch();
        buffer += decoder.decode(chunk, { stream: true });
        let end: number;
        while ((end = buffer.indexOf("\n\n")) !== -1) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const event = parseEvent(block);
          if (event) yield event;
        }
      }
    } catch (error) {
      if (abort.signal.aborted) throw new Interrupted(`no word from the coordinator at ${this.url} for ${idleMs / 1000} s`);
      throw this.lost(error);
    } finally {
      clearTimeout(idle);
      abort.abort();
    }
  }

  private async fetch(method: string, path: string, body?: unknown, signal?: AbortSignal, headers: Record<string, string> = {}): Promise<Response> {
    let response: Response;
    try {
      response = await fetch(`${this.url}${path}`, {
        method,
        signal,
        headers: {
          ...headers,
          authorization: `Bearer ${this.token}`,
          ...(body === undefined ? {} : { "content-type": "application/json" }),
        },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (error) {
      if (signal?.aborted) throw error;
      const { cause } = error as { cause?: { code?: string; message?: string; errors?: { code?: string }[] } };
      const reason = cause?.code ?? cause?.message;
      // Only a network that may come back is waited out: a certificate refused is not. A request
      // that could not even be made names nothing of itself, as its message may hold the token.
      if (reason === undefined) throw new CliError("the request to the coordinator could not be made: check --url and --token");
      // Each address tried (IPv6, then IPv4) failed its own way: any that may pass is enough.
      const codes = [cause?.code, ...(cause?.errors ?? []).map((e) => e.code)];
      if (!codes.some((code) => code !== undefined && TRANSIENT.has(code))) throw new CliError(`cannot reach the coordinator at ${this.url} (${reason})`);
      throw new Interrupted(`cannot reach the coordinator at ${this.url} (${reason})`);
    }
    if (response.ok) return response;
    const failure: unknown = await response.json().catch(() => undefined);
    const message = `${response.status}: ${messageOf(failure) ?? response.statusText}`;
    throw PASSING.has(response.status) ? new Interrupted(message, retryAfterMs(response.headers.get("retry-after"))) : new CliError(message);
  }

  /** A response that broke off, as the error to show; CliErrors pass as they are. */
  private lost(error: unknown): CliError {
    if (error instanceof CliError) return error;
    return new Interrupted(`lost the connection to the coordinator at ${this.url} (${(error as Error).message})`);
  }
}

function parseEvent(block: string): SseEvent | undefined {
  let event = "message";
  let id: string | undefined;
  const data: string[] = [];
  for (const line of block.split("\n")) {
    if (line.startsWith("event:")) event = line.slice(6).trim();
    else if (line.startsWith("id:")) id = line.slice(3).trim();
    else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
  }
  return data.length > 0 ? { event, data: data.join("\n"), ...(id === undefined ? {} : { id }) } : undefined;
}
