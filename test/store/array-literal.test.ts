// Array parameters as literals: what the writer produces, and that Postgres reads each value back
// as it was given, on both databases.
import { expect, it } from "vitest";
import { arrayLiteral } from "../../coordinator/sql/array-literal.ts";
import { forEachDatabase } from "../support/databases.ts";
import { useDatabase } from "./fixtures.ts";

it("quotes every text, escapes quotes and backslashes only, and leaves numbers, booleans and NULLs bare", () => {
  expect(arrayLiteral([])).toBe("{}");
  expect(arrayLiteral(["a", 'b"c', "d\\e", null, undefined, 7, -2.5, true, "NULL", ""])).toBe(String.raw`{"a","b\"c","d\\e",NULL,NULL,7,-2.5,true,"NULL",""}`);
});

it("escapes a repeated text once, and gives it the same literal every time", () => {
  const quoted = new Map<string, string>();
  expect(arrayLiteral(['{"x":1}', '{"x":1}', "y"], quoted)).toBe(String.raw`{"{\"x\":1}","{\"x\":1}","y"}`);
  expect([...quoted.keys()]).toEqual(['{"x":1}', "y"]);
});

forEachDatabase("array literals", (kind) => {
  const db = useDatabase(kind);

  it("read back as given: texts of any content, NULL against the text NULL, numbers and booleans", async () => {
    const texts = ["plain", 'a"b', "back\\slash\\", "c,d", "{e}", "[1:2]={a,b}", " spaced ", "tab\tand\nline", "NULL", "null", "", "ü€😀", "x".repeat(100_000), null];
    // Read back element by element: the drivers' own parsing of an array result is not under test.
    const back = async (literal: string, type: string) =>
      (await db().query<{ v: unknown }>(`SELECT v FROM unnest($1::${type}[]) WITH ORDINALITY AS u(v, n) ORDER BY n`, [literal])).map((r) => r.v);
    expect(await back(arrayLiteral(texts), "text")).toEqual(texts);
    expect(await back(arrayLiteral([1, -0, null, 2147483647]), "int")).toEqual([1, 0, null, 2147483647]);
    expect((await back(arrayLiteral([1e21, 1e-7, 0.5, null]), "float8")).map((v) => (v === null ? null : Number(v)))).toEqual([1e21, 1e-7, 0.5, null]);
    expect(await back(arrayLiteral([true, false, null]), "boolean")).toEqual([true, false, null]);
    expect(await back(arrayLiteral([]), "text")).toEqual([]);
  });
});
