import { setTimeout } from "node:timers/promises";

/** Polls `condition` every 20 ms until it holds; fails naming `what` after `timeoutMs` (20 s). */
export async function until(condition: () => boolean | Promise<boolean>, what: string, timeoutMs = 20_000): Promise<void> {
  for (let waited = 0; !(await condition()); waited += 20) {
    if (waited > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await setTimeout(20);
  }
}
