// The items of a bulk body are validated in runs that give the event loop back every few ms, so
// that a large bulk enqueue does not hold up the requests and agents the coordinator serves meanwhile.
import { expect, it } from "vitest";
import { validItems } from "../../coordinator/http/validate.ts";
import { workOrderCreate } from "../../protocol/api.ts";

it("lets other work in between items once a run of them has held the event loop 10 ms", async () => {
  let othersRan = false;
  setImmediate(() => (othersRan = true));
  const seen: boolean[] = [];
  const slowItem = () => {
    seen.push(othersRan);
    for (const end = performance.now() + 11; performance.now() < end; );
    return { spec: { command: ["true"] } };
  };
  const valid = await validItems(workOrderCreate, slowItem, 0, 3, "workOrders");
  expect(valid).toHaveLength(3);
  expect(seen).toEqual([false, true, true]);
});

it("names an item that fails by its place in the whole", async () => {
  const items = [{ spec: { command: ["true"] } }, { spec: {} }];
  await expect(validItems(workOrderCreate, (i) => items[i - 7], 7, 9, "workOrders")).rejects.toMatchObject({ field: "workOrders.8.spec.command" });
});
