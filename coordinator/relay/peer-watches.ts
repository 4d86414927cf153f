// The work orders other coordinators watch (have log followers on), as each has said: a change
// is relayed only where some other coordinator watches.
import type { Message } from "./pack.ts";

/** `complete`: it has said all it watches (a reset), not only changes to it. */
type Peer = { ids: Set<string>; complete: boolean; lastHeard: number };

export class PeerWatches {
  private readonly peers = new Map<string, Peer>();
  /** How many peers watch each work order. */
  private readonly watchers = new Map<string, number>();

  /** Whether `name` has said all it watches. */
  knows(name: string): boolean {
    return this.peers.get(name)?.complete ?? false;
  }

  watched(workOrderId: string): boolean {
    return this.watchers.has(workOrderId);
  }

  /** Applies what a peer said (`heard`: a count of notifications received); returns the work orders it began watching. */
  apply(message: Message, heard: number): string[] {
    let peer = this.peers.get(message.from);
    if (!peer) this.peers.set(message.from, (peer = { ids: new Set(), complete: false, lastHeard: heard }));
    peer.lastHeard = heard;
    if (message.reset) {
      for (const id of peer.ids) this.remove(peer, id);
      peer.complete = true;
    }
    for (const id of message.watch ?? []) this.add(peer, id);
    for (const id of message.unwatch ?? []) this.remove(peer, id);
    return message.watch ?? [];
  }

  /** Forgets the peers not among `listening` that have not been heard from since notification `heard`. */
  keepOnly(listening: Set<string>, heard: number): void {
    for (const [name, peer] of this.peers) {
      if (listening.has(name) || peer.lastHeard > heard) continue;
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
