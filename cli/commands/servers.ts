// `jobfleet coordinator`, `jobfleet agent` and `jobfleet start` (both in one process, for a try-out).
import { mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { arch, availableParallelism, hostname, platform } from "node:os";
import { join } from "node:path";
import type { Logger } from "pino";
import { Agent, AgentFailed } from "../../agent/agent.ts";
import { adminEverMade, tokenCreate, tokenRevokeNamed, TokenVerifier } from "../../coordinator/auth/tokens.ts";
import { type Coordinator, DEFAULT_REQUESTS_PER_SECOND, DEFAULT_RETAIN_DAYS, MAX_RETAIN_DAYS, startCoordinator } from "../../coordinator/coordinator.ts";
import type { DatabaseConfig } from "../../coordinator/db/database.ts";
import { DEFAULT_MAX_FOLLOWERS } from "../../coordinator/logs/followers.ts";
import pkg from "../../package.json" with { type: "json" };
import { MAX_CAPACITY, MAX_PREFETCH } from "../../protocol/limits.ts";
import { cut } from "../../protocol/cut.ts";
import { agentName } from "../../protocol/fields.ts";
import { agentModes, type AgentMode } from "../../protocol/messages.ts";
import { type Labels, MAX_LABELS, parseLabels, SelectorError } from "../../protocol/selector.ts";
import { DataDirInUse } from "../../coordinator/db/pglite-data-dir.ts";
import { CliError } from "../errors.ts";
import { logger } from "../logger.ts";
import { CI_TOKEN_FILE, dataDir, DEFAULT_URL, type Flags, integer, required, setting } from "../settings.ts";

const GOARCH: Record<string, string> = { x64: "amd64", arm64: "arm64", arm: "arm", ia32: "386" };

/** os and arch as Kubernetes names them, unless the given labels say otherwise. */
export function agentLabels(text: string | undefined): Labels {
  let given: Labels;
  try {
    given = parseLabels(text ?? "");
  } catch (error) {
    if (error instanceof SelectorError) throw CliError.usage(`--labels: ${error.message}`);
    throw error;
  }
  const labels = { os: platform(), arch: GOARCH[arch()] ?? arch(), ...given };
  const count = Object.keys(labels).length;
  if (count > MAX_LABELS) throw CliError.usage(`--labels: at most ${MAX_LABELS} labels with the os and arch the agent adds, not ${count}`);
  return labels;
}

function database(flags: Flags): DatabaseConfig {
  const url = setting(flags, "database-url") ?? process.env.DATABASE_URL;
  return url ? { kind: "postgres", url } : { kind: "pglite", dataDir: dataDir(flags) };
}

function listen(flags: Flags): { host: string; port: number } {
  const text = setting(flags, "listen") ?? new URL(DEFAULT_URL).host;
  const match = /^(.*):(\d+)$/.exec(text);
  if (!match || Number(match[2]) > 65_535) throw CliError.usage(`--listen takes HOST:PORT, not '${text}'`);
  return { host: match[1]!.replace(/^\[|\]$/g, ""), port: Number(match[2]) };
}

async function coordinatorFrom(flags: Flags, log: Logger): Promise<Coordinator> {
  const config = database(flags);
  const heartbeatSeconds = integer(flags, "heartbeat-seconds", 10, 1, 300);
  const leaseSeconds = integer(flags, "lease-seconds", Math.max(30, 2 * heartbeatSeconds), 2, 86_400);
  if (leaseSeconds < 2 * heartbeatSeconds) {
    throw CliError.usage(`--lease-seconds (${leaseSeconds}) must be at least twice --heartbeat-seconds (${heartbeatSeconds})`);
  }
  const maxFollowers = integer(flags, "max-followers", DEFAULT_MAX_FOLLOWERS, 1, 1_000_000);
  const requestsPerSecond = integer(flags, "rate-limit", DEFAULT_REQUESTS_PER_SECOND, 0, 1_000_000);
  const retainDays = integer(flags, "retain-days", DEFAULT_RETAIN_DAYS, 0, MAX_RETAIN_DAYS);
  const vacuum = setting(flags, "vacuum") ?? "auto";
  if (vacuum !== "auto" && vacuum !== "off") throw CliError.usage(`--vacuum is one of auto, off, not '${vacuum}'`);
  const address = listen(flags);
  const options = {
    database: config,
    ...address,
    heartbeatSeconds,
    leaseSeconds,
    maxFollowers,
    requestsPerSecond,
    retainDays,
    vacuum: vacuum === "off" ? (false as const) : undefined,
    logger: log,
  };
  return startCoordinator(options).catch((error) => {
    if (error instanceof DataDirInUse) throw new CliError(error.message);
    const { code, message, syscall } = error as NodeJS.ErrnoException;
    // Its own socket's: an EACCES of the data directory (another user's) is the directory's.
    if ((syscall === "listen" || syscall === "bind") && (code === "EADDRINUSE" || code === "EADDRNOTAVAIL" || code === "EACCES")) {
      throw new CliError(`cannot listen on ${address.host}:${address.port} (${code}): another process may hold it; choose another with --listen`);
    }
    // Not shown: the URL may hold a password.
    if (code === "ERR_INVALID_URL") throw CliError.usage("--database-url (or DATABASE_URL) is not a URL Postgres can be reached at");
    // The database or the data directory refused (an unreachable server, a file where the
    // directory should be): what they said, without a stack; nothing of the URL is in it.
    if (code !== undefined) throw new CliError(`cannot open the ${config.kind === "postgres" ? "database" : `data directory ${config.dataDir}`}: ${message}`);
    throw error;
  });
}

/** Resolves on the first SIGINT or SIGTERM; a second one calls `again`, and a third ends the process. */
function signalled(again: () => void): Promise<string> {
  return new Promise((resolve) => {
    let heard = 0;
    const on = (signal: string) => {
      if (++heard === 1) return resolve(signal);
      // Of either kind, in any order: a third signal then meets the default action.
      process.off("SIGINT", on).off("SIGTERM", on);
      again();
    };
    process.on("SIGINT", on).on("SIGTERM", on);
  });
}

export async function coordinator(flags: Flags): Promise<number> {
  const log = logger(flags, "coordinator");
  const c = await coordinatorFrom(flags, log);
  await bootstrapAdmin(c);
  await signalled(() => process.exit(1));
  log.info("shutting down");
  return stopWithin(c, log);
}

/**
 * A database that never had an admin token gets one, shown this once: no one could manage tokens
 * otherwise. Admin tokens revoked on purpose are not replaced, nor a secret written to the logs
 * at every start.
 */
async function bootstrapAdmin(c: Coordinator): Promise<void> {
  if (await adminEverMade(c.db)) return;
  const { token } = await tokenCreate(c.db, "bootstrap", "admin");
  process.stderr.write(`\nNo admin token existed, so one was made. It is shown this once:\n\n  ${token}\n\n`);
}

const STOP_DEADLINE_MS = 15_000;

/**
 * Stops the coordinator and ends the process: one that cannot finish in time (a database call
 * hanging) exits anyway, and so does one whose stop left a handle open (a driver reconnecting).
 */
async function stopWithin(c: Coordinator, log: Logger): Promise<never> {
  const deadline = setTimeout(() => {
    log.warn({ deadlineMs: STOP_DEADLINE_MS }, "shutdown took too long; exiting");
    process.exit(0);
  }, STOP_DEADLINE_MS);
  await c.stop();
  clearTimeout(deadline);
  log.info("stopped");
  process.exit(0);
}

function agentUrl(text: string): string {
  const refused = () => CliError.usage(`--url must be a ws(s) or http(s) URL, not '${text}'`);
  if (!URL.canParse(text)) throw refused();
  const url = new URL(text);
  if (url.protocol === "http:" || url.protocol === "https:") url.protocol = url.protocol === "http:" ? "ws:" : "wss:";
  if (url.protocol !== "ws:" && url.protocol !== "wss:") throw refused();
  if (url.username || url.password) throw CliError.usage("--url cannot carry a user name or password: the token is the credential");
  if (url.hash) throw CliError.usage(`--url cannot have a #fragment: '${text}'`);
  if (url.pathname === "/") url.pathname = "/v1/agent";
  return url.toString();
}

/** The agent's settings from its flags; all but where it dials and its token. */
function agentSettings(flags: Flags, log: Logger, defaults: { name?: string; capacity?: number } = {}) {
  const mode = setting(flags, "mode") ?? "queue";
  if (!agentModes.includes(mode as AgentMode)) throw CliError.usage(`--mode is one of ${agentModes.join(", ")}, not '${mode}'`);
  const name = setting(flags, "name") ?? defaults.name ?? hostname();
  const named = agentName.safeParse(name);
  if (!named.success) throw CliError.usage(`--name: ${named.error.issues[0]!.message}, not '${cut(name, 140)}'`);
  return {
    name,
    labels: agentLabels(setting(flags, "labels")),
    capacity: integer(flags, "capacity", defaults.capacity ?? 1, 1, MAX_CAPACITY),
    prefetch: integer(flags, "prefetch", 0, 0, MAX_PREFETCH),
    mode: mode as AgentMode,
    version: pkg.version,
    cancelGraceMs: integer(flags, "cancel-grace", 10, 0, 3600) * 1000,
    maxLogBytes: logLimit(flags),
    logger: log,
  };
}

/** A job's log may take this much (`--log-limit-mb`, default 100; 0 for no limit); the rest of its output is dropped. */
function logLimit(flags: Flags): number | undefined {
  const mb = integer(flags, "log-limit-mb", 100, 0, 1_000_000);
  return mb === 0 ? undefined : mb * 1024 * 1024;
}

/** Runs an agent until a signal drains it (a second signal hands back at once what still runs). */
async function runAgent(agent: Agent, drainSeconds: number): Promise<void> {
  agent.start();
  const signal = signalled(() => void agent.stop(0));
  try {
    await Promise.race([agent.stopped, signal.then(() => agent.stop(drainSeconds * 1000))]);
  } catch (error) {
    if (error instanceof AgentFailed) throw new CliError(`agent stopped: ${error.message}`);
    throw error;
  }
}

export async function agent(flags: Flags): Promise<number> {
  const log = logger(flags, "agent");
  const urls = required(flags, "url")
    .split(",")
    .map((text) => {
      try {
        return agentUrl(text.trim());
      } catch (error) {
        if (error instanceof TypeError) throw CliError.usage(`--url is not a URL: ${text}`);
        throw error;
      }
    });
  const options = { ...agentSettings(flags, log), urls, token: agentToken(flags, log) };
  await runAgent(new Agent(options), integer(flags, "drain-timeout", 60, 0, 86_400));
  return 0;
}

/**
 * The agent's token, from a file (`--token-file`: other local users see a command line, and its
 * environment is the agent's own to hide), or given as it is. The file is read again at each dial,
 * so a token is rotated by writing the new one there before revoking the old; a file that cannot
 * be read then, or holds no token, leaves the one read last.
 */
function agentToken(flags: Flags, log: Logger): string | (() => string) {
  if (flags["token-file"] !== undefined && flags.token !== undefined) throw CliError.usage("give --token-file or --token, not both");
  // A flag before either variable, as for every setting; of the variables, the file's.
  if (typeof flags.token === "string") return flags.token;
  const file = setting(flags, "token-file");
  if (file === undefined) return required(flags, "token");
  let last: string;
  try {
    last = readToken(file);
  } catch (error) {
    throw CliError.usage((error as Error).message);
  }
  return () => {
    try {
      last = readToken(file);
    } catch (error) {
      log.warn({ file }, `${(error as Error).message}; dialling with the token read before`);
    }
    return last;
  };
}

function readToken(file: string): string {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (error) {
    throw new Error(`--token-file ${file} cannot be read (${(error as NodeJS.ErrnoException).code})`);
  }
  const token = text.trim();
  if (token === "" || /\s/.test(token)) throw new Error(`--token-file ${file} must hold one token`);
  return token;
}

/** The CI token left for this checkout's CLI, still valid or made anew. */
async function localCiToken(c: Coordinator, dir: string): Promise<string> {
  const file = join(dir, CI_TOKEN_FILE);
  try {
    const token = readFileSync(file, "utf8").trim();
    if (await new TokenVerifier(c.db).verify(token)) return token;
  } catch {
    // No token yet: make one.
  }
  const { token } = await tokenCreate(c.db, "local-ci", "ci");
  mkdirSync(dir, { recursive: true });
  // A new file, then moved over the old: a mode given to writeFileSync holds only for a file it creates.
  const written = `${file}.${process.pid}`;
  writeFileSync(written, `${token}\n`, { mode: 0o600 });
  renameSync(written, file);
  return token;
}

export async function start(flags: Flags): Promise<number> {
  const log = logger(flags, "jobfleet");
  // Checked before anything starts, so a bad flag leaves no coordinator running.
  const settings = agentSettings(flags, log, { name: "local", capacity: Math.min(availableParallelism(), MAX_CAPACITY) });
  const drainSeconds = integer(flags, "drain-timeout", 60, 0, 86_400);
  const c = await coordinatorFrom(flags, log);
  try {
    await bootstrapAdmin(c);
    await startLocal(c, flags, settings, drainSeconds);
  } catch (error) {
    // The local agent could not run: the coordinator goes too, or it would keep the process alive.
    await Promise.race([c.stop(), new Promise((resolve) => setTimeout(resolve, STOP_DEADLINE_MS).unref())]);
    throw error;
  }
  return stopWithin(c, log);
}

/** Runs the local agent against `c` until a signal drains it. */
async function startLocal(c: Coordinator, flags: Flags, settings: ReturnType<typeof agentSettings>, drainSeconds: number): Promise<void> {
  const dir = dataDir(flags);
  const ciToken = await localCiToken(c, dir);
  await tokenRevokeNamed(c.db, "local-agent");
  const { token: agentToken } = await tokenCreate(c.db, "local-agent", "agent");
  const options = { ...settings, urls: [c.agentUrl], token: agentToken };
  const local = new Agent(options);
  const labels = Object.entries(options.labels).map(([k, v]) => (v ? `${k}=${v}` : k)).join(",");
  const db = c.db.kind === "pglite" ? `embedded database in ${dir}` : "Postgres";
  process.stderr.write(`
jobfleet is running
  coordinator  ${c.url}  (${db})
  agent        ${options.name}  labels ${labels}, capacity ${options.capacity}${options.prefetch > 0 ? `, prefetch ${options.prefetch}` : ""}
  CI token     ${ciToken}
               (saved in ${join(dir, CI_TOKEN_FILE)}, where the CLI in this directory finds it)

Run a job, from another terminal in this directory:
  npx jobfleet run --selector 'os=${options.labels.os}' -- sh -c 'echo hello; exit 3'

From anywhere else:
  export JOBFLEET_URL=${c.url} JOBFLEET_TOKEN=${ciToken}

`);
  await runAgent(local, drainSeconds);
}
