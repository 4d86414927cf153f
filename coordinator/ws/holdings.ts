// What one agent session holds: the jobs assigned to it (or listed at its welcome) that it has
// not yet said it finished, and the slots of its claim not yet filled. Together they never pass
// its capacity plus its prefetch, so an agent cannot take more work than it declared. A claim that
// would pass the limit is kept owing rather than refused: an agent's `claim` can overtake the
// `job.finished` that freed its slot (job messages wait in its outbox while its socket is
// congested; claims do not), and the slot is granted once that finish arrives.
// A finish frees its slot as it is read, before the database has applied it, so that the next
// claim need not wait for a commit. One that is then not applied gives its job back, and from then
// on the session's finishes free their slots only once applied: an agent wins jobs beyond its limit
// only by the finishes not applied that it sent before the first of them was answered, one each.
export class Holdings {
  private readonly held = new Set<string>();
  private open = 0;
  private owed = 0;
  /** Finishes whose slots were freed as they were read, while they are being applied. */
  private readonly early = new Set<string>();
  /** Set once such a finish was not applied. */
  private wary = false;

  constructor(private readonly limit: number) {}

  /** The jobs the coordinator lists as the agent's at its welcome. */
  welcome(jobIds: Iterable<string>): void {
    for (const id of jobIds) this.held.add(id);
  }

  holds(jobId: string): boolean {
    return this.held.has(jobId);
  }

  /**
   * Whether a finish of `jobId` counts: the job is held, or a finish of it freed its slot and is
   * still being applied (a copy sent again meanwhile settles after it, and may be the one applied).
   */
  finishing(jobId: string): boolean {
    return this.held.has(jobId) || this.early.has(jobId);
  }

  /** Slots to claim now for a claim of `slots`; the rest, up to the limit, is owed. */
  claim(slots: number): number {
    const granted = Math.max(0, Math.min(slots, this.room));
    this.owed = Math.min(this.owed + slots - granted, this.limit);
    this.open += granted;
    return granted;
  }

  assigned(jobIds: string[]): void {
    for (const id of jobIds) this.held.add(id);
    this.open = Math.max(0, this.open - jobIds.length);
  }

  /** The agent says it finished `jobId`; returns the owed slots that fit now. */
  finished(jobId: string): number {
    if (this.wary || !this.held.delete(jobId)) return 0;
    this.early.add(jobId);
    return this.grant();
  }

  /**
   * The finish of `jobId` was answered: `ended`, the job is over (this finish or one before it was
   * applied); else it runs on, and is the agent's again. Returns the owed slots that fit now.
   */
  settled(jobId: string, ended: boolean): number {
    if (this.early.delete(jobId)) {
      if (!ended) this.held.add(jobId);
      this.wary ||= !ended;
      return 0;
    }
    return ended && this.held.delete(jobId) ? this.grant() : 0;
  }

  /** The agent withdrew its claim. */
  drain(): void {
    this.open = 0;
    this.owed = 0;
  }

  private grant(): number {
    // Room is below zero while the jobs listed at a welcome pass a limit cut since.
    const granted = Math.max(0, Math.min(this.owed, this.room));
    this.owed -= granted;
    this.open += granted;
    return granted;
  }

  private get room(): number {
    return this.limit - this.held.size - this.open;
  }
}
