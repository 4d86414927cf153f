// Both ends send several frames in one turn of the event loop (a job's start, end and the next
// claim; the acknowledgements of one batch). Each frame is otherwise its own socket write, one
// system call; holding them in the TCP socket until the turn ends sends them in one.
import type { Socket } from "node:net";
import type { WebSocket } from "ws";

export class TurnCork {
  private corked = false;

  /** Whether writes are held for this turn: some were made in it already. */
  get holding(): boolean {
    return this.corked;
  }

  /** Holds `socket`'s writes until the current turn ends. */
  hold(socket: WebSocket): void {
    // `_socket` is ws's own handle on the TCP socket.
    const tcp = (socket as unknown as { _socket?: Socket })._socket;
    if (!tcp || this.corked) return;
    this.corked = true;
    tcp.cork();
    process.nextTick(() => {
      this.corked = false;
      tcp.uncork();
    });
  }
}
