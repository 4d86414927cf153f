// A request's body read as UTF-8 text, within a bound of bytes. A large one is decoded as it
// arrives and kept in the chunks it came in: decoding 32 MiB at once held the event loop 90 ms, and
// joining it into one string as long again.
import type { Context } from "hono";
import { MAX_BODY_BYTES } from "../../protocol/limits.ts";
import { ApiError } from "./errors.ts";

/** Text passed on at once: a client may send a byte at a time, which must not make a chunk of each. */
const CHUNK_CHARS = 64 * 1024;

export class BodyText {
  private readonly chunks: string[] = [];
  /** Where each chunk ends in the whole. */
  private readonly ends: number[] = [];

  get length(): number {
    return this.ends.at(-1) ?? 0;
  }

  push(chunk: string): void {
    this.chunks.push(chunk);
    this.ends.push(this.length + chunk.length);
  }

  /** The text from `from` to `to`, joined from the chunks it spans only. */
  slice(from: number, to = this.length): string {
    let i = this.chunkAt(from);
    let text = "";
    for (let start = i === 0 ? 0 : this.ends[i - 1]!; start < to && i < this.chunks.length; start = this.ends[i++]!) {
      text += this.chunks[i]!.slice(Math.max(from - start, 0), to - start);
    }
    return text;
  }

  toString(): string {
    return this.chunks.join("");
  }

  /** The chunk that holds offset `at`. */
  private chunkAt(at: number): number {
    let [low, high] = [0, this.ends.length - 1];
    while (low < high) {
      const middle = (low + high) >> 1;
      if (this.ends[middle]! > at) high = middle;
      else low = middle + 1;
    }
    return low;
  }
}

/**
 * The body as text, or 413 past `maxBytes`, each chunk also handed to `onChunk` as it comes. A
 * Content-Length decides before anything is read (Node's server holds the client to it), and a
 * body of a general size is then read straight off the socket; only a larger or chunked body is
 * counted as it streams in. (Hono's bodyLimit middleware asks every request for its web `body`
 * stream, which makes @hono/node-server build a whole Request and AbortSignal per request.)
 */
export async function readBody(c: Context, maxBytes: number, onChunk: (chunk: string) => void = () => {}): Promise<BodyText> {
  const tooLarge = () => new ApiError(413, "payload_too_large", `bodies are limited to ${maxBytes} bytes`);
  const length = c.req.header("content-length");
  // Bytes that are not UTF-8 are refused, not read as U+FFFD: a command would run other than sent.
  const decoder = new TextDecoder("utf-8", { fatal: true });
  const decode = (bytes?: Uint8Array, stream = false) => {
    try {
      return decoder.decode(bytes, { stream });
    } catch {
      throw new ApiError(400, "invalid_json", "body is not valid UTF-8");
    }
  };
  const body = new BodyText();
  let pending = "";
  const pass = (text: string, last: boolean) => {
    pending += text;
    if (pending === "" || (pending.length < CHUNK_CHARS && !last)) return;
    onChunk(pending);
    body.push(pending);
    pending = "";
  };
  if (length !== undefined && c.req.header("transfer-encoding") === undefined) {
    if (Number(length) > maxBytes) throw tooLarge();
    if (Number(length) <= MAX_BODY_BYTES) {
      pass(decode(new Uint8Array(await c.req.arrayBuffer())), true);
      return body;
    }
  }
  const reader = c.req.raw.body?.getReader();
  if (!reader) return body;
  let size = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) {
        pass(decode(), true);
        return body;
      }
      size += value.byteLength;
      if (size > maxBytes) throw tooLarge();
      pass(decode(value, true), false);
    }
  } catch (error) {
    await reader.cancel();
    throw error;
  }
}
