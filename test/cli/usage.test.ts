// The CLI's answers to bad input: a message on stderr naming the problem, and a non-zero exit.
import { spawnSync } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect, test } from "vitest";
import { freePort } from "../support/ports.ts";
import { BIN, jobfleet } from "../support/processes.ts";

const cases: [string[], RegExp][] = [
  [["frobnicate"], /unknown command 'frobnicate'/],
  [["run", "--bogus", "--", "true"], /Unknown option '--bogus'/],
  [["run", "--token", "t"], /give the command to run after --, or --script/],
  [["run", "--token", "t", "--script", "x", "--", "true"], /--script, or a command after --, not both/],
  [["run", "--token", "t", "--timeout", "soon", "--", "true"], /--timeout takes a duration/],
  [["run", "--token", "t", "--env", "NOEQUALS", "--", "true"], /--env takes KEY=VALUE/],
  [["enqueue", "--token", "t", "--priority", "high", "--", "true"], /--priority takes a whole number/],
  [["enqueue", "--token", "t", "--priority", "", "--", "true"], /--priority takes a whole number, not ''/],
  [["enqueue", "--token", "t", "--max-attempts", "", "--", "true"], /--max-attempts takes a whole number, not ''/],
  [["enqueue", "--token", "t", "--priority", "0x10", "--", "true"], /--priority takes a whole number, not '0x10'/],
  [["enqueue", "--token", "t", "--retry-backoff", "", "--", "true"], /--retry-backoff takes a duration/],
  [["agent", "--token", "t"], /--url \(or JOBFLEET_URL\) is required/],
  [["agent", "--url", "ws://127.0.0.1:1"], /--token \(or JOBFLEET_TOKEN\) is required/],
  [["agent", "--url", "ws://127.0.0.1:1", "--token", "t", "--token-file", "/etc/hostname"], /give --token-file or --token, not both/],
  [["agent", "--url", "ws://127.0.0.1:1", "--token-file", "/nonexistent/token"], /--token-file \/nonexistent\/token cannot be read \(ENOENT\)/],
  [["agent", "--url", "ws://127.0.0.1:1", "--token-file", "/dev/null"], /--token-file \/dev\/null must hold one token/],
  [["run", "--token", "t", "--shell", "/bin/bash", "--", "true"], /--shell goes with --script/],
  [["agent", "--url", "ws://127.0.0.1:1", "--token", "t", "--log-limit-mb", "1.5"], /--log-limit-mb must be a whole number from 0 to 1000000, not '1.5'/],
  [["agent", "--url", "ws://127.0.0.1:1", "--token", "t", "--labels", "os=li nux"], /--labels: invalid label value/],
  // The coordinator takes 64; the agent adds os and arch, and would be refused its hello.
  [["agent", "--url", "ws://127.0.0.1:1", "--token", "t", "--labels", Array.from({ length: 63 }, (_, i) => `k${i}=v`).join(",")], /--labels: at most 64 labels with the os and arch the agent adds, not 65/],
  [["agent", "--url", "ws://127.0.0.1:1", "--token", "t", "--capacity", "0"], /--capacity must be a whole number from 1/],
  [["agent", "--url", "ws://127.0.0.1:1", "--token", "t", "--prefetch", "1001"], /--prefetch must be a whole number from 0 to 1000/],
  // The bad --cancel-grace (checked after --prefetch) keeps an agent from running if '' were taken as 0.
  [["agent", "--url", "ws://127.0.0.1:1", "--token", "t", "--prefetch", "", "--cancel-grace", "x"], /--prefetch must be a whole number from 0 to 1000, not ''/],
  [["agent", "--url", "ftp://x", "--token", "t"], /--url must be a ws\(s\) or http\(s\) URL/],
  [["agent", "--url", "127.0.0.1:7700", "--token", "t"], /--url must be a ws\(s\) or http\(s\) URL, not '127.0.0.1:7700'/],
  // Without a scheme, an address is no outage to wait out.
  [["work-orders", "list", "--url", "127.0.0.1:7700", "--token", "t"], /--url must be an http\(s\) URL such as http:\/\/127.0.0.1:7700, not '127.0.0.1:7700'/],
  [["run", "--url", "localhost:7700", "--token", "t", "--", "true"], /--url must be an http\(s\) URL such as .*, not 'localhost:7700'/],
  // Refused at once, and neither secret echoed (fetch refuses both, which was taken for an outage).
  [["enqueue", "--url", "http://user:s3cret@127.0.0.1:7700", "--token", "t", "--", "true"], /^(?![\s\S]*s3cret)[\s\S]*--url cannot carry a user name or password/],
  [["enqueue", "--token", "jft_pasted\nwrapped", "--", "true"], /^(?![\s\S]*jft_pasted)[\s\S]*holds a character other than printable ASCII/],
  [["agent", "--url", "http://127.0.0.1:1/#x", "--token", "t"], /--url cannot have a #fragment/],
  // The agent logs where it dials: a password there would be in every log line of a redial.
  [["agent", "--url", "http://proxy:s3cret@127.0.0.1:1", "--token", "t"], /^(?![\s\S]*s3cret)[\s\S]*--url cannot carry a user name or password/],
  [["agent", "--url", "ws://127.0.0.1:1", "--token", "t", "--name", "bad name"], /--name: expected 1-128 letters, digits or -_.@: starting with a letter or digit, not 'bad name'/],
  [["coordinator", "--listen", "127.0.0.1:1", "--database-url", "postgres://app:s3cret@127.0.0.1:5x432/jobs"], /^(?![\s\S]*s3cret)jobfleet: --database-url \(or DATABASE_URL\) is not a URL/],
  [["work-orders", "show", "abc", "--token", "t"], /'abc' is not a work order id/],
  [["work-orders", "show", "99999999999999999999", "--token", "t"], /'99999999999999999999' is not a work order id/],
  [["jobs", "list", "42", "--token", "t"], /jobs list takes no argument, not '42'/],
  [["tokens", "list", "x", "--token", "t"], /tokens list takes no argument, not 'x'/],
  [["jobs"], /'jobs' needs an action/],
  [["coordinator", "--log-level", "bogus"], /--log-level is one of trace, debug, info, warn, error, fatal, silent, not 'bogus'/],
  [["coordinator", "--max-followers", "0"], /--max-followers must be a whole number from 1 to 1000000, not '0'/],
  [["coordinator", "--rate-limit", "1e3"], /--rate-limit must be a whole number from 0 to 1000000, not '1e3'/],
  [["coordinator", "--retain-days", "2.5"], /--retain-days must be a whole number from 0 to 36500, not '2.5'/],
  [["coordinator", "--vacuum", "sometimes"], /--vacuum is one of auto, off, not 'sometimes'/],
];

// Each its own process, nothing shared: run side by side.
test.concurrent.for(cases)("jobfleet %j exits 2 with a usage message", async ([args, message], { expect }) => {
  const exit = await jobfleet(args, { JOBFLEET_DATA_DIR: "/nonexistent" }).exited;
  expect(exit.stderr).toMatch(message);
  expect(exit.code).toBe(2);
});

test("a --token-file flag goes before a JOBFLEET_TOKEN in the environment, as flags go before variables", async () => {
  const exit = await jobfleet(["agent", "--url", "ws://127.0.0.1:1", "--token-file", "/nonexistent/token"], { JOBFLEET_TOKEN: "t" }).exited;
  expect(exit.stderr).toMatch(/--token-file \/nonexistent\/token cannot be read \(ENOENT\)/);
  expect(exit.code).toBe(2);
});

test("an unreachable coordinator is a clear error with exit 1", async () => {
  const url = `http://127.0.0.1:${await freePort()}`;
  const exit = await jobfleet(["work-orders", "list", "--url", url, "--token", "t"]).exited;
  expect(exit.stderr).toContain(`cannot reach the coordinator at ${url} (ECONNREFUSED)`);
  expect(exit.code).toBe(1);
});

test("without any token the CLI says where one comes from", async () => {
  const exit = await jobfleet(["work-orders", "list"], { JOBFLEET_DATA_DIR: "/nonexistent" }).exited;
  expect(exit.stderr).toMatch(/no token: pass --token or set JOBFLEET_TOKEN/);
  expect(exit.code).toBe(2);
});

test("a bad agent flag to start is refused before the coordinator starts, and the process exits", async () => {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), "jobfleet-usage-"));
  try {
    const exit = await jobfleet(["start", "--listen", `127.0.0.1:${port}`, "--mode", "bogus"], { JOBFLEET_DATA_DIR: join(dir, "data") }).exited;
    expect(exit.stderr).toMatch(/--mode is one of queue, work-order, not 'bogus'/);
    expect(exit.code).toBe(2);
    // Nothing started: no database and no token were made.
    expect(existsSync(join(dir, "data"))).toBe(false);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("a coordinator whose database or data directory cannot be opened says so in one line, and exits 1", async () => {
  const dir = mkdtempSync(join(tmpdir(), "jobfleet-usage-"));
  try {
    const file = join(dir, "a-file");
    writeFileSync(file, "");
    const listen = ["--listen", `127.0.0.1:${await freePort()}`];
    const unreachable = await jobfleet(["coordinator", ...listen, "--database-url", `postgres://app:s3cret@127.0.0.1:${await freePort()}/jobs`]).exited;
    const notADirectory = await jobfleet(["coordinator", ...listen, "--data-dir", file]).exited;
    expect(unreachable.stderr).toMatch(/^jobfleet: cannot open the database: .*ECONNREFUSED/);
    expect(notADirectory.stderr).toMatch(new RegExp(`^jobfleet: cannot open the data directory ${file}: EEXIST`));
    for (const exit of [unreachable, notADirectory]) {
      expect(exit.stderr).not.toMatch(/^\s+at /m);
      expect(exit.stderr).not.toContain("s3cret");
      expect(exit.code).toBe(1);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("a data directory of another Postgres version (one PGlite cannot open) is named in one line, not a stack trace", async () => {
  const dir = mkdtempSync(join(tmpdir(), "jobfleet-usage-"));
  try {
    writeFileSync(join(dir, "PG_VERSION"), "16\n");
    const exit = await jobfleet(["coordinator", "--listen", `127.0.0.1:${await freePort()}`, "--data-dir", dir]).exited;
    expect(exit.stderr).toMatch(new RegExp(`^jobfleet: cannot open the data directory ${dir}: `));
    expect(exit.stderr).not.toMatch(/^\s+at /m);
    expect(exit.code).toBe(1);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

const root = process.getuid?.() === 0;

test.runIf(root)(`a data directory another user made (as \`sudo npm start\` leaves it) is named, not the port${root ? "" : " (skipped: needs root)"}`, async () => {
  const home = mkdtempSync(join(tmpdir(), "jobfleet-usage-"));
  try {
    chmodSync(home, 0o755);
    const dir = join(home, ".jobfleet");
    mkdirSync(dir, { mode: 0o700 });
    const listen = `127.0.0.1:${await freePort()}`;
    // As nobody: root's directory is closed to it. Found by a review: this said the port was taken.
    const run = spawnSync("setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups", process.execPath, BIN, "coordinator", "--listen", listen, "--data-dir", dir], {
      encoding: "utf8",
      env: { ...process.env, HOME: home },
      timeout: 60_000,
    });
    expect(run.stderr).toMatch(new RegExp(`^jobfleet: cannot open the data directory ${dir}: EACCES`));
    expect(run.status).toBe(1);
  } finally {
    rmSync(home, { recursive: true, force: true });
  }
});
