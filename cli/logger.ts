import { hostname } from "node:os";
import { pino, type Logger } from "pino";
import { type Flags, setting } from "./settings.ts";

/** JSON lines on stderr; stdout is kept for what a command prints. */
export function logger(flags: Flags, name: string): Logger {
  return pino({ name, level: setting(flags, "log-level") ?? "info", base: { host: hostname() } }, pino.destination(2));
}
