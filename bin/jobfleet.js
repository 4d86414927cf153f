#!/usr/bin/env node
// The one jobfleet command. Sources are TypeScript; tsx compiles them on load.
import { register } from "tsx/esm/api";

register();
await import("../cli/main.ts");
