import { describe, expect, it } from "vitest";
import {
  assertTransition,
  canTransition,
  IllegalTransition,
  isTerminal,
  jobStates,
  outcomes,
  sourcesOf,
  workOrderStates,
  type WorkOrderState,
} from "../../protocol/states.ts";

/** Every legal transition, written out. Anything not listed here is illegal. */
const legal: readonly [WorkOrderState, WorkOrderState][] = [
  ["pending", "claimed"],
  ["pending", "cancelled"],
  ["claimed", "running"],
  ["claimed", "succeeded"],
  ["claimed", "failed"],
  ["claimed", "cancelled"],
  ["claimed", "timed_out"],
  ["running", "succeeded"],
  ["running", "failed"],
  ["running", "cancelled"],
  ["running", "timed_out"],
];

const isLegal = (from: WorkOrderState, to: WorkOrderState) => legal.some(([f, t]) => f === from && t === to);
const allPairs = workOrderStates.flatMap((from) => workOrderStates.map((to): [WorkOrderState, WorkOrderState] => [from, to]));
const illegal = allPairs.filter(([from, to]) => !isLegal(from, to));
const exitsOf = (from: WorkOrderState) => workOrderStates.filter((to) => canTransition(from, to));

describe("state machine", () => {
  it("lists the states in lifecycle order", () => {
    expect(workOrderStates).toEqual(["pending", "claimed", "running", "succeeded", "failed", "cancelled", "timed_out"]);
    expect(outcomes).toEqual(["succeeded", "failed", "cancelled", "timed_out"]);
    expect(jobStates).toEqual(workOrderStates.filter((s) => s !== "pending"));
    expect(allPairs).toHaveLength(49);
    expect(illegal).toHaveLength(49 - legal.length);
  });

  it.each(legal)("%s -> %s is legal", (from, to) => {
    expect(canTransition(from, to)).toBe(true);
    expect(() => assertTransition(from, to)).not.toThrow();
  });

  it.each(illegal)("%s -> %s is illegal", (from, to) => {
    expect(canTransition(from, to)).toBe(false);
    const error = (() => {
      try {
        assertTransition(from, to);
      } catch (e) {
        return e;
      }
    })();
    expect(error).toBeInstanceOf(IllegalTransition);
    expect(error).toMatchObject({ name: "IllegalTransition", from, to, message: `illegal transition ${from} -> ${to}` });
  });

  it("makes exactly the outcomes terminal, with no exits", () => {
    for (const state of workOrderStates) {
      expect(isTerminal(state), state).toBe((outcomes as readonly string[]).includes(state));
    }
    for (const from of outcomes) {
      expect(exitsOf(from), from).toEqual([]);
    }
  });

  it("never stays in place or returns to pending", () => {
    for (const state of workOrderStates) expect(canTransition(state, state), state).toBe(false);
    expect(sourcesOf("pending")).toEqual([]);
  });

  it("keeps jobs among job states: a job never becomes pending", () => {
    for (const from of jobStates) {
      for (const to of exitsOf(from)) {
        expect(jobStates as readonly string[], `${from} -> ${to}`).toContain(to);
      }
    }
  });

  it("reaches every state from pending, and an outcome from every state", () => {
    const reachable = new Set<WorkOrderState>(["pending"]);
    // A Set's iteration also visits what is added during it: a breadth-first search.
    for (const from of reachable) for (const to of exitsOf(from)) reachable.add(to);
    expect([...reachable].sort()).toEqual([...workOrderStates].sort());
    for (const state of workOrderStates) {
      const canEnd = isTerminal(state) || exitsOf(state).some(isTerminal);
      expect(canEnd, state).toBe(true);
    }
  });
});

describe("sourcesOf", () => {
  it.each<[WorkOrderState, WorkOrderState[]]>([
    ["pending", []],
    ["claimed", ["pending"]],
    ["running", ["claimed"]],
    ["succeeded", ["claimed", "running"]],
    ["failed", ["claimed", "running"]],
    ["cancelled", ["pending", "claimed", "running"]],
    ["timed_out", ["claimed", "running"]],
  ])("sourcesOf(%s) is %j", (to, sources) => {
    expect(sourcesOf(to)).toEqual(sources);
  });

  it.each(workOrderStates)("agrees with canTransition for %s", (to) => {
    expect(sourcesOf(to)).toEqual(workOrderStates.filter((from) => canTransition(from, to)));
    expect(sourcesOf(to)).toEqual(legal.filter(([, t]) => t === to).map(([from]) => from));
  });
});
