// An in-process coordinator HTTP API for the tests: a fresh in-memory PGlite, a bus, a token
// for each role, and a small request helper over `app.request` (no network).
import { afterAll, afterEach, beforeAll, expect } from "vitest";
import type { Role } from "../../protocol/api.ts";
import { tokenCreate, TokenVerifier } from "../../coordinator/auth/tokens.ts";
import { Bus } from "../../coordinator/bus.ts";
import { openDatabase } from "../../coordinator/db/database.ts";
import { createApp } from "../../coordinator/http/app.ts";
import type { Services } from "../../coordinator/http/services.ts";
import { Followers } from "../../coordinator/logs/followers.ts";

/** Log followers the harness serves at once. */
export const MAX_FOLLOWERS = 8;

export type RequestOptions = {
  method?: string;
  token?: string | null;
  /** Sent as an application/json body. */
  json?: unknown;
  body?: string;
  headers?: Record<string, string>;
};

export type Harness = {
  services: Services;
  app: ReturnType<typeof createApp>;
  tokens: Record<Role, string>;
  /** Errors the app hid behind a 500; every suite expects none. */
  unexpected: unknown[];
  request(path: string, options?: RequestOptions): Promise<Response>;
  close(): Promise<void>;
};

/**
 * A harness for the whole file: started before its tests, closed after them, and after each test
 * the check that the app hid no error behind a 500.
 */
export function useHarness(): Harness {
  const h = {} as Harness;
  beforeAll(async () => void Object.assign(h, await startHarness()));
  afterAll(async () => h.close?.());
  afterEach(() => expect(h.unexpected.splice(0)).toEqual([]));
  return h;
}

export async function startHarness(): Promise<Harness> {
  const db = await openDatabase({ kind: "pglite", dataDir: ":memory:" });
  const services: Services = { db, bus: new Bus(), verifier: new TokenVerifier(db), followers: new Followers(MAX_FOLLOWERS) };
  const unexpected: unknown[] = [];
  const app = createApp(services, (error) => unexpected.push(error));
  const tokens = {
    admin: (await tokenCreate(db, "test-admin", "admin")).token,
    ci: (await tokenCreate(db, "test-ci", "ci")).token,
    agent: (await tokenCreate(db, "test-agent", "agent")).token,
  };
  return {
    services,
    app,
    tokens,
    unexpected,
    request: (path, options = {}) => send(app, tokens.admin, path, options),
    close: () => db.close(),
  };
}

/** A request to `app`; authenticated with `defaultToken` unless `token` says otherwise (null: none). */
export function send(
  app: { request: (path: string, init?: RequestInit) => Response | Promise<Response> },
  defaultToken: string,
  path: string,
  options: RequestOptions = {},
): Promise<Response> {
  const headers: Record<string, string> = { ...options.headers };
  const token = options.token === undefined ? defaultToken : options.token;
  if (token !== null) headers.authorization ??= `Bearer ${token}`;
  let body = options.body;
  if (options.json !== undefined) {
    body = JSON.stringify(options.json);
    headers["content-type"] ??= "application/json";
  }
  const method = options.method ?? (body === undefined ? "GET" : "POST");
  return Promise.resolve(app.request(path, { method, headers, ...(body === undefined ? {} : { body }) }));
}

export type ErrorBody = { error: { code: string; message: string; field?: string } };

/** Asserts the one JSON error shape and its status, code and (when given) field; returns the body. */
export async function expectError(
  response: Response,
  status: number,
  code: string,
  field?: string,
): Promise<ErrorBody["error"]> {
  const text = await response.text();
  expect({ status: response.status, body: text }).toMatchObject({ status });
  expect(response.headers.get("content-type")).toMatch(/^application\/json/);
  const body = JSON.parse(text) as ErrorBody;
  expect(Object.keys(body)).toEqual(["error"]);
  expect(body.error.code).toBe(code);
  expect(typeof body.error.message).toBe("string");
  expect(body.error.message.length).toBeGreaterThan(0);
  if (field !== undefined) expect(body.error.field).toBe(field);
  return body.error;
}

/** The minimal valid work order body. */
export const execOrder = (extra: Record<string, unknown> = {}) => ({
  spec: { command: ["echo", "hello"] },
  ...extra,
});

export type ServerSentEvent = { event: string; data: string; id?: string };

/** Parses a whole `text/event-stream` body; comment (keepalive) blocks are dropped. */
export function parseEvents(text: string): ServerSentEvent[] {
  return text
    .split("\n\n")
    .map(parseBlock)
    .filter((e): e is ServerSentEvent => e !== undefined);
}

function parseBlock(block: string): ServerSentEvent | undefined {
  let event = "message";
  let id: string | undefined;
  const data: string[] = [];
  let any = false;
  for (const line of block.split("\n")) {
    if (line === "" || line.startsWith(":")) continue;
    any = true;
    if (line.startsWith("event: ")) event = line.slice(7);
    else if (line.startsWith("id: ")) id = line.slice(4);
    else if (line.startsWith("data: ")) data.push(line.slice(6));
  }
  return any ? { event, data: data.join("\n"), ...(id === undefined ? {} : { id }) } : undefined;
}

/** Reads a `text/event-stream` body one event at a time, as it arrives. */
export class EventReader {
  private buffer = "";
  private readonly decoder = new TextDecoder();
  private readonly reader: ReadableStreamDefaultReader<Uint8Array>;

  constructor(body: ReadableStream<Uint8Array>) {
    this.reader = body.getReader();
  }

  /** The next event, or undefined once the stream has ended. */
  async next(): Promise<ServerSentEvent | undefined> {
    for (;;) {
      const end = this.buffer.indexOf("\n\n");
      if (end >= 0) {
        const block = this.buffer.slice(0, end);
        this.buffer = this.buffer.slice(end + 2);
        const event = parseBlock(block);
        if (event) return event;
        continue;
      }
      const { done, value } = await this.reader.read();
      if (done) {
        const rest = parseBlock(this.buffer);
        this.buffer = "";
        return rest;
      }
      this.buffer += this.decoder.decode(value, { stream: true });
    }
  }

  /** Gives up on the stream (the server side sees an abort). */
  async cancel(): Promise<void> {
    await this.reader.cancel().catch(() => {});
  }
}
