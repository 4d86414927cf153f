// The bench's child processes, each run from its entry's bundle (bin/bundle.js: the same bundling
// the jobfleet command gets, kept until a source changes). Under tsx's loader a child took 0.9 s
// to start, bundled 0.35-0.42 s; a quick run starts about 60 children.
import { type ChildProcess, fork } from "node:child_process";
import { bundled } from "../bin/bundle.js";
import type { Message } from "./support.ts";

const ENTRIES = ["agents-process", "bare-beats-process", "coordinator-process", "coordinator-gc-process", "graphile-process", "idle-agents-process"] as const;
export type ChildEntry = (typeof ENTRIES)[number];

const files = new Map<ChildEntry, string>();

/** Bundles every child entry whose sources changed since it was last bundled; `Child` needs it done. */
export async function buildChildren(): Promise<void> {
  await Promise.all(ENTRIES.map(async (entry) => files.set(entry, await bundled(`bench/${entry}.ts`))));
}

function childFile(entry: ChildEntry): string {
  const file = files.get(entry);
  if (!file) throw new Error("bench children are not bundled yet: await buildChildren() first");
  return file;
}

const children = new Set<Child>();

/** A bench child process (one of the bundled entries) with an IPC channel for JSON messages. */
export class Child {
  readonly process: ChildProcess;
  readonly exited: Promise<number | null>;
  private readonly listeners = new Set<(message: Message) => void>();
  private nextId = 0;
  stderr = "";

  /** Requests sent so far: each is one reply the child writes on its IPC channel. */
  get requests(): number {
    return this.nextId;
  }

  constructor(entry: ChildEntry, config: unknown) {
    this.process = fork(childFile(entry), [JSON.stringify(config)], {
      // BENCH_CPU_PROF=dir: every child writes a V8 CPU profile there when it exits.
      execArgv: process.env.BENCH_CPU_PROF ? ["--cpu-prof", `--cpu-prof-dir=${process.env.BENCH_CPU_PROF}`] : [],
      stdio: ["ignore", "inherit", "pipe", "ipc"],
      serialization: "advanced",
    });
    this.process.stderr!.setEncoding("utf8").on("data", (text: string) => {
      this.stderr = (this.stderr + text).slice(-20_000);
    });
    this.process.on("message", (message: Message) => {
      for (const listener of this.listeners) listener(message);
    });
    this.exited = new Promise((resolve) => this.process.on("exit", (code) => resolve(code)));
    children.add(this);
    void this.exited.then(() => children.delete(this));
  }

  on(listener: (message: Message) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  send(message: Message): void {
    this.process.send(message);
  }

  /** The first message of this type; rejects if the child exits first. */
  next<T extends Message>(type: string, timeoutMs = 60_000): Promise<T> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => fail(new Error(`no ${type} from child within ${timeoutMs} ms\n${this.stderr}`)), timeoutMs);
      const off = this.on((message) => {
        if (message.type !== type) return;
        clearTimeout(timer);
        off();
        resolve(message as T);
      });
      const fail = (error: Error) => {
        clearTimeout(timer);
        off();
        reject(error);
      };
      void this.exited.then((code) => fail(new Error(`child exited (${code}) before ${type}\n${this.stderr}`)));
    });
  }

  /** Sends a request carrying an id and waits for the `reply` with that id. */
  async request<T = unknown>(message: Message, timeoutMs = 60_000): Promise<T> {
    const id = ++this.nextId;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no reply to ${message.type} within ${timeoutMs} ms`)), timeoutMs);
      const off = this.on((reply) => {
        if (reply.type !== "reply" || reply.id !== id) return;
        clearTimeout(timer);
        off();
        if (reply.error) reject(new Error(String(reply.error)));
        else resolve(reply.value as T);
      });
      this.send({ ...message, id });
    });
  }

  /** Asks the child to stop (message `stop`), then SIGKILLs it after `graceMs`. */
  async stop(graceMs = 15_000): Promise<void> {
    if (this.process.exitCode !== null || this.process.signalCode !== null) return;
    if (this.process.connected) this.send({ type: "stop" });
    const timer = setTimeout(() => this.process.kill("SIGKILL"), graceMs);
    await this.exited;
    clearTimeout(timer);
  }
}

/** Kills whatever child is still alive (after an error). */
export async function killAll(): Promise<void> {
  await Promise.all([...children].map((child) => child.stop(3_000)));
}
