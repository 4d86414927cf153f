import { MAX_LOG_CHUNK_BYTES } from "../../protocol/limits.ts";
import type { Queryable } from "../db/database.ts";

const READ = `
SELECT "offset"::text AS start, data FROM job_logs
WHERE job_id = $1 AND "offset" > $2::bigint - $4 AND "offset" + octet_length(data) > $2
ORDER BY job_logs."offset" LIMIT $3`;

export type LogSlice = { offset: number; data: string };

/** Log text from byte `from` on, in chunks as stored; the first may be cut to start at `from`. */
export async function logRead(db: Queryable, jobId: string, from: number, limit = 256): Promise<LogSlice[]> {
  const rows = await db.query<{ start: string; data: string }>(READ, [jobId, from, limit, MAX_LOG_CHUNK_BYTES]);
  return rows.map(({ data, ...row }) => {
    const start = Number(row.start);
    if (start >= from) return { offset: start, data };
    return { offset: from, data: Buffer.from(data).subarray(from - start).toString() };
  });
}
