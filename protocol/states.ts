// The one state machine of work orders and jobs. No other place decides a transition: the
// coordinator's SQL asks a machine's `sourcesOf(to)` for the states an update may start from.

/**
 * Work orders:
 * - pending: enqueued (or waiting to be retried), for an agent whose labels match its selector.
 * - claimed: a job was created for it and assigned to an agent, which has not started it yet.
 * - running: the agent's adapter started the run.
 * - succeeded / failed / cancelled / timed_out: ended; the final state is that of its last job.
 * A claimed or running work order goes back to pending when its job ended in a way its retry
 * policy retries; a pending one may time out in the queue.
 */
export const workOrderStates = ["pending", "claimed", "running", "succeeded", "failed", "cancelled", "timed_out"] as const;
export type WorkOrderState = (typeof workOrderStates)[number];

/** How a work order ends. */
export const endings = ["succeeded", "failed", "cancelled", "timed_out"] as const;
export type Ending = (typeof endings)[number];

/**
 * Jobs: one attempt on one agent.
 * - claimed: assigned to the agent, which may hold it in its local queue; nothing has run yet.
 * - starting: the agent is calling its adapter, which may trigger a run before it can say so.
 * - running: the adapter started the run.
 * - lost: its agent went away after beginning it and did not come back in time.
 * - returned: given back before it began (the agent drained, or was lost while it only held it):
 *   its work order goes back to the queue and the attempt is not counted.
 */
export const jobStates = ["claimed", "starting", "running", "succeeded", "failed", "cancelled", "timed_out", "lost", "returned"] as const;
export type JobState = (typeof jobStates)[number];

/** How a job ends. */
export const outcomes = ["succeeded", "failed", "cancelled", "timed_out", "lost", "returned"] as const;
export type Outcome = (typeof outcomes)[number];

/** How a job that began ends: no longer `returned`. */
const begunOutcomes = outcomes.filter((o) => o !== "returned");

export class IllegalTransition extends Error {
  constructor(
    readonly from: string,
    readonly to: string,
  ) {
    super(`illegal transition ${from} -> ${to}`);
    this.name = "IllegalTransition";
  }
}

export class Machine<S extends string> {
  constructor(
    readonly states: readonly S[],
    private readonly transitions: Record<S, readonly S[]>,
  ) {}

  can(from: S, to: S): boolean {
    return this.transitions[from].includes(to);
  }

  isTerminal(state: S): boolean {
    return this.transitions[state].length === 0;
  }

  /** The states from which `to` may be reached. */
  sourcesOf(to: S): S[] {
    return this.states.filter((from) => this.can(from, to));
  }

  assert(from: S, to: S): void {
    if (!this.can(from, to)) throw new IllegalTransition(from, to);
  }
}

export const workOrderMachine = new Machine<WorkOrderState>(workOrderStates, {
  pending: ["claimed", "cancelled", "timed_out"],
  claimed: ["running", "pending", ...endings],
  running: ["pending", ...endings],
  succeeded: [],
  failed: [],
  cancelled: [],
  timed_out: [],
});

export const jobMachine = new Machine<JobState>(jobStates, {
  claimed: ["starting", "running", ...outcomes],
  starting: ["running", ...begunOutcomes],
  running: begunOutcomes,
  succeeded: [],
  failed: [],
  cancelled: [],
  timed_out: [],
  lost: [],
  returned: [],
});

/** The states of a job its agent still holds. */
export const activeJobStates = jobStates.filter((s) => !jobMachine.isTerminal(s));
