// A work order's spec goes to its agent whole, in one WebSocket message: one too large for that is
// refused at enqueue, naming the field, where it used to be taken and then bounce between a claim
// and the agent's dropped connection for good. One at the bound reaches the agent intact.
import { expect, test, vi } from "vitest";
import { z } from "zod";
import type { Adapter } from "../../adapters/adapter.ts";
import type { ApiError, WorkOrderView } from "../../protocol/api.ts";
import { MAX_METADATA_BYTES, MAX_SPEC_BYTES } from "../../protocol/limits.ts";
import { useInProcessCoordinator } from "../support/in-process.ts";

const received: unknown[] = [];
const recorder: Adapter<unknown> = {
  name: "exec",
  spec: z.unknown(),
  start: async ({ spec }) => {
    received.push(spec);
    return { result: Promise.resolve({ outcome: "succeeded", exitCode: 0 }), cancel: async () => {} };
  },
};

const fleet = useInProcessCoordinator();

/** An exec spec of exactly `bytes` as JSON: two-byte characters, escaped control characters, then ASCII to fill. */
function specOf(bytes: number) {
  const spec = { command: [...Array.from({ length: 8 }, () => "é".repeat(32_000)), "\u001b".repeat(1000), ""], env: {} };
  spec.command[9] = "a".repeat(bytes - Buffer.byteLength(JSON.stringify(spec)));
  expect(Buffer.byteLength(JSON.stringify(spec))).toBe(bytes);
  return spec;
}

test("a spec one byte over the bound is 400 naming spec; one at the bound runs, as sent", async () => {
  fleet().agent({ name: "big-specs", labels: { pool: "big" }, adapter: recorder });
  const over = await fleet().api<ApiError>("POST", "/v1/work-orders", { spec: specOf(MAX_SPEC_BYTES + 1), selector: "pool=big" });
  expect(over.error).toMatchObject({ code: "invalid_request", field: "spec", message: expect.stringContaining(String(MAX_SPEC_BYTES)) });
  const bulk = await fleet().api<ApiError>("POST", "/v1/work-orders/bulk", { workOrders: [{ spec: { command: ["true"] } }, { spec: specOf(MAX_SPEC_BYTES + 1) }] });
  expect(bulk.error).toMatchObject({ code: "invalid_request", field: "workOrders.1.spec" });

  const spec = specOf(MAX_SPEC_BYTES);
  const order = await fleet().api<WorkOrderView>("POST", "/v1/work-orders", { spec, selector: "pool=big" });
  await vi.waitFor(async () => expect(await fleet().stateOf(order.id)).toBe("succeeded"), { timeout: 10_000 });
  expect(received).toEqual([spec]);
});

test("metadata past its bound is 400 naming metadata", async () => {
  const blob = "x".repeat(MAX_METADATA_BYTES);
  const refused = await fleet().api<ApiError>("POST", "/v1/work-orders", { spec: { command: ["true"] }, metadata: { blob } });
  expect(refused.error).toMatchObject({ code: "invalid_request", field: "metadata", message: expect.stringContaining(String(MAX_METADATA_BYTES)) });
});
