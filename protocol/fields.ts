// Field schemas reused across messages and API bodies.
import { z } from "zod";
import { isLabelKey, isLabelValue, MAX_LABELS, parseSelector, SelectorError, type Selector } from "./selector.ts";

/** The largest Postgres bigint; a 19-digit id above it would fail in the database, not here. */
const MAX_ID = 9_223_372_036_854_775_807n;

/** Row ids are Postgres bigints, carried as decimal strings so no client loses precision. */
export const id = z
  .string()
  .regex(/^[1-9][0-9]{0,18}$/, "expected a numeric id")
  // Only a 19-digit id can pass the pattern and still be too large.
  .refine((s) => s.length < 19 || !/^[0-9]+$/.test(s) || BigInt(s) <= MAX_ID, "expected a numeric id");

export const agentName = z
  .string()
  .regex(/^[A-Za-z0-9][-A-Za-z0-9_.@:]{0,127}$/, "expected 1-128 letters, digits or -_.@: starting with a letter or digit");

export const labels = z
  .record(
    z.string().refine(isLabelKey, "invalid label key"),
    z.string().refine(isLabelValue, "invalid label value"),
  )
  .refine((l) => Object.keys(l).length <= MAX_LABELS, `at most ${MAX_LABELS} labels`);

/** A selector in text form, parsed; a syntax error names its position. */
export const selector = z.string().transform((text, ctx): Selector => {
  try {
    return parseSelector(text);
  } catch (error) {
    if (!(error instanceof SelectorError)) throw error;
    ctx.addIssue({ code: "custom", message: `invalid selector: ${error.message}`, params: { position: error.position } });
    return z.NEVER;
  }
});

export const timestamp = z.string().datetime({ offset: true });
