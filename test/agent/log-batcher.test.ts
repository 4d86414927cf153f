import fc from "fast-check";
import { expect, test, vi } from "vitest";
import { LogBatcher, splitUtf8 } from "../../agent/log-batcher.ts";
import { MAX_LOG_CHUNK_BYTES, MAX_MESSAGE_BYTES } from "../../protocol/limits.ts";

test("splitUtf8 never cuts a character and keeps every piece within the limit", () => {
  fc.assert(
    fc.property(fc.string({ unit: "grapheme", maxLength: 300 }), fc.integer({ min: 4, max: 64 }), (text, max) => {
      const pieces = splitUtf8(text, max);
      expect(pieces.join("")).toBe(text);
      for (const piece of pieces) expect(Buffer.byteLength(piece)).toBeLessThanOrEqual(max);
    }),
  );
});

test("splitUtf8 keeps every piece within twice the limit once escaped as JSON, control characters and all", () => {
  const unit = fc.constantFrom("\x01", "\x1b", "\x00", "\n", "\t", '"', "\\", "a", "é", "😀");
  fc.assert(
    fc.property(fc.string({ unit, maxLength: 300 }), fc.integer({ min: 4, max: 64 }), (text, max) => {
      const pieces = splitUtf8(text, max);
      expect(pieces.join("")).toBe(text);
      for (const piece of pieces) {
        expect(Buffer.byteLength(piece)).toBeLessThanOrEqual(max);
        expect(Buffer.byteLength(JSON.stringify(piece)) - 2).toBeLessThanOrEqual(2 * max);
      }
    }),
  );
});

test("a flood of control characters (terminal colours, binary output) goes in messages that each fit a frame", () => {
  const sent: string[] = [];
  const batcher = new LogBatcher((data) => sent.push(data));
  batcher.append("\x1b".repeat(MAX_LOG_CHUNK_BYTES));
  batcher.flush();
  expect(sent.join("")).toBe("\x1b".repeat(MAX_LOG_CHUNK_BYTES));
  for (const data of sent) expect(Buffer.byteLength(JSON.stringify({ type: "job.log", jobId: "1", seq: 1, data }))).toBeLessThan(MAX_MESSAGE_BYTES);
});

test("output is sent in one message per delay, or as soon as the size limit is reached", () => {
  vi.useFakeTimers();
  try {
    const sent: string[] = [];
    const batcher = new LogBatcher((data) => sent.push(data), { delayMs: 50, maxBytes: 10 });
    batcher.append("abc");
    batcher.append("def");
    expect(sent).toEqual([]);
    vi.advanceTimersByTime(50);
    expect(sent).toEqual(["abcdef"]);
    batcher.append("0123456789-");
    expect(sent).toEqual(["abcdef", "0123456789-"]);
    batcher.append("tail");
    batcher.flush();
    expect(sent.at(-1)).toBe("tail");
  } finally {
    vi.useRealTimers();
  }
});

test("past its limit a job's output is dropped, after a line that says so; the limit never cuts a character", () => {
  const note = "\n[jobfleet: the log reached its limit of 10 bytes; the rest of the job's output is dropped]\n";
  const sent: string[] = [];
  const batcher = new LogBatcher((data) => sent.push(data), { limitBytes: 10 });
  batcher.append("12345678");
  batcher.append("éé");
  batcher.append("more");
  batcher.flush();
  expect(sent.join("")).toBe(`12345678é${note}`);
  batcher.append("still more");
  batcher.flush();
  expect(sent.join("")).toBe(`12345678é${note}`);
  // Reached exactly, the next byte goes.
  const exact: string[] = [];
  const full = new LogBatcher((data) => exact.push(data), { limitBytes: 3 });
  full.append("abc");
  full.append("d");
  full.flush();
  expect(exact.join("")).toBe(`abc${note.replace("10 bytes", "3 bytes")}`);
});

test("the limit reached with less room than the next character (or its escape) ends the log there, and returns", () => {
  const note = (limit: number) => `\n[jobfleet: the log reached its limit of ${limit} bytes; the rest of the job's output is dropped]\n`;
  for (const [limit, appends, kept] of [
    [9, ["12345678", "éé"], "12345678"],
    [10, ["12345678", "\x1b[31mred"], "12345678\x1b["],
    [3, ["ab", "😀"], "ab"],
  ] as const) {
    const sent: string[] = [];
    const batcher = new LogBatcher((data) => sent.push(data), { limitBytes: limit });
    for (const text of appends) batcher.append(text);
    batcher.flush();
    expect(sent.join("")).toBe(kept + note(limit));
  }
});

test("splitUtf8 under a character's width still moves on, a character a piece", () => {
  const unit = fc.constantFrom("\x1b", "a", "é", "😀", "\u20ac");
  fc.assert(
    fc.property(fc.string({ unit, maxLength: 50 }), fc.integer({ min: 1, max: 4 }), (text, max) => {
      expect(splitUtf8(text, max).join("")).toBe(text);
    }),
  );
});
