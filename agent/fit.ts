// Job messages cut to what the protocol accepts. An adapter's overlong status or error, or an exit
// code past 32 bits, would get its message refused, and a refused message leaves a gap in the
// job's sequence that no later message can fill: the job would never finish.
import { MAX_ERROR_CHARS, MAX_STATUS_CHARS } from "../protocol/limits.ts";
import { cut } from "../protocol/cut.ts";
import { externalId, externalUrl } from "../protocol/messages.ts";
import type { JobMessageBody } from "./outbox.ts";

/** An id or address the coordinator would refuse is left out: a cut one would name another run. */
const valid = (schema: typeof externalId | typeof externalUrl, value: string | undefined) =>
  value !== undefined && schema.safeParse(value).success ? value : undefined;

export function fitted(body: JobMessageBody): JobMessageBody {
  switch (body.type) {
    case "job.started":
      return { ...body, externalId: valid(externalId, body.externalId), externalUrl: valid(externalUrl, body.externalUrl) };
    case "job.status":
      return {
        ...body,
        status: cut(body.status, MAX_STATUS_CHARS) || "-",
        externalId: valid(externalId, body.externalId),
        externalUrl: valid(externalUrl, body.externalUrl),
      };
    case "job.finished":
      // `| 0` reads a 32-bit code as the signed value Postgres' int holds (0xC0000005 as -1073741819).
      return { ...body, exitCode: Number.isInteger(body.exitCode) ? body.exitCode! | 0 : null, error: body.error === undefined ? undefined : cut(body.error, MAX_ERROR_CHARS) };
    default:
      return body;
  }
}
