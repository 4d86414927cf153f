// A drain hands back what is still running at its timeout; a run whose adapter never ends it (a
// system that stopped answering) does not hold the agent for good: past the cancel grace and a
// margin, the agent stops anyway and leaves the job to the coordinator's lease.
import { expect, test, vi } from "vitest";
import { z } from "zod";
import type { Adapter } from "../../adapters/adapter.ts";
import { useInProcessCoordinator } from "../support/in-process.ts";

const cancels: number[] = [];
const stuck: Adapter<unknown> = {
  name: "exec",
  spec: z.unknown(),
  start: async () => ({ result: new Promise(() => {}), cancel: async (graceMs) => void cancels.push(graceMs) }),
};

const fleet = useInProcessCoordinator();

test("an agent whose run never ends still stops, once the cancel grace and a margin have passed", { timeout: 30_000 }, async () => {
  const agent = fleet().agent({ name: "stuck", labels: { pool: "stuck" }, adapter: stuck });
  const order = await fleet().api<{ id: string }>("POST", "/v1/work-orders", { spec: { command: ["x"] }, selector: "pool=stuck" });
  await vi.waitFor(async () => expect(await fleet().stateOf(order.id)).toBe("running"), { timeout: 10_000 });
  await agent.stop(0);
  expect(cancels).toEqual([100]);
  await expect(agent.stopped).resolves.toBeUndefined();
});
