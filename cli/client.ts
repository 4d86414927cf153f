// The coordinator's HTTP API as the CLI uses it: JSON requests, API errors as CliErrors, and
// server-sent events read as an async stream.
import type { ApiError } from "../protocol/api.ts";
import { CliError } from "./errors.ts";

export type SseEvent = { event: string; data: string };

export class Client {
  constructor(
    readonly url: string,
    private readonly token: string,
  ) {}

  async request<T>(method: string, path: string, body?: unknown): Promise<T> {
    const response = await this.fetch(method, path, body);
    if (response.status === 204) return undefined as T;
    return (await response.json()) as T;
  }

  async text(path: string): Promise<ReadableStream<Uint8Array>> {
    return (await this.fetch("GET", path)).body!;
  }

  async *events(path: string, signal?: AbortSignal): AsyncGenerator<SseEvent> {
    const response = await this.fetch("GET", path, undefined, signal);
    const decoder = new TextDecoder();
    let buffer = "";
    try {
      for await (const chunk of response.body!) {
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
      if (signal?.aborted) return;
      throw new CliError(`lost the connection to the coordinator at ${this.url} (${(error as Error).message})`);
    }
  }

  private async fetch(method: string, path: string, body?: unknown, signal?: AbortSignal): Promise<Response> {
    let response: Response;
    try {
      response = await fetch(`${this.url}${path}`, {
        method,
        signal,
        headers: {
          authorization: `Bearer ${this.token}`,
          ...(body === undefined ? {} : { "content-type": "application/json" }),
        },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (error) {
      const { cause } = error as { cause?: { code?: string; message?: string } };
      const reason = cause?.code ?? cause?.message ?? (error as Error).message;
      throw new CliError(`cannot reach the coordinator at ${this.url} (${reason})`);
    }
    if (response.ok) return response;
    const failure = (await response.json().catch(() => undefined)) as ApiError | undefined;
    throw new CliError(`${response.status}: ${failure?.error.message ?? response.statusText}`);
  }
}

function parseEvent(block: string): SseEvent | undefined {
  let event = "message";
  const data: string[] = [];
  for (const line of block.split("\n")) {
    if (line.startsWith("event:")) event = line.slice(6).trim();
    else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
  }
  return data.length > 0 ? { event, data: data.join("\n") } : undefined;
}
