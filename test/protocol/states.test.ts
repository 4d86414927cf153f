// The state machines, checked exhaustively against the legal transitions written out here.
import { describe, expect, it } from "vitest";
import {
  endings,
  IllegalTransition,
  jobMachine,
  jobStates,
  type Machine,
  outcomes,
  workOrderMachine,
  workOrderStates,
} from "../../protocol/states.ts";

const legalWorkOrder = [
  "pending->claimed",
  "pending->cancelled",
  "pending->timed_out",
  "claimed->running",
  "claimed->pending",
  "claimed->succeeded",
  "claimed->failed",
  "claimed->cancelled",
  "claimed->timed_out",
  "running->pending",
  "running->succeeded",
  "running->failed",
  "running->cancelled",
  "running->timed_out",
];

// Only a job that never began can be returned.
const begun = outcomes.filter((o) => o !== "returned");
const legalJob = [
  "claimed->starting",
  "claimed->running",
  ...outcomes.map((o) => `claimed->${o}`),
  "starting->running",
  ...begun.map((o) => `starting->${o}`),
  ...begun.map((o) => `running->${o}`),
];

function check<S extends string>(name: string, machine: Machine<S>, states: readonly S[], legal: string[], terminal: readonly S[]) {
  describe(name, () => {
    const pairs = states.flatMap((from) => states.map((to) => [from, to] as const));

    it.each(pairs)("%s -> %s is legal exactly when listed", (from, to) => {
      const allowed = legal.includes(`${from}->${to}`);
      expect(machine.can(from, to)).toBe(allowed);
      if (allowed) expect(() => machine.assert(from, to)).not.toThrow();
      else expect(() => machine.assert(from, to)).toThrow(IllegalTransition);
    });

    it("the terminal states are exactly the endings, and have no exits", () => {
      expect(states.filter((s) => machine.isTerminal(s))).toEqual([...terminal]);
    });

    it("sourcesOf agrees with can", () => {
      for (const to of states) expect(machine.sourcesOf(to)).toEqual(states.filter((from) => machine.can(from, to)));
    });
  });
}

check("work orders", workOrderMachine, workOrderStates, legalWorkOrder, endings);
check("jobs", jobMachine, jobStates, legalJob, outcomes);
