#!/usr/bin/env node
// The one jobfleet command. Its sources are TypeScript, run from a bundle kept in step with them
// (bundle.js); stack traces name the sources.
import { pathToFileURL } from "node:url";
import { bundled } from "./bundle.js";

let bundle;
try {
  bundle = await bundled("cli/main.ts");
} catch (error) {
  process.stderr.write(`jobfleet: ${error.message}\n`);
  process.exit(1);
}
process.setSourceMapsEnabled(true);
await import(pathToFileURL(bundle).href);
