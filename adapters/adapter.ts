// The one interface every adapter implements. An adapter turns a work order's spec into a run —
// a local process, or a run in an external CI/CD system — and reports what happens to it.
// It knows nothing of WebSockets or the coordinator: the agent wires it to the protocol.
import type { z } from "zod";
import type { AdapterName } from "../protocol/adapter-specs.ts";
import type { ExternalRun } from "../protocol/messages.ts";

export type RunContext<Spec> = {
  jobId: string;
  workOrderId: string;
  attempt: number;
  spec: Spec;
  /** Output as it arrives, in order; chunks need not end on a line boundary. */
  log(text: string): void;
  /** A status line from the external system ("queued", "in_progress"…). */
  status(text: string): void;
};

export type RunResult = {
  outcome: "succeeded" | "failed" | "cancelled";
  exitCode: number | null;
  error?: string;
};

export type Run = {
  /** The run's id and address in the system that runs it, stored so a later attempt can find it. */
  externalId?: string;
  externalUrl?: string;
  /** Settles once the run has ended and all its output was passed to `log`; never rejects. */
  result: Promise<RunResult>;
  /**
   * Asks the run to stop, forcefully after `graceMs`; `result` then settles as `cancelled`. If it
   * fails (the external system refused), the agent logs a warning and waits on `result` still.
   */
  cancel(graceMs: number): Promise<void>;
  /**
   * For runs that live on without the agent: stop following the run and leave it running, for a
   * later attempt to adopt; `result` then settles as `cancelled`. Absent where the
   * run cannot outlive the agent (a local process).
   */
  detach?(): Promise<void>;
};

export interface Adapter<Spec = unknown> {
  readonly name: AdapterName;
  readonly spec: z.ZodType<Spec, unknown>;
  /** Starts the run; rejects with AdapterError when it could not be started at all. */
  start(ctx: RunContext<Spec>): Promise<Run>;
  /** Follows a run an earlier attempt started (it must not trigger another); for external systems. */
  adopt?(ctx: RunContext<Spec>, run: ExternalRun): Promise<Run>;
}

/** A failure to start or follow a run that is the infrastructure's, not the job's. */
export class AdapterError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "AdapterError";
  }
}
