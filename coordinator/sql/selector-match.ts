// Selector evaluation in SQL, the twin of `matchesSelector` in protocol/selector.ts; the claim
// tests run both over the same generated cases so the two never disagree.
import type { Selector } from "../../protocol/selector.ts";

/**
 * SQL true when the selector stored in the jsonb column `selectorColumn` matches the labels in
 * `labelsExpr` (a jsonb object). `values ? x` is jsonb's "array holds the string x".
 */
export function storedSelectorMatches(selectorColumn: string, labelsExpr: string): string {
  // The empty selector, the commonest, skips the per-row subquery.
  return `(${selectorColumn} = '[]'::jsonb OR NOT EXISTS (
    SELECT 1 FROM jsonb_array_elements(${selectorColumn}) r
    WHERE NOT CASE r->>'op'
      WHEN 'exists' THEN ${labelsExpr} ? (r->>'key')
      WHEN 'notexists' THEN NOT (${labelsExpr} ? (r->>'key'))
      WHEN 'in' THEN coalesce((r->'values') ? (${labelsExpr}->>(r->>'key')), false)
      WHEN 'notin' THEN NOT coalesce((r->'values') ? (${labelsExpr}->>(r->>'key')), false)
    END
  ))`;
}

/** SQL true when `selector`, known now, matches the jsonb labels in `labelsColumn`; adds its params. */
export function selectorMatches(selector: Selector, labelsColumn: string, params: unknown[]): string {
  const clauses = selector.map((r) => {
    params.push(r.key);
    const key = `$${params.length}::text`;
    if (r.op === "exists") return `${labelsColumn} ? ${key}`;
    if (r.op === "notexists") return `NOT (${labelsColumn} ? ${key})`;
    params.push(r.values);
    const found = `coalesce((${labelsColumn}->>${key}) = ANY($${params.length}::text[]), false)`;
    return r.op === "in" ? found : `NOT ${found}`;
  });
  return clauses.length === 0 ? "true" : clauses.join(" AND ");
}
