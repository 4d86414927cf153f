// A list's page: its rows are read with one more than the limit, so a page that ends the list says
// so (`next: null`) rather than sending the client to an empty one.
export type Page<T, C> = { items: T[]; next: C | null };

/** The first `limit` of `rows`, and the cursor after the last of them if another row follows. */
export function page<T, C>(rows: T[], limit: number, cursor: (last: T) => C): Page<T, C> {
  const items = rows.slice(0, limit);
  return { items, next: rows.length > limit ? cursor(items.at(-1)!) : null };
}
