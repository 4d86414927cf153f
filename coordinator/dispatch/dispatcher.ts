// Fills agents' open claims. An agent's `claim(n)` adds n slots to its claim, served at once from
// the pending pool; what stays open is filled the moment a matching work order is enqueued.
// Agents that share labels and mode form a group, and one claim statement serves every open slot
// of a group, so a busy fleet of like agents costs one statement per round, not one per agent.
// A round reserves the slots it claims for; slots that open meanwhile go to the next round.
// A wake-up claims only for groups that may run a new work order, one group per order; if that
// group's claim came back full without the order, the order is offered to the next matching group.
import type { Assignment } from "../../protocol/messages.ts";
import { matchesSelector } from "../../protocol/selector.ts";
import type { Bus, Enqueued } from "../bus.ts";
import type { Database } from "../db/database.ts";
import { type Claimant, type Eligibility, type GroupAssignment, workOrdersClaim } from "../sql/work-order-claim.ts";

export interface Claimer {
  readonly claimant: Claimant;
  /** Hands the agent its jobs (a no-op once its socket has gone). */
  assign(jobs: Assignment[]): void;
}

const RETRY_MS = 1000;
/**
 * Statements a group may have in flight at once. A claim waits for its commit to reach disk; while
 * one round waits, slots freed meanwhile are claimed by the next instead of queueing behind it.
 */
const MAX_ROUNDS = 3;

type Group = {
  key: string;
  eligibility: Eligibility;
  /** Open slots per member; members with none stay until they leave. */
  wants: Map<Claimer, number>;
  /** Claim statements in flight for the group. */
  rounds: number;
  scheduled: boolean;
  again: boolean;
  hints: Enqueued[];
};

export class Dispatcher {
  private readonly groups = new Map<string, Group>();
  private readonly unsubscribe: () => void;

  constructor(
    private readonly db: Database,
    private readonly bus: Bus,
    private readonly onError: (error: unknown) => void,
  ) {
    this.unsubscribe = bus.on("enqueued", (orders) => this.wake(orders));
  }

  claim(claimer: Claimer, slots: number): void {
    const group = this.groupOf(claimer);
    group.wants.set(claimer, (group.wants.get(claimer) ?? 0) + slots);
    this.schedule(group);
  }

  /** Claims again for every group with open slots: after a wake-up may have been missed. */
  sweep(): void {
    for (const group of this.groups.values()) if (open(group) > 0) this.schedule(group);
  }

  remove(claimer: Claimer): void {
    const key = groupKey(claimer.claimant);
    const group = this.groups.get(key);
    if (!group) return;
    group.wants.delete(claimer);
    if (group.wants.size === 0) this.groups.delete(key);
  }

  stop(): void {
    this.unsubscribe();
    this.groups.clear();
  }

  private groupOf(claimer: Claimer): Group {
    const key = groupKey(claimer.claimant);
    let group = this.groups.get(key);
    if (!group) {
      const { labels, queueMode } = claimer.claimant;
      group = { key, eligibility: { labels, queueMode }, wants: new Map(), rounds: 0, scheduled: false, again: false, hints: [] };
      this.groups.set(key, group);
    }
    return group;
  }

  private wake(orders: Enqueued[]): void {
    const budget = new Map<Group, number>();
    for (const order of orders) {
      const group = this.pick(order, budget);
      if (!group) continue;
      budget.set(group, (budget.get(group) ?? 0) + 1);
      group.hints.push(order);
    }
    for (const group of budget.keys()) this.schedule(group);
  }

  /** A group that may run the order and has a slot not yet promised in this wake-up. */
  private pick(order: Enqueued, budget: Map<Group, number>): Group | undefined {
    for (const [key, group] of this.groups) {
      if (open(group) <= (budget.get(group) ?? 0) || !mayRun(group, order)) continue;
      // Rotate so that wake-ups spread over the waiting groups.
      this.groups.delete(key);
      this.groups.set(key, group);
      return group;
    }
    return undefined;
  }

  /** Runs a round once the events of this turn of the event loop are in, so they share it. */
  private schedule(group: Group): void {
    if (group.scheduled) return;
    group.scheduled = true;
    setImmediate(() => {
      group.scheduled = false;
      if (this.isLive(group)) void this.run(group);
    });
  }

  private async run(group: Group): Promise<void> {
    if (group.rounds >= MAX_ROUNDS) {
      group.again = true;
      return;
    }
    group.rounds++;
    try {
      do {
        group.again = false;
        await this.round(group);
      } while (group.again && open(group) > 0 && this.isLive(group));
    } catch (error) {
      this.onError(error);
      // The slots stay open; try again, as no wake-up may come for work already waiting.
      setTimeout(() => this.schedule(group), RETRY_MS).unref();
    } finally {
      group.rounds--;
    }
  }

  /** Claims for every open slot of the group; the slots are reserved while the statement runs. */
  private async round(group: Group): Promise<void> {
    const hints = group.hints.splice(0);
    const asking = [...group.wants].filter(([, want]) => want > 0);
    if (asking.length === 0) return this.wake(hints);
    for (const [claimer] of asking) group.wants.set(claimer, 0);
    let claimed: GroupAssignment[] = [];
    try {
      const members = asking.map(([c, want]) => ({ agentId: c.claimant.agentId, name: c.claimant.name, want }));
      claimed = await workOrdersClaim(this.db, group.eligibility, members);
    } finally {
      const got = new Map<string, Assignment[]>();
      for (const { agentId, ...job } of claimed) got.set(agentId, [...(got.get(agentId) ?? []), job]);
      for (const [claimer, want] of asking) {
        const jobs = got.get(claimer.claimant.agentId) ?? [];
        // An agent that left while we claimed keeps its jobs until it is back or they are reaped.
        const left = group.wants.get(claimer);
        if (left !== undefined) group.wants.set(claimer, left + want - jobs.length);
        if (jobs.length > 0) claimer.assign(jobs);
      }
    }
    for (const job of claimed) this.bus.emit("changed", job.workOrderId);
    if (open(group) === 0) {
      const taken = new Set(claimed.map((j) => j.workOrderId));
      const missed = hints.filter((order) => !taken.has(order.id));
      if (missed.length > 0) this.wake(missed);
    }
  }

  private isLive(group: Group): boolean {
    return this.groups.get(group.key) === group;
  }
}

function open(group: Group): number {
  let sum = 0;
  for (const want of group.wants.values()) sum += want;
  return sum;
}

function groupKey({ labels, queueMode }: Eligibility): string {
  const sorted = Object.keys(labels)
    .sort()
    .map((key) => [key, labels[key]]);
  return JSON.stringify([queueMode, sorted]);
}

function mayRun(group: Group, order: Enqueued): boolean {
  if (order.targetAgent !== null) return [...group.wants.keys()].some((c) => c.claimant.name === order.targetAgent);
  return group.eligibility.queueMode && matchesSelector(order.selector, group.eligibility.labels);
}
