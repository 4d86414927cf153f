import { describe, expect, test } from "vitest";
import { Outbox } from "../../agent/outbox.ts";
import type { JobMessage } from "../../protocol/messages.ts";

function outbox() {
  const sent: JobMessage[] = [];
  return { sent, box: new Outbox((m) => sent.push(m)) };
}

describe("Outbox", () => {
  test("numbers each job's messages from 1 and sends them at once", () => {
    const { sent, box } = outbox();
    box.open("1");
    box.open("2");
    box.push({ type: "job.started", jobId: "1" });
    box.push({ type: "job.log", jobId: "1", data: "a" });
    box.push({ type: "job.started", jobId: "2" });
    expect(sent.map((m) => [m.jobId, m.seq])).toEqual([["1", 1], ["1", 2], ["2", 1]]);
  });

  test("resends exactly what is unacknowledged, in order", () => {
    const { sent, box } = outbox();
    box.open("1");
    for (const data of ["a", "b", "c"]) box.push({ type: "job.log", jobId: "1", data });
    box.ack("1", 1);
    sent.length = 0;
    box.resend();
    expect(sent.map((m) => m.seq)).toEqual([2, 3]);
  });

  test("continues after the sequence the coordinator holds", () => {
    const { sent, box } = outbox();
    box.open("7", 41);
    box.push({ type: "job.finished", jobId: "7", outcome: "failed", exitCode: null });
    expect(sent[0]!.seq).toBe(42);
  });

  test("a job's stream closes, and settled() resolves, once its finished message is acknowledged", async () => {
    const { box } = outbox();
    box.open("1");
    box.push({ type: "job.log", jobId: "1", data: "a" });
    box.push({ type: "job.finished", jobId: "1", outcome: "succeeded", exitCode: 0 });
    const settled = box.settled();
    box.ack("1", 1);
    expect(box.has("1")).toBe(true);
    box.ack("1", 2);
    expect(box.has("1")).toBe(false);
    await settled;
  });

  test("pushing to a job without a stream is a bug, not a silent drop", () => {
    expect(() => outbox().box.push({ type: "job.started", jobId: "9" })).toThrow(/no open stream/);
  });
});
