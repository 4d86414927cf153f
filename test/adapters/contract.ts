// The behaviour every adapter owes the agent. Each adapter's test file runs this suite with its own fixtures.
import { describe, expect, it } from "vitest";
import type { AdapterName } from "../../protocol/adapter-specs.ts";
import type { Adapter, Run, RunContext } from "../../adapters/adapter.ts";
import { adapterFor } from "../../adapters/registry.ts";

/** Specs as a work order would carry them, before validation. */
export type ContractCase = {
  invalid: unknown;
  /** Succeeds, writing `lines` (each followed by a newline) to its output. */
  succeeds: { spec: unknown; lines: string[] };
  fails: unknown;
  /** Runs far longer than any test, and stops when asked. */
  longRun: unknown;
  /** Enough time for `longRun` to stop gracefully. */
  graceMs: number;
};

export type Started = { run: Run; output: () => string };

/** Starts a run of `spec` the way the agent does: validated first, output collected. */
export async function startRun(adapter: Adapter<unknown>, spec: unknown, onLog?: (text: string) => void): Promise<Started> {
  const chunks: string[] = [];
  const ctx: RunContext<unknown> = {
    jobId: "job-1",
    workOrderId: "wo-1",
    attempt: 1,
    spec: adapter.spec.parse(spec),
    log(text) {
      chunks.push(text);
      onLog?.(text);
    },
    status() {},
  };
  const run = await adapter.start(ctx);
  return { run, output: () => chunks.join("") };
}

export function adapterContract(name: AdapterName, makeCase: () => ContractCase): void {
  describe(`adapter contract: ${name}`, () => {
    const adapter = adapterFor(name);
    const fixtures = makeCase();

    it("is registered under its own name", () => {
      expect(adapter.name).toBe(name);
    });

    it("rejects an invalid spec and accepts the fixtures", () => {
      expect(adapter.spec.safeParse(fixtures.invalid).success).toBe(false);
      for (const spec of [fixtures.succeeds.spec, fixtures.fails, fixtures.longRun]) {
        expect(adapter.spec.safeParse(spec).success).toBe(true);
      }
    });

    it("reports success with the whole output, in order", async () => {
      const { run, output } = await startRun(adapter, fixtures.succeeds.spec);
      const result = await run.result;
      expect(result.outcome).toBe("succeeded");
      expect(output()).toContain(fixtures.succeeds.lines.map((line) => `${line}\n`).join(""));
    });

    it("reports failure", async () => {
      const { run } = await startRun(adapter, fixtures.fails);
      expect((await run.result).outcome).toBe("failed");
    });

    it("cancels, settling within the grace period", async () => {
      const { run } = await startRun(adapter, fixtures.longRun);
      const cancelledAt = performance.now();
      await run.cancel(fixtures.graceMs);
      expect((await run.result).outcome).toBe("cancelled");
      expect(performance.now() - cancelledAt).toBeLessThan(fixtures.graceMs);
    });

    it("treats a repeated cancel as harmless", async () => {
      const { run } = await startRun(adapter, fixtures.longRun);
      await Promise.all([run.cancel(fixtures.graceMs), run.cancel(fixtures.graceMs)]);
      expect((await run.result).outcome).toBe("cancelled");
      await run.cancel(fixtures.graceMs);
      expect((await run.result).outcome).toBe("cancelled");
    });
  });
}
