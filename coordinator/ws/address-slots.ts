// Sockets not yet past their hello, counted by client address. Each may be held up to the hello
// timeout by a client that sends no token at all; without a bound per address, one such client
// could hold every descriptor the process may open, and no agent could get in.

export class AddressSlots {
  private readonly held = new Map<string, number>();

  constructor(private readonly max: number) {}

  /** Takes one of `address`'s slots: the function that gives it back (once), or undefined if none is left. */
  take(address: string): (() => void) | undefined {
    const held = this.held.get(address) ?? 0;
    if (held >= this.max) return undefined;
    this.held.set(address, held + 1);
    let given = false;
    return () => {
      if (given) return;
      given = true;
      const left = this.held.get(address)! - 1;
      if (left === 0) this.held.delete(address);
      else this.held.set(address, left);
    };
  }
}
