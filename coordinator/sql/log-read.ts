import type { Queryable } from "../db/database.ts";

// The chunk holding `from` is the last one starting at or before it (by the primary key), however
// large: a chunk stored with its NULs replaced (1 byte each on the wire, 3 stored) can be larger
// than any chunk an agent may send.
const READ = `
SELECT "offset"::text AS start, data FROM job_logs
WHERE job_id = $1 AND "offset" + octet_length(data) > $2
  AND "offset" >= coalesce((SELECT max("offset") FROM job_logs WHERE job_id = $1 AND "offset" <= $2), 0)
ORDER BY job_logs."offset" LIMIT $3`;

export type LogSlice = { offset: number; data: string };

/** UTF-8 continuation bytes are 10xxxxxx. */
const isContinuation = (byte: number) => (byte & 0xc0) === 0x80;

/**
 * Log text from byte `from` on, in chunks as stored; the first may be cut to start at `from`, or
 * at the next character if `from` falls inside one, so that a slice's offset plus its length in
 * bytes is always where the next begins.
 */
export async function logRead(db: Queryable, jobId: string, from: number, limit = 256): Promise<LogSlice[]> {
  const rows = await db.query<{ start: string; data: string }>(READ, [jobId, from, limit]);
  return rows.flatMap(({ data, ...row }): LogSlice[] => {
    const start = Number(row.start);
    if (start >= from) return [{ offset: start, data }];
    const bytes = Buffer.from(data);
    let cut = from - start;
    while (cut < bytes.length && isContinuation(bytes[cut]!)) cut++;
    return cut < bytes.length ? [{ offset: start + cut, data: bytes.subarray(cut).toString() }] : [];
  });
}
