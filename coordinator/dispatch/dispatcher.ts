// Fills agents' open claims. An agent's `claim(n)` adds n slots to its claim and is served at once
// from the pending pool; what stays open is filled the moment a matching work order is enqueued.
// A wake-up claims only for agents whose labels match a new work order, one agent per order; if
// that agent's claim came back full without the order (it took an older or higher-priority one),
// the order is offered to the next matching agent, so nothing waits while a matching agent idles.
import type { Assignment } from "../../protocol/messages.ts";
import { matchesSelector } from "../../protocol/selector.ts";
import type { Bus, Enqueued } from "../bus.ts";
import type { Database } from "../db/database.ts";
import { type Claimant, workOrderClaim } from "../sql/work-order-claim.ts";

export interface Claimer {
  readonly claimant: Claimant;
  /** Hands the agent its jobs; false when its socket has gone. */
  assign(jobs: Assignment[]): void;
}

const RETRY_MS = 1000;

type Claim = { want: number; running: boolean; again: boolean; hints: Enqueued[] };

export class Dispatcher {
  private readonly claims = new Map<Claimer, Claim>();
  private readonly unsubscribe: () => void;

  constructor(
    private readonly db: Database,
    private readonly bus: Bus,
    private readonly onError: (error: unknown) => void,
  ) {
    this.unsubscribe = bus.on("enqueued", (orders) => this.wake(orders));
  }

  claim(claimer: Claimer, slots: number): void {
    const claim = this.claims.get(claimer) ?? { want: 0, running: false, again: false, hints: [] };
    claim.want += slots;
    this.claims.set(claimer, claim);
    void this.run(claimer, claim);
  }

  /** Claims again for every agent with an open claim: after a wake-up may have been missed. */
  sweep(): void {
    for (const [claimer, claim] of this.claims) if (claim.want > 0) void this.run(claimer, claim);
  }

  remove(claimer: Claimer): void {
    this.claims.delete(claimer);
  }

  stop(): void {
    this.unsubscribe();
    this.claims.clear();
  }

  private wake(orders: Enqueued[]): void {
    const budget = new Map<Claimer, number>();
    for (const order of orders) {
      const claimer = this.pick(order, budget);
      if (!claimer) continue;
      budget.set(claimer, (budget.get(claimer) ?? 0) + 1);
      this.claims.get(claimer)!.hints.push(order);
    }
    for (const claimer of budget.keys()) void this.run(claimer, this.claims.get(claimer)!);
  }

  /** A waiting agent that may run the order and has a slot not yet promised in this wake-up. */
  private pick(order: Enqueued, budget: Map<Claimer, number>): Claimer | undefined {
    for (const [claimer, claim] of this.claims) {
      if (claim.want <= (budget.get(claimer) ?? 0) || !mayRun(claimer.claimant, order)) continue;
      // Rotate so that wake-ups spread over the waiting agents.
      this.claims.delete(claimer);
      this.claims.set(claimer, claim);
      return claimer;
    }
    return undefined;
  }

  private async run(claimer: Claimer, claim: Claim): Promise<void> {
    if (claim.running) {
      claim.again = true;
      return;
    }
    claim.running = true;
    try {
      do {
        claim.again = false;
        await this.claimOnce(claimer, claim);
      } while (claim.again && claim.want > 0 && this.claims.get(claimer) === claim);
    } catch (error) {
      this.onError(error);
      // The claim stays open; try it again, as no wake-up may come for work already waiting.
      setTimeout(() => this.claims.get(claimer) === claim && void this.run(claimer, claim), RETRY_MS).unref();
    } finally {
      claim.running = false;
    }
  }

  private async claimOnce(claimer: Claimer, claim: Claim): Promise<void> {
    const hints = claim.hints.splice(0);
    if (claim.want === 0) return this.wake(hints);
    const jobs = await workOrderClaim(this.db, claimer.claimant, claim.want);
    if (this.claims.get(claimer) !== claim) {
      // The agent left while we claimed: its jobs stay claimed until it is back or they are reaped.
      if (jobs.length > 0) claimer.assign(jobs);
      return;
    }
    claim.want -= jobs.length;
    if (jobs.length > 0) {
      claimer.assign(jobs);
      for (const job of jobs) this.bus.emit("changed", job.workOrderId);
    }
    if (claim.want === 0) {
      const taken = new Set(jobs.map((j) => j.workOrderId));
      const missed = hints.filter((order) => !taken.has(order.id));
      if (missed.length > 0) this.wake(missed);
    }
  }
}

function mayRun(agent: Claimant, order: Enqueued): boolean {
  if (order.targetAgent !== null) return order.targetAgent === agent.name;
  return agent.queueMode && matchesSelector(order.selector, agent.labels);
}
