// Collects a job's output into log chunks: one message per `delayMs` or per `maxBytes`, whichever
// comes first, each cut on a UTF-8 character boundary and no larger than the protocol allows.
import { MAX_LOG_CHUNK_BYTES } from "../protocol/limits.ts";

export class LogBatcher {
  private buffered: string[] = [];
  private bytes = 0;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly send: (data: string) => void,
    private readonly delayMs = 50,
    private readonly maxBytes = 64 * 1024,
  ) {}

  append(text: string): void {
    if (text === "") return;
    this.buffered.push(text);
    this.bytes += Buffer.byteLength(text);
    if (this.bytes >= this.maxBytes) this.flush();
    else this.timer ??= setTimeout(() => this.flush(), this.delayMs);
  }

  flush(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.buffered.length === 0) return;
    const text = this.buffered.join("");
    this.buffered = [];
    this.bytes = 0;
    for (const chunk of splitUtf8(text, MAX_LOG_CHUNK_BYTES)) this.send(chunk);
  }
}

/** Splits text into pieces of at most `maxBytes` of UTF-8, never inside a character. */
export function splitUtf8(text: string, maxBytes: number): string[] {
  const bytes = Buffer.from(text);
  const pieces: string[] = [];
  let start = 0;
  while (start < bytes.length) {
    let end = Math.min(start + maxBytes, bytes.length);
    while (end < bytes.length && (bytes[end]! & 0xc0) === 0x80) end--;
    pieces.push(bytes.toString("utf8", start, end));
    start = end;
  }
  return pieces;
}
