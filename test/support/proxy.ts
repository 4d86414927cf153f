// A TCP proxy on loopback between a client and a server, to break the connections between them the
// ways networks do: cut (both ends see the close), refused for a while, silent (a half-open
// connection: nothing more arrives, and nobody is told), partitioned (silent both ways, each end's
// close kept from the other), or held (the client's bytes kept from the server until released, as
// by a server that stopped reading), or slow the client's bytes down.
import { connect, createServer, type Server, type Socket } from "node:net";

export class Proxy {
  private readonly pairs = new Set<[Socket, Socket]>();
  private readonly partitioned = new WeakSet<[Socket, Socket]>();
  /** The client's bytes kept from the server, by connection. */
  private readonly held = new Map<[Socket, Socket], Buffer[]>();
  private refusing = false;

  private constructor(
    private readonly server: Server,
    readonly port: number,
    private target: { host: string; port: number },
    private readonly clientBytesPerSecond?: number,
  ) {}

  /** `clientBytesPerSecond`: the client's bytes are passed on no faster (a slow link, a server that reads slowly). */
  static async to(target: { host: string; port: number }, { clientBytesPerSecond }: { clientBytesPerSecond?: number } = {}): Promise<Proxy> {
    const server = createServer();
    server.listen(0, "127.0.0.1");
    await new Promise((resolve) => server.once("listening", resolve));
    const proxy = new Proxy(server, (server.address() as { port: number }).port, target, clientBytesPerSecond);
    server.on("connection", (client) => proxy.accept(client));
    return proxy;
  }

  /** Sends new connections to another server from now on. */
  retarget(target: { host: string; port: number }): void {
    this.target = target;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** Connections made so far that are still open. */
  get open(): number {
    return this.pairs.size;
  }

  private accept(client: Socket): void {
    if (this.refusing) return void client.destroy();
    const server = connect(this.target.port, this.target.host);
    const pair: [Socket, Socket] = [client, server];
    this.pairs.add(pair);
    this.forward(client, server);
    server.pipe(client);
    const close = () => {
      if (this.partitioned.has(pair) || this.held.has(pair)) return;
      this.pairs.delete(pair);
      client.destroy();
      server.destroy();
    };
    client.on("close", close).on("error", close);
    server.on("close", close).on("error", close);
  }

  private forward(client: Socket, server: Socket): void {
    const rate = this.clientBytesPerSecond;
    if (rate === undefined) return void client.pipe(server);
    client.on("data", (chunk: Buffer) => {
      server.write(chunk);
      client.pause();
      setTimeout(() => client.resume(), (chunk.length / rate) * 1000);
    });
  }

  /** Closes every open connection; with `refuse`, new ones are closed at once until `allow`. */
  cut({ refuse = false } = {}): void {
    this.refusing = refuse;
    for (const [client, server] of this.pairs) {
      client.destroy();
      server.destroy();
    }
    this.pairs.clear();
  }

  /**
   * A network partition: no byte passes either way on open connections, and neither end is told
   * of the other's close; new connections are refused until `allow`. `cut` ends it.
   */
  partition(): void {
    this.refusing = true;
    for (const pair of this.pairs) {
      const [client, server] = pair;
      this.partitioned.add(pair);
      client.unpipe(server);
      client.removeAllListeners("data");
      server.unpipe(client);
      client.pause();
      server.pause();
    }
  }

  /** Keeps the client's bytes on open connections from the server until `release`; a close at either end is not passed on meanwhile. */
  hold(): void {
    for (const pair of this.pairs) {
      const [client, server] = pair;
      const kept: Buffer[] = [];
      this.held.set(pair, kept);
      client.unpipe(server);
      client.removeAllListeners("data");
      client.on("data", (chunk: Buffer) => kept.push(chunk)).resume();
    }
  }

  /** Closes the client end of the held connections; the server's stays open, with the bytes kept for it. */
  dropHeldClients(): void {
    for (const [client] of this.held.keys()) client.destroy();
  }

  /** Passes on what was kept, and closes the server end of a connection whose client is gone. */
  release(): void {
    for (const [pair, kept] of this.held) {
      const [client, server] = pair;
      for (const chunk of kept) server.write(chunk);
      this.held.delete(pair);
      if (client.destroyed) server.end();
      else client.removeAllListeners("data").pipe(server);
    }
  }

  allow(): void {
    this.refusing = false;
  }

  /** Stops passing the server's bytes on open connections, leaving them open. */
  silence(): void {
    for (const [client, server] of this.pairs) server.unpipe(client);
  }

  async close(): Promise<void> {
    this.cut();
    await new Promise((resolve) => this.server.close(resolve));
  }
}
