// The label-selector language (Kubernetes syntax): `os=linux,arch in (amd64,arm64),!gpu`.
// Parsed once into a canonical form that both the agent-side matcher and the coordinator's SQL use.

/** One requirement; `=`/`==` parse to `in` with one value, `!=` to `notin` with one value. */
export type Requirement =
  | { key: string; op: "exists" }
  | { key: string; op: "notexists" }
  | { key: string; op: "in"; values: string[] }
  | { key: string; op: "notin"; values: string[] };

/** Requirements ANDed together, sorted and de-duplicated; empty matches every label set. */
export type Selector = Requirement[];

export type Labels = Record<string, string>;

export const MAX_SELECTOR_LENGTH = 4096;
export const MAX_LABELS = 64;

export class SelectorError extends Error {
  constructor(
    readonly reason: string,
    readonly position: number,
  ) {
    super(`${reason} at position ${position}`);
    this.name = "SelectorError";
  }
}

const NAME = /^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;
/** A DNS-1123 subdomain: dot-separated labels, each starting and ending with a letter or digit. */
const PREFIX = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const MAX_PREFIX_LENGTH = 253;
const VALUE = /^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$/;

export function isLabelKey(key: string): boolean {
  const slash = key.indexOf("/");
  if (slash === -1) return NAME.test(key);
  const prefix = key.slice(0, slash);
  return prefix.length <= MAX_PREFIX_LENGTH && PREFIX.test(prefix) && NAME.test(key.slice(slash + 1));
}

export function isLabelValue(value: string): boolean {
  return VALUE.test(value);
}

type Token = { kind: "word" | "op"; text: string; at: number };

const WORD_CHAR = /[A-Za-z0-9_.\-/]/;
/** Kubernetes' lexer skips exactly these between tokens. */
const WHITESPACE = [" ", "\t", "\r", "\n"];
const OPERATORS = ["!=", "==", "=", "!", "(", ")", ","];

function tokenize(input: string): Token[] {
  const tokens: Token[] = [];
  let i = 0;
  while (i < input.length) {
    const ch = input[i]!;
    if (WHITESPACE.includes(ch)) {
      i++;
      continue;
    }
    if (WORD_CHAR.test(ch)) {
      const start = i;
      while (i < input.length && WORD_CHAR.test(input[i]!)) i++;
      tokens.push({ kind: "word", text: input.slice(start, i), at: start });
      continue;
    }
    const op = OPERATORS.find((o) => input.startsWith(o, i));
    if (!op) throw new SelectorError(`unexpected character '${String.fromCodePoint(input.codePointAt(i)!)}'`, i);
    tokens.push({ kind: "op", text: op, at: i });
    i += op.length;
  }
  return tokens;
}

class Parser {
  private i = 0;
  constructor(
    private readonly tokens: Token[],
    private readonly end: number,
  ) {}

  private peek(): Token | undefined {
    return this.tokens[this.i];
  }

  private next(expected: string): Token {
    const token = this.tokens[this.i++];
    if (!token) throw new SelectorError(`expected ${expected} but the selector ended`, this.end);
    return token;
  }

  private fail(token: Token, expected: string): never {
    throw new SelectorError(`expected ${expected}, found '${token.text}'`, token.at);
  }

  private atBoundary(): boolean {
    const token = this.peek();
    return !token || (token.kind === "op" && token.text === ",");
  }

  private key(): string {
    const token = this.next("a label key");
    if (token.kind !== "word") this.fail(token, "a label key");
    if (!isLabelKey(token.text)) throw new SelectorError(`invalid label key '${token.text}'`, token.at);
    return token.text;
  }

  private value(): string {
    if (this.atBoundary()) return "";
    const token = this.next("a label value");
    if (token.kind !== "word") this.fail(token, "a label value");
    if (!isLabelValue(token.text)) throw new SelectorError(`invalid label value '${token.text}'`, token.at);
    return token.text;
  }

  /**
   * `(a,b)`. As in Kubernetes, a missing value is the empty string: `()`, `(,a)`, `(a,)` and
   * `(a,,b)` all hold "". Kubernetes takes the commas of a run two at a time, so an even run
   * right before `)` (`(,,)`, `(a,,)`) is an error there, and here.
   */
  private set(): string[] {
    const open = this.next("'('");
    if (open.text !== "(") this.fail(open, "'('");
    if (this.peek()?.text === ")") {
      this.i++;
      return [""];
    }
    const values: string[] = [];
    for (;;) {
      const token = this.next("a label value or ','");
      if (token.text === ",") {
        if (values.length === 0) values.push("");
      } else {
        if (token.kind !== "word") this.fail(token, "a label value or ','");
        if (!isLabelValue(token.text)) throw new SelectorError(`invalid label value '${token.text}'`, token.at);
        values.push(token.text);
        const sep = this.next("',' or ')'");
        if (sep.text === ")") return values;
        if (sep.text !== ",") this.fail(sep, "',' or ')'");
      }
      // Just after a comma: `,)` ends the set with "", and `,,` holds "" and is taken whole.
      const after = this.peek()?.text;
      if (after === ")" || after === ",") {
        this.i++;
        values.push("");
        if (after === ")") return values;
      }
    }
  }

  private requirement(): Requirement {
    const first = this.peek();
    if (first?.text === "!") {
      this.i++;
      return { key: this.key(), op: "notexists" };
    }
    const key = this.key();
    if (this.atBoundary()) return { key, op: "exists" };
    const op = this.next("an operator");
    switch (op.text) {
      case "=":
      case "==":
        return { key, op: "in", values: [this.value()] };
      case "!=":
        return { key, op: "notin", values: [this.value()] };
      case "in":
      case "notin":
        if (op.kind === "word") return { key, op: op.text, values: this.set() } as Requirement;
    }
    this.fail(op, "'=', '==', '!=', 'in' or 'notin'");
  }

  parse(): Selector {
    const requirements: Requirement[] = [];
    if (!this.peek()) return requirements;
    for (;;) {
      requirements.push(this.requirement());
      const sep = this.peek();
      if (!sep) return requirements;
      if (sep.text !== ",") this.fail(sep, "',' or the end of the selector");
      this.i++;
    }
  }
}

function canonical(requirements: Requirement[]): Selector {
  const normalized = requirements.map((r): Requirement =>
    r.op === "in" || r.op === "notin" ? { ...r, values: [...new Set(r.values)].sort() } : r,
  );
  const byText = new Map(normalized.map((r) => [formatRequirement(r), r]));
  return [...byText.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([, r]) => r);
}

// A fleet's work orders use a handful of selectors, each sent thousands of times (a bulk request
// repeats one in every order): each text is parsed once, and each parsed selector formatted once.
// What is shared is frozen, so no caller can change another's; only frozen selectors are formatted
// from memory, as any other may have changed since.
const MAX_PARSED = 256;
const parsed = new Map<string, Selector>();
const formatted = new WeakMap<Selector, string>();

function frozen(selector: Selector): Selector {
  for (const r of selector) {
    if (r.op === "in" || r.op === "notin") Object.freeze(r.values);
    Object.freeze(r);
  }
  Object.freeze(selector);
  return selector;
}

/** Parses a selector; throws SelectorError naming the position of the first error. */
export function parseSelector(input: string): Selector {
  const known = parsed.get(input);
  if (known) return known;
  if (input.length > MAX_SELECTOR_LENGTH) {
    throw new SelectorError(`selector longer than ${MAX_SELECTOR_LENGTH} characters`, MAX_SELECTOR_LENGTH);
  }
  const selector = frozen(canonical(new Parser(tokenize(input), input.length).parse()));
  // Its canonical text is what is stored and shown, and must parse again: `a in(b,c)` grows a space.
  if (formatSelector(selector).length > MAX_SELECTOR_LENGTH) {
    throw new SelectorError(`selector longer than ${MAX_SELECTOR_LENGTH} characters once written canonically`, input.length);
  }
  if (parsed.size === MAX_PARSED) parsed.clear();
  parsed.set(input, selector);
  return selector;
}

function formatRequirement(r: Requirement): string {
  switch (r.op) {
    case "exists":
      return r.key;
    case "notexists":
      return `!${r.key}`;
    case "in":
    case "notin": {
      // De-duplicated even if not canonical: a repeated "" could write `(a,,)`, which is an error.
      const values = [...new Set(r.values)];
      if (values.length === 1) return `${r.key}${r.op === "in" ? "=" : "!="}${values[0]}`;
      return `${r.key} ${r.op} (${values.join(",")})`;
    }
  }
}

/**
 * The canonical text of a selector: equal selectors format identically. A set holding "" writes
 * it first (values are sorted), `a in (,b)`, which parses back to the same set.
 */
export function formatSelector(selector: Selector): string {
  let text = formatted.get(selector);
  if (text !== undefined) return text;
  text = selector.map(formatRequirement).join(",");
  if (Object.isFrozen(selector)) formatted.set(selector, text);
  return text;
}

function matchesRequirement(r: Requirement, labels: Labels): boolean {
  const has = Object.hasOwn(labels, r.key);
  switch (r.op) {
    case "exists":
      return has;
    case "notexists":
      return !has;
    case "in":
      return has && r.values.includes(labels[r.key]!);
    case "notin":
      return !has || !r.values.includes(labels[r.key]!);
  }
}

export function matchesSelector(selector: Selector, labels: Labels): boolean {
  return selector.every((r) => matchesRequirement(r, labels));
}

/** Parses agent labels, `os=linux,arch=amd64,gpu` (a bare key has the empty value). */
export function parseLabels(input: string): Labels {
  const labels: Labels = {};
  let at = 0;
  for (const part of input.split(",")) {
    const trimmed = part.trim();
    if (trimmed !== "" || input.trim() !== "") {
      const start = at + part.length - part.trimStart().length;
      const eq = trimmed.indexOf("=");
      const key = eq === -1 ? trimmed : trimmed.slice(0, eq);
      const value = eq === -1 ? "" : trimmed.slice(eq + 1);
      if (!isLabelKey(key)) throw new SelectorError(`invalid label key '${key}'`, start);
      if (!isLabelValue(value)) throw new SelectorError(`invalid label value '${value}'`, start + eq + 1);
      if (Object.hasOwn(labels, key)) throw new SelectorError(`duplicate label key '${key}'`, start);
      labels[key] = value;
    }
    at += part.length + 1;
  }
  if (Object.keys(labels).length > MAX_LABELS) throw new SelectorError(`more than ${MAX_LABELS} labels`, 0);
  return labels;
}
