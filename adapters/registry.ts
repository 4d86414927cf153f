// Every adapter by name, each bound to its own spec type, so this map and protocol/adapter-specs.ts stay in step.
import type { z } from "zod";
import type { AdapterName, adapterSpecs } from "../protocol/adapter-specs.ts";
import type { Adapter } from "./adapter.ts";
import { execAdapter } from "./exec.ts";

type Adapters = { [N in AdapterName]: Adapter<z.infer<(typeof adapterSpecs)[N]>> };

export const adapters: Adapters = {
  exec: execAdapter,
};

/** The adapter for `name`; parse the spec with its `spec` schema before handing it to `start`. */
export function adapterFor(name: AdapterName): Adapter<unknown> {
  return adapters[name];
}
