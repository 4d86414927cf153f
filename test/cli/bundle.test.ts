// The jobfleet command runs its TypeScript from a bundle kept until a source changes
// (bin/bundle.js). Each bundle here is built from sources in a temp directory and run by a real
// `node`, kept where the test says.
import { execFile } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { bundled } from "../../bin/bundle.js";

const run = promisify(execFile);

describe("the command's bundle", () => {
  let sources: string;
  let cache: string;
  beforeEach(() => {
    sources = mkdtempSync(join(tmpdir(), "jobfleet-bundle-sources-"));
    cache = mkdtempSync(join(tmpdir(), "jobfleet-bundle-cache-"));
  });
  afterEach(() => {
    rmSync(sources, { recursive: true, force: true });
    rmSync(cache, { recursive: true, force: true });
  });

  const write = (file: string, text: string) => writeFileSync(join(sources, file), text);
  const output = async (bundle: string) => JSON.parse((await run(process.execPath, [bundle])).stdout) as Record<string, unknown>;

  it("is built once, and again when a source it imports changes", async () => {
    write("value.ts", "export const value: number = 1;\n");
    write("entry.ts", 'import { value } from "./value.ts";\nconsole.log(JSON.stringify({ value, here: new URL(".", import.meta.url).pathname }));\n');
    const entry = join(sources, "entry.ts");

    const first = await bundled(entry, [cache]);
    expect(first.startsWith(cache)).toBe(true);
    // Each module keeps its own import.meta.url, not the bundle's.
    expect(await output(first)).toEqual({ value: 1, here: `${sources}/` });
    const builtAt = statSync(first).mtimeMs;

    expect(await bundled(entry, [cache])).toBe(first);
    expect(statSync(first).mtimeMs).toBe(builtAt);

    write("value.ts", "export const value: number = 2;\n");
    const second = await bundled(entry, [cache]);
    expect(second).not.toBe(first);
    expect(existsSync(first)).toBe(false);
    expect(await output(second)).toMatchObject({ value: 2 });
  });

  it("is kept in the next place when the first cannot take it, and imports packages from wherever it is", async () => {
    write("entry.ts", 'import { z } from "zod";\nconsole.log(JSON.stringify({ parsed: z.int().parse(7) }));\n');
    const file = join(cache, "a-file");
    writeFileSync(file, "");

    const bundle = await bundled(join(sources, "entry.ts"), [join(file, "cache"), join(cache, "next")]);
    expect(bundle.startsWith(join(cache, "next"))).toBe(true);
    expect(await output(bundle)).toEqual({ parsed: 7 });
  });

  it("names nowhere it could be kept, if nowhere takes it", async () => {
    write("entry.ts", "console.log(1);\n");
    const file = join(cache, "a-file");
    writeFileSync(file, "");
    await expect(bundled(join(sources, "entry.ts"), [join(file, "cache")])).rejects.toThrow(/nowhere to keep the bundle .*a-file\/cache/);
  });

  it("maps a stack trace to the TypeScript source", async () => {
    write("entry.ts", 'type Never = never;\nfunction fail(): Never {\n  throw new Error("failed here");\n}\nfail();\n');
    const bundle = await bundled(join(sources, "entry.ts"), [cache]);
    const failed = await run(process.execPath, ["--enable-source-maps", bundle]).catch((error: { stderr: string }) => error);
    expect(failed.stderr).toContain(`${join(sources, "entry.ts")}:3:`);
  });
});
