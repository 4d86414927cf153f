// The work orders other coordinators watch (have log followers on), as each has said: a change
// is relayed only where some other coordinator watches.
import type { Message } from "./pack.ts";

type Peer = { ids: Set<string>; firstHeard: number };

export class PeerWatches {
  private readonly peers = new Map<string, Peer>();
  /** How many peers watch each work order. */
  private readonly watchers = new Map<string, number>();

  /** Whether `name` has said what it watches. */
  knows(name: string): boolean {
    return this.peers.has(name);
  }

  watched(workOrderId: string): boolean {
    return this.watchers.has(workOrderId);
  }

  /** Applies what a peer said (`heard`: a count of notifications received); returns the work orders it began watching. */
  apply(message: Message, heard: number): string[] {
    let peer = this.peers.get(message.from);
    if (!peer) this.peers.set(message.from, (peer = { ids: new Set(), firstHeard: heard }));
    if (message.reset) for (const id of peer.ids) this.remove(peer, id);
    for (const id of message.watch ?? []) this.add(peer, id);
    for (const id of message.unwatch ?? []) this.remove(peer, id);
    return message.watch ?? [];
  }

  /** Forgets the peers heard before notification `heard` that are no longer among `listening`. */
  keepOnly(listening: Set<string>, heard: number): void {
    for (const [name, peer] of this.peers) {
      if (listening.has(name) || peer.firstHeard > heard) continue;
      for (const id of peer.ids) this.remove(peer, id);
      this.peers.delete(name);
    }
  }

  private add(peer: Peer, id: string): void {
    if (peer.ids.has(id)) return;
    peer.ids.add(id);
    this.watchers.set(id, (this.watchers.get(id) ?? 0) + 1);
  }

  private remove(peer: Peer, id: string): void {
    if (!peer.ids.delete(id)) return;
    const left = this.watchers.get(id)! - 1;
    if (left === 0) this.watchers.delete(id);
    else this.watchers.set(id, left);
  }
}
