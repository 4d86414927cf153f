import { hostname } from "node:os";
import { pino, type Logger } from "pino";
import { CliError } from "./errors.ts";
import { type Flags, setting } from "./settings.ts";

const LEVELS = ["trace", "debug", "info", "warn", "error", "fatal", "silent"];

/** JSON lines on stderr; stdout is kept for what a command prints. */
export function logger(flags: Flags, name: string): Logger {
  const level = setting(flags, "log-level") ?? "info";
  if (!LEVELS.includes(level)) throw CliError.usage(`--log-level is one of ${LEVELS.join(", ")}, not '${level}'`);
  return pino({ name, level, base: { host: hostname() } }, pino.destination(2));
}
