// The one state machine of work orders and jobs. No other place decides a transition: the
// coordinator's SQL asks `sourcesOf(to)` for the states an update may start from.

/**
 * - pending: enqueued, waiting for an agent whose labels match its selector.
 * - claimed: a job was created for it and assigned to an agent, which has not started it yet.
 * - running: the agent's adapter started the run.
 * - succeeded / failed / cancelled / timed_out: ended; a work order's final state is its last job's.
 */
export const workOrderStates = [
  "pending",
  "claimed",
  "running",
  "succeeded",
  "failed",
  "cancelled",
  "timed_out",
] as const;
export type WorkOrderState = (typeof workOrderStates)[number];

/** A job is one attempt on one agent, so it is never pending. */
export const jobStates = ["claimed", "running", "succeeded", "failed", "cancelled", "timed_out"] as const;
export type JobState = (typeof jobStates)[number];

export const outcomes = ["succeeded", "failed", "cancelled", "timed_out"] as const;
export type Outcome = (typeof outcomes)[number];

const transitions: Record<WorkOrderState, readonly WorkOrderState[]> = {
  pending: ["claimed", "cancelled"],
  claimed: ["running", ...outcomes],
  running: outcomes,
  succeeded: [],
  failed: [],
  cancelled: [],
  timed_out: [],
};

export function isTerminal(state: WorkOrderState): state is Outcome {
  return transitions[state].length === 0;
}

export function canTransition(from: WorkOrderState, to: WorkOrderState): boolean {
  return transitions[from].includes(to);
}

/** The states from which `to` may be reached. */
export function sourcesOf(to: WorkOrderState): WorkOrderState[] {
  return workOrderStates.filter((from) => canTransition(from, to));
}

export class IllegalTransition extends Error {
  constructor(
    readonly from: WorkOrderState,
    readonly to: WorkOrderState,
  ) {
    super(`illegal transition ${from} -> ${to}`);
    this.name = "IllegalTransition";
  }
}

export function assertTransition(from: WorkOrderState, to: WorkOrderState): void {
  if (!canTransition(from, to)) throw new IllegalTransition(from, to);
}
