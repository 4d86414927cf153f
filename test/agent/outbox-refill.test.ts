// The numbers a coordinator's database lost, filled again by the outbox (`resume`), against a
// model of the coordinator's rules for one job (coordinator/sql/job-apply.ts): over any history of
// output, statuses and state messages, any losses with partial deliveries between them, and with
// messages in memory or spilled, every message is taken in order, none is refused, and the job
// ends in the state and at the number it would have without the losses. (From a review's fuzz test.)
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fc from "fast-check";
import { afterAll, expect, test } from "vitest";
import { type JobMessageBody, Outbox } from "../../agent/outbox.ts";
import type { JobMessage } from "../../protocol/messages.ts";
import { jobMachine, type JobState } from "../../protocol/states.ts";

const dir = mkdtempSync(join(tmpdir(), "jobfleet-refill-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const TARGET: Partial<Record<JobMessage["type"], JobState>> = { "job.starting": "starting", "job.started": "running" };

/** The coordinator's record of the job, and its answer to each message. */
class Coordinator {
  state: JobState = "claimed";
  seq = 0;
  /** What it applied, to be rebuilt from after a loss. */
  applied: JobMessage[] = [];

  take(m: JobMessage): "applied" | "duplicate" | string {
    const disown = m.type === "job.finished" && m.outcome === "lost" && !jobMachine.isTerminal(this.state);
    if (m.seq <= this.seq && !disown) return "duplicate";
    if (m.seq > this.seq + 1) return `gap at ${m.seq}, expected ${this.seq + 1}`;
    this.seq = Math.max(this.seq, m.seq);
    const to = m.type === "job.finished" ? m.outcome : TARGET[m.type];
    if (to === undefined ? jobMachine.isTerminal(this.state) : !jobMachine.can(this.state, to)) return `refused ${m.type} in ${this.state}`;
    if (to) this.state = to;
    this.applied.push(m);
    return "applied";
  }

  /** The record as a database that lost every commit after `seq` holds it. */
  static restored(applied: JobMessage[], seq: number): Coordinator {
    const coordinator = new Coordinator();
    for (const m of applied.filter((a) => a.seq <= seq)) coordinator.take(m);
    return coordinator;
  }
}

const noise = fc.array(fc.constantFrom("log", "status"), { maxLength: 3 });

/** A job's messages: output and statuses around its start, then perhaps its end (or returned before it began). */
const history = fc
  .record({ before: noise, returned: fc.boolean(), between: noise, after: noise, finished: fc.boolean() })
  .map(({ before, returned, between, after, finished }) => {
    const out: JobMessageBody[] = [];
    const say = (kinds: string[]) => {
      for (const kind of kinds) out.push(kind === "log" ? { type: "job.log", jobId: "1", data: `line ${out.length}\n` } : { type: "job.status", jobId: "1", status: `step ${out.length}` });
    };
    say(before);
    if (returned) return [...out, { type: "job.finished", jobId: "1", outcome: "returned", exitCode: null } as JobMessageBody];
    out.push({ type: "job.starting", jobId: "1" });
    say(between);
    out.push({ type: "job.started", jobId: "1" });
    say(after);
    if (finished) out.push({ type: "job.finished", jobId: "1", outcome: "succeeded", exitCode: 0 });
    return out;
  });

/** Each loss: how many of the messages on the wire arrive first, and how far back the record goes. */
const losses = fc.array(fc.record({ delivered: fc.nat(), back: fc.nat() }), { maxLength: 3 });

test("refilled numbers are taken in order, none refused, and the job ends as it would have", () => {
  fc.assert(
    fc.property(history, fc.nat(), losses, fc.boolean(), (bodies, first, rounds, spill) => {
      let wire: JobMessage[] = [];
      const box = new Outbox((text) => wire.push(JSON.parse(text) as JobMessage), { memoryBytes: spill ? 200 : 1 << 20, spillDir: dir });
      try {
        box.open("1");
        for (const body of bodies) box.push(body);
        const truth = new Coordinator();
        for (const m of wire) truth.take(m);
        let coordinator = new Coordinator();
        const refused: string[] = [];
        const deliver = (count: number) => {
          for (const m of wire.slice(0, count)) {
            const answer = coordinator.take(m);
            if (answer !== "applied" && answer !== "duplicate") refused.push(answer);
          }
          box.ack("1", coordinator.seq);
          wire = [];
        };
        deliver(first % (wire.length + 1));
        for (const { delivered, back } of rounds) {
          if (coordinator.seq === 0) break;
          const held = back % coordinator.seq;
          coordinator = Coordinator.restored(coordinator.applied, held);
          expect(box.resume("1", held)).toBe(true);
          box.resend();
          deliver(delivered % (wire.length + 1));
        }
        box.resend();
        deliver(wire.length);
        expect(refused).toEqual([]);
        expect([coordinator.state, coordinator.seq]).toEqual([truth.state, truth.seq]);
      } finally {
        box.close();
      }
    }),
    { numRuns: 2_000 },
  );
});
