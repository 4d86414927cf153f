// A TCP proxy on loopback between a client and a server, to break the connections between them the
// ways networks do: cut (both ends see the close), refused for a while, or silent (a half-open
// connection: nothing more arrives, and nobody is told), or slow the client's bytes down.
import { connect, createServer, type Server, type Socket } from "node:net";

export class Proxy {
  private readonly pairs = new Set<[Socket, Socket]>();
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
