// A body's text kept in the chunks it came in: any slice of it reads as the same slice of the whole.
import { expect, it } from "vitest";
import { BodyText } from "../../coordinator/http/body-text.ts";

it("slices across any chunks as the whole text would", () => {
  const whole = Array.from({ length: 300 }, (_, i) => String.fromCharCode(97 + (i % 26))).join("");
  const body = new BodyText();
  for (let at = 0, size = 1; at < whole.length; at += size, size = (size % 17) + 1) body.push(whole.slice(at, at + size));
  expect(body.length).toBe(whole.length);
  expect(body.toString()).toBe(whole);
  for (let from = 0; from <= whole.length; from += 7) {
    for (let to = from; to <= whole.length; to += 11) expect(body.slice(from, to)).toBe(whole.slice(from, to));
    expect(body.slice(from)).toBe(whole.slice(from));
  }
});

it("an empty body is empty", () => {
  const body = new BodyText();
  expect([body.length, body.toString(), body.slice(0)]).toEqual([0, "", ""]);
});
