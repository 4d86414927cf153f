// One racer of test/store/claim-race.test.ts: claims each of `count` data directories under `base`
// at the instant given for it, and prints which it got. Run with `node --import tsx`.
import { setTimeout as sleep } from "node:timers/promises";
import { join } from "node:path";
import { claimDataDir } from "../../coordinator/db/pglite-data-dir.ts";

const [base, countText, startText, stepText] = process.argv.slice(2);
const got: number[] = [];
const now = () => performance.timeOrigin + performance.now();
for (let i = 0; i < Number(countText); i++) {
  const at = Number(startText) + i * Number(stepText);
  await sleep(Math.max(0, at - now() - 2));
  // The last 2 ms spun, so that both racers move at the same instant.
  while (now() < at);
  try {
    claimDataDir(join(base!, String(i)));
    got.push(i);
  } catch {
    // The other racer holds it.
  }
}
process.stdout.write(JSON.stringify(got));
