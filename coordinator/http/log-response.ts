// A log over HTTP: plain text from an offset to the current end, or, with `follow`, server-sent
// events (`job`, `log`, `end`) until the job ends. Each `job` and `log` event's id is where the log
// resumes after it, so a client that reconnects with `Last-Event-ID` misses nothing and sees
// nothing twice.
import type { Context } from "hono";
import { streamSSE } from "hono/streaming";
import { type LogCursor, logCursor, logCursorOf, type LogEvent } from "../../protocol/api.ts";
import { endOf, followLog, type FollowTarget, LogGone } from "../logs/follow.ts";
import { jobGet } from "../sql/job-read.ts";
import { ApiError } from "./errors.ts";
import type { Services } from "./services.ts";

const KEEPALIVE_MS = 15_000;

const RESUME_HEADER = "Last-Event-ID";

const idOf = (event: LogEvent) =>
  event.type === "job" ? logCursorOf(event.jobId, event.offset) : event.type === "log" ? logCursorOf(event.jobId, endOf(event)) : undefined;

/** The `Last-Event-ID` a follower reconnects with, checked to name a job of the followed log. */
async function resumeOf(c: Context, services: Services, target: FollowTarget): Promise<LogCursor | undefined> {
  const header = c.req.header(RESUME_HEADER);
  if (header === undefined) return undefined;
  const parsed = logCursor.safeParse(header);
  if (!parsed.success) throw new ApiError(400, "invalid_request", `${RESUME_HEADER}: ${parsed.error.issues[0]!.message}`, RESUME_HEADER);
  const ours =
    target.jobId === undefined ? (await jobGet(services.db, parsed.data.jobId))?.workOrderId === target.workOrderId : parsed.data.jobId === target.jobId;
  if (!ours) throw new ApiError(400, "invalid_request", `${RESUME_HEADER}: job ${parsed.data.jobId} is not of this log`, RESUME_HEADER);
  return parsed.data;
}

const TEXT_HEADERS = { "content-type": "text/plain; charset=UTF-8", "x-content-type-options": "nosniff" };
const SSE_HEADERS = { "content-type": "text/event-stream", "cache-control": "no-cache" };

/**
 * The log's text as a stream. Its first slice is read before the answer, so a database that cannot
 * be reached is a 503, not an empty 200; one that fails later cuts the connection, so the client
 * sees a broken answer rather than a short log that looks whole.
 */
async function plainText(events: AsyncGenerator<LogEvent>, abort: AbortController, done: () => void): Promise<ReadableStream<Uint8Array>> {
  const encoder = new TextEncoder();
  const next = async () => {
    for (;;) {
      const { value, done: ended } = await events.next();
      if (ended) return undefined;
      if (value.type === "log") return encoder.encode(value.data);
    }
  };
  let first: Uint8Array | undefined;
  try {
    first = await next();
  } catch (error) {
    done();
    throw error instanceof LogGone ? new ApiError(404, "not_found", error.message) : error;
  }
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      try {
        const chunk = first ?? (await next());
        first = undefined;
        if (chunk) return controller.enqueue(chunk);
        done();
        controller.close();
      } catch (error) {
        done();
        controller.error(error);
      }
    },
    // The reader is closed too: left paused, it would keep its watch on the work order for good.
    cancel() {
      abort.abort();
      void events.return(undefined);
      done();
    },
  });
}

/** How long a follower turned away is asked to wait before it tries again. */
const FULL_RETRY_AFTER_SECONDS = 5;

export async function logResponse(c: Context, services: Services, target: FollowTarget, offset: number, follow: boolean) {
  const resume = follow ? await resumeOf(c, services, target) : undefined;
  // Answered without its body, which would be read and dropped: a follow would keep its slot and
  // its watch, tied to no connection, until the job ended.
  if (c.req.method === "HEAD") return c.body(null, 200, follow ? SSE_HEADERS : TEXT_HEADERS);
  if (follow && !services.followers.enter()) {
    const message = `this coordinator has ${services.followers.max} log followers, its most; try again shortly`;
    throw new ApiError(503, "too_many_followers", message, undefined, FULL_RETRY_AFTER_SECONDS);
  }
  // A coordinator stopping ends its followers' streams, and they follow on from another.
  const abort = new AbortController();
  const onClosing = () => abort.abort();
  services.closing?.addEventListener("abort", onClosing, { once: true });
  if (services.closing?.aborted) abort.abort();
  const events = followLog(services.db, services.bus, target, { offset, resume, follow, signal: abort.signal });
  const done = () => services.closing?.removeEventListener("abort", onClosing);
  if (!follow) return c.body(await plainText(events, abort, done), 200, TEXT_HEADERS);
  return streamSSE(c, async (stream) => {
    stream.onAbort(() => abort.abort());
    const keepalive = setInterval(() => void stream.write(": keepalive\n\n"), KEEPALIVE_MS);
    try {
      for await (const event of events) await stream.writeSSE({ event: event.type, data: JSON.stringify(event), id: idOf(event) });
    } catch (error) {
      // The stream ends without its `end`: the follower reconnects, and is told the work order is gone.
      if (!(error instanceof LogGone)) throw error;
    } finally {
      clearInterval(keepalive);
      done();
      services.followers.leave();
    }
  });
}
