#!/usr/bin/env node
// The one jobfleet command. Its sources are TypeScript, run from a bundle kept in step with them
// (bundle.js); stack traces name the sources.
import { pathToFileURL } from "node:url";
import { bundled } from "./bundle.js";

process.setSourceMapsEnabled(true);
await import(pathToFileURL(await bundled("cli/main.ts")).href);
