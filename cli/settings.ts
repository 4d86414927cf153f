// Settings: a flag wins over its environment variable, which wins over the default. Every setting
// has one name: `--data-dir` is JOBFLEET_DATA_DIR.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { CliError } from "./errors.ts";
import { CI_TOKEN_FILE } from "../coordinator/db/pglite-data-dir.ts";

export type Flags = Record<string, string | boolean | string[] | undefined>;

export function envName(flag: string): string {
  return `JOBFLEET_${flag.toUpperCase().replaceAll("-", "_")}`;
}

export function setting(flags: Flags, name: string): string | undefined {
  const value = flags[name];
  if (typeof value === "string") return value;
  return process.env[envName(name)] || undefined;
}

export function required(flags: Flags, name: string): string {
  const value = setting(flags, name);
  if (value === undefined) throw CliError.usage(`--${name} (or ${envName(name)}) is required`);
  return value;
}

export function integer(flags: Flags, name: string, fallback: number, min = 1, max = 1_000_000): number {
  const text = setting(flags, name);
  if (text === undefined) return fallback;
  const value = Number(text);
  if (!/^[0-9]+$/.test(text) || value < min || value > max) {
    throw CliError.usage(`--${name} must be a whole number from ${min} to ${max}, not '${text}'`);
  }
  return value;
}

export const DEFAULT_URL = "http://127.0.0.1:7700";
export const DEFAULT_DATA_DIR = ".jobfleet";
export { CI_TOKEN_FILE };

export function dataDir(flags: Flags): string {
  return setting(flags, "data-dir") ?? DEFAULT_DATA_DIR;
}

/** The coordinator's URL and a token: flags, then JOBFLEET_URL / JOBFLEET_TOKEN, then `jobfleet start`'s. */
export function endpoint(flags: Flags): { url: string; token: string } {
  const url = httpUrl(setting(flags, "url") ?? DEFAULT_URL);
  const token = setting(flags, "token") ?? localToken(flags);
  if (!token) throw CliError.usage("no token: pass --token or set JOBFLEET_TOKEN (jobfleet start prints one)");
  // Not echoed: it is a secret, and what is wrong with it is a character (a newline pasted in).
  if (!/^[\x21-\x7e]+$/.test(token)) throw CliError.usage("the token (--token or JOBFLEET_TOKEN) holds a character other than printable ASCII");
  return { url, token };
}

/** The coordinator's address, checked: a typo must not pass for an outage that the CLI waits out. */
function httpUrl(text: string): string {
  const url = URL.canParse(text) ? new URL(text) : undefined;
  if (url?.username || url?.password) throw CliError.usage("--url cannot carry a user name or password: the token is the credential");
  if (url?.protocol !== "http:" && url?.protocol !== "https:") throw CliError.usage(`--url must be an http(s) URL such as ${DEFAULT_URL}, not '${text}'`);
  return text.replace(/\/+$/, "");
}

function localToken(flags: Flags): string | undefined {
  try {
    return readFileSync(join(dataDir(flags), CI_TOKEN_FILE), "utf8").trim() || undefined;
  } catch {
    return undefined;
  }
}
