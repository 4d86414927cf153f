// A time no later than the oldest lease start among the agents registered here, so that the hub's
// watchdog looks over every session only once some lease may have gone overdue, and not each
// second: with 20,000 idle agents, that pass was a third of the coordinator's heartbeat CPU.

export class LeaseFloor {
  private floor = Infinity;
  private joins = 0;

  /** A session was registered with a lease set at `leaseFrom`. */
  joined(leaseFrom: number): void {
    this.joins++;
    this.floor = Math.min(this.floor, leaseFrom);
  }

  /** Taken as a renewal of every session registered now begins; handed back to `renewed`. */
  mark(): number {
    return this.joins;
  }

  /**
   * The renewal marked `mark`, begun at `started`, succeeded. Unless a session joined since (its
   * lease may be older than `started`, and it was not renewed), no lease is older than `started`.
   */
  renewed(mark: number, started: number): void {
    if (mark === this.joins) this.floor = Math.max(this.floor, started);
  }

  /** No lease here started before this (Infinity: none is held). */
  get oldest(): number {
    return this.floor;
  }

  /** After a look at every session: the oldest lease start among those left (Infinity: none). */
  reset(oldest: number): void {
    this.floor = oldest;
  }
}
