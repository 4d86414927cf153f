// Scenario 4 on an idle fleet: probe work orders enqueued one at a time (each 10 ms after the
// previous one started), timed from just before the POST until the adapter's start is called on an agent.
// (Under load: jobfleetThroughput with `probeEveryMs`.)
import { bootAgents, CoordinatorProcess, type FleetShape, PROBE_ORDER } from "./fleet.ts";
import { createDatabase, dropDatabase, now, sleep, waitUntil } from "./support.ts";

const WARMUP = 20;
/** Between a probe's start and the next POST: the time its run takes to end, so the next one finds the fleet idle. */
const GAP_MS = 10;

/** Sorted latencies in ms. */
export async function idleLatency(probes: number, shape: FleetShape): Promise<number[]> {
  const booting = bootAgents(shape, "idle");
  let url: string | undefined;
  let coordinator: CoordinatorProcess | undefined;
  try {
    url = await createDatabase("lat");
    coordinator = await CoordinatorProcess.start({ kind: "postgres", url });
    const agents = await booting.fleet;
    agents.go(coordinator);
    const api = coordinator.api;
    const total = shape.processes * shape.perProcess;
    await waitUntil(async () => (await api.connected()) === total, 100, 30_000, "every agent to connect");
    await sleep(500);
    let waiting: { id?: string; resolve: (t: number) => void } | undefined;
    const early = new Map<string, number>();
    agents.onProbe((id, t) => {
      if (waiting?.id === id) waiting.resolve(t);
      else early.set(id, t);
    });
    const latencies: number[] = [];
    for (let i = 0; i < WARMUP + probes; i++) {
      const started = new Promise<number>((resolve) => (waiting = { resolve }));
      const t = now();
      const id = await api.enqueue(PROBE_ORDER);
      // The start may beat the POST's answer.
      if (early.has(id)) waiting!.resolve(early.get(id)!);
      else waiting!.id = id;
      const s = await started;
      if (i >= WARMUP) latencies.push(s - t);
      await sleep(GAP_MS);
    }
    return latencies.sort((a, b) => a - b);
  } finally {
    await booting.stop();
    await coordinator?.stop();
    if (url) await dropDatabase(url);
  }
}
