// Carries bus events between coordinators over Postgres LISTEN/NOTIFY. Events are gathered for a
// few milliseconds and sent as few notifications as fit (a NOTIFY per event would serialise
// commits); each coordinator drops its own. Where a notification may have been missed (the
// listening connection was re-established, or is lost and not yet back, or a listener went away,
// perhaps with wake-ups it had not sent yet), `onResync` lets the dispatcher look again.
// A coordinator alone on its database sends nothing. A starting one says `hello`; one that
// starts relaying then (or finds a listener it did not know of) sends `welcome`, and whoever hears
// it looks again for what was not relayed before. Every few seconds a relay looks for listeners
// other than itself, and stops sending once there are none. A replica of an earlier version says
// no hello: it is found by that look, and the welcome's wake-up without a selector makes its
// queue-mode agents look again.
// A work order's changes matter only to log followers, so they go only to the coordinators that
// say they watch it, and to all while a listener may be there that has not said (an earlier
// version, or one not yet heard from).
import { type Bus, type Enqueued, type Events, EVERY_QUEUE } from "../bus.ts";
import { type Message, type Outgoing, pack, type Wire } from "./pack.ts";
import { PeerWatches } from "./peer-watches.ts";

export const CHANNEL = "jobfleet";
const GATHER_MS = 5;
const CHECK_EVERY_MS = 10_000;
/** How often a coordinator looks while it may have lost its listening session (then looking for work itself too). */
const DEAF_EVERY_MS = 1_000;
/** After a failed notification, what is left is sent again this much later. */
const RETRY_MS = 1_000;

export type Listener = {
  /** This coordinator's name among the database's sessions, unique to it: its notifications are signed with it. */
  readonly name: string;
  listen(channel: string, onPayload: (payload: string) => void, onListen: () => void): Promise<() => Promise<void>>;
  /** Sends the payloads in order, in one statement and one commit. */
  notify(channel: string, payloads: string[]): Promise<void>;
  /**
   * `others`: the names of the other sessions listening on the channel, "" for one that cannot be
   * named (or when none can be told); `self`: whether this coordinator's own listening session is there.
   */
  listening(channel: string): Promise<{ self: boolean; others: string[] }>;
};

export class Relay {
  readonly id: string;
  private readonly ownPrefix: string;
  private pending: Wire[] = [];
  /** Work orders with a `changed` event already pending: one per flush says as much as many. */
  private changed = new Set<string>();
  /** Work orders this coordinator began (true) or stopped (false) watching since the last flush. */
  private watchChanges = new Map<string, boolean>();
  /** The next flush says everything this coordinator watches, not what changed. */
  private resetDue = false;
  /** The next flush says hello: the others answer with all they watch. */
  private helloDue = false;
  /** When this one last said hello. */
  private helloAt = 0;
  /** The other listeners the last look found. */
  private found = new Set<string>();
  private readonly peers = new PeerWatches();
  /** Every change is relayed while a listener may be there that has not said what it watches. */
  private relayAll = true;
  private timer?: NodeJS.Timeout;
  private checker?: NodeJS.Timeout;
  /** Looks every second, while this coordinator's listening session is gone or its database cannot say. */
  private deafChecker?: NodeJS.Timeout;
  private unlisten?: () => Promise<void>;
  private first = true;
  /** Whether another coordinator may be listening: only then are events sent. */
  private others = true;
  /** Bumped by every notification from another coordinator, so a look begun before it cannot undo what it proved. */
  private heard = 0;
  /** Bumped by every notification from a coordinator that has not said all it watches (an earlier version, or one whose list was missed). */
  private heardUnknown = 0;
  /** Notifications leave one statement at a time, so that they arrive in the order they were made. */
  private sending: Promise<void> = Promise.resolve();
  /** The flush under way: what gathers meanwhile goes in one statement after it, not one each. */
  private flushing?: Promise<void>;
  private stopped = false;
  /** Greetings and looks under way, which a stop waits for. */
  private readonly underway = new Set<Promise<void>>();

  constructor(
    private readonly bus: Bus,
    private readonly db: Listener,
    private readonly onResync: () => void,
    private readonly onError: (error: unknown) => void,
    private readonly timing: { checkEveryMs?: number; gatherMs?: number; deafEveryMs?: number } = {},
  ) {
    this.id = db.name;
    this.ownPrefix = `{"from":${JSON.stringify(this.id)},`;
  }

  async start(): Promise<void> {
    this.unlisten = await this.db.listen(CHANNEL, (payload) => this.receive(payload), () => this.listening());
    this.checker = setInterval(() => this.underway.size === 0 && this.track(this.look()), this.timing.checkEveryMs ?? CHECK_EVERY_MS).unref();
    this.bus.publish = (event, args) => {
      if (!this.others) return;
      if (event === "changed") {
        const id = (args as Events["changed"])[0];
        if (this.changed.has(id) || !(this.relayAll || this.peers.watched(id))) return;
        this.changed.add(id);
      }
      this.pending.push([event, args] as Wire);
      this.schedule();
    };
    this.bus.onWatch = (id, watching) => {
      if (!this.others) return;
      this.watchChanges.set(id, watching);
      this.schedule();
    };
    await this.greet();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.bus.publish = undefined;
    this.bus.onWatch = undefined;
    clearTimeout(this.timer);
    clearInterval(this.checker);
    this.looksOften(false);
    await Promise.all(this.underway);
    await this.flush();
    await this.sending;
    await this.unlisten?.();
  }

  private track(work: Promise<void>): void {
    const settled = work.catch(this.onError).finally(() => this.underway.delete(settled));
    this.underway.add(settled);
  }

  private schedule(): void {
    this.timer ??= setTimeout(() => void this.flush(), this.timing.gatherMs ?? GATHER_MS);
  }

  private send(out: Outgoing): Promise<void> {
    const payloads = pack(this.id, out, ([name]) => this.onError(new Error(`relay: a ${name} event too large to notify, not sent`)));
    const sent = this.sending.then(() => (payloads.length > 0 ? this.db.notify(CHANNEL, payloads) : undefined));
    this.sending = sent.catch(() => {});
    return sent;
  }

  private listening(): void {
    if (this.stopped) return;
    this.looksOften(false);
    if (!this.first) {
      this.onResync();
      // Others may have stopped sending while this one could not be seen listening.
      this.track(this.greet());
    }
    this.first = false;
  }

  /** Says hello, with what it watches, so that coordinators that send nothing start now; then looks for listeners. */
  private async greet(): Promise<void> {
    this.hello();
    // Not awaited: under steady traffic the flush goes on, and the look must not wait for it.
    void this.flush();
    await this.look();
  }

  private hello(): void {
    this.helloDue = true;
    this.resetDue = true;
    this.helloAt = Date.now();
  }

  /** Says all this coordinator watches, in place of the changes not yet sent. */
  private everythingWatched(): Pick<Outgoing, "reset" | "watch"> {
    this.resetDue = false;
    this.watchChanges.clear();
    return { reset: true, watch: this.bus.watched() };
  }

  private async look(): Promise<void> {
    const [heard, heardUnknown] = [this.heard, this.heardUnknown];
    const { self, others: listening } = await this.db.listening(CHANNEL).catch((error) => {
      // The server may be down, and the listening session with it: once it is back, this knows soon.
      this.looksOften(!this.stopped);
      throw error;
    });
    // What the others notify is missed until postgres-js listens again, with a backoff that grows to
    // 20 s, and for ever while the server refuses it (at its connection limit, say): meanwhile the
    // dispatcher looks for itself, every look, and `listening` resyncs once it is back.
    const deaf = !self && !this.stopped;
    this.looksOften(deaf);
    if (deaf) this.onResync();
    const before = this.found;
    this.found = new Set(listening);
    // One gone may have died with wake-ups gathered and not sent, for work it had committed. Not
    // the unnamed: any session of another role is one, and their comings and goings say nothing.
    if ([...before].some((name) => name !== "" && !this.found.has(name))) this.onResync();
    this.peers.keepOnly(this.found, heard);
    if (this.heardUnknown === heardUnknown) this.relayAll = listening.some((name) => !this.peers.knows(name));
    if (this.heard === heard) this.sendingTo(listening.length > 0);
    // What this one watches did not reach the others: say it all again.
    if (this.resetDue && this.others) this.schedule();
  }

  private looksOften(often: boolean): void {
    if (!often) {
      clearInterval(this.deafChecker);
      this.deafChecker = undefined;
      return;
    }
    const every = this.timing.deafEveryMs ?? DEAF_EVERY_MS;
    this.deafChecker ??= setInterval(() => this.underway.size === 0 && this.track(this.look()), every).unref();
  }

  private sendingTo(others: boolean): void {
    const starting = others && !this.others;
    this.others = others;
    if (starting) this.track(this.welcome());
  }

  /**
   * What was not sent before now, the others look for themselves, and they learn what this one
   * watches; if they cannot be told, the next look tries again.
   */
  private async welcome(): Promise<void> {
    const everyone: Wire = ["enqueued", [[EVERY_QUEUE]]];
    try {
      await this.send({ events: [everyone], welcome: true, ...this.everythingWatched() });
    } catch (error) {
      this.others = false;
      throw error;
    }
  }

  /** Sends what gathered; a flush under way sends it once it is done. Resolves once nothing is left. */
  private flush(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    const gathered = () => this.pending.length > 0 || this.watchChanges.size > 0 || this.resetDue;
    if (this.flushing || !gathered()) return this.flushing ?? Promise.resolve();
    // Begins with an await, so the `finally` cannot run before the assignment.
    this.flushing = (async () => {
      try {
        do {
          const out = this.take();
          // One commit for the whole flush: a commit per notification was 40% of the commits of a busy fleet.
          const failed = await this.send(out).then(
            () => false,
            (error) => (this.onError(error), true),
          );
          if (failed) return this.failed(out);
        } while (gathered());
      } finally {
        this.flushing = undefined;
      }
    })();
    return this.flushing;
  }

  /**
   * The others may have missed what this one watches, the changes it answered a watch with, and the
   * wake-ups it carried, which nothing else would send them: all it watches, its hello, the changes
   * and the wake-ups are sent again a little later (a wake-up heard twice costs a claim round).
   * Cancels are sent again by the lease renewals of the coordinator holding the agent.
   */
  private failed(out: Outgoing): void {
    this.resetDue = true;
    this.helloDue ||= out.hello === true;
    const again = out.events.filter((event) => {
      if (event[0] === "enqueued") return true;
      if (event[0] !== "changed" || this.changed.has(event[1][0])) return false;
      this.changed.add(event[1][0]);
      return true;
    });
    this.pending = [...again, ...this.pending];
    if (!this.stopped) this.timer ??= setTimeout(() => void this.flush(), RETRY_MS);
  }

  /** What gathered since the last flush, taken to send. */
  private take(): Outgoing {
    const changes = [...this.watchChanges];
    const watches = this.resetDue
      ? this.everythingWatched()
      : { watch: changes.flatMap(([id, on]) => (on ? [id] : [])), unwatch: changes.flatMap(([id, on]) => (on ? [] : [id])) };
    const out: Outgoing = { events: this.pending, ...watches, ...(this.helloDue && { hello: true }) };
    this.helloDue = false;
    this.pending = [];
    this.changed.clear();
    this.watchChanges.clear();
    return out;
  }

  private receive(payload: string): void {
    // Every coordinator hears its own notifications too; those are dropped unparsed.
    if (this.stopped || payload.startsWith(this.ownPrefix)) return;
    let parsed: Message;
    try {
      parsed = JSON.parse(payload);
    } catch (error) {
      return this.onError(error);
    }
    if (parsed.from === this.id) return;
    this.heard++;
    this.sendingTo(true);
    if (parsed.watch) this.watchedBy(parsed);
    else this.unknown();
    if (parsed.hello) {
      this.resetDue = true;
      this.schedule();
    }
    if (parsed.welcome) this.onResync();
    this.deliver(parsed.events);
  }

  /**
   * Hands the events to this coordinator's listeners in order, a run of wake-ups as one: the
   * dispatcher looks over its groups once per wake-up, and a bulk enqueue comes an order per event.
   */
  private deliver(events: Wire[]): void {
    let orders: Enqueued[] = [];
    const wake = () => {
      if (orders.length > 0) this.bus.deliver("enqueued", orders);
      orders = [];
    };
    for (const [name, args] of events) {
      if (name === "enqueued") {
        orders.push(...(args as Events["enqueued"])[0]);
        continue;
      }
      wake();
      this.bus.deliver(name, ...(args as Events[typeof name]));
    }
    wake();
  }

  /**
   * Takes in what a peer watches. Each work order it begins watching is answered with a change, sent
   * once its changes are being relayed: the peer's followers look again then, and so miss none.
   */
  private watchedBy(message: Message): void {
    const known = this.peers.knows(message.from);
    for (const id of this.peers.apply(message, this.heard)) this.bus.publish?.("changed", [id]);
    if (!this.peers.knows(message.from)) {
      this.unknown();
      // Its list was missed (this one was not listening when it was said): it is asked to say it
      // again, unless a hello went out lately, or it cannot be named (then every change goes to it anyway).
      if (this.found.has(message.from) && Date.now() - this.helloAt >= (this.timing.checkEveryMs ?? CHECK_EVERY_MS)) {
        this.hello();
        this.schedule();
      }
    } else if (!known && this.relayAll && this.underway.size === 0) {
      // The look that counted this peer as unknown can be undone now, not in a few seconds.
      this.track(this.look());
    }
  }

  /** A coordinator that has not said all it watches is there: every change goes out. */
  private unknown(): void {
    this.heardUnknown++;
    this.relayAll = true;
  }
}
