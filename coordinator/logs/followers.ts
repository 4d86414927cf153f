// Log followers open at once, up to a bound: each holds a connection, and looks at the database
// whenever its work order changes and every 15 s besides.
export const DEFAULT_MAX_FOLLOWERS = 5_000;

export class Followers {
  private open = 0;

  constructor(readonly max: number) {}

  /** Takes a place; false when every place is taken. */
  enter(): boolean {
    if (this.open >= this.max) return false;
    this.open++;
    return true;
  }

  leave(): void {
    this.open--;
  }
}
