// A log over HTTP: plain text from an offset to the current end, or, with `follow`, server-sent
// events (`job`, `log`, `end`) until the job ends.
import type { Context } from "hono";
import { streamSSE, streamText } from "hono/streaming";
import { followLog, type FollowTarget } from "../logs/follow.ts";
import type { Services } from "./services.ts";

const KEEPALIVE_MS = 15_000;

export function logResponse(c: Context, services: Services, target: FollowTarget, offset: number, follow: boolean) {
  const abort = new AbortController();
  const events = followLog(services.db, services.bus, target, { offset, follow, signal: abort.signal });
  if (!follow) {
    return streamText(c, async (stream) => {
      stream.onAbort(() => abort.abort());
      for await (const event of events) if (event.type === "log") await stream.write(event.data);
    });
  }
  return streamSSE(c, async (stream) => {
    stream.onAbort(() => abort.abort());
    const keepalive = setInterval(() => void stream.write(": keepalive\n\n"), KEEPALIVE_MS);
    try {
      for await (const event of events) await stream.writeSSE({ event: event.type, data: JSON.stringify(event) });
    } finally {
      clearInterval(keepalive);
    }
  });
}
