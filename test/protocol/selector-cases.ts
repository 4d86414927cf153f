// Generated selector cases shared by the selector tests and the coordinator's SQL claim-query test:
// both check their matcher against `referenceMatches` on exactly these cases.
import fc from "fast-check";
import type { Labels, Requirement, Selector } from "../../protocol/selector.ts";

/** Few keys and values, so that generated selectors and label sets actually meet. */
export const keyPool = ["os", "arch", "gpu", "example.com/zone"] as const;
export const valuePool = ["", "linux", "arm64", "x"] as const;

const compare = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);

/** The canonical text of one requirement, written from the spec rather than taken from the parser. */
export function requirementText(r: Requirement): string {
  switch (r.op) {
    case "exists":
      return r.key;
    case "notexists":
      return `!${r.key}`;
    case "in":
      return r.values.length === 1 ? `${r.key}=${r.values[0]}` : `${r.key} in (${r.values.join(",")})`;
    case "notin":
      return r.values.length === 1 ? `${r.key}!=${r.values[0]}` : `${r.key} notin (${r.values.join(",")})`;
  }
}

/** The canonical form: value sets sorted and de-duplicated, requirements de-duplicated and sorted by text. */
export function canonicalize(selector: Selector): Selector {
  const byText = new Map<string, Requirement>();
  for (const r of selector) {
    const normal: Requirement =
      r.op === "in" || r.op === "notin"
        ? { key: r.key, op: r.op, values: [...new Set(r.values)].sort(compare) }
        : { key: r.key, op: r.op };
    byText.set(requirementText(normal), normal);
  }
  return [...byText].sort(([a], [b]) => compare(a, b)).map(([, r]) => r);
}

/** Kubernetes semantics: `in` needs the key present; `notin` also matches when it is absent. */
export function referenceMatches(selector: Selector, labels: Labels): boolean {
  const present = new Map(Object.entries(labels));
  return selector.every((r) => {
    const value = present.get(r.key);
    switch (r.op) {
      case "exists":
        return value !== undefined;
      case "notexists":
        return value === undefined;
      case "in":
        return value !== undefined && r.values.some((v) => v === value);
      case "notin":
        return value === undefined || r.values.every((v) => v !== value);
    }
  });
}

/**
 * Requirements as the parser can produce them, the empty value included, alone (`key=`) or in a
 * set (`key in (,x)`). Sets may be unsorted and repeat values.
 */
export function arbRequirement(key: fc.Arbitrary<string>, value: fc.Arbitrary<string>): fc.Arbitrary<Requirement> {
  const values = fc.oneof(
    value.map((v) => [v]),
    fc.array(value, { minLength: 1, maxLength: 4 }),
  );
  return fc.oneof(
    fc.record({ key, op: fc.constantFrom("exists" as const, "notexists" as const) }),
    fc.record({ key, op: fc.constantFrom("in" as const, "notin" as const), values }),
  );
}

/** Canonical selectors over the small pools (0-3 requirements). */
export const arbSelector: fc.Arbitrary<Selector> = fc
  .array(arbRequirement(fc.constantFrom(...keyPool), fc.constantFrom(...valuePool)), { maxLength: 3 })
  .map(canonicalize);

/** Label sets over the same pools. */
export const arbLabels: fc.Arbitrary<Labels> = fc
  .uniqueArray(fc.tuple(fc.constantFrom(...keyPool), fc.constantFrom(...valuePool)), {
    selector: ([key]) => key,
    maxLength: keyPool.length,
  })
  .map((entries) => Object.fromEntries(entries));

export const selectorAndLabels: fc.Arbitrary<{ selector: Selector; labels: Labels }> = fc.record({
  selector: arbSelector,
  labels: arbLabels,
});
