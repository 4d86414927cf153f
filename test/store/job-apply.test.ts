// Applying agents' job messages (exactly once, in order, only legal transitions), the job log,
// cancelling, and idempotent enqueueing.
import { describe, expect, it } from "vitest";
import type { Database } from "../../coordinator/db/database.ts";
import { logRead } from "../../coordinator/sql/log-read.ts";
import { workOrderCancel } from "../../coordinator/sql/work-order-cancel.ts";
import { type Claimant, workOrderClaim } from "../../coordinator/sql/work-order-claim.ts";
import { workOrderGet } from "../../coordinator/sql/work-order-read.ts";
import type { JobMessage } from "../../protocol/messages.ts";
import { jobApplyIn } from "../../coordinator/sql/job-apply.ts";
import { describePostgres, forEachDatabase } from "../support/databases.ts";
import { connectAgent, eventsOf, jobApply, order, useDatabase, workOrderInsert } from "./fixtures.ts";

type JobRow = {
  state: string;
  seq: number;
  exit_code: number | null;
  error: string | null;
  status: string | null;
  external_id: string | null;
  log_bytes: string;
  cancel_reason: string | null;
  started_at: string | null;
  finished_at: string | null;
};

async function jobRow(db: Database, jobId: string): Promise<JobRow> {
  const [row] = await db.query<JobRow>(
    `SELECT state::text AS state, seq, exit_code, error, status, external_id, log_bytes::text AS log_bytes,
       cancel_reason, started_at::text AS started_at, finished_at::text AS finished_at
     FROM jobs WHERE id = $1`,
    [jobId],
  );
  if (!row) throw new Error(`no job ${jobId}`);
  return row;
}

async function workOrderState(db: Database, id: string): Promise<string | undefined> {
  return (await workOrderGet(db, id))?.state;
}

type Claimed = { agent: Claimant; jobId: string; workOrderId: string };

let agents = 0;

/** A fresh agent holding a fresh claimed job, addressed to it so no other test's work interferes. */
async function claimedJob(db: Database): Promise<Claimed> {
  const name = `apply-agent-${++agents}`;
  const agent = await connectAgent(db, name, {}, "work-order");
  const { row } = await workOrderInsert(db, order({ agent: name }));
  const [assignment] = await workOrderClaim(db, agent, 1);
  if (!assignment || assignment.workOrderId !== row.id) throw new Error("the test job was not claimed");
  return { agent, jobId: assignment.jobId, workOrderId: row.id };
}

const started = (jobId: string, seq: number): JobMessage => ({ type: "job.started", jobId, seq });
const finished = (
  jobId: string,
  seq: number,
  outcome: "succeeded" | "failed" | "cancelled" | "timed_out",
  exitCode: number | null,
  error?: string,
): JobMessage => ({ type: "job.finished", jobId, seq, outcome, exitCode, ...(error === undefined ? {} : { error }) });
const log = (jobId: string, seq: number, data: string): JobMessage => ({ type: "job.log", jobId, seq, data });

forEachDatabase("jobApply", (kind) => {
  const db = useDatabase(kind, 12);

  describe("sequence numbers", () => {
    it("applies seq 1, and acknowledges a repeat of it without changing anything", async () => {
      const { agent, jobId, workOrderId } = await claimedJob(db());
      expect(await jobApply(db(), agent.agentId, started(jobId, 1))).toEqual({ kind: "applied", workOrderId });
      const after = await jobRow(db(), jobId);
      expect(after).toMatchObject({ state: "running", seq: 1 });
      expect(after.started_at).not.toBeNull();

      // Same seq, even with a different message: a resend, ignored.
      expect(await jobApply(db(), agent.agentId, started(jobId, 1))).toEqual({ kind: "duplicate", ended: false });
      // The job runs on: the session gives its slot back to the agent's count.
      expect(await jobApply(db(), agent.agentId, finished(jobId, 1, "succeeded", 0))).toEqual({ kind: "duplicate", ended: false });
      expect(await jobApply(db(), agent.agentId, log(jobId, 1, "late"))).toEqual({ kind: "duplicate", ended: false });
      expect(await jobRow(db(), jobId)).toEqual(after);
      expect(await workOrderState(db(), workOrderId)).toBe("running");
      expect(await logRead(db(), jobId, 0)).toEqual([]);
      expect((await eventsOf(db(), workOrderId)).map((e) => e.to_state)).toEqual(["pending", "claimed", "running"]);
    });

    it("reports a gap with the seq it expects, and applies nothing", async () => {
      const { agent, jobId, workOrderId } = await claimedJob(db());
      expect(await jobApply(db(), agent.agentId, started(jobId, 1))).toMatchObject({ kind: "applied" });
      const before = await jobRow(db(), jobId);
      expect(await jobApply(db(), agent.agentId, finished(jobId, 3, "succeeded", 0))).toEqual({ kind: "gap", expected: 2 });
      expect(await jobRow(db(), jobId)).toEqual(before);
      expect(await workOrderState(db(), workOrderId)).toBe("running");
      // The missing message, then the one after it, apply in order.
      expect(await jobApply(db(), agent.agentId, log(jobId, 2, "x"))).toMatchObject({ kind: "applied" });
      expect(await jobApply(db(), agent.agentId, finished(jobId, 3, "succeeded", 0))).toMatchObject({
        kind: "applied",
      });
    });

    it("a gap on a fresh job expects seq 1", async () => {
      const { agent, jobId } = await claimedJob(db());
      expect(await jobApply(db(), agent.agentId, started(jobId, 2))).toEqual({ kind: "gap", expected: 1 });
      expect(await jobRow(db(), jobId)).toMatchObject({ state: "claimed", seq: 0, started_at: null });
    });

    it("a message from an agent that does not hold the job is unknown, and changes nothing", async () => {
      const { jobId, workOrderId } = await claimedJob(db());
      const stranger = await connectAgent(db(), "apply-stranger");
      const before = await jobRow(db(), jobId);
      expect(await jobApply(db(), stranger.agentId, started(jobId, 1))).toEqual({ kind: "unknown" });
      expect(await jobApply(db(), stranger.agentId, finished(jobId, 1, "failed", 1))).toEqual({ kind: "unknown" });
      expect(await jobRow(db(), jobId)).toEqual(before);
      expect(await workOrderState(db(), workOrderId)).toBe("claimed");
      // And a job id that does not exist at all.
      expect(await jobApply(db(), stranger.agentId, started("999999999", 1))).toEqual({ kind: "unknown" });
    });
  });

  describe("transitions", () => {
    it("started then finished moves job and work order claimed -> running -> succeeded", async () => {
      const { agent, jobId, workOrderId } = await claimedJob(db());
      const start: JobMessage = {
        type: "job.started",
        jobId,
        seq: 1,
        externalId: "pid-42",
        externalUrl: "https://ci.example.com/run/42",
      };
      expect(await jobApply(db(), agent.agentId, start)).toEqual({ kind: "applied", workOrderId });
      expect(await jobRow(db(), jobId)).toMatchObject({ state: "running", external_id: "pid-42", finished_at: null });
      expect(await workOrderState(db(), workOrderId)).toBe("running");

      expect(await jobApply(db(), agent.agentId, finished(jobId, 2, "succeeded", 0))).toEqual({
        kind: "applied",
        workOrderId,
      });
      const job = await jobRow(db(), jobId);
      expect(job).toMatchObject({ state: "succeeded", seq: 2, exit_code: 0, error: null, external_id: "pid-42" });
      expect(job.started_at).not.toBeNull();
      expect(job.finished_at).not.toBeNull();
      const wo = await workOrderGet(db(), workOrderId);
      expect(wo?.state).toBe("succeeded");
      expect(wo?.latest_job).toMatchObject({ id: jobId, state: "succeeded", exitCode: 0, agent: agent.name });

      expect(await eventsOf(db(), workOrderId)).toEqual([
        { from_state: null, to_state: "pending", job_id: null, reason: null },
        { from_state: "pending", to_state: "claimed", job_id: jobId, reason: null },
        { from_state: "claimed", to_state: "running", job_id: jobId, reason: null },
        { from_state: "running", to_state: "succeeded", job_id: jobId, reason: null },
      ]);
    });

    it("a failure records its exit code and error", async () => {
      const { agent, jobId, workOrderId } = await claimedJob(db());
      await jobApply(db(), agent.agentId, started(jobId, 1));
      expect(await jobApply(db(), agent.agentId, finished(jobId, 2, "failed", 3, "exit status 3"))).toMatchObject({
        kind: "applied",
      });
      expect(await jobRow(db(), jobId)).toMatchObject({ state: "failed", exit_code: 3, error: "exit status 3" });
      expect(await workOrderState(db(), workOrderId)).toBe("failed");
    });

    it("a job may finish straight from claimed", async () => {
      const { agent, jobId, workOrderId } = await claimedJob(db());
      expect(await jobApply(db(), agent.agentId, finished(jobId, 1, "failed", null, "spec rejected"))).toMatchObject({
        kind: "applied",
      });
      expect(await jobRow(db(), jobId)).toMatchObject({ state: "failed", exit_code: null, started_at: null });
      expect((await eventsOf(db(), workOrderId)).slice(-1)).toEqual([
        { from_state: "claimed", to_state: "failed", job_id: jobId, reason: null },
      ]);
    });

    it("starting marks the job begun without moving its work order; its run's start is when it started", async () => {
      const { agent, jobId, workOrderId } = await claimedJob(db());
      expect(await jobApply(db(), agent.agentId, { type: "job.starting", jobId, seq: 1 })).toEqual({ kind: "applied", workOrderId });
      const { started_at: began } = await jobRow(db(), jobId);
      expect(await jobRow(db(), jobId)).toMatchObject({ state: "starting", started_at: expect.any(String) });
      expect(await workOrderState(db(), workOrderId)).toBe("claimed");
      await jobApply(db(), agent.agentId, started(jobId, 2));
      expect(await workOrderState(db(), workOrderId)).toBe("running");
      expect((await jobRow(db(), jobId)).started_at).not.toBe(began);
      expect((await eventsOf(db(), workOrderId)).map((e) => e.to_state)).toEqual(["pending", "claimed", "running"]);
    });

    it("a job returned before it began puts its work order back in the queue, its attempt not counted", async () => {
      const { agent, jobId, workOrderId } = await claimedJob(db());
      const returned: JobMessage = { type: "job.finished", jobId, seq: 1, outcome: "returned", exitCode: null };
      expect(await jobApply(db(), agent.agentId, returned)).toEqual({
        kind: "applied",
        workOrderId,
        requeued: { id: workOrderId, selector: [], targetAgent: agent.name },
      });
      expect(await jobRow(db(), jobId)).toMatchObject({ state: "returned", started_at: null });
      const wo = await workOrderGet(db(), workOrderId);
      expect(wo).toMatchObject({ state: "pending", attempts: 0 });
      expect((await eventsOf(db(), workOrderId)).at(-1)).toEqual({
        from_state: "claimed",
        to_state: "pending",
        job_id: jobId,
        reason: "returned before it began",
      });
      const [again] = await workOrderClaim(db(), agent, 1);
      expect(again).toMatchObject({ workOrderId, attempt: 1 });
    });

    it("a job its agent reports lost before saying it began is returned: nothing ran", async () => {
      const { agent, jobId, workOrderId } = await claimedJob(db());
      const lost: JobMessage = { type: "job.finished", jobId, seq: 1, outcome: "lost", exitCode: null, error: "the agent restarted" };
      expect(await jobApply(db(), agent.agentId, lost)).toMatchObject({ kind: "applied", requeued: { id: workOrderId } });
      expect(await jobRow(db(), jobId)).toMatchObject({ state: "returned", error: "the agent restarted" });
      expect(await workOrderGet(db(), workOrderId)).toMatchObject({ state: "pending", attempts: 0 });
    });

    it("a job its restarted agent disowns is lost, though a message of the agent's previous run took the seq the welcome gave", async () => {
      const { agent, jobId, workOrderId } = await claimedJob(db());
      await jobApply(db(), agent.agentId, started(jobId, 1));
      // The welcome read seq 1; the previous run's last log, still on its way, is applied as 2.
      expect(await jobApply(db(), agent.agentId, log(jobId, 2, "the last line"))).toMatchObject({ kind: "applied" });
      const disown: JobMessage = { type: "job.finished", jobId, seq: 2, outcome: "lost", exitCode: null, error: "the agent restarted" };
      expect(await jobApply(db(), agent.agentId, disown)).toMatchObject({ kind: "applied", workOrderId });
      expect(await jobRow(db(), jobId)).toMatchObject({ state: "lost", seq: 2, error: "the agent restarted" });
      expect(await workOrderState(db(), workOrderId)).toBe("failed");
      // Sent again (its acknowledgement lost), or met by the previous run's finish: the job has ended.
      expect(await jobApply(db(), agent.agentId, disown)).toEqual({ kind: "duplicate", ended: true });
      expect(await jobApply(db(), agent.agentId, finished(jobId, 3, "succeeded", 0))).toMatchObject({ kind: "rejected", ended: true });
      expect(await jobRow(db(), jobId)).toMatchObject({ state: "lost", seq: 3 });
    });

    it("a job that began cannot be returned", async () => {
      const { agent, jobId, workOrderId } = await claimedJob(db());
      await jobApply(db(), agent.agentId, { type: "job.starting", jobId, seq: 1 });
      const returned: JobMessage = { type: "job.finished", jobId, seq: 2, outcome: "returned", exitCode: null };
      expect(await jobApply(db(), agent.agentId, returned)).toMatchObject({ kind: "rejected", reason: expect.stringMatching(/starting/), ended: false });
      expect(await workOrderGet(db(), workOrderId)).toMatchObject({ state: "claimed", attempts: 1 });
    });

    it("a returned job whose work order was asked to cancel ends it cancelled", async () => {
      const { agent, jobId, workOrderId } = await claimedJob(db());
      expect(await workOrderCancel(db(), workOrderId, "not needed")).toMatchObject({ kind: "requested", jobId });
      const returned: JobMessage = { type: "job.finished", jobId, seq: 1, outcome: "returned", exitCode: null };
      expect(await jobApply(db(), agent.agentId, returned)).toEqual({ kind: "applied", workOrderId });
      expect(await workOrderState(db(), workOrderId)).toBe("cancelled");
    });

    it("a status update keeps the state and the start time", async () => {
      const { agent, jobId, workOrderId } = await claimedJob(db());
      await jobApply(db(), agent.agentId, started(jobId, 1));
      const before = await jobRow(db(), jobId);
      const status: JobMessage = { type: "job.status", jobId, seq: 2, status: "50% done" };
      expect(await jobApply(db(), agent.agentId, status)).toEqual({ kind: "applied", workOrderId });
      expect(await jobRow(db(), jobId)).toEqual({ ...before, seq: 2, status: "50% done" });
      expect((await eventsOf(db(), workOrderId)).map((e) => e.to_state)).toEqual(["pending", "claimed", "running"]);
    });

    it("a status update after the job ended is rejected, and changes nothing but the seq", async () => {
      const { agent, jobId } = await claimedJob(db());
      await jobApply(db(), agent.agentId, finished(jobId, 1, "succeeded", 0));
      const before = await jobRow(db(), jobId);
      const late: JobMessage = { type: "job.status", jobId, seq: 2, status: "still going" };
      expect(await jobApply(db(), agent.agentId, late)).toMatchObject({ kind: "rejected" });
      expect(await jobRow(db(), jobId)).toEqual({ ...before, seq: 2 });
    });

    it.each([
      ["a different outcome", "failed"],
      ["the same outcome", "succeeded"],
    ] as const)("job.finished twice (%s) is rejected, but its seq is consumed", async (_, second) => {
      const { agent, jobId, workOrderId } = await claimedJob(db());
      await jobApply(db(), agent.agentId, started(jobId, 1));
      await jobApply(db(), agent.agentId, finished(jobId, 2, "succeeded", 0));
      const before = await jobRow(db(), jobId);
      const eventsBefore = await eventsOf(db(), workOrderId);

      const again = await jobApply(db(), agent.agentId, finished(jobId, 3, second, 7, "late"));
      expect(again.kind).toBe("rejected");
      expect(again.kind === "rejected" && again.reason).toMatch(/succeeded/);
      expect(await jobRow(db(), jobId)).toEqual({ ...before, seq: 3 });
      expect(await workOrderState(db(), workOrderId)).toBe("succeeded");
      expect(await eventsOf(db(), workOrderId)).toEqual(eventsBefore);
      // The seq advanced: a resend of 3 is a duplicate, and 5 is a gap expecting 4.
      expect(await jobApply(db(), agent.agentId, finished(jobId, 3, second, 7))).toEqual({ kind: "duplicate", ended: true });
      expect(await jobApply(db(), agent.agentId, finished(jobId, 5, second, 7))).toEqual({ kind: "gap", expected: 4 });
    });

    it("job.started twice is rejected and does not restart the clock", async () => {
      const { agent, jobId } = await claimedJob(db());
      await jobApply(db(), agent.agentId, started(jobId, 1));
      const before = await jobRow(db(), jobId);
      expect(await jobApply(db(), agent.agentId, started(jobId, 2))).toMatchObject({ kind: "rejected" });
      expect(await jobRow(db(), jobId)).toEqual({ ...before, seq: 2 });
    });
  });

  describe("logs", () => {
    // Byte lengths: 7 ("héllo " has a 2-byte é), 15 (3+3+4 bytes of 世界🌍, 5 of "\nnext"), 4.
    const chunks = ["héllo ", "世界🌍\nnext", "done"];
    const whole = chunks.join("");

    it("appends chunks at increasing byte offsets and reads them back from any offset", async () => {
      const { agent, jobId } = await claimedJob(db());
      await jobApply(db(), agent.agentId, started(jobId, 1));
      let seq = 2;
      for (const data of chunks) {
        expect(await jobApply(db(), agent.agentId, log(jobId, seq++, data))).toMatchObject({ kind: "applied" });
      }
      const stored = await db().query<{ offset: string; data: string }>(
        `SELECT "offset"::text AS "offset", data FROM job_logs WHERE job_id = $1 ORDER BY job_logs."offset"`,
        [jobId],
      );
      expect(stored).toEqual([
        { offset: "0", data: "héllo " },
        { offset: "7", data: "世界🌍\nnext" },
        { offset: "22", data: "done" },
      ]);
      const total = Buffer.byteLength(whole);
      expect(total).toBe(26);
      expect((await jobRow(db(), jobId)).log_bytes).toBe(String(total));

      expect(await logRead(db(), jobId, 0)).toEqual([
        { offset: 0, data: "héllo " },
        { offset: 7, data: "世界🌍\nnext" },
        { offset: 22, data: "done" },
      ]);
      // From inside the second chunk, on a character boundary (after 世): the chunk is cut there.
      expect(await logRead(db(), jobId, 10)).toEqual([
        { offset: 10, data: "界🌍\nnext" },
        { offset: 22, data: "done" },
      ]);
      // From inside the first chunk, after the 2-byte é.
      expect(await logRead(db(), jobId, 3)).toEqual([
        { offset: 3, data: "llo " },
        { offset: 7, data: "世界🌍\nnext" },
        { offset: 22, data: "done" },
      ]);
      // From inside a character (the second byte of é, of 世): as from the next one, never a broken one.
      expect(await logRead(db(), jobId, 2)).toEqual(await logRead(db(), jobId, 3));
      expect(await logRead(db(), jobId, 8)).toEqual(await logRead(db(), jobId, 10));
      // Exactly at a chunk start, inside the last chunk, at the end, and past it.
      expect(await logRead(db(), jobId, 22)).toEqual([{ offset: 22, data: "done" }]);
      expect(await logRead(db(), jobId, 24)).toEqual([{ offset: 24, data: "ne" }]);
      expect(await logRead(db(), jobId, total)).toEqual([]);
      expect(await logRead(db(), jobId, total + 100)).toEqual([]);
      // The limit counts chunks.
      expect(await logRead(db(), jobId, 0, 2)).toEqual([
        { offset: 0, data: "héllo " },
        { offset: 7, data: "世界🌍\nnext" },
      ]);
      // Reading every suffix reassembles the log's tail exactly, at every character boundary.
      for (let i = 0; i <= whole.length; i++) {
        const tail = whole.slice(i);
        if (/^[\uDC00-\uDFFF]/.test(tail)) continue; // inside a surrogate pair: not a character boundary
        const read = await logRead(db(), jobId, Buffer.byteLength(whole.slice(0, i)));
        expect(read.map((s) => s.data).join("")).toBe(tail);
      }
    });

    it("a resent log chunk is not appended twice", async () => {
      const { agent, jobId } = await claimedJob(db());
      expect(await jobApply(db(), agent.agentId, log(jobId, 1, "once\n"))).toMatchObject({ kind: "applied" });
      expect(await jobApply(db(), agent.agentId, log(jobId, 1, "once\n"))).toEqual({ kind: "duplicate", ended: false });
      expect(await logRead(db(), jobId, 0)).toEqual([{ offset: 0, data: "once\n" }]);
      expect((await jobRow(db(), jobId)).log_bytes).toBe("5");
    });

    it("a chunk stored larger than any an agent may send (NULs kept as U+FFFD) is read from inside it", async () => {
      const { agent, jobId } = await claimedJob(db());
      await jobApply(db(), agent.agentId, started(jobId, 1));
      await jobApply(db(), agent.agentId, log(jobId, 2, "\0".repeat(130_000)));
      await jobApply(db(), agent.agentId, log(jobId, 3, "TAIL"));
      const slices = await logRead(db(), jobId, 300_000);
      expect(slices.map((s) => [s.offset, Buffer.byteLength(s.data)])).toEqual([
        [300_000, 90_000],
        [390_000, 4],
      ]);
    });

    it("unpaired surrogates an agent sends are kept as U+FFFD, not a failed batch", async () => {
      const { agent, jobId } = await claimedJob(db());
      await jobApply(db(), agent.agentId, started(jobId, 1));
      expect(await jobApply(db(), agent.agentId, log(jobId, 2, "a\ud800b🌍"))).toMatchObject({ kind: "applied" });
      expect(await jobApply(db(), agent.agentId, { type: "job.status", jobId, seq: 3, status: "x\udc00" })).toMatchObject({ kind: "applied" });
      expect(await logRead(db(), jobId, 0)).toEqual([{ offset: 0, data: "a\uFFFDb🌍" }]);
      expect((await jobRow(db(), jobId)).status).toBe("x\uFFFD");
    });

    it("text an agent sends is stored as sent, whatever it holds", async () => {
      const awkward = 'a"b \\ c,d {e} NULL ü€😀\nline \'q\'';
      const { agent, jobId } = await claimedJob(db());
      const messages: JobMessage[] = [
        { type: "job.started", jobId, seq: 1, externalId: awkward, externalUrl: `https://ci.example/${awkward}` },
        { type: "job.status", jobId, seq: 2, status: awkward },
        log(jobId, 3, awkward),
        finished(jobId, 4, "failed", 2, awkward),
      ];
      for (const message of messages) expect(await jobApply(db(), agent.agentId, message)).toMatchObject({ kind: "applied" });
      expect(await jobRow(db(), jobId)).toMatchObject({ status: awkward, external_id: awkward, error: awkward, exit_code: 2, state: "failed" });
      expect(await logRead(db(), jobId, 0)).toEqual([{ offset: 0, data: awkward }]);
      const [url] = await db().query<{ external_url: string }>(`SELECT external_url FROM jobs WHERE id = $1`, [jobId]);
      expect(url!.external_url).toBe(`https://ci.example/${awkward}`);
    });

    it("logs of different jobs do not mix", async () => {
      const a = await claimedJob(db());
      const b = await claimedJob(db());
      await jobApply(db(), a.agent.agentId, log(a.jobId, 1, "from a"));
      await jobApply(db(), b.agent.agentId, log(b.jobId, 1, "from b"));
      expect(await logRead(db(), a.jobId, 0)).toEqual([{ offset: 0, data: "from a" }]);
      expect(await logRead(db(), b.jobId, 0)).toEqual([{ offset: 0, data: "from b" }]);
    });
  });

  describe("workOrderCancel", () => {
    it("cancels a pending work order at once, with an event", async () => {
      const { row } = await workOrderInsert(db(), order({ agent: "nobody-connects-as-this" }));
      expect(await workOrderCancel(db(), row.id, "not needed")).toEqual({ kind: "cancelled" });
      expect(await workOrderState(db(), row.id)).toBe("cancelled");
      expect(await eventsOf(db(), row.id)).toEqual([
        { from_state: null, to_state: "pending", job_id: null, reason: null },
        { from_state: "pending", to_state: "cancelled", job_id: null, reason: "not needed" },
      ]);
      // A cancelled work order is never claimed.
      const agent = await connectAgent(db(), "nobody-connects-as-this", {}, "work-order");
      expect(await workOrderClaim(db(), agent, 10)).toEqual([]);
      // And cancelling it again finds nothing active.
      expect(await workOrderCancel(db(), row.id, "again")).toEqual({ kind: "not_active" });
    });

    it("asks the agent to stop a running job, keeping the first reason", async () => {
      const { agent, jobId, workOrderId } = await claimedJob(db());
      await jobApply(db(), agent.agentId, started(jobId, 1));
      expect(await workOrderCancel(db(), workOrderId, "operator")).toEqual({
        kind: "requested",
        jobId,
        agentId: agent.agentId,
        reason: "operator",
      });
      expect(await workOrderCancel(db(), workOrderId, "second try")).toEqual({
        kind: "requested",
        jobId,
        agentId: agent.agentId,
        reason: "operator",
      });
      // Nothing ends until the agent confirms.
      expect(await jobRow(db(), jobId)).toMatchObject({ state: "running", cancel_reason: "operator" });
      expect(await workOrderState(db(), workOrderId)).toBe("running");
      expect(await jobApply(db(), agent.agentId, finished(jobId, 2, "cancelled", null))).toMatchObject({
        kind: "applied",
      });
      expect(await workOrderState(db(), workOrderId)).toBe("cancelled");
      // The trail gives the first reason asked, as for a pending one.
      expect((await eventsOf(db(), workOrderId)).at(-1)).toMatchObject({ from_state: "running", to_state: "cancelled", reason: "operator" });
      expect(await workOrderCancel(db(), workOrderId, "too late")).toEqual({ kind: "not_active" });
    });

    it("asks the agent to stop a claimed job it has not started", async () => {
      const { agent, jobId, workOrderId } = await claimedJob(db());
      expect(await workOrderCancel(db(), workOrderId, "changed my mind")).toEqual({
        kind: "requested",
        jobId,
        agentId: agent.agentId,
        reason: "changed my mind",
      });
      expect(await workOrderState(db(), workOrderId)).toBe("claimed");
    });

    it("an ended work order is not active", async () => {
      const { agent, jobId, workOrderId } = await claimedJob(db());
      await jobApply(db(), agent.agentId, finished(jobId, 1, "succeeded", 0));
      const eventsBefore = await eventsOf(db(), workOrderId);
      expect(await workOrderCancel(db(), workOrderId, "late")).toEqual({ kind: "not_active" });
      expect(await workOrderState(db(), workOrderId)).toBe("succeeded");
      expect(await jobRow(db(), jobId)).toMatchObject({ state: "succeeded", cancel_reason: null });
      expect(await eventsOf(db(), workOrderId)).toEqual(eventsBefore);
    });

    it.each([1, 2])("a cancel that a retrying ending would overtake still takes effect (the ending sent after its statement %i)", async (after) => {
      const name = `apply-agent-${++agents}`;
      const agent = await connectAgent(db(), name, {}, "work-order");
      const { row } = await workOrderInsert(db(), order({ agent: name, maxAttempts: 3, retryOn: ["failed"], retryBackoffSeconds: 60 }));
      const [assignment] = await workOrderClaim(db(), agent, 1);
      const jobId = assignment!.jobId;
      await jobApply(db(), agent.agentId, started(jobId, 1));
      // The job's failure, which would retry the work order, is sent while the cancel is under way.
      let ending: Promise<unknown> | undefined;
      let statements = 0;
      const racing = (q: Database["query"]): Database["query"] => async (text, params) => {
        const rows = await q(text, params);
        if (++statements === after) {
          ending = jobApply(db(), agent.agentId, finished(jobId, 2, "failed", 1));
          await new Promise((resolve) => setTimeout(resolve, 50));
        }
        return rows as never;
      };
      const proxy = { ...db(), query: racing(db().query), transaction: (fn) => db().transaction((tx) => fn({ query: racing(tx.query) })) } as Database;
      // Asked of the job, or (if the ending came first) of the work order back in the queue: either way it takes.
      expect(["requested", "cancelled"]).toContain((await workOrderCancel(proxy, row.id, "stop it")).kind);
      await ending;
      expect(await workOrderState(db(), row.id)).toBe("cancelled");
    });

    it("an unknown work order is not active", async () => {
      expect(await workOrderCancel(db(), "999999999", "who")).toEqual({ kind: "not_active" });
    });
  });

  describe("idempotency keys", () => {
    it("a second insert with the same key returns the first work order", async () => {
      const first = await workOrderInsert(db(), order({ idempotencyKey: "deploy-1", priority: 1 }));
      const second = await workOrderInsert(db(), order({ idempotencyKey: "deploy-1", priority: 9 }));
      expect(first.created).toBe(true);
      expect(second.created).toBe(false);
      expect(second.row.id).toBe(first.row.id);
      expect(second.row.priority).toBe(1);
      const [count] = await db().query<{ n: number }>(
        `SELECT count(*)::int AS n FROM work_orders WHERE idempotency_key = 'deploy-1'`,
      );
      expect(count!.n).toBe(1);
      expect(await eventsOf(db(), first.row.id)).toHaveLength(1);
      // Without a key, every insert is new.
      const a = await workOrderInsert(db(), order({}));
      const b = await workOrderInsert(db(), order({}));
      expect([a.created, b.created]).toEqual([true, true]);
      expect(a.row.id).not.toBe(b.row.id);
    });

    it("of 10 concurrent inserts with one key, exactly one creates", async () => {
      const results = await Promise.all(
        Array.from({ length: 10 }, (_, i) => workOrderInsert(db(), order({ idempotencyKey: "race-1", priority: i }))),
      );
      expect(results.filter((r) => r.created)).toHaveLength(1);
      const ids = new Set(results.map((r) => r.row.id));
      expect(ids.size).toBe(1);
      const [count] = await db().query<{ n: number }>(
        `SELECT count(*)::int AS n FROM work_orders WHERE idempotency_key = 'race-1'`,
      );
      expect(count!.n).toBe(1);
      const [id] = ids;
      expect(await eventsOf(db(), id!)).toEqual([{ from_state: null, to_state: "pending", job_id: null, reason: null }]);
    });
  });
});

describePostgres("jobApply [postgres]: locks", () => {
  const db = useDatabase("postgres", 4);

  it("a batch locks only the jobs, and work orders, of the agents that sent their messages", async () => {
    const { agent, jobId, workOrderId } = await claimedJob(db());
    const stranger = await connectAgent(db(), "lock-stranger");
    const locked = async (table: string, id: string) =>
      db()
        .query(`SELECT 1 FROM ${table} WHERE id = $1 FOR UPDATE NOWAIT`, [id])
        .then(
          () => false,
          (error: { code?: string }) => (error.code === "55P03" ? true : Promise.reject(error)),
        );
    await db().transaction(async (tx) => {
      expect(await jobApplyIn(tx, [{ agentId: stranger.agentId, message: started(jobId, 1) }])).toEqual([{ kind: "unknown" }]);
      // Still in the stranger's batch: the owner's own batches must not wait on it.
      expect(await locked("jobs", jobId)).toBe(false);
      expect(await locked("work_orders", workOrderId)).toBe(false);
    });
    await db().transaction(async (tx) => {
      const answers = await jobApplyIn(tx, [
        { agentId: stranger.agentId, message: started(jobId, 1) },
        { agentId: agent.agentId, message: started(jobId, 1) },
      ]);
      expect(answers).toEqual([{ kind: "unknown" }, { kind: "applied", workOrderId }]);
      expect(await locked("jobs", jobId)).toBe(true);
      expect(await locked("work_orders", workOrderId)).toBe(true);
    });
  });
});
