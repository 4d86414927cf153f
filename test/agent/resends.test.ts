import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeEach, expect, test, vi } from "vitest";
import { Outbox } from "../../agent/outbox.ts";
import { Resends } from "../../agent/resends.ts";
import type { JobMessage } from "../../protocol/messages.ts";

const dir = mkdtempSync(join(tmpdir(), "jobfleet-resends-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
beforeEach(() => vi.useFakeTimers());
afterEach(() => vi.useRealTimers());

/** A real outbox holding job 1's start and finish, unacknowledged, and what it has sent since. */
function setup() {
  const sent: JobMessage[] = [];
  const outbox = new Outbox((text) => sent.push(JSON.parse(text)), { memoryBytes: 1 << 20, spillDir: dir });
  outbox.open("1");
  outbox.push({ type: "job.started", jobId: "1" });
  outbox.push({ type: "job.finished", jobId: "1", outcome: "succeeded", exitCode: 0, infrastructure: false });
  sent.length = 0;
  return { sent, outbox, resends: new Resends(outbox) };
}

test("a refused job's unacknowledged messages go again in order after half to all of the first step, then of a doubled one", () => {
  const { sent, outbox, resends } = setup();
  outbox.ack("1", 1);
  resends.later("1");
  resends.later("1");
  expect(resends.waiting("1")).toBe(true);
  vi.advanceTimersByTime(499);
  expect(sent).toEqual([]);
  vi.advanceTimersByTime(501);
  expect(sent.map((m) => m.seq)).toEqual([2]);

  resends.later("1");
  expect(resends.waiting("1")).toBe(true);
  vi.advanceTimersByTime(999);
  expect(sent).toHaveLength(1);
  vi.advanceTimersByTime(1001);
  expect(sent.map((m) => m.seq)).toEqual([2, 2]);
});

test("an acknowledgement with messages left brings the delay back to the first step", () => {
  const { sent, outbox, resends } = setup();
  resends.later("1");
  vi.advanceTimersByTime(1000);
  resends.later("1");
  outbox.ack("1", 1);
  resends.answered("1");
  // The send already waiting keeps its doubled delay; the one after starts over.
  vi.advanceTimersByTime(2000);
  expect(sent.map((m) => m.seq)).toEqual([1, 2, 2]);
  resends.later("1");
  vi.advanceTimersByTime(1000);
  expect(sent.map((m) => m.seq)).toEqual([1, 2, 2, 2]);
});

test("a job acknowledged to its end sends nothing more, nor does a stopped one", () => {
  const { sent, outbox, resends } = setup();
  resends.later("1");
  outbox.ack("1", 2);
  resends.answered("1");
  expect(resends.waiting("1")).toBe(false);
  vi.advanceTimersByTime(60_000);
  expect(sent).toEqual([]);

  const other = setup();
  other.resends.later("1");
  other.resends.stop();
  vi.advanceTimersByTime(60_000);
  expect(other.sent).toEqual([]);
});

test("messages sent again are waited on until the coordinator answers them, so gaps reported meanwhile need no resend", () => {
  const { outbox, resends } = setup();
  resends.later("1");
  vi.advanceTimersByTime(1000);
  // Sent again; the gaps of messages sent before the resend may still come back first.
  expect(resends.waiting("1")).toBe(true);
  outbox.ack("1", 1);
  resends.answered("1");
  expect(resends.waiting("1")).toBe(false);
  // Refused again: waiting on the timer, then on the answer.
  resends.later("1");
  vi.advanceTimersByTime(1000);
  expect(resends.waiting("1")).toBe(true);
  resends.later("1");
  vi.advanceTimersByTime(2000);
  expect(resends.waiting("1")).toBe(true);
});

test("a resend that finds nothing unacknowledged waits on no answer", () => {
  const { outbox, resends } = setup();
  resends.later("1");
  outbox.ack("1", 2);
  outbox.open("1", 2);
  vi.advanceTimersByTime(1000);
  expect(resends.waiting("1")).toBe(false);
});

test("a welcome forgets every job's delay, and a stopped one starts none: no timer is left", () => {
  const { sent, resends } = setup();
  resends.later("1");
  resends.reset();
  expect(resends.waiting("1")).toBe(false);
  resends.stop();
  resends.later("1");
  expect(vi.getTimerCount()).toBe(0);
  vi.advanceTimersByTime(60_000);
  expect(sent).toEqual([]);
});

test("once urgent (a drain), a resend waits a second at most, the one already pending too", () => {
  const { sent, resends } = setup();
  // Refused five times over: the next step is 30 s, so the resend would come 15-30 s on.
  for (let i = 0; i < 5; i++) {
    resends.later("1");
    vi.advanceTimersByTime(16_000);
  }
  sent.length = 0;
  resends.later("1");
  resends.urgent();
  vi.advanceTimersByTime(1000);
  expect(sent.map((m) => m.seq)).toEqual([1, 2]);
  resends.later("1");
  vi.advanceTimersByTime(1000);
  expect(sent.map((m) => m.seq)).toEqual([1, 2, 1, 2]);
});
