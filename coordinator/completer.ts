// Applies agents' job messages in batches: what arrives within a few milliseconds, from any agent,
// shares one transaction, two statements and one commit, decided in arrival order (so each job's
// messages stay in order). A message is answered only after its batch committed, so a crash
// before then loses nothing: the agent resends whatever was not acknowledged.
import type { JobMessage } from "../protocol/messages.ts";
import { Batcher, type BatcherOptions } from "./batcher.ts";
import type { Database } from "./db/database.ts";
import { type Applied, type Incoming, jobApplyIn } from "./sql/job-apply.ts";

export class Completer {
  private readonly batcher: Batcher<Incoming, Applied>;

  constructor(db: Database, options: BatcherOptions = { delayMs: 2, maxBatch: 500 }) {
    this.batcher = new Batcher((batch) => db.transaction((tx) => jobApplyIn(tx, batch)), options);
  }

  apply(agentId: string, message: JobMessage): Promise<Applied> {
    return this.batcher.submit({ agentId, message });
  }

  /** Waits for what is queued to be applied. */
  drain(): Promise<void> {
    return this.batcher.drain();
  }
}
