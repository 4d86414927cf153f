import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  formatSelector,
  isLabelKey,
  isLabelValue,
  MAX_LABELS,
  MAX_SELECTOR_LENGTH,
  matchesSelector,
  parseLabels,
  parseSelector,
  SelectorError,
  type Requirement,
  type Selector,
} from "../../protocol/selector.ts";
import {
  arbRequirement,
  canonicalize,
  referenceMatches,
  requirementText,
  selectorAndLabels,
} from "./selector-cases.ts";

function errorOf(run: () => unknown): SelectorError {
  try {
    run();
  } catch (error) {
    expect(error).toBeInstanceOf(SelectorError);
    return error as SelectorError;
  }
  throw new Error("expected a SelectorError, but nothing was thrown");
}

describe("parseSelector: operators", () => {
  it.each<[string, Selector]>([
    ["gpu", [{ key: "gpu", op: "exists" }]],
    ["!gpu", [{ key: "gpu", op: "notexists" }]],
    ["os=linux", [{ key: "os", op: "in", values: ["linux"] }]],
    ["os==linux", [{ key: "os", op: "in", values: ["linux"] }]],
    ["os!=linux", [{ key: "os", op: "notin", values: ["linux"] }]],
    ["arch in (amd64,arm64)", [{ key: "arch", op: "in", values: ["amd64", "arm64"] }]],
    ["arch notin (amd64,arm64)", [{ key: "arch", op: "notin", values: ["amd64", "arm64"] }]],
    ["arch in (amd64)", [{ key: "arch", op: "in", values: ["amd64"] }]],
    ["gpu=", [{ key: "gpu", op: "in", values: [""] }]],
    ["gpu==", [{ key: "gpu", op: "in", values: [""] }]],
    ["gpu!=", [{ key: "gpu", op: "notin", values: [""] }]],
    ["gpu=,os", [{ key: "gpu", op: "in", values: [""] }, { key: "os", op: "exists" }]],
    ["example.com/gpu=nvidia", [{ key: "example.com/gpu", op: "in", values: ["nvidia"] }]],
    ["!k8s.io-x/Zone_1.a", [{ key: "k8s.io-x/Zone_1.a", op: "notexists" }]],
    ["a.b-c_d=V-1.x_y", [{ key: "a.b-c_d", op: "in", values: ["V-1.x_y"] }]],
    // `in` and `notin` are only operators in operator position; elsewhere they are ordinary words.
    ["in", [{ key: "in", op: "exists" }]],
    ["notin notin (in,notin)", [{ key: "notin", op: "notin", values: ["in", "notin"] }]],
    // As in Kubernetes, a value missing from a set is the empty string.
    ["a in ()", [{ key: "a", op: "in", values: [""] }]],
    ["a notin ()", [{ key: "a", op: "notin", values: [""] }]],
    ["a in (,)", [{ key: "a", op: "in", values: [""] }]],
    ["a in (b,)", [{ key: "a", op: "in", values: ["", "b"] }]],
    ["a notin (,b)", [{ key: "a", op: "notin", values: ["", "b"] }]],
    ["a in (b,,c)", [{ key: "a", op: "in", values: ["", "b", "c"] }]],
    ["a in (b,,,)", [{ key: "a", op: "in", values: ["", "b"] }]], // Kubernetes' odd runs of commas
    ["a in (,,,)", [{ key: "a", op: "in", values: [""] }]],
  ])("%j", (text, expected) => {
    expect(parseSelector(text)).toEqual(expected);
  });

  it("ANDs comma-separated requirements", () => {
    expect(parseSelector("os=linux,arch in (amd64,arm64),!gpu")).toEqual([
      { key: "gpu", op: "notexists" },
      { key: "arch", op: "in", values: ["amd64", "arm64"] },
      { key: "os", op: "in", values: ["linux"] },
    ]);
  });

  it("parses the empty selector, and blank ones, as matching everything", () => {
    expect(parseSelector("")).toEqual([]);
    expect(parseSelector(" \t ")).toEqual([]);
    expect(matchesSelector(parseSelector(""), {})).toBe(true);
    expect(formatSelector([])).toBe("");
  });

  it("ignores spaces, tabs, carriage returns and newlines between tokens, as Kubernetes does", () => {
    const spaced = parseSelector("  os = linux ,\tarch\tin\t( arm64 , amd64 )  , !  gpu , zone notin(a,b),x!= y , e == ");
    expect(spaced).toEqual(parseSelector("os=linux,arch in (amd64,arm64),!gpu,zone notin (a,b),x!=y,e="));
    expect(parseSelector("a=b\n,c\r\n,\n!d,\re\nin\r\n(\nf\r)\n")).toEqual(parseSelector("a=b,c,!d,e in (f)"));
    expect(parseSelector("\r\n")).toEqual([]);
  });
});

describe("parseSelector: canonical form", () => {
  it("sorts requirements by their canonical text", () => {
    expect(formatSelector(parseSelector("os=a,os in (b,a),!os,os"))).toBe("!os,os,os in (a,b),os=a");
    expect(parseSelector("b,a")).toEqual(parseSelector("a,b"));
  });

  it("drops duplicate requirements, including differently spelled ones", () => {
    expect(parseSelector("os=linux,os==linux,os in (linux),os=linux")).toEqual([
      { key: "os", op: "in", values: ["linux"] },
    ]);
    expect(parseSelector("a in (x,y),a in (y,x),a in (x,y,x)")).toEqual([{ key: "a", op: "in", values: ["x", "y"] }]);
    expect(parseSelector("a notin (x),a!=x")).toEqual([{ key: "a", op: "notin", values: ["x"] }]);
  });

  it("sorts and de-duplicates the values of a set", () => {
    expect(parseSelector("arch notin (c,a,b,a)")).toEqual([{ key: "arch", op: "notin", values: ["a", "b", "c"] }]);
  });

  it("formats single-value sets with = and !=", () => {
    expect(formatSelector(parseSelector("a in (x), b notin (y), c in (y,x)"))).toBe("a=x,b!=y,c in (x,y)");
  });

  it("formats sets holding the empty value so that they parse back", () => {
    expect(formatSelector(parseSelector("a in (), b notin (,), c in (y,x,), d notin (x,,y)"))).toBe(
      "a=,b!=,c in (,x,y),d notin (,x,y)",
    );
    expect(parseSelector("c in (,x,y),d notin (,x,y)")).toEqual(parseSelector("c in (y,x,), d notin (x,,y)"));
  });
});

describe("parseSelector: remembered", () => {
  it("answers a text it has parsed with the same selector, frozen, so that no caller can change another's", () => {
    const first = parseSelector("os=linux,arch in (arm64,amd64)");
    expect(parseSelector("os=linux,arch in (arm64,amd64)")).toBe(first);
    expect(() => first.push({ key: "gpu", op: "exists" })).toThrow(TypeError);
    expect(() => (first[0] as { values: string[] }).values.push("x86")).toThrow(TypeError);
    expect(formatSelector(first)).toBe("arch in (amd64,arm64),os=linux");
  });

  it("formats a selector it did not parse as it is now, not as it was", () => {
    const selector: Selector = [{ key: "os", op: "in", values: ["linux"] }];
    expect(formatSelector(selector)).toBe("os=linux");
    selector.push({ key: "gpu", op: "notexists" });
    expect(formatSelector(selector)).toBe("os=linux,!gpu");
  });

  it("still refuses a bad text it has seen before", () => {
    for (let i = 0; i < 2; i++) expect(errorOf(() => parseSelector("os in (linux")).reason).toMatch(/expected/);
  });
});

describe("parseSelector: errors name the offending position", () => {
  const long = "a".repeat(MAX_SELECTOR_LENGTH + 1);
  it.each<[string, number]>([
    ["os=linux,,arch", 9], // the second comma
    [",os", 0],
    ["os=linux,", 9], // ends where a key is expected
    ["arch in (a,b", 12], // ends inside the set
    ["a in (,,)", 8], // Kubernetes reads commas in pairs: an even run before `)` leaves `)` unexpected
    ["a in (b,,)", 9],
    ["a in (b,,,,)", 11],
    ["a in (,", 7],
    ["a in (b,=)", 8],
    ["arch in (a b)", 11], // `b` where `,` or `)` is expected
    ["arch in (a,b)x", 13],
    ["a in b", 5],
    ["a notin", 7],
    ["=x", 0],
    ["os=li nux", 6],
    ["os=linux=x", 8],
    ["os===x", 4],
    ["os linux", 3],
    ["os!", 2],
    ["os ! =x", 3],
    ["!", 1],
    ["!!gpu", 1],
    ["!gpu=x", 4],
    ["os=$", 3],
    ["os\f=linux", 2], // only space, tab, CR and LF are whitespace
    ["os\v=linux", 2],
    ["os=\u00a0linux", 3],
    ["os=\"linux\"", 3],
    ["-os", 0], // invalid key: must start with a letter or digit
    ["os=linux-", 3], // invalid value: must end with a letter or digit
    ["os=a/b", 3], // a value has no prefix
    ["Example.com/gpu", 0], // a prefix is lower case
    ["x,/gpu", 2],
    ["a/b/c", 0],
    [`${"a".repeat(64)}=x`, 0], // name longer than 63
    [`x=${"a".repeat(64)}`, 2], // value longer than 63
    [`${"a".repeat(254)}/gpu`, 0], // prefix longer than 253
    ["a..b/c", 0], // a prefix is a DNS-1123 subdomain: no empty label,
    ["x,a.-b/c", 2], // no label starting with '-'
    ["a-.b/c=x", 0], // nor ending with one
    [long, MAX_SELECTOR_LENGTH],
  ])("%j fails at %i", (text, position) => {
    const error = errorOf(() => parseSelector(text));
    expect(error.position).toBe(position);
    expect(error.name).toBe("SelectorError");
    expect(error.message).toBe(`${error.reason} at position ${position}`);
  });

  it("accepts the longest allowed parts and selector", () => {
    expect(parseSelector(`${"p".repeat(253)}/${"n".repeat(63)}=${"v".repeat(63)}`)).toHaveLength(1);
    expect(parseSelector(`a${" ".repeat(MAX_SELECTOR_LENGTH - 1)}`)).toEqual([{ key: "a", op: "exists" }]);
    expect(errorOf(() => parseSelector(`a${" ".repeat(MAX_SELECTOR_LENGTH)}`)).position).toBe(MAX_SELECTOR_LENGTH);
  });

  it("refuses a selector whose canonical text would be too long to parse again", () => {
    const spelled = (n: number) => Array.from({ length: n }, (_, i) => `k${i} in(a,b)`).join(",");
    // Written canonically, each requirement grows a space: `k0 in (a,b)`.
    let n = 1;
    while (spelled(n + 1).length + n + 1 <= MAX_SELECTOR_LENGTH) n++;
    expect(formatSelector(parseSelector(spelled(n))).length).toBe(spelled(n).length + n);
    expect(parseSelector(formatSelector(parseSelector(spelled(n))))).toHaveLength(n);
    expect(spelled(n + 1).length).toBeLessThanOrEqual(MAX_SELECTOR_LENGTH);
    expect(errorOf(() => parseSelector(spelled(n + 1))).reason).toBe(`selector longer than ${MAX_SELECTOR_LENGTH} characters once written canonically`);
  });

  it("reports what it expected", () => {
    expect(errorOf(() => parseSelector("arch in (a,b")).reason).toBe("expected ',' or ')' but the selector ended");
    expect(errorOf(() => parseSelector("os=$")).reason).toBe("unexpected character '$'");
    // The whole character, not half of its surrogate pair.
    expect(errorOf(() => parseSelector("gpu=\u{1F600}")).reason).toBe("unexpected character '\u{1F600}'");
    expect(errorOf(() => parseSelector("a in b")).reason).toBe("expected '(', found 'b'");
  });
});

describe("label keys and values", () => {
  it.each([
    "a",
    "A1",
    "a-b_c.d",
    "example.com/gpu",
    "a.b-c/x",
    "a--b.0-9.c/x",
    `${"a.".repeat(126)}a/x`, // a 253-character prefix
    "1",
    `${"a".repeat(63)}`,
    "in",
  ])(
    "key %j is valid",
    (key) => expect(isLabelKey(key)).toBe(true),
  );
  it.each([
    "",
    "-a",
    "a-",
    "_a",
    "a b",
    "a=b",
    "/a",
    "a/",
    "a//b",
    "Ex.com/a",
    "a/b/c",
    `${"a".repeat(64)}`,
    "a..b/c",
    "a.-b/c",
    "a-.b/c",
    ".a/c",
    "a./c",
    "a_b/c",
    `${"a.".repeat(126)}ab/x`, // a 254-character prefix
  ])(
    "key %j is invalid",
    (key) => expect(isLabelKey(key)).toBe(false),
  );
  it.each(["", "a", "A.b-c_d", `${"v".repeat(63)}`])("value %j is valid", (value) => expect(isLabelValue(value)).toBe(true));
  it.each(["-a", "a.", "a/b", "a b", `${"v".repeat(64)}`])("value %j is invalid", (value) =>
    expect(isLabelValue(value)).toBe(false),
  );
});

describe("matchesSelector", () => {
  const labels = { os: "linux", arch: "arm64", gpu: "" };
  it.each<[string, boolean]>([
    ["", true],
    ["os", true],
    ["gpu", true], // present with the empty value
    ["zone", false],
    ["!zone", true],
    ["!gpu", false],
    ["os=linux", true],
    ["os=darwin", false],
    ["zone=a", false], // `=` needs the key
    ["gpu=", true],
    ["zone=", false],
    ["os!=darwin", true],
    ["os!=linux", false],
    ["zone!=a", true], // `!=` matches an absent key
    ["gpu!=", false],
    ["arch in (amd64,arm64)", true],
    ["arch in (amd64,x86)", false],
    ["zone in (a,b)", false],
    ["arch notin (amd64,x86)", true],
    ["arch notin (amd64,arm64)", false],
    ["zone notin (a,b)", true],
    ["os=linux,arch=arm64,gpu", true],
    ["os=linux,arch=amd64", false],
    ["gpu in ()", true],
    ["gpu notin ()", false],
    ["gpu in (,x)", true],
    ["gpu notin (x,)", false],
    ["os in (,darwin)", false],
    ["os notin (,darwin)", true],
    ["zone in (,a)", false],
    ["zone notin ()", true],
  ])("%j on os=linux,arch=arm64,gpu is %s", (text, expected) => {
    expect(matchesSelector(parseSelector(text), labels)).toBe(expected);
  });

  it("looks only at the labels' own keys", () => {
    expect(matchesSelector(parseSelector("constructor"), {})).toBe(false);
    expect(matchesSelector(parseSelector("toString!=x"), {})).toBe(true);
    expect(matchesSelector(parseSelector("!hasOwnProperty"), {})).toBe(true);
  });
});

// Arbitrary selectors over the whole grammar, for round trips.
const name = fc.stringMatching(/^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/);
const prefix = fc
  .stringMatching(/^[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?){0,11}$/)
  .filter((p) => p.length <= 253);
const anyKey = fc.oneof(name, fc.tuple(prefix, name).map(([p, n]) => `${p}/${n}`), fc.constantFrom("in", "notin"));
const anyValue = fc.oneof(fc.constant(""), name, fc.constantFrom("in", "notin"));
// Six requirements format to well under MAX_SELECTOR_LENGTH even at the longest keys and values.
const anySelector = fc.array(arbRequirement(anyKey, anyValue), { maxLength: 6 });

/** Writes a requirement in any of its spellings, with optional whitespace between tokens. */
function arbSpelling(r: Requirement): fc.Arbitrary<string> {
  const ws = fc.constantFrom("", " ", "\t", "  ", "\n", "\r\n");
  const gap = fc.constantFrom(" ", "\t", " \t ", "\n", "\r");
  const parts = (...items: fc.Arbitrary<string>[]) => fc.tuple(...items).map((xs) => xs.join(""));
  const lit = (s: string) => fc.constant(s);
  // At most one "" per set: two in a row at the end, `(a,,)`, is an error in Kubernetes and here.
  const set = (all: string[]) => {
    const values = all.filter((v, i) => v !== "" || all.indexOf("") === i);
    return parts(lit("("), ...values.flatMap((v, i) => [ws, lit(v), ws, lit(i < values.length - 1 ? "," : ")")]));
  };
  switch (r.op) {
    case "exists":
      return parts(ws, lit(r.key), ws);
    case "notexists":
      return parts(ws, lit("!"), ws, lit(r.key), ws);
    case "in":
    case "notin": {
      const single = r.values.length === 1 ? r.values[0]! : undefined;
      const spellings: fc.Arbitrary<string>[] = [];
      if (single !== undefined) {
        const ops = r.op === "in" ? ["=", "=="] : ["!="];
        spellings.push(parts(ws, lit(r.key), ws, fc.constantFrom(...ops), ws, lit(single), ws));
      }
      spellings.push(parts(ws, lit(r.key), gap, lit(r.op), ws, set(r.values), ws));
      return fc.oneof(...spellings);
    }
  }
}

describe("parseSelector: properties", () => {
  it("round-trips: parse(format(s)) is the canonical form of s, and formatting is idempotent", () => {
    fc.assert(
      fc.property(anySelector, (s) => {
        const text = formatSelector(s);
        const parsed = parseSelector(text);
        expect(parsed).toEqual(canonicalize(s));
        const canonicalText = formatSelector(parsed);
        expect(canonicalText).toBe(canonicalize(s).map(requirementText).join(","));
        expect(parseSelector(canonicalText)).toEqual(parsed);
        expect(formatSelector(parseSelector(canonicalText))).toBe(canonicalText);
      }),
      { numRuns: 500 },
    );
  });

  it("parses every spelling, spacing and order of the same requirements alike", () => {
    const spelled = anySelector.chain((s) =>
      fc.tuple(fc.constant(s), fc.tuple(...s.map(arbSpelling)).chain((texts) => fc.shuffledSubarray(texts, { minLength: texts.length }))),
    );
    fc.assert(
      fc.property(spelled, ([s, texts]) => {
        expect(parseSelector(texts.join(","))).toEqual(canonicalize(s));
      }),
      { numRuns: 500 },
    );
  });

  it("agrees with a reference Kubernetes matcher", () => {
    fc.assert(
      fc.property(selectorAndLabels, ({ selector, labels }) => {
        expect(matchesSelector(selector, labels)).toBe(referenceMatches(selector, labels));
      }),
      { numRuns: 2000 },
    );
  });

  it("generates matching cases that are not vacuous", () => {
    const cases = fc.sample(selectorAndLabels, { numRuns: 2000, seed: 42 });
    const nonEmpty = cases.filter((c) => c.selector.length > 0);
    const share = (xs: typeof cases) => xs.filter((c) => referenceMatches(c.selector, c.labels)).length / xs.length;
    expect(share(cases)).toBeGreaterThan(0.25);
    expect(share(cases)).toBeLessThan(0.75);
    expect(share(nonEmpty)).toBeGreaterThan(0.2);
    expect(share(nonEmpty)).toBeLessThan(0.75);
    // Every operator meets its key both present and absent, and every possible outcome occurs:
    // "present:matches" for each requirement seen.
    const seen: Record<Requirement["op"], Set<string>> = {
      exists: new Set(),
      notexists: new Set(),
      in: new Set(),
      notin: new Set(),
    };
    for (const { selector, labels } of cases) {
      for (const r of selector) seen[r.op].add(`${Object.hasOwn(labels, r.key)}:${referenceMatches([r], labels)}`);
    }
    expect(Object.fromEntries(Object.entries(seen).map(([op, outcomes]) => [op, [...outcomes].sort()]))).toEqual({
      exists: ["false:false", "true:true"],
      notexists: ["false:true", "true:false"],
      in: ["false:false", "true:false", "true:true"],
      notin: ["false:true", "true:false", "true:true"],
    });
  });

  it("either parses any string or throws a SelectorError positioned within it", () => {
    const tokens = fc.constantFrom(
      ..."aZ09-_./=!(),".split(""),
      " ",
      "\t",
      "\n",
      "\r",
      "\f",
      "in",
      "notin",
      " in (",
      "!=",
      "==",
      "$",
      "é",
      "\u{1F600}",
    );
    const inputs = fc.oneof(fc.string({ unit: tokens, maxLength: 40 }), fc.string({ unit: "binary" }), fc.string());
    fc.assert(
      fc.property(inputs, (text) => {
        let parsed: Selector;
        try {
          parsed = parseSelector(text);
        } catch (error) {
          expect(error).toBeInstanceOf(SelectorError);
          const { position } = error as SelectorError;
          expect(Number.isInteger(position)).toBe(true);
          expect(position).toBeGreaterThanOrEqual(0);
          expect(position).toBeLessThanOrEqual(text.length);
          return;
        }
        expect(parseSelector(formatSelector(parsed))).toEqual(parsed);
      }),
      { numRuns: 2000 },
    );
  });
});

describe("parseLabels", () => {
  it.each<[string, Record<string, string>]>([
    ["", {}],
    ["  ", {}],
    ["os=linux", { os: "linux" }],
    ["os=linux,arch=amd64,gpu", { os: "linux", arch: "amd64", gpu: "" }],
    ["gpu=", { gpu: "" }],
    [" os=linux , gpu ", { os: "linux", gpu: "" }],
    ["example.com/gpu=nvidia", { "example.com/gpu": "nvidia" }],
  ])("%j", (text, expected) => {
    expect(parseLabels(text)).toEqual(expected);
  });

  it.each<[string, number, string]>([
    ["os=linux,os=darwin", 9, "duplicate label key 'os'"],
    ["gpu,gpu=", 4, "duplicate label key 'gpu'"],
    ["-os=linux", 0, "invalid label key '-os'"],
    ["=linux", 0, "invalid label key ''"],
    ["os=linux,,gpu", 9, "invalid label key ''"],
    ["os=linux,", 9, "invalid label key ''"],
    ["os=linux, $gpu", 10, "invalid label key '$gpu'"],
    ["os = linux", 0, "invalid label key 'os '"],
    ["Ex.com/gpu", 0, "invalid label key 'Ex.com/gpu'"],
    ["os=li nux", 3, "invalid label value 'li nux'"],
    ["os=linux=x", 3, "invalid label value 'linux=x'"],
    ["a=1,  arch=$", 11, "invalid label value '$'"],
  ])("rejects %j at %i", (text, position, reason) => {
    const error = errorOf(() => parseLabels(text));
    expect(error.reason).toBe(reason);
    expect(error.position).toBe(position);
  });

  it(`accepts at most ${MAX_LABELS} labels`, () => {
    const labels = (n: number) => Array.from({ length: n }, (_, i) => `k${i}=v`).join(",");
    expect(Object.keys(parseLabels(labels(MAX_LABELS)))).toHaveLength(MAX_LABELS);
    expect(errorOf(() => parseLabels(labels(MAX_LABELS + 1))).reason).toBe(`more than ${MAX_LABELS} labels`);
  });

  it("parses what a selector can match", () => {
    const labels = parseLabels("os=linux,gpu");
    expect(matchesSelector(parseSelector("os=linux,gpu,gpu=,!arch"), labels)).toBe(true);
  });
});
