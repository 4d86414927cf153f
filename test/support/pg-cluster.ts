// A throwaway PostgreSQL cluster for tests that stop or restart the server: its own data directory
// in a temp dir, its own port, run as the postgres user; the shared server is never touched.
import { execFileSync } from "node:child_process";
import { chownSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort } from "./ports.ts";

const BIN = (() => {
  const versions = readdirSync("/usr/lib/postgresql").sort();
  return join("/usr/lib/postgresql", versions.at(-1)!, "bin");
})();

function asPostgres(command: string, args: string[]): void {
  execFileSync("runuser", ["-u", "postgres", "--", join(BIN, command), ...args], { stdio: "pipe" });
}

export type Cluster = { url: string; start(): void; stop(): void; destroy(): void };

export async function startCluster(): Promise<Cluster> {
  const dir = mkdtempSync(join(tmpdir(), "jobfleet-pg-"));
  const pgUid = Number(execFileSync("id", ["-u", "postgres"]).toString());
  const pgGid = Number(execFileSync("id", ["-g", "postgres"]).toString());
  chownSync(dir, pgUid, pgGid);
  const data = join(dir, "data");
  const port = await freePort();
  asPostgres("initdb", ["-D", data, "-A", "trust", "-U", "postgres", "--no-sync"]);
  const options = `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off`;
  const cluster: Cluster = {
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    start: () => asPostgres("pg_ctl", ["-D", data, "-o", options, "-l", join(dir, "log"), "-w", "start"]),
    stop: () => asPostgres("pg_ctl", ["-D", data, "-m", "fast", "-w", "stop"]),
    destroy: () => {
      try {
        asPostgres("pg_ctl", ["-D", data, "-m", "immediate", "-w", "stop"]);
      } catch {
        // Already stopped, or already removed.
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
  cluster.start();
  // A daemonised server outlives its test: stop it however the test process ends (short of SIGKILL).
  process.once("exit", () => cluster.destroy());
  return cluster;
}
