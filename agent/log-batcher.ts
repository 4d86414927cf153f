// Collects a job's output into log chunks: one message per `delayMs` or per `maxBytes`, whichever
// comes first, each cut on a UTF-8 character boundary and no larger than the protocol allows. Past
// `limitBytes` of a job's output, the rest is dropped, with a line that says so (the job runs on):
// a job printing without end would otherwise fill the agent's spill file and the database.
import { MAX_LOG_CHUNK_BYTES } from "../protocol/limits.ts";

export type LogBatcherOptions = { delayMs?: number; maxBytes?: number; limitBytes?: number };

export class LogBatcher {
  private buffered: string[] = [];
  private bytes = 0;
  private timer: NodeJS.Timeout | undefined;
  private readonly delayMs: number;
  private readonly maxBytes: number;
  private readonly limitBytes: number;
  /** What the job's output may still add before the limit; below 0 once it was reached. */
  private room: number;

  constructor(
    private readonly send: (data: string) => void,
    { delayMs = 50, maxBytes = 64 * 1024, limitBytes = Infinity }: LogBatcherOptions = {},
  ) {
    this.delayMs = delayMs;
    this.maxBytes = maxBytes;
    this.limitBytes = limitBytes;
    this.room = limitBytes;
  }

  append(text: string): void {
    if (text === "" || this.room < 0) return;
    let bytes = Buffer.byteLength(text);
    if (bytes > this.room) {
      text = `${headUtf8(text, this.room)}\n[jobfleet: the log reached its limit of ${this.limitBytes} bytes; the rest of the job's output is dropped]\n`;
      bytes = Buffer.byteLength(text);
      this.room = -1;
    } else this.room -= bytes;
    this.buffered.push(text);
    this.bytes += bytes;
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

/** The longest start of `text` that fits `maxBytes` of UTF-8 without cutting a character; it may be empty. */
export function headUtf8(text: string, maxBytes: number): string {
  const bytes = Buffer.from(text);
  if (bytes.length <= maxBytes) return text;
  let end = Math.max(0, maxBytes);
  while (end > 0 && continues(bytes[end]!)) end--;
  return bytes.toString("utf8", 0, end);
}

/** Whether this byte of UTF-8 continues a character (so no piece may begin at it). */
const continues = (byte: number) => (byte & 0xc0) === 0x80;

/** Control characters that JSON writes as `\u00XX`: six bytes for one (its other escapes take two). */
const WIDE_ESCAPES = /[\u0000-\u0007\u000b\u000e-\u001f]/;

/**
 * Splits text into pieces of at most `maxBytes` of UTF-8, never inside a character, each at most
 * twice that once escaped as JSON: a piece of control characters (terminal colours, binary output)
 * is cut shorter, so that its message never outgrows a frame.
 */
export function splitUtf8(text: string, maxBytes: number): string[] {
  const bytes = Buffer.from(text);
  const wide = WIDE_ESCAPES.test(text);
  const pieces: string[] = [];
  let start = 0;
  while (start < bytes.length) {
    let end = wide ? escapedEnd(bytes, start, maxBytes) : Math.min(start + maxBytes, bytes.length);
    while (end < bytes.length && continues(bytes[end]!)) end--;
    // A piece narrower than one character (a limit of a few bytes): the character goes whole.
    if (end <= start) for (end = start + 1; end < bytes.length && continues(bytes[end]!); ) end++;
    pieces.push(bytes.toString("utf8", start, end));
    start = end;
  }
  return pieces;
}

/** Where a piece from `start` ends: at most `maxBytes` of UTF-8, at most twice that escaped. */
function escapedEnd(bytes: Buffer, start: number, maxBytes: number): number {
  const end = Math.min(start + maxBytes, bytes.length);
  let escaped = 0;
  for (let i = start; i < end; i++) {
    escaped += escapedSize(bytes[i]!);
    if (escaped > 2 * maxBytes) return i;
  }
  return end;
}

/** Bytes JSON writes for this byte of UTF-8 (a byte of a longer character is written as it is). */
function escapedSize(byte: number): number {
  if (byte === 0x22 || byte === 0x5c) return 2;
  if (byte >= 0x20) return 1;
  return byte >= 0x08 && byte <= 0x0d && byte !== 0x0b ? 2 : 6;
}
