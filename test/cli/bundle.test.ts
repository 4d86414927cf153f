// The jobfleet command runs its TypeScript from a bundle kept until a source changes
// (bin/bundle.js). Each bundle here is built from sources in a temp directory and run by a real
// `node`, kept where the test says.
import { execFile } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { setTimeout } from "node:timers/promises";
import { fileURLToPath, pathToFileURL } from "node:url";
import { promisify } from "node:util";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { bundled } from "../../bin/bundle.js";

const run = promisify(execFile);
const BUNDLE_JS = new URL("../../bin/bundle.js", import.meta.url).href;
const NODE_MODULES = fileURLToPath(new URL("../../node_modules/", import.meta.url));

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

  const write = (file: string, text: string) => {
    mkdirSync(dirname(join(sources, file)), { recursive: true });
    writeFileSync(join(sources, file), text);
  };
  const output = async (bundle: string) => JSON.parse((await run(process.execPath, [bundle])).stdout) as unknown;
  const printing = (value: string) => `console.log(JSON.stringify(${JSON.stringify(value)}));\n`;
  /** `bundled` as a command calls it: in a process of its own (Node keeps what it read of packages for the life of a process). */
  const bundledByCommand = async (entry: string, options: { cwd?: string } = {}) => {
    const script = `import { bundled } from ${JSON.stringify(BUNDLE_JS)}; console.log(await bundled(${JSON.stringify(entry)}, [${JSON.stringify(cache)}]));`;
    return (await run(process.execPath, ["--input-type=module", "-e", script], options)).stdout.trim();
  };

  it("is built once, and again when a source it imports changes; bundles and temporary files unused for an hour are dropped then", async () => {
    write("value.ts", "export const value: number = 1;\n");
    write(
      "entry.ts",
      'import { value } from "./value.ts";\n// Not import.meta.dirname: comments and strings naming it are left as they are.\n' +
        'console.log(JSON.stringify({ value, here: new URL(".", import.meta.url).pathname, said: "import.meta.url" }));\n',
    );
    const entry = join(sources, "entry.ts");

    const first = await bundled(entry, [cache]);
    expect(first.startsWith(cache)).toBe(true);
    // Each module keeps its own import.meta.url, not the bundle's.
    expect(await output(first)).toEqual({ value: 1, here: `${sources}/`, said: "import.meta.url" });
    const built = statSync(first).ino;

    expect(await bundled(entry, [cache])).toBe(first);
    expect(statSync(first).ino).toBe(built); // not written again

    write("value.ts", "export const value: number = 2;\n");
    const second = await bundled(entry, [cache]);
    expect(second).not.toBe(first);
    expect(await output(second)).toMatchObject({ value: 2 });
    expect(existsSync(first)).toBe(true); // a process started a moment ago may still fork from it

    // Built long ago, but used a moment ago: kept.
    const twoHoursAgo = new Date(Date.now() - 7_200_000);
    utimesSync(second, twoHoursAgo, twoHoursAgo);
    expect(await bundled(entry, [cache])).toBe(second);
    utimesSync(first, twoHoursAgo, twoHoursAgo);
    // Another entry's bundle, and temporary files a writer that died left, old and new.
    write("other.ts", printing("other"));
    const other = await bundled(join(sources, "other.ts"), [cache]);
    utimesSync(other, twoHoursAgo, twoHoursAgo);
    const [oldTemporary, newTemporary] = [join(cache, "entry.json.1.tmp"), join(cache, "entry.json.2.tmp")];
    writeFileSync(oldTemporary, "");
    utimesSync(oldTemporary, twoHoursAgo, twoHoursAgo);
    writeFileSync(newTemporary, "");
    write("value.ts", "export const value: number = 3;\n");
    expect(await output(await bundled(entry, [cache]))).toMatchObject({ value: 3 });
    expect(existsSync(first)).toBe(false);
    expect(existsSync(`${first}.map`)).toBe(false);
    expect(existsSync(second)).toBe(true);
    expect([existsSync(other), existsSync(`${other}.map`), existsSync(oldTemporary), existsSync(newTemporary)]).toEqual([false, false, false, true]);
    // Its manifest left behind, the other entry is bundled again.
    expect(await output(await bundled(join(sources, "other.ts"), [cache]))).toBe("other");
  });

  it("reads an input again only when its inode, size, modification or change time differ from the manifest's, or it changed a moment before", async () => {
    const entry = join(sources, "entry.ts");
    const valueFile = join(sources, "value.ts");
    const anHourAgo = new Date(Date.now() - 3_600_000);
    /** Written, its modification time then set back an hour, as `tar` or `rsync -t` would keep it. */
    const release = (value: number) => {
      write("value.ts", `export const value: number = ${value};\n`);
      utimesSync(valueFile, anHourAgo, anHourAgo);
    };
    // Older than a change the bundler trusts (two seconds).
    const settle = () => setTimeout(2_100);
    /** The manifest's stamp of value.ts (after the bundler's own three inputs). */
    const stamp = () => {
      const manifest = JSON.parse(readFileSync(join(cache, `${entry.slice(0, -3).replaceAll("/", "-")}.json`), "utf8")) as { inputs: string[]; stamps: (string | null)[] };
      return manifest.stamps[3 + manifest.inputs.indexOf(valueFile)];
    };
    write("entry.ts", 'import { value } from "./value.ts";\nconsole.log(JSON.stringify(value));\n');
    release(1);
    await settle();
    const first = await bundled(entry, [cache]);
    expect(await output(first)).toBe(1);
    expect(stamp()).toEqual(expect.any(String));

    // Same size and modification time, but changed since: read, and built again.
    release(2);
    await settle();
    const second = await bundled(entry, [cache]);
    expect(await output(second)).toBe(2);
    expect(stamp()).toEqual(expect.any(String));
    // Touched but the same: read, kept, and stamped anew, as not to be trusted yet.
    utimesSync(valueFile, anHourAgo, anHourAgo);
    expect(await bundled(entry, [cache])).toBe(second);
    expect(stamp()).toBeNull();

    // Changed a moment ago, so possibly again within the clock's tick at the same size: read each time.
    release(3);
    expect(await output(await bundled(entry, [cache]))).toBe(3);
    expect(stamp()).toBeNull();
    release(4);
    expect(await output(await bundled(entry, [cache]))).toBe(4);
  });

  it("is built the same from any working directory", async () => {
    write("entry.ts", printing("built elsewhere"));
    expect(await output(await bundledByCommand(join(sources, "entry.ts"), { cwd: "/" }))).toBe("built elsewhere");
  });

  it("is kept in the next place when the first cannot take it, and imports packages from wherever it is", async () => {
    write("entry.ts", 'import { z } from "zod";\nconsole.log(JSON.stringify({ parsed: z.int().parse(7) }));\n');
    const file = join(cache, "a-file");
    writeFileSync(file, "");

    const bundle = await bundled(join(sources, "entry.ts"), [join(file, "cache"), join(cache, "next")]);
    expect(bundle.startsWith(join(cache, "next"))).toBe(true);
    expect(await output(bundle)).toEqual({ parsed: 7 });
  });

  it("is kept in a private directory only if no one else may write there, and never run from one that another may", async () => {
    write("entry.ts", printing("mine"));
    const entry = join(sources, "entry.ts");
    const own = join(cache, "own");
    const bundle = await bundled(entry, [{ private: own }]);
    expect(statSync(own).mode & 0o777).toBe(0o700);
    expect(await output(bundle)).toBe("mine");
    chmodSync(own, 0o755);
    const made = statSync(bundle).ino;
    expect(await bundled(entry, [{ private: own }])).toBe(bundle);
    expect(statSync(bundle).ino).toBe(made); // kept, not made again

    // Someone else could have written this bundle: it is neither run nor written to.
    chmodSync(own, 0o777);
    writeFileSync(bundle, printing("planted"));
    const rebuilt = await bundled(entry, [{ private: own }, join(cache, "next")]);
    expect(rebuilt.startsWith(join(cache, "next"))).toBe(true);
    expect(await output(rebuilt)).toBe("mine");
    await expect(bundled(entry, [{ private: own }])).rejects.toThrow(/not a directory only this user may write/);
  });

  it("is built again when a package it imports resolves to another file", async () => {
    const name = `jobfleet-test-package-${process.pid}-${Date.now()}`;
    const root = join(NODE_MODULES, name);
    mkdirSync(root);
    try {
      const release = (file: string, value: string) => {
        writeFileSync(join(root, "package.json"), JSON.stringify({ name, type: "module", exports: `./${file}` }));
        writeFileSync(join(root, file), `export const value = ${JSON.stringify(value)};\n`);
      };
      release("v1.js", "first");
      write("entry.ts", `import { value } from ${JSON.stringify(name)};\nconsole.log(JSON.stringify(value));\n`);
      const entry = join(sources, "entry.ts");
      expect(await output(await bundledByCommand(entry))).toBe("first");

      release("v2.js", "second");
      expect(await output(await bundledByCommand(entry))).toBe("second");
      rmSync(join(root, "v1.js"));
      release("v3.js", "third");
      expect(await output(await bundledByCommand(entry))).toBe("third");
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });

  it("bundles packages, but for those that find their own files or that it cannot bundle, which it imports from where they are", async () => {
    const stamp = `${process.pid}-${Date.now()}`;
    const roots: string[] = [];
    const pkg = (suffix: string, manifest: object, files: Record<string, string>, under = NODE_MODULES) => {
      const name = `jobfleet-test-${suffix}-${stamp}`;
      const root = join(under, name);
      if (under === NODE_MODULES) roots.push(root);
      for (const [file, text] of Object.entries({ "package.json": JSON.stringify({ name, ...manifest }), ...files })) {
        mkdirSync(dirname(join(root, file)), { recursive: true });
        writeFileSync(join(root, file), text);
      }
      return { name, root };
    };
    const data = { "data.txt": "beside" };
    try {
      // Each of these finds a file of its own, or cannot be bundled, in its own way.
      const outside = [
        pkg("meta", { type: "module", exports: "./index.js" }, {
          "index.js": 'import { readFileSync } from "node:fs";\nexport default readFileSync(new URL("./data.txt", import.meta.url), "utf8");\n',
          ...data,
        }),
        pkg("dirname", { exports: { import: "./index.mjs", require: "./index.js" } }, {
          "index.mjs": 'export { default } from "./index.js";\n',
          "index.js": 'module.exports = require("node:fs").readFileSync(require("node:path").join(__dirname, "data.txt"), "utf8");\n',
          ...data,
        }),
        pkg("filename", { main: "index.js" }, { "index.js": 'module.exports = require("node:fs").readFileSync(__filename.replace(/index\\.js$/, "data.txt"), "utf8");\n', ...data }),
        pkg("resolve", { main: "index.js" }, { "index.js": 'module.exports = require("node:fs").readFileSync(require.resolve("./data.txt"), "utf8");\n', ...data }),
        pkg("computed", { main: "index.js" }, { "index.js": 'const file = ["./data", "js"].join(".");\nmodule.exports = require(file);\n', "data.js": 'module.exports = "beside";\n' }),
        pkg("addon", { main: "index.js" }, {
          "index.js": 'try {\n  module.exports = require("./build/addon.node");\n} catch {\n  module.exports = "beside";\n}\n',
          "build/addon.node": "not an addon",
        }),
      ];
      // Bundled, and requiring a package left outside of which it has its own version.
      const nested = pkg("nested", { main: "index.js" }, { "index.js": 'module.exports = require("./version.cjs");\n' });
      const user = pkg("user", { main: "index.js" }, { "index.js": `module.exports = require(${JSON.stringify(nested.name)});\n` });
      for (const [root, version] of [[NODE_MODULES, "top level"], [join(user.root, "node_modules"), "its own"]] as const) {
        pkg("nested", { main: "index.js" }, { "index.js": 'module.exports = require(require("node:path").join(__dirname, "version.cjs"));\n', "version.cjs": `module.exports = ${JSON.stringify(version)};\n` }, root);
      }
      // Bundled, resolved as Node resolves it (esbuild alone would take `module`, and not `module-sync`), and requiring one left outside.
      const plain = pkg("plain", { exports: { module: "./bundlers.js", "module-sync": "./index.js", default: "./bundlers.js" } }, {
        "index.js": `module.exports = require("node:path").posix.join("in", "bundle") + " with " + require(${JSON.stringify(outside[1]!.name)});\n`,
        "bundlers.js": 'module.exports = "for bundlers";\n',
      });
      // Bundled: a package with no main (esbuild alone would take `module`), and one with an optional
      // require() of a package installed later, resolved from the package root wherever the bundle is.
      const indexed = pkg("indexed", { module: "./bundlers.js" }, { "index.js": 'module.exports = "index";\n', "bundlers.js": 'module.exports = "for bundlers";\n' });
      const optionalName = `jobfleet-test-optional-${stamp}`;
      const optional = pkg("optional-user", { main: "index.js" }, {
        "index.js": `try {\n  module.exports = require(${JSON.stringify(optionalName)});\n} catch {\n  module.exports = "optional missing";\n}\n`,
      });
      // Bundled, and reaching a package left outside through its own `#imports`.
      const mapper = pkg("mapper", { main: "index.js", imports: { "#dep": outside[2]!.name } }, { "index.js": 'module.exports = require("#dep");\n' });
      // Imported only to run it, as Node does, though it says it has no side effects.
      const effect = pkg("effect", { main: "index.js", sideEffects: false }, { "index.js": 'globalThis.effect = "ran";\n' });
      const names = [...outside, user, plain, indexed, optional, mapper].map(({ name }) => name);
      write(
        "entry.ts",
        `${names.map((name, i) => `import p${i} from ${JSON.stringify(name)};\n`).join("")}import ${JSON.stringify(effect.name)};\n` +
          `console.log(JSON.stringify([${names.map((_, i) => `p${i}`).join(", ")}, (globalThis as { effect?: string }).effect]));\n`,
      );
      const entry = join(sources, "entry.ts");
      const bundle = await bundledByCommand(entry);
      const expected = [...outside.map(() => "beside"), "its own", "in/bundle with beside", "index", "optional missing", "beside", "ran"];
      expect(await output(bundle)).toEqual(expected);
      const text = readFileSync(bundle, "utf8");
      expect(text).toContain('posix.join("in", "bundle")');
      expect(text).toContain("optional missing");
      expect(text).not.toContain("beside");
      pkg("optional", { main: "index.js" }, { "index.js": 'module.exports = "optional found";\n' });
      expect(await output(bundle)).toEqual([...expected.slice(0, -3), "optional found", "beside", "ran"]);

      writeFileSync(join(plain.root, "index.js"), 'module.exports = "edited";\n');
      expect(await output(await bundledByCommand(entry))).toEqual([...expected.slice(0, -5), "edited", "index", "optional found", "beside", "ran"]);
    } finally {
      for (const root of roots) rmSync(root, { recursive: true, force: true });
    }
  });

  it("tells its own sources from packages when it is itself installed as a package", async () => {
    const project = join(sources, "node_modules/jobfleet");
    mkdirSync(join(project, "bin"), { recursive: true });
    writeFileSync(join(project, "bin/bundle.js"), readFileSync(fileURLToPath(BUNDLE_JS)));
    writeFileSync(join(project, "package.json"), JSON.stringify({ name: "jobfleet", type: "module" }));
    writeFileSync(join(project, "tsconfig.json"), "{}");
    for (const name of ["esbuild", "zod"]) symlinkSync(join(NODE_MODULES, name), join(sources, "node_modules", name));
    writeFileSync(join(project, "entry.ts"), 'import { z } from "zod";\nconsole.log(JSON.stringify([z.int().parse(7), new URL(".", import.meta.url).pathname]));\n');
    const script = `import { bundled } from ${JSON.stringify(pathToFileURL(join(project, "bin/bundle.js")).href)}; console.log(await bundled("entry.ts", [${JSON.stringify(cache)}]));`;
    const bundle = (await run(process.execPath, ["--input-type=module", "-e", script])).stdout.trim();
    expect(await output(bundle)).toEqual([7, `${project}/`]);
    expect(readFileSync(bundle, "utf8")).toContain("z.int"); // zod is bundled
  });

  it("bundles several entries at once in one process", async () => {
    const entries = ["one", "two", "three"];
    for (const entry of entries) write(`${entry}.ts`, printing(entry));
    const bundles = await Promise.all(entries.map((entry) => bundled(join(sources, `${entry}.ts`), [cache])));
    expect(await Promise.all(bundles.map(output))).toEqual(entries);
  });

  it("leaves no esbuild process behind once bundled", async () => {
    write("entry.ts", printing("done"));
    const script = [
      `import { readdirSync, readFileSync } from "node:fs";`,
      `import { bundled } from ${JSON.stringify(BUNDLE_JS)};`,
      `await bundled(${JSON.stringify(join(sources, "entry.ts"))}, [${JSON.stringify(cache)}]);`,
      // After the command's name in /proc/PID/stat: the state (Z: exited, not yet reaped), then the parent's pid.
      `const stat = (pid) => { try { return readFileSync(\`/proc/\${pid}/stat\`, "utf8").replace(/^.*\\) /, "").split(" "); } catch { return []; } };`,
      `const alive = () => readdirSync("/proc").filter((pid) => /^\\d+$/.test(pid)).map(stat).filter(([state, parent]) => parent === String(process.pid) && state !== "Z").length;`,
      // A killed process takes a moment to go; a service left running stays.
      `for (let i = 0; i < 20 && alive() > 0; i++) await new Promise((resolve) => setTimeout(resolve, 100));`,
      `console.log(JSON.stringify(alive()));`,
    ].join("\n");
    const { stdout } = await run(process.execPath, ["--input-type=module", "-e", script]);
    expect(JSON.parse(stdout)).toBe(0);
  });

  it("tells two entries apart whose names flatten alike", async () => {
    write("a/b.ts", printing("a/b"));
    write("a-b.ts", printing("a-b"));
    expect(await output(await bundled(join(sources, "a/b.ts"), [cache]))).toBe("a/b");
    expect(await output(await bundled(join(sources, "a-b.ts"), [cache]))).toBe("a-b");
    expect(await output(await bundled(join(sources, "a/b.ts"), [cache]))).toBe("a/b");
  });

  it("names the source and line it cannot bundle, and refuses any use of import.meta but its url", async () => {
    write("broken.ts", "export const x = ;\n");
    await expect(bundled(join(sources, "broken.ts"), [cache])).rejects.toThrow(/cannot bundle .*broken\.ts: .*broken\.ts:1:\d+: Unexpected ";"/);
    write("uses-dirname.ts", 'import "./dirname.ts";\n');
    write("dirname.ts", "// import.meta.dirname, the directory:\nconsole.log(import.meta.dirname);\n");
    await expect(bundled(join(sources, "uses-dirname.ts"), [cache])).rejects.toThrow(/dirname\.ts:2:12: import\.meta\.dirname is not supported/);
    write("meta.ts", 'const { url, dirname } = import.meta;\nconsole.log(url, dirname);\n');
    await expect(bundled(join(sources, "meta.ts"), [cache])).rejects.toThrow(/meta\.ts:1:25: import\.meta is not supported/);
    write("no-package.ts", 'export { x } from "no-such-package-here";\n');
    await expect(bundled(join(sources, "no-package.ts"), [cache])).rejects.toThrow(/no-package\.ts:1:\d+: Could not resolve "no-such-package-here"/);
  });

  it("names nowhere it could be kept, if nowhere takes it", async () => {
    write("entry.ts", "console.log(1);\n");
    const file = join(cache, "a-file");
    writeFileSync(file, "");
    await expect(bundled(join(sources, "entry.ts"), [join(file, "cache")])).rejects.toThrow(/nowhere to keep the bundle .*a-file\/cache/);
  });

  it("maps a stack trace to the TypeScript source, of a module that uses import.meta.url too", async () => {
    write("entry.ts", 'import { fail } from "./located.ts";\ntype Never = never;\nfunction call(): Never {\n  return fail();\n}\ncall();\n');
    write("located.ts", 'const here: string = import.meta.url;\ntype Never = never;\nexport function fail(): Never {\n  throw new Error(`failed in ${here}`);\n}\n');
    const bundle = await bundled(join(sources, "entry.ts"), [cache]);
    const failed = await run(process.execPath, ["--enable-source-maps", bundle]).catch((error: { stderr: string }) => error);
    expect(failed.stderr).toContain(`${join(sources, "located.ts")}:4:`);
    expect(failed.stderr).toContain(`${join(sources, "entry.ts")}:4:`);
  });
});
