// Turns a zod failure into the one error shape both sides show: a message naming the field.
import type { z } from "zod";
import { cut } from "./cut.ts";

export type FieldError = { message: string; field?: string };

export function describeIssues(error: z.ZodError): FieldError {
  const issue = error.issues[0];
  if (!issue) return { message: "invalid input" };
  const path = issue.code === "unrecognized_keys" ? [...issue.path, issue.keys[0]!] : issue.path;
  // A key is the client's to choose: a megabyte of one is not echoed back, nor logged.
  const field = path.map((key) => cut(String(key), MAX_KEY_CHARS)).join(".");
  const message = issue.code === "unrecognized_keys" ? "unknown field" : issue.code === "invalid_key" ? keyProblem(issue) : issue.message;
  return field ? { message: `${field}: ${message}`, field } : { message };
}

const MAX_KEY_CHARS = 64;

/** Why a record's key was refused: the key's own check says, where zod says only "Invalid key in record". */
function keyProblem(issue: z.core.$ZodIssueInvalidKey): string {
  return issue.issues[0]?.message ?? issue.message;
}
