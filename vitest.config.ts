import { availableParallelism } from "node:os";
import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    // The suite mostly waits (on child processes, the database, heartbeats), so two files at once
    // even on 2 cores, where vitest's default of one fewer than the cores would run one: 347-421 s
    // there against 545.
    maxWorkers: Math.max(2, availableParallelism() - 1),
    globalSetup: ["test/support/pglite-template.global.ts"],
    setupFiles: ["test/support/pglite-template.setup.ts"],
  },
});
