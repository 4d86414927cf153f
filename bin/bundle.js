// jobfleet's TypeScript, bundled into one JavaScript file per entry with esbuild, packages and all,
// and kept while its sources stay the same. A command then starts in about 0.5 s, against 1.2 s
// with tsx compiling every module as it loads (0.7 s with the packages left outside, each resolved
// and loaded as its own files). A bundle is named by a hash of the sources it was built from, of
// the bundled packages' package.json files and npm's record of their node_modules, of
// tsconfig.json and of this file; its manifest lists those inputs, and each package left outside
// with the file it resolved to, so that a source edited, a package installed or one resolving
// elsewhere since is seen at the next start and the entry is bundled again (a few tenths of a
// second).
import { createHash, randomUUID } from "node:crypto";
import { existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, utimesSync, writeFileSync } from "node:fs";
import { createRequire, isBuiltin } from "node:module";
import { homedir, tmpdir } from "node:os";
import { join, relative, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
/** Hashed with the sources: a bundle made another way is made again. */
const BUILD_INPUTS = [fileURLToPath(import.meta.url), join(ROOT, "tsconfig.json")];
/** Builds under way in this process: esbuild's service is stopped after the last, not under another. */
let building = 0;
/** A bundle unused this long is dropped when its entry is bundled again (a running bench forks from the one it got). */
const DROP_AFTER_MS = 3_600_000;

/**
 * Kept with the package; or else (a package installed by another user) in this user's cache; or
 * else (no home) in a directory of this user's in the temp directory, refused if another may write there.
 */
const DIRS = [
  join(ROOT, "node_modules/.cache/jobfleet"),
  join(process.env.XDG_CACHE_HOME || join(homedir(), ".cache"), "jobfleet"),
  { private: join(tmpdir(), `jobfleet-${process.getuid?.() ?? "user"}`) },
];

/** The bundle of `entry` (a path from the package root, or absolute), built if its sources changed, kept in the first of `dirs` that takes it. */
export async function bundled(entry, dirs = DIRS) {
  const source = resolve(ROOT, entry);
  const name = entry.replace(/\.ts$/, "").replaceAll("/", "-");
  for (const dir of dirs) {
    const kept = current(dir, name, source);
    if (kept) return kept;
  }
  const built = await build(source);
  const failures = [];
  for (const dir of dirs) {
    try {
      return keep(usable(dir, { create: true }), name, built);
    } catch (error) {
      failures.push(`${typeof dir === "string" ? dir : dir.private}: ${error.message}`);
    }
  }
  throw new Error(`nowhere to keep the bundle of ${entry} (${failures.join("; ")})`);
}

/** The directory's path; a private one only if only this user may write there (else it throws, or is absent without `create`). */
function usable(dir, { create = false } = {}) {
  if (typeof dir === "string") return dir;
  if (create) mkdirSync(dir.private, { recursive: true, mode: 0o700 });
  const stat = lstatSync(dir.private, { throwIfNoEntry: create });
  if (!stat) return undefined;
  if (!stat.isDirectory() || stat.uid !== process.getuid?.() || (stat.mode & 0o022) !== 0) {
    throw new Error("not a directory only this user may write");
  }
  return dir.private;
}

/** The kept bundle, if it was built from `source` as it is now and its packages resolve as they did; marked used. */
function current(place, name, source) {
  try {
    const dir = usable(place);
    if (!dir) return undefined;
    const manifest = JSON.parse(readFileSync(join(dir, `${name}.json`), "utf8"));
    const contents = manifest.inputs.map((input) => readFileSync(input));
    if (manifest.entry !== source || manifest.file !== fileName(name, manifest.inputs, contents)) return undefined;
    for (const [specifier, url, how] of manifest.externals) if (resolvePackage(specifier, how) !== url) return undefined;
    const file = join(dir, manifest.file);
    statSync(file);
    markUsed(file);
    return file;
  } catch {
    return undefined; // none kept, a source or package gone, or a private directory another may write
  }
}

function markUsed(file) {
  const now = new Date();
  try {
    utimesSync(file, now, now);
  } catch {
    // a cache this user may read but not write: kept by its owner
  }
}

/**
 * Packages that find files beside their own (`import.meta`, `__dirname`: PGlite's WebAssembly,
 * pino's transport worker) cannot run from a bundle kept elsewhere; the first build finds them
 * and the next leaves them outside.
 */
async function build(entry) {
  const esbuild = await import("esbuild").catch(() => {
    throw new Error("esbuild is not installed (npm install)");
  });
  building++;
  try {
    const outside = new Set();
    for (;;) {
      const built = await buildOnce(esbuild, entry, outside);
      if (built.locating.every((name) => outside.has(name))) return built;
      for (const name of built.locating) outside.add(name);
    }
  } finally {
    if (--building === 0) await esbuild.stop();
  }
}

const FROM_ROOT = Symbol("resolved from the package root");

/** Text by which a package finds files beside its own. */
const LOCATES_FILES = /\bimport\.meta\b|\b__dirname\b|\b__filename\b/;

async function buildOnce(esbuild, entry, outside) {
  const loaded = new Map();
  const externals = new Map();
  try {
    const result = await esbuild.build({
      absWorkingDir: ROOT,
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
      // Stack traces need the mappings only; the sources are on disk.
      sourcesContent: false,
      // Packages resolved as Node resolves them: no `module` field or condition.
      mainFields: ["main"],
      conditions: [],
      // For the packages' own require() calls, resolved from the package root wherever the bundle is kept.
      banner: { js: `import { createRequire as __bundleRequire } from "node:module";\nconst require = __bundleRequire(${JSON.stringify(join(ROOT, "package.json"))});` },
      plugins: [packagesOutside(outside, externals), ownImportMetaUrl(loaded)],
      logLevel: "silent",
    });
    const output = (extension) => result.outputFiles.find((file) => file.path.endsWith(extension)).text;
    const sources = Object.keys(result.metafile.inputs).map((input) => resolve(ROOT, input));
    return { entry, ...inputsOf(sources, loaded), externals: [...externals.values()], code: output(".mjs"), map: output(".map") };
  } catch (error) {
    const first = error.errors?.[0];
    if (!first) throw error;
    const at = first.location ? `${shown(first.location.file)}:${first.location.line}:${first.location.column}: ` : "";
    throw new Error(`cannot bundle ${entry}: ${at}${first.text}`);
  }
}

/**
 * What the bundle was made from, to hash: the sources esbuild read; each bundled package's
 * package.json (its exports) and npm's record of the node_modules it is in (what is installed
 * where). And the packages among them that find files beside their own.
 */
function inputsOf(sources, loaded) {
  const packages = sources.map(packageOf);
  const roots = new Set(packages.filter(Boolean).map((p) => p.root));
  const records = new Set(packages.filter(Boolean).map((p) => join(p.modules, ".package-lock.json")));
  const inputs = [...sources, ...[...roots].map((root) => join(root, "package.json")), ...[...records].filter((file) => existsSync(file))];
  const contents = inputs.map((input) => loaded.get(input) ?? readFileSync(input));
  const locating = new Set(packages.flatMap((p, i) => (p && LOCATES_FILES.test(contents[i]) ? [p.name] : [])));
  return { inputs, contents, locating: [...locating] };
}

/** A path esbuild gave relative to the root: from the root if it is inside, else absolute. */
function shown(file) {
  const path = resolve(ROOT, file);
  return path.startsWith(ROOT) ? relative(ROOT, path) : path;
}

/** The package a file belongs to, if it is in a node_modules directory: its name, root and that directory. */
function packageOf(file) {
  const match = /^(.*[\\/]node_modules)[\\/]((?:@[^\\/]+[\\/])?[^\\/]+)/.exec(file);
  return match ? { name: match[2].replaceAll("\\", "/"), root: join(match[1], match[2]), modules: match[1] } : undefined;
}

/** Writes the bundle, its source map and its manifest (each whole, by rename), and drops what was unused for an hour. */
function keep(dir, name, { entry, inputs, contents, externals, code, map }) {
  mkdirSync(dir, { recursive: true });
  const file = fileName(name, inputs, contents);
  const atomically = (path, text) => {
    const temporary = `${path}.${randomUUID()}.tmp`;
    writeFileSync(temporary, text, { flag: "wx" });
    renameSync(temporary, path);
  };
  atomically(join(dir, `${file}.map`), map);
  atomically(join(dir, file), `${code.replace(/\/\/# sourceMappingURL=\S*\s*$/, "")}//# sourceMappingURL=${file}.map\n`);
  atomically(join(dir, `${name}.json`), JSON.stringify({ entry, file, inputs, externals }));
  dropUnused(dir, file);
  return join(dir, file);
}

/**
 * Drops every bundle (of any entry, one no longer built too) unused for an hour, with its source
 * map, and temporary files as old, left by a writer that died; a manifest whose bundle is gone
 * makes its entry bundled again.
 */
function dropUnused(dir, keeping) {
  const before = Date.now() - DROP_AFTER_MS;
  for (const other of readdirSync(dir)) {
    const path = join(dir, other);
    const bundle = /\.[0-9a-f]{16}\.mjs$/.test(other);
    if ((!bundle && !other.endsWith(".tmp")) || other === keeping || !(statSync(path, { throwIfNoEntry: false })?.mtimeMs < before)) continue;
    rmSync(path, { force: true });
    if (bundle) rmSync(`${path}.map`, { force: true });
  }
}

function fileName(name, inputs, contents) {
  const digest = createHash("sha256");
  for (const input of BUILD_INPUTS) digest.update(readFileSync(input)).update("\0");
  inputs.forEach((input, i) => digest.update(input).update("\0").update(contents[i]).update("\0"));
  return `${name}.${digest.digest("hex").slice(0, 16)}.mjs`;
}

/** The file URL a package specifier resolves to from the package root, as an import or a require() would have it. */
function resolvePackage(specifier, how) {
  return how === "require" ? pathToFileURL(createRequire(join(ROOT, "package.json")).resolve(specifier)).href : import.meta.resolve(specifier);
}

/**
 * Packages are resolved from the package root, wherever the importing source is. Those named in
 * `outside` stay outside the bundle, imported by the file they resolve to, so that it runs from
 * wherever it is kept; esbuild bundles the others.
 */
function packagesOutside(outside, externals) {
  return {
    name: "packages-outside",
    setup(build) {
      build.onResolve({ filter: /^[^./]/ }, async ({ path, kind, importer, pluginData }) => {
        if (isBuiltin(path)) return { path, external: true };
        if (!outside.has(path.split("/").slice(0, path.startsWith("@") ? 2 : 1).join("/"))) {
          if (pluginData === FROM_ROOT || packageOf(importer)) return undefined;
          const found = await build.resolve(path, { kind, resolveDir: ROOT, pluginData: FROM_ROOT });
          return found.errors.length > 0 ? { errors: [{ text: `cannot find package "${path}"` }] } : found;
        }
        const how = kind === "require-call" ? "require" : "import";
        let url;
        try {
          url = resolvePackage(path, how);
        } catch {
          return { errors: [{ text: `cannot find package "${path}"` }] };
        }
        externals.set(`${how} ${path}`, [path, url, how]);
        return { path: how === "require" ? fileURLToPath(url) : url, external: true };
      });
    },
  };
}

/**
 * Each module keeps its own `import.meta.url` (the migrations folder is found from it), not the
 * bundle's; any other `import.meta` property would silently be the bundle's, so it is refused.
 * What is read is what is hashed.
 */
function ownImportMetaUrl(loaded) {
  return {
    name: "own-import-meta-url",
    setup(build) {
      build.onLoad({ filter: /\.(ts|json)$/ }, ({ path }) => {
        const text = readFileSync(path, "utf8");
        loaded.set(path, text);
        if (path.endsWith(".json")) return { contents: text, loader: "json" };
        const other = /import\.meta\.(?!url\b)\w+/.exec(text);
        if (other) return { errors: [{ text: `${other[0]} is not supported in bundled sources (only import.meta.url)`, location: locate(path, text, other.index) }] };
        return { contents: text.replaceAll("import.meta.url", JSON.stringify(pathToFileURL(path).href)), loader: "ts" };
      });
    },
  };
}

function locate(file, text, index) {
  const before = text.slice(0, index).split("\n");
  return { file, line: before.length, column: before.at(-1).length };
}
