// The one `jobfleet` command: every subcommand is declared here, each a plain async function that
// returns its exit code; one catch turns errors into a message and an exit code.
import { parseArgs, type ParseArgsConfig } from "node:util";
import { CliError } from "./errors.ts";
import { agents, jobs, tokens, workOrders } from "./commands/inspect.ts";
import { agent, coordinator, start } from "./commands/servers.ts";
import { enqueue, run, workOrderOptions } from "./commands/work.ts";
import type { Flags } from "./settings.ts";

type Options = NonNullable<ParseArgsConfig["options"]>;

const client = { url: { type: "string" }, token: { type: "string" }, json: { type: "boolean" } } satisfies Options;
const server = {
  listen: { type: "string" },
  "data-dir": { type: "string" },
  "database-url": { type: "string" },
  "heartbeat-seconds": { type: "string" },
  "lease-seconds": { type: "string" },
  "max-followers": { type: "string" },
  "rate-limit": { type: "string" },
  "retain-days": { type: "string" },
  vacuum: { type: "string" },
  "log-level": { type: "string" },
} satisfies Options;
const agentFlags = {
  name: { type: "string" },
  labels: { type: "string" },
  capacity: { type: "string" },
  prefetch: { type: "string" },
  mode: { type: "string" },
  "cancel-grace": { type: "string" },
  "drain-timeout": { type: "string" },
  "log-limit-mb": { type: "string" },
} satisfies Options;

type Command = { options: Options; run: (flags: Flags, args: string[]) => Promise<number> };

const commands: Record<string, Command> = {
  start: { options: { ...server, ...agentFlags }, run: start },
  coordinator: { options: server, run: coordinator },
  agent: { options: { ...agentFlags, url: { type: "string" }, token: { type: "string" }, "token-file": { type: "string" }, "log-level": { type: "string" } }, run: agent },
  run: { options: workOrderOptions, run },
  enqueue: { options: workOrderOptions, run: enqueue },
};

const HELP = `jobfleet: a pull-based job runner fleet

Usage:
  jobfleet start                      coordinator on the embedded database + one local agent
  jobfleet coordinator                run the coordinator        [--listen HOST:PORT] [--data-dir DIR] [--database-url URL]
                                                                 [--heartbeat-seconds S] [--lease-seconds S] [--max-followers N]
                                                                 [--rate-limit N] [--retain-days N] [--vacuum auto|off]
  jobfleet agent --url URL[,URL…] --token-file F | --token T    run an agent
                                                                 [--name N] [--labels K=V,...] [--capacity N] [--prefetch N]
                                                                 [--mode queue|work-order] [--drain-timeout S] [--cancel-grace S]
                                                                 [--log-limit-mb N]
  jobfleet run [flags] -- CMD ARGS…   enqueue, follow the log, exit as the job did
  jobfleet enqueue [flags] -- CMD…    enqueue and print the work order's id  [--json]
  jobfleet work-orders list|show|logs|cancel [ID]   [--state S] [--labels SEL] [--selector SEL] [--follow] [--json]
  jobfleet jobs list|show|logs|cancel [ID]          [--work-order ID] [--agent NAME] [--state S] [--follow] [--json]
  jobfleet agents list [--connected true|false] [--labels SEL] [--limit N] [--after NAME] [--json]
  jobfleet tokens create --name N --role admin|ci|agent | list [--limit N] [--after ID] | revoke ID

Work-order flags (run, enqueue):
  -s, --selector SEL        agent labels to match, e.g. 'os=linux,arch in (amd64,arm64),!gpu'
      --agent NAME          address one agent by name (work-order mode)
  -l, --label K=V           a label of the work order itself (repeatable)
      --priority N          higher runs first (-1000..1000, default 0)
      --timeout D           run timeout: 90, 90s, 15m, 2h
      --max-attempts N      attempts allowed (default 1)
      --retry-on LIST       endings that retry: lost,infrastructure (default), timed_out, failed
      --retry-backoff D     first retry's wait, doubling (default 10s)
      --queue-timeout D     end timed_out if no agent claims it within D
      --idempotency-key K   enqueue once per key; repeats return the first work order
  -e, --env K=V             environment of the job (repeatable)
      --cwd DIR             working directory of the job
      --script TEXT         run TEXT with --shell (default /bin/sh) instead of a command
      --metadata K=V        free-form metadata (repeatable)
      --adapter NAME --spec JSON   another adapter and its spec

Server, agent and client settings come from flags, then JOBFLEET_<FLAG> (JOBFLEET_URL,
JOBFLEET_TOKEN, JOBFLEET_DATA_DIR, …), then defaults; work-order and list flags from flags only.
DATABASE_URL selects Postgres. start, coordinator and agent take --log-level (trace, debug, info,
warn, error, fatal, silent). Without a token, the CLI uses the one 'jobfleet start' saved in
.jobfleet/ci-token.

Exit codes of run: the job's own exit code; 124 timed out; 125 failed without an exit code;
130 cancelled. Of every command: 1 for an error, 2 for a usage error.
`;

function parse(options: Options, argv: string[]): { flags: Flags; args: string[] } {
  try {
    const { values, positionals } = parseArgs({ args: negativeValues(options, argv), options, allowPositionals: true, strict: true });
    return { flags: values as Flags, args: positionals };
  } catch (error) {
    throw CliError.usage((error as Error).message);
  }
}

/**
 * Joins a negative number to the flag before it (`--priority -5` as `--priority=-5`): parseArgs
 * takes an argument that begins with a dash for an option, and refuses the flag as missing its value.
 */
function negativeValues(options: Options, argv: string[]): string[] {
  const joined: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const [arg, next] = [argv[i]!, argv[i + 1]];
    if (arg === "--") return [...joined, ...argv.slice(i)];
    const takesValue = arg.startsWith("--") && options[arg.slice(2)]?.type === "string";
    if (takesValue && next !== undefined && /^-[0-9]/.test(next)) joined.push(`${arg}=${argv[++i]}`);
    else joined.push(arg);
  }
  return joined;
}

const inspect: Record<string, (action: string, flags: Flags, args: string[]) => Promise<number>> = {
  "work-orders": workOrders,
  jobs,
  agents: (action, flags) => agents(action, flags),
  tokens,
};

const inspectOptions: Record<string, Options> = {
  "work-orders": { ...client, follow: { type: "boolean", short: "f" }, state: { type: "string" }, labels: { type: "string" }, selector: { type: "string" }, agent: { type: "string" }, limit: { type: "string" }, before: { type: "string" } },
  jobs: { ...client, follow: { type: "boolean", short: "f" }, "work-order": { type: "string" }, agent: { type: "string" }, state: { type: "string" }, limit: { type: "string" }, before: { type: "string" } },
  agents: { ...client, connected: { type: "string" }, labels: { type: "string" }, limit: { type: "string" }, after: { type: "string" } },
  tokens: { ...client, name: { type: "string" }, role: { type: "string" }, limit: { type: "string" }, after: { type: "string" } },
};

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === "help" || name === "--help" || name === "-h") {
    process.stdout.write(HELP);
    return name ? 0 : 2;
  }
  const resource = inspect[name];
  if (resource) {
    const [action, ...more] = rest;
    if (!action) throw CliError.usage(`'${name}' needs an action`);
    const { flags, args } = parse(inspectOptions[name]!, more);
    return resource(action, flags, args);
  }
  const command = commands[name];
  if (!command) throw CliError.usage(`unknown command '${name}'`);
  const { flags, args } = parse(command.options, rest);
  return command.run(flags, args);
}

// A reader that went away (`| head`, `2>&1 | head`) takes no more output: the rest is dropped,
// and the command goes on to its end (`run`, to its job's exit code) rather than dying on an
// unhandled EPIPE.
for (const stream of [process.stdout, process.stderr]) {
  stream.on("error", (error: NodeJS.ErrnoException) => {
    if (error.code !== "EPIPE") throw error;
    stream.write = (() => true) as typeof stream.write;
  });
}

try {
  process.exitCode = await main(process.argv.slice(2));
} catch (error) {
  if (!(error instanceof CliError)) throw error;
  process.stderr.write(`jobfleet: ${error.message}\n`);
  process.exitCode = error.exitCode;
}
