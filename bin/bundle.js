// jobfleet's TypeScript, bundled into one JavaScript file per entry with esbuild and kept while its
// sources stay the same. A command then starts in about 0.5 s, against 1.1 s with tsx compiling
// every module as it loads. A bundle is named by a hash of the sources it was built from, which its
// manifest lists, so a source edited since is seen at the next start and the entry is bundled
// again (a few tenths of a second).
import { createHash } from "node:crypto";
import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { isBuiltin } from "node:module";
import { join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const ROOT = fileURLToPath(new URL("..", import.meta.url));

/** Kept in node_modules, or in the temp directory where that is not writable (a package installed by another user). */
const DIRS = [join(ROOT, "node_modules/.cache/jobfleet"), join(tmpdir(), `jobfleet-${process.getuid?.() ?? "user"}`)];

/** The bundle of `entry` (a path from the package root, or absolute), built if its sources changed, kept in the first of `dirs` that takes it. */
export async function bundled(entry, dirs = DIRS) {
  const name = entry.replace(/\.ts$/, "").replaceAll("/", "-");
  for (const dir of dirs) {
    const kept = current(dir, name);
    if (kept) return kept;
  }
  const built = await build(resolve(ROOT, entry));
  const failures = [];
  for (const dir of dirs) {
    try {
      return keep(dir, name, built);
    } catch (error) {
      failures.push(`${dir}: ${error.message}`);
    }
  }
  throw new Error(`jobfleet: nowhere to keep the bundle of ${entry} (${failures.join("; ")})`);
}

/** The kept bundle, if the sources its manifest lists still hash to its name. */
function current(dir, name) {
  try {
    const { file, inputs } = JSON.parse(readFileSync(join(dir, `${name}.json`), "utf8"));
    if (file !== `${name}.${hash(inputs)}.mjs`) return undefined;
    statSync(join(dir, file));
    return join(dir, file);
  } catch {
    return undefined; // none kept, or a source gone
  }
}

async function build(entry) {
  const { build } = await import("esbuild");
  const result = await build({
    entryPoints: [entry],
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node20",
    // Not written there: the path only makes the source map's paths relative to the root.
    outfile: join(ROOT, "bundle.mjs"),
    write: false,
    metafile: true,
    sourcemap: "external",
    sourceRoot: pathToFileURL(ROOT).href,
    plugins: [packagesByFile, ownImportMetaUrl],
    logLevel: "warning",
  });
  const output = (extension) => result.outputFiles.find((file) => file.path.endsWith(extension)).text;
  const inputs = Object.keys(result.metafile.inputs).map((input) => resolve(ROOT, input));
  return { inputs, code: output(".mjs"), map: output(".map") };
}

/** Writes the bundle, its source map and its manifest (each whole, by rename), and drops older bundles. */
function keep(dir, name, { inputs, code, map }) {
  mkdirSync(dir, { recursive: true });
  const file = `${name}.${hash(inputs)}.mjs`;
  const atomically = (path, text) => {
    const temporary = `${path}.${process.pid}.tmp`;
    writeFileSync(temporary, text);
    renameSync(temporary, path);
  };
  atomically(join(dir, `${file}.map`), map);
  atomically(join(dir, file), `${code.replace(/\/\/# sourceMappingURL=\S*\s*$/, "")}//# sourceMappingURL=${file}.map\n`);
  atomically(join(dir, `${name}.json`), JSON.stringify({ file, inputs }));
  // A process running an older bundle has read it whole.
  const older = new RegExp(`^${name.replace(/[^\w-]/g, "\\$&")}\\.[0-9a-f]{16}\\.mjs(\\.map)?$`);
  for (const other of readdirSync(dir)) if (older.test(other) && !other.startsWith(file)) rmSync(join(dir, other), { force: true });
  return join(dir, file);
}

/** Of the sources, and of this file: a bundle made another way is made again. */
function hash(inputs) {
  const digest = createHash("sha256");
  for (const input of [fileURLToPath(import.meta.url), ...inputs]) digest.update(input).update("\0").update(readFileSync(input)).update("\0");
  return digest.digest("hex").slice(0, 16);
}

/** Each module keeps its own `import.meta.url` (the migrations folder is found from it), not the bundle's. */
const ownImportMetaUrl = {
  name: "own-import-meta-url",
  setup(build) {
    build.onLoad({ filter: /\.ts$/ }, ({ path }) => ({
      contents: readFileSync(path, "utf8").replaceAll("import.meta.url", JSON.stringify(pathToFileURL(path).href)),
      loader: "ts",
    }));
  },
};

/** Packages stay outside the bundle, imported by the file they resolve to here, so that it runs from wherever it is kept. */
const packagesByFile = {
  name: "packages-by-file",
  setup(build) {
    build.onResolve({ filter: /^[^./]/ }, ({ path }) => ({ path: isBuiltin(path) ? path : import.meta.resolve(path), external: true }));
  },
};
