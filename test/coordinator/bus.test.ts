// A work order's watchers hear its changes only, relayed ones included, and stop hearing them once
// they unsubscribe; the others watching it go on hearing.
import { expect, test } from "vitest";
import { Bus } from "../../coordinator/bus.ts";

test("a watcher hears the changes of its work order, emitted or relayed, until it unsubscribes", () => {
  const bus = new Bus();
  const heard: string[] = [];
  const first = bus.watch("1", () => heard.push("first"));
  bus.watch("1", () => heard.push("second"));
  bus.watch("2", () => heard.push("other"));
  const all: string[] = [];
  bus.on("changed", (id) => all.push(id));

  bus.emit("changed", "1");
  bus.deliver("changed", "1");
  bus.emit("changed", "3");
  expect(heard).toEqual(["first", "second", "first", "second"]);

  first();
  first();
  bus.emit("changed", "1");
  bus.emit("changed", "2");
  expect(heard.slice(4)).toEqual(["second", "other"]);
  expect(all).toEqual(["1", "1", "3", "1", "2"]);
});

test("a relay hears when a work order gets its first watcher and loses its last, and can list those watched", () => {
  const bus = new Bus();
  const told: [string, boolean][] = [];
  bus.onWatch = (id, watching) => told.push([id, watching]);
  const first = bus.watch("1", () => {});
  const second = bus.watch("1", () => {});
  const other = bus.watch("2", () => {});
  expect(told).toEqual([["1", true], ["2", true]]);
  expect(bus.watched()).toEqual(["1", "2"]);
  first();
  expect(told).toHaveLength(2);
  second();
  second();
  expect(told.slice(2)).toEqual([["1", false]]);
  bus.watch("1", () => {});
  other();
  expect(told.slice(3)).toEqual([["1", true], ["2", false]]);
  expect(bus.watched()).toEqual(["1"]);
});
