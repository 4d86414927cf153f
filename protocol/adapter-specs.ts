// The spec each adapter accepts, so the coordinator can refuse a bad work order at enqueue time
// and the agent can validate what it is handed without trusting the coordinator.
import { z } from "zod";

const envName = z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, "invalid environment variable name");

/** Linux's limit on one argument to a program (MAX_ARG_STRLEN), its terminating NUL included. */
export const MAX_ARGUMENT_BYTES = 128 * 1024;
/** A script goes to its shell as one argument (`sh -c SCRIPT`). */
const script = z
  .string()
  .min(1)
  .refine((text) => Buffer.byteLength(text) < MAX_ARGUMENT_BYTES, `at most ${MAX_ARGUMENT_BYTES - 1} bytes as UTF-8 (the shell takes it as one argument)`);

export const execSpec = z
  .strictObject({
    command: z.array(z.string().max(65_536)).min(1).max(1024).optional(),
    script: script.optional(),
    shell: z.string().min(1).max(256).optional(),
    env: z.record(envName, z.string().max(65_536)).default({}),
    cwd: z.string().min(1).max(4096).optional(),
  })
  .superRefine((spec, ctx) => {
    if ((spec.command === undefined) === (spec.script === undefined)) {
      ctx.addIssue({ code: "custom", path: ["command"], message: "give exactly one of command or script" });
    }
    if (spec.shell !== undefined && spec.script === undefined) {
      ctx.addIssue({ code: "custom", path: ["shell"], message: "shell goes with script" });
    }
  });
export type ExecSpec = z.infer<typeof execSpec>;

export const adapterSpecs = { exec: execSpec } as const;
export type AdapterName = keyof typeof adapterSpecs;
export const adapterNames = Object.keys(adapterSpecs) as [AdapterName, ...AdapterName[]];
