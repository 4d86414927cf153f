// `npm run soak [-- --orders N --seed S --agents A --capacity C --prefetch P]`: the full fault soak; its last
// line gives the counts.
import { parseArgs } from "node:util";
import { runSoak, summary } from "./soak.ts";

const { values } = parseArgs({
  options: {
    orders: { type: "string" },
    seed: { type: "string" },
    agents: { type: "string" },
    capacity: { type: "string" },
    prefetch: { type: "string" },
  },
});
const seed = Number(values.seed ?? Math.floor(Math.random() * 2 ** 31));
const report = await runSoak({
  orders: Number(values.orders ?? 500),
  agents: Number(values.agents ?? 4),
  capacity: Number(values.capacity ?? 4),
  prefetch: Number(values.prefetch ?? 2),
  seed,
  lines: 40,
  log: (line) => console.log(line),
});
for (const problem of [...report.problems, ...report.overlaps.map((o) => `overlap: ${o}`)]) console.log(`problem: ${problem}`);
console.log(summary(report));
process.exitCode = report.problems.length + report.overlaps.length === 0 ? 0 : 1;
