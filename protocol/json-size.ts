// Whether a document fits a bound once written as JSON, without writing out the ones far inside it.

/** Whether `value`, written as JSON in UTF-8, takes at most `limit` bytes. */
export function jsonFits(value: unknown, limit: number): boolean {
  return jsonBound(value) <= limit || Buffer.byteLength(JSON.stringify(value)) <= limit;
}

/**
 * Bytes `value` may take as JSON, at most: a character escapes to at most 6 (`\u001b`), a number
 * takes at most 24. An object that writes itself (`toJSON`: a Date) has no bound here.
 */
function jsonBound(value: unknown): number {
  if (typeof value === "string") return value.length * 6 + 2;
  if (typeof value !== "object" || value === null) return 24;
  if (typeof (value as { toJSON?: unknown }).toJSON === "function") return Infinity;
  let bytes = 2;
  if (Array.isArray(value)) {
    for (const item of value) bytes += jsonBound(item) + 1;
    return bytes;
  }
  for (const key in value) bytes += key.length * 6 + 4 + jsonBound((value as Record<string, unknown>)[key]);
  return bytes;
}
