// Fills agents' open claims. An agent's `claim(n)` adds n slots to its claim, served at once from
// the pending pool; what stays open is filled the moment a matching work order is enqueued.
// Agents that share labels and mode form a group, and one claim statement serves many open slots
// of a group, so a busy fleet of like agents costs one statement per round, not one per agent.
// A round reserves the slots it claims for; slots that open meanwhile go to the next round.
// Once a round comes back short, the pool holds nothing more for the group, and until a wake-up
// says otherwise a round asks only for slots claimed since (a large idle fleet is not asked for
// again and again). A wake-up claims only for groups that may run a new work order, one group per
// order; if that group's claim came back full without the order, the next matching group gets it
// (and a group that had no room for it is no longer quiet).
// While the orders woken for are all the group can have gained since it came back short, a round
// asks for as many slots as they are, from the members waiting longest, not for every member.
// A group whose round came back short, with nothing arrived since, is quiet: the pool holds
// nothing it may run (but what rounds in flight lock), so a single order it may run is best
// created claimed for its member waiting longest (`hold`), with no wake-up and no claim round.
import type { Assignment } from "../../protocol/messages.ts";
import { formatSelector, matchesSelector, type Selector } from "../../protocol/selector.ts";
import type { Bus, Enqueued } from "../bus.ts";
import type { Database } from "../db/database.ts";
import { mayHaveCommitted } from "../db/unavailable.ts";
import { type Claimant, type Eligibility, type GroupAssignment, workOrdersClaim } from "../sql/work-order-claim.ts";

export interface Claimer {
  readonly claimant: Claimant;
  /** Hands the agent its jobs; once its socket has gone, back to the queue. */
  assign(jobs: Assignment[]): void;
  /**
   * A claim for it may have committed unseen (the database went away before answering), so the
   * database may hold jobs for its agent that the agent was never given: the agent reconnects
   * (from whichever session it has now), and its welcome, which lists them, settles it.
   */
  resync(): void;
}

const RETRY_MS = 1000;
/**
 * Statements a group may have in flight at once. A claim waits for its commit to reach disk; while
 * one round waits, slots freed meanwhile are claimed by the next instead of queueing behind it.
 */
const MAX_ROUNDS = 3;
/** Slots one round asks for at most; the rest of a large group waits for the next round. */
const MAX_ROUND_SLOTS = 1000;

type Member = {
  /** Open slots not reserved by a round in flight. */
  want: number;
  /** Slots reserved by rounds in flight. */
  reserved: number;
};

/** A slot held for an order about to be created claimed for `agentId`. */
export type Hold = {
  readonly agentId: string;
  /** The order was created claimed: its job goes to the agent. */
  assign(job: Assignment): void;
  /** It was not: the slot is open again. */
  release(): void;
  /** No telling whether it was (the database went away before answering): see `Claimer.resync`. */
  resync(): void;
};

/** The groups that may run a selector, in the order this wake-up offers them its orders. */
type Candidates = { groups: Group[]; next: number };

type Group = {
  key: string;
  eligibility: Eligibility;
  members: Map<Claimer, Member>;
  /** Members with open slots, longest waiting first: a round costs the slots it asks for, not the group's size. */
  waiting: Set<Claimer>;
  /** Members that claimed slots since they were last in a round. */
  fresh: Set<Claimer>;
  /** The members by agent name (a reconnected agent may briefly have two sessions). */
  byName: Map<string, Set<Claimer>>;
  /** The members' wants added up. */
  open: number;
  /** Claim statements in flight for the group. */
  rounds: number;
  scheduled: boolean;
  again: boolean;
  hints: Enqueued[];
  /** Bumped by every wake-up and sweep: work may have arrived that no round looked for. */
  generation: number;
  /** The generation in which a round came back short. */
  dryAt: number;
  /** Since the group came back short, work can have arrived for it only as the orders hinted to it. */
  counted: boolean;
};

export class Dispatcher {
  private readonly groups = new Map<string, Group>();
  /** The group of each agent by name, for work addressed to one agent (work-order mode). */
  private readonly named = new Map<string, Group>();
  /** The group of each member session, so a claim finds it without working out its key. */
  private readonly memberOf = new Map<Claimer, Group>();
  private readonly unsubscribe: () => void;

  constructor(
    private readonly db: Database,
    private readonly bus: Bus,
    private readonly onError: (error: unknown) => void,
  ) {
    this.unsubscribe = bus.on("enqueued", (orders) => this.wake(orders));
  }

  claim(claimer: Claimer, slots: number): void {
    const group = this.memberOf.get(claimer) ?? this.groupOf(claimer);
    this.memberOf.set(claimer, group);
    const member = group.members.get(claimer) ?? { want: 0, reserved: 0 };
    member.want += slots;
    group.open += slots;
    group.members.set(claimer, member);
    group.waiting.add(claimer);
    group.fresh.add(claimer);
    const { name } = claimer.claimant;
    const sessions = group.byName.get(name) ?? new Set();
    group.byName.set(name, sessions.add(claimer));
    this.named.set(name, group);
    this.schedule(group);
  }

  /**
   * A slot for each queue order (by index; none for addressed ones or where no quiet group may run
   * it), taken from the member of a quiet group that has waited longest.
   */
  hold(orders: readonly { selector: Selector; agent?: string }[]): (Hold | undefined)[] {
    const quiet = [...this.groups.values()].filter((g) => g.dryAt === g.generation);
    if (quiet.length === 0) return orders.map(() => undefined);
    const candidates = new Map<string, Group[]>();
    return orders.map(({ selector, agent }) => {
      if (agent !== undefined) return undefined;
      const key = formatSelector(selector);
      let groups = candidates.get(key);
      if (!groups) candidates.set(key, (groups = quiet.filter((g) => mayRun(g, selector))));
      const group = groups.find((g) => g.open > 0);
      return group && this.holdIn(group);
    });
  }

  private holdIn(group: Group): Hold {
    const claimer: Claimer = group.waiting.values().next().value!;
    const member = group.members.get(claimer)!;
    member.want--;
    group.open--;
    if (member.want === 0) {
      group.waiting.delete(claimer);
      group.fresh.delete(claimer);
    }
    // The holds of later batches start with other groups.
    this.groups.delete(group.key);
    this.groups.set(group.key, group);
    return {
      agentId: claimer.claimant.agentId,
      assign: (job) => claimer.assign([job]),
      // A wake-up that came while the slot was held may have found no room: the member looks again.
      release: () => {
        this.giveBack(group, claimer, member, 1, true);
        if (this.isLive(group)) this.schedule(group);
      },
      resync: () => claimer.resync(),
    };
  }

  /** Claims again for every group with open slots: after a wake-up may have been missed. */
  sweep(): void {
    for (const group of this.groups.values()) if (group.open > 0 || group.rounds > 0) this.stale(group);
  }

  remove(claimer: Claimer): void {
    const group = this.memberOf.get(claimer);
    if (!group) return;
    this.memberOf.delete(claimer);
    group.open -= group.members.get(claimer)?.want ?? 0;
    group.members.delete(claimer);
    group.waiting.delete(claimer);
    group.fresh.delete(claimer);
    const { name } = claimer.claimant;
    const sessions = group.byName.get(name);
    sessions?.delete(claimer);
    if (sessions?.size === 0) {
      group.byName.delete(name);
      // A reconnected agent may already have a newer session in another group.
      if (this.named.get(name) === group) this.named.delete(name);
    }
    if (group.members.size === 0) this.groups.delete(group.key);
    this.unpark(group);
  }

  stop(): void {
    this.unsubscribe();
    this.groups.clear();
    this.named.clear();
    this.memberOf.clear();
  }

  private groupOf(claimer: Claimer): Group {
    const key = groupKey(claimer.claimant);
    let group = this.groups.get(key);
    if (!group) {
      const { labels, queueMode } = claimer.claimant;
      group = {
        key,
        eligibility: { labels, queueMode },
        members: new Map(),
        waiting: new Set(),
        fresh: new Set(),
        byName: new Map(),
        open: 0,
        rounds: 0,
        scheduled: false,
        again: false,
        hints: [],
        generation: 0,
        dryAt: -1,
        counted: false,
      };
      this.groups.set(key, group);
    }
    return group;
  }

  private wake(orders: Enqueued[]): void {
    // An order relayed without its selector may be for any queue-mode group: all with slots look.
    if (orders.some((o) => o.selector === null && o.targetAgent === null)) {
      for (const group of this.groups.values()) if (group.eligibility.queueMode && (group.open > 0 || group.rounds > 0)) this.stale(group);
    }
    const budget = new Map<Group, number>();
    const candidates = new Map<string, Candidates>();
    for (const order of orders) {
      const group = this.pick(order, budget, candidates);
      if (!group) continue;
      budget.set(group, (budget.get(group) ?? 0) + 1);
      group.hints.push(order);
    }
    for (const group of budget.keys()) this.stale(group, true);
  }

  /**
   * A group that may run the order and has a slot not yet promised in this wake-up. The groups
   * that may run a selector are found once per wake-up and taken in turn, so a bulk enqueue costs
   * its orders plus its selectors times the groups, not its orders times the groups.
   */
  private pick(order: Enqueued, budget: Map<Group, number>, candidates: Map<string, Candidates>): Group | undefined {
    if (order.targetAgent !== null) {
      const group = this.named.get(order.targetAgent);
      return group && this.hasRoom(group, budget) ? group : undefined;
    }
    const { selector } = order;
    if (selector === null) return undefined;
    const key = formatSelector(selector);
    let turn = candidates.get(key);
    if (!turn) {
      const groups = [...this.groups.values()].filter((g) => mayRun(g, selector));
      turn = { groups, next: 0 };
      candidates.set(key, turn);
    }
    while (turn.next < turn.groups.length) {
      const group = turn.groups[turn.next++]!;
      // Without room it is out for the rest of this wake-up; with room it goes to the back of the turn.
      if (!this.hasRoom(group, budget)) continue;
      turn.groups.push(group);
      // Later wake-ups start with other groups.
      this.groups.delete(group.key);
      this.groups.set(group.key, group);
      return group;
    }
    return undefined;
  }

  /**
   * Whether the group has a slot not yet promised in this wake-up. If not, and its slots are all in
   * a round that may have looked before the order was there, it is told to look again; with no
   * round, it is no longer quiet, and the round its next slot brings looks at everything.
   */
  private hasRoom(group: Group, budget: Map<Group, number>): boolean {
    if (group.open > (budget.get(group) ?? 0)) return true;
    if (group.rounds > 0) this.stale(group);
    else {
      group.generation++;
      group.counted = false;
    }
    return false;
  }

  /** Work may have arrived that the group's rounds so far have not seen; `hinted`: only the orders in its hints. */
  private stale(group: Group, hinted = false): void {
    group.generation++;
    group.again = true;
    if (!hinted) group.counted = false;
    this.schedule(group);
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
      } while (group.again && group.open > 0 && this.isLive(group));
    } catch (error) {
      this.onError(error);
      // The slots stay open; try again, as no wake-up may come for work already waiting.
      setTimeout(() => this.schedule(group), RETRY_MS).unref();
    } finally {
      group.rounds--;
      this.unpark(group);
    }
  }

  /**
   * Orders woken for wait in a group for its next round. A group left with no slot to take them and
   * no round to give any back (its agents left, or the last slots went to rounds that have ended)
   * would keep them from every other group that may run them: they are offered to those.
   */
  private unpark(group: Group): void {
    if (group.hints.length === 0 || (this.isLive(group) && (group.open > 0 || group.rounds > 0))) return;
    this.wake(group.hints.splice(0));
  }

  /**
   * The members a round asks for, and how many slots each; reserves those slots. Members that
   * work is addressed to come first; then, once the group came back short, fresh members, and
   * waiting ones only while the slots are fewer than the orders hinted (all that can be new).
   */
  private reserve(group: Group, hints: Enqueued[]): [Claimer, Member, number][] {
    const asking: [Claimer, Member, number][] = [];
    let total = 0;
    const take = (claimer: Claimer) => {
      const member = group.members.get(claimer)!;
      asking.push([claimer, member, member.want]);
      total += member.want;
      group.open -= member.want;
      member.reserved += member.want;
      member.want = 0;
      group.waiting.delete(claimer);
      group.fresh.delete(claimer);
    };
    for (const hint of hints) {
      if (hint.targetAgent === null) continue;
      const sessions = [...(group.byName.get(hint.targetAgent) ?? [])];
      const waiting = sessions.filter((claimer) => group.waiting.has(claimer));
      waiting.forEach(take);
      // Its agent's slots are all in a round under way, which may have looked before the order was
      // there: the round after that one asks the agent again.
      if (waiting.length === 0 && sessions.some((claimer) => group.members.get(claimer)!.reserved > 0)) group.hints.push(hint);
    }
    const takeFrom = (claimers: Set<Claimer>, wanted: number) => {
      for (const claimer of claimers) {
        if (total >= wanted) break;
        if (total >= MAX_ROUND_SLOTS) {
          // Left out for the cap only: another round must ask for them.
          group.again = true;
          break;
        }
        take(claimer);
      }
    };
    const dry = group.dryAt === group.generation;
    if (!dry && !group.counted) takeFrom(group.waiting, Infinity);
    else {
      takeFrom(group.fresh, Infinity);
      if (!dry) takeFrom(group.waiting, hints.length);
    }
    return asking;
  }

  private async round(group: Group): Promise<void> {
    const hints = group.hints.splice(0);
    const generation = group.generation;
    const counted = group.counted && group.dryAt !== generation;
    const asking = this.reserve(group, hints);
    if (asking.length === 0) return this.wake(hints);
    const members = asking.map(([c, , want]) => ({ agentId: c.claimant.agentId, name: c.claimant.name, want }));
    let claimed: GroupAssignment[];
    try {
      claimed = await workOrdersClaim(this.db.generic, group.eligibility, members);
    } catch (error) {
      for (const [claimer, member, want] of asking) {
        member.reserved -= want;
        this.giveBack(group, claimer, member, want, true);
      }
      // Its orders are still to be taken, and the rows it locked are back unannounced: no round may
      // call the group dry by counting hints until one has looked at everything.
      group.hints.unshift(...hints);
      group.counted = false;
      group.generation++;
      if (mayHaveCommitted(error)) for (const [claimer] of asking) claimer.resync();
      throw error;
    }
    const got = asking.map((): Assignment[] => []);
    for (const { agentId: _, member, ...job } of claimed) got[member]!.push(job);
    asking.forEach(([claimer, member, want], i) => {
      member.reserved -= want;
      const jobs = got[i]!;
      this.giveBack(group, claimer, member, want - jobs.length, false);
      if (jobs.length > 0) claimer.assign(jobs);
    });
    for (const job of claimed) this.bus.emit("changed", job.workOrderId);
    const asked = members.reduce((sum, m) => sum + m.want, 0);
    const taken = new Set(claimed.map((j) => j.workOrderId));
    const missed = hints.filter((order) => !taken.has(order.id));
    // Short: nothing more was there when it looked, unless something was enqueued since. Full: look
    // again, unless it took every order that can have arrived since the group last came back short.
    const short = claimed.length < asked;
    if ((short || (counted && missed.length === 0)) && group.generation === generation) {
      group.dryAt = generation;
      group.counted = true;
    } else {
      group.again = true;
      if (!short) group.counted &&= missed.length === 0;
    }
    // Passed over for other work: offered to the next group that may run them, which may be idle.
    if ((group.open === 0 || !short) && missed.length > 0) this.wake(missed);
  }

  /** Returns reserved slots a round did not fill, unless the member left meanwhile. */
  private giveBack(group: Group, claimer: Claimer, member: Member, slots: number, fresh: boolean): void {
    if (group.members.get(claimer) !== member) return;
    member.want += slots;
    group.open += slots;
    if (member.want > 0) group.waiting.add(claimer);
    if (fresh) group.fresh.add(claimer);
  }

  private isLive(group: Group): boolean {
    return this.groups.get(group.key) === group;
  }
}

/** Whether the group's agents may run a queue order with this selector. */
function mayRun(group: Group, selector: Selector): boolean {
  return group.eligibility.queueMode && matchesSelector(selector, group.eligibility.labels);
}

function groupKey({ labels, queueMode }: Eligibility): string {
  const sorted = Object.keys(labels)
    .sort()
    .map((key) => [key, labels[key]]);
  return JSON.stringify([queueMode, sorted]);
}
