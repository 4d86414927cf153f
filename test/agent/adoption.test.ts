// An external run outlives the agent that started it: a draining agent lets go of it (no cancel),
// and the next attempt adopts it instead of triggering it again. A fake CI system stands in for
// the external one; the coordinator, agents and WebSockets are real.
import { expect, test, vi } from "vitest";
import { z } from "zod";
import type { Adapter, Run, RunContext, RunResult } from "../../adapters/adapter.ts";
import type { Agent } from "../../agent/agent.ts";
import type { WorkOrderView } from "../../protocol/api.ts";
import { useInProcessCoordinator } from "../support/in-process.ts";

/** A CI system in memory: runs go on until the test finishes them, whoever follows them. */
class FakeCi {
  triggers = 0;
  adoptions = 0;
  cancels = 0;
  private readonly finishers = new Map<string, () => void>();
  private readonly runs = new Map<string, Promise<void>>();

  trigger(): string {
    const id = `run-${++this.triggers}`;
    this.runs.set(id, new Promise((resolve) => this.finishers.set(id, resolve)));
    return id;
  }

  finish(id: string): void {
    this.finishers.get(id)!();
  }

  follow(ctx: RunContext<unknown>, id: string): Run {
    let following = true;
    let settle!: (result: RunResult) => void;
    const result = new Promise<RunResult>((resolve) => (settle = resolve)).finally(() => (following = false));
    void this.runs.get(id)!.then(() => {
      if (!following) return;
      ctx.log(`${id} finished\n`);
      settle({ outcome: "succeeded", exitCode: 0 });
    });
    return {
      externalId: id,
      externalUrl: `https://ci.example/runs/${id}`,
      result,
      cancel: async () => {
        this.cancels++;
        settle({ outcome: "cancelled", exitCode: null });
      },
      detach: async () => settle({ outcome: "cancelled", exitCode: null }),
    };
  }
}

const ci = new FakeCi();
const fake: Adapter<unknown> = {
  name: "exec",
  spec: z.unknown(),
  start: async (ctx) => ci.follow(ctx, ci.trigger()),
  adopt: async (ctx, run) => {
    ci.adoptions++;
    return ci.follow(ctx, run.externalId);
  },
};

const fleet = useInProcessCoordinator();
const agent = (name: string): Agent => fleet().agent({ name, labels: { pool: "external" }, adapter: fake });
const api = <T>(method: string, path: string, body?: unknown) => fleet().api<T>(method, path, body);

test("a run handed back by a draining agent is adopted by the next attempt, never triggered twice", async () => {
  const first = agent("first");
  const order = await api<WorkOrderView>("POST", "/v1/work-orders", {
    spec: { command: ["external"] },
    selector: "pool=external",
    maxAttempts: 2,
    retryBackoffSeconds: 0,
  });
  await vi.waitFor(() => expect(ci.triggers).toBe(1));
  await first.stop(0);
  expect(ci.cancels).toBe(0);
  await vi.waitFor(async () => expect((await api<WorkOrderView>("GET", `/v1/work-orders/${order.id}`)).state).toBe("pending"));

  const second = agent("second");
  await vi.waitFor(() => expect(ci.adoptions).toBe(1));
  ci.finish("run-1");
  await vi.waitFor(async () => expect((await api<WorkOrderView>("GET", `/v1/work-orders/${order.id}`)).state).toBe("succeeded"));
  await second.stop(1000);

  expect({ triggers: ci.triggers, adoptions: ci.adoptions, cancels: ci.cancels }).toEqual({ triggers: 1, adoptions: 1, cancels: 0 });
  const jobs = await api<{ items: { attempt: number; externalId: string; state: string; agent: string }[] }>("GET", `/v1/jobs?workOrder=${order.id}`);
  expect(jobs.items.map((j) => [j.attempt, j.agent, j.state, j.externalId])).toEqual([
    [2, "second", "succeeded", "run-1"],
    [1, "first", "failed", "run-1"],
  ]);
});
