// jobfleet's TypeScript, bundled into one JavaScript file per entry with esbuild, packages and all,
// and kept while what it was built from stays the same. A command then starts in about 0.5 s,
// against 1.2 s with tsx compiling every module as it loads (0.7 s with the packages left outside,
// each resolved and loaded as its own files). A bundle is named by a hash of the sources it was
// built from, of the package.json of each package it bundles or imports, of npm's record of what
// is installed in their node_modules, and of tsconfig.json, package.json and this file; its
// manifest lists those inputs, so that a source edited, a package installed or resolving elsewhere
// since is seen at the next start and the entry is bundled again (about a second). Inputs whose
// inode, size, modification and change times are as the manifest recorded are not read again.
import { createHash, randomUUID } from "node:crypto";
import { existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, utimesSync, writeFileSync } from "node:fs";
import { isBuiltin } from "node:module";
import { homedir, tmpdir } from "node:os";
import { join, relative, resolve, sep } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
/** The project's own packages, under its root as its sources are. */
const OWN_MODULES = join(ROOT, "node_modules", sep);
/** Hashed with the sources: a bundle made another way is made again. */
const BUILD_INPUTS = [fileURLToPath(import.meta.url), join(ROOT, "tsconfig.json"), join(ROOT, "package.json")];
/** Import attributes (`with { type: "json" }`) kept, for an outside package's JSON. */
const TARGET = "node20.10";
/** Builds under way in this process: esbuild's service is stopped after the last, not under another. */
let building = 0;
/** A bundle unused this long is dropped when any bundle is made (a running bench forks from the one it got). */
const DROP_AFTER_MS = 3_600_000;
/**
 * A file changed this shortly before it was read may change again within the clock's tick (the
 * kernel stamps files from a coarse clock) at the same size: its stamp is not trusted, and it is
 * read and hashed at each start until it is older (git's "racily clean" entries). Two seconds: FAT
 * keeps times to two.
 */
const SETTLED_MS = 2_000;

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
  let outside;
  for (const dir of dirs) {
    const last = kept(dir, name, source);
    const file = last && current(last.dir, name, last.manifest);
    if (file) return file;
    outside ??= last?.manifest.outside;
  }
  const built = await build(source, outside ?? []);
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

/** The manifest of the entry's last bundle in this place, if there is one, and the place's directory. */
function kept(place, name, source) {
  try {
    const dir = usable(place);
    const manifest = dir && JSON.parse(readFileSync(join(dir, `${name}.json`), "utf8"));
    return manifest?.entry === source ? { dir, manifest } : undefined;
  } catch {
    return undefined; // none kept, or a private directory another may write
  }
}

/**
 * The manifest's bundle, if it was built from its inputs as they are now (as stamped, or else as
 * hashed: then the manifest is stamped anew); marked used.
 */
function current(dir, name, manifest) {
  try {
    const now = Date.now();
    const stamps = [...BUILD_INPUTS, ...manifest.inputs].map((input) => stampOf(statSync(input), now));
    const trusted = stamps.every((stamp, i) => stamp !== null && stamp === manifest.stamps?.[i]);
    if (!trusted && manifest.file !== fileName(name, manifest.inputs, manifest.inputs.map((input) => readFileSync(input)))) return undefined;
    const file = join(dir, manifest.file);
    statSync(file);
    if (stamps.some((stamp, i) => stamp !== manifest.stamps?.[i])) restamp(dir, name, { ...manifest, stamps });
    markUsed(file);
    return file;
  } catch {
    return undefined; // an input or the bundle gone
  }
}

/**
 * A file's inode, size, modification and change times, as git compares them: a copy or an
 * unpacking that keeps modification times (`tar`, `cp -p`, `rsync -t`) still makes a new change
 * time. Null where it changed too shortly before `before` to be trusted (SETTLED_MS).
 */
function stampOf({ ino, size, mtimeMs, ctimeMs }, before) {
  return ctimeMs < before - SETTLED_MS ? `${ino}:${size}:${mtimeMs}:${ctimeMs}` : null;
}

function restamp(dir, name, manifest) {
  try {
    atomically(join(dir, `${name}.json`), JSON.stringify(manifest));
  } catch {
    // a cache this user may read but not write: hashed at each start
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
 * pino's transport worker), or that esbuild cannot bundle (an addon, a require() of a computed
 * name), cannot run from a bundle kept elsewhere: a build finds them and the next leaves them
 * outside, as do later builds of the entry (`outside`, from its last manifest). A build that
 * read an input changed while it ran is made again.
 */
async function build(entry, outside) {
  const esbuild = await import("esbuild").catch(() => {
    throw new Error("esbuild is not installed (npm install)");
  });
  building++;
  try {
    const left = new Set(outside);
    for (let pass = 0; ; pass++) {
      const began = Date.now();
      const built = await buildOnce(esbuild, entry, left);
      // Reached under another name (a `#imports` mapping, a link), a package left outside was bundled.
      const reached = built.outside.filter((name) => left.has(name));
      if (reached.length > 0) throw new Error(`cannot bundle ${entry}: ${reached.join(", ")} must stay outside, but was reached under another name`);
      for (const name of built.outside) left.add(name);
      if (built.outside.length === 0 && !built.vanished) {
        const { changed, stamps } = inspect([...BUILD_INPUTS, ...built.inputs], began, Date.now());
        if (!changed || pass >= 3) return { ...built, outside: [...left], stamps };
      }
      if (pass >= 3 && built.vanished) throw new Error(`cannot bundle ${entry}: its inputs keep changing`);
    }
  } finally {
    if (--building === 0) await esbuild.stop();
  }
}

/**
 * Whether a file was removed, or changed between `began` and `ended` (a clock ahead of ours, as on
 * a network disk, is not a change); and each one's stamp as of `began`, so that one changed since
 * is read again at the next start.
 */
function inspect(files, began, ended) {
  const stats = files.map((file) => statSync(file, { throwIfNoEntry: false }));
  return {
    changed: stats.some((stat) => !stat || (stat.ctimeMs >= began && stat.ctimeMs <= ended)),
    stamps: stats.map((stat) => (stat ? stampOf(stat, began) : null)),
  };
}

const RESOLVING = Symbol("resolving");

/**
 * Text by which a package finds files of its own, or loads modules by a computed name (which
 * esbuild leaves to run time, to resolve from the bundle, not the package).
 */
const LOCATES_FILES = /\bimport\.meta\b|\b__dirname\b|\b__filename\b|\brequire\.resolve\b|\bmodule\.filename\b|\b(?:require|import)\(\s*[^'"`\s)]/;

/** One esbuild build leaving `outside` outside; `outside` in its result names the packages found that must be. */
async function buildOnce(esbuild, entry, outside) {
  const loaded = new Map();
  const outsideFiles = new Set();
  let result;
  try {
    result = await esbuild.build({
      absWorkingDir: ROOT,
      entryPoints: [entry],
      bundle: true,
      platform: "node",
      format: "esm",
      target: TARGET,
      // Not written there: the path only makes the source map's paths relative to the root.
      outfile: join(ROOT, "bundle.mjs"),
      write: false,
      metafile: true,
      sourcemap: "external",
      sourceRoot: pathToFileURL(ROOT).href,
      // Stack traces need the mappings only; the sources are on disk.
      sourcesContent: false,
      // Packages resolved as Node 20 resolves them: no `module` field or condition, `module-sync` on.
      mainFields: ["main"],
      conditions: ["module-sync"],
      // Packages' require() calls, resolved from the package root wherever the bundle is kept. An
      // ESM package asking `typeof require` sees it too (none of ours do).
      banner: { js: `import { createRequire as __jobfleetCreateRequire } from "node:module";\nconst require = __jobfleetCreateRequire(${JSON.stringify(join(ROOT, "package.json"))});` },
      // A package's `sideEffects: false` would drop an import made only to run it; Node runs it.
      ignoreAnnotations: true,
      plugins: [packagesOutside(outside, outsideFiles), ownImportMetaUrl(loaded)],
      logLevel: "silent",
    });
  } catch (error) {
    const first = error.errors?.[0];
    if (!first) throw error;
    const failing = first.location && packageOf(resolve(ROOT, first.location.file));
    if (failing && !outside.has(failing.name)) return { inputs: [], outside: [failing.name] };
    const at = first.location ? `${shown(first.location.file)}:${first.location.line}:${first.location.column}: ` : "";
    throw new Error(`cannot bundle ${entry}: ${at}${first.text}`);
  }
  const output = (extension) => result.outputFiles.find((file) => file.path.endsWith(extension)).text;
  const sources = Object.keys(result.metafile.inputs).map((input) => resolve(ROOT, input));
  let read;
  try {
    read = inputsOf(sources, [...outsideFiles], loaded);
  } catch (error) {
    if (error.code === "ENOENT") return { inputs: [], outside: [], vanished: true }; // removed since esbuild read it (an install under way)
    throw error;
  }
  const { inputs, contents, locating } = read;
  return { entry, inputs, contents, outside: locating, code: output(".mjs"), map: output(".map") };
}

/**
 * What the bundle was made from, to hash: the sources esbuild read; the package.json (its exports)
 * of each package bundled or left outside, and npm's record of the node_modules it is in (what is
 * installed where). And the bundled packages that find files beside their own.
 */
function inputsOf(sources, outsideFiles, loaded) {
  const bundledPackages = sources.map(packageOf);
  const packages = [...bundledPackages, ...outsideFiles.map(packageOf)].filter(Boolean);
  const roots = new Set(packages.map((p) => join(p.root, "package.json")));
  const records = [...new Set(packages.map((p) => join(p.modules, ".package-lock.json")))].filter((file) => existsSync(file));
  const inputs = [...sources, ...roots, ...records];
  const contents = inputs.map((input) => loaded.get(input) ?? readFileSync(input));
  const locating = new Set(bundledPackages.flatMap((p, i) => (p && LOCATES_FILES.test(contents[i]) ? [p.name] : [])));
  return { inputs, contents, locating: [...locating] };
}

/** The package a bare specifier names: `name` of `name/sub`, `@scope/name` of `@scope/name/sub`. */
const packageName = (specifier) => specifier.split("/").slice(0, specifier.startsWith("@") ? 2 : 1).join("/");

/** A path esbuild gave relative to the root: from the root if it is inside, else absolute. */
function shown(file) {
  const path = resolve(ROOT, file);
  return path.startsWith(ROOT) ? relative(ROOT, path) : path;
}

/**
 * The package a file belongs to, if it is in a node_modules directory but not one of this
 * project's own files (which are in one when it is installed): its name, root and that directory.
 */
function packageOf(file) {
  if (file.startsWith(ROOT) && !file.startsWith(OWN_MODULES)) return undefined;
  const match = /^(.*[\\/]node_modules)[\\/]((?:@[^\\/]+[\\/])?[^\\/]+)/.exec(file);
  return match ? { name: match[2].replaceAll("\\", "/"), root: join(match[1], match[2]), modules: match[1] } : undefined;
}

/** Writes the bundle, its source map and its manifest (each whole, by rename), and drops what was unused for an hour. */
function keep(dir, name, { entry, inputs, contents, outside, stamps, code, map }) {
  mkdirSync(dir, { recursive: true });
  const file = fileName(name, inputs, contents);
  atomically(join(dir, `${file}.map`), map);
  atomically(join(dir, file), `${code.replace(/\/\/# sourceMappingURL=\S*\s*$/, "")}//# sourceMappingURL=${file}.map\n`);
  atomically(join(dir, `${name}.json`), JSON.stringify({ entry, file, inputs, outside, stamps }));
  dropUnused(dir, file);
  return join(dir, file);
}

function atomically(path, text) {
  const temporary = `${path}.${randomUUID()}.tmp`;
  writeFileSync(temporary, text, { flag: "wx" });
  renameSync(temporary, path);
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

/**
 * Packages are resolved as Node resolves them: from the importing package, and for the project's
 * own sources from the package root, wherever the source is. Those named in `outside` stay
 * outside the bundle, imported by the file they resolve to, so that it runs from wherever it is
 * kept; esbuild bundles the others.
 */
function packagesOutside(outside, outsideFiles) {
  return {
    name: "packages-outside",
    setup(build) {
      build.onResolve({ filter: /^[^./]/ }, async ({ path, kind, importer, resolveDir, pluginData }) => {
        if (isBuiltin(path)) return { path, external: true };
        const fromPackage = packageOf(importer);
        // A package's `#imports` may name another package: resolved, to see which.
        if (pluginData === RESOLVING || (fromPackage && !path.startsWith("#") && !outside.has(packageName(path)))) return undefined;
        const found = await build.resolve(path, { kind, resolveDir: fromPackage ? resolveDir : ROOT, pluginData: RESOLVING });
        if (found.errors.length > 0) return undefined; // esbuild's own resolution says why
        const pkg = found.external ? undefined : packageOf(found.path);
        if (!pkg || !outside.has(pkg.name)) return found;
        outsideFiles.add(found.path);
        return { path: kind === "require-call" ? found.path : pathToFileURL(found.path).href, external: true };
      });
    },
  };
}

/**
 * Each module keeps its own `import.meta.url` (the migrations folder is found from it), not the
 * bundle's; any other use of `import.meta` would silently be the bundle's, so it is refused. Both
 * are decided by esbuild on the module's syntax, so comments and strings that name them are left
 * alone. What is read is what is hashed.
 */
function ownImportMetaUrl(loaded) {
  return {
    name: "own-import-meta-url",
    setup(build) {
      build.onLoad({ filter: /\.(ts|json)$/ }, async ({ path }) => {
        const text = readFileSync(path, "utf8");
        loaded.set(path, text);
        if (path.endsWith(".json")) return { contents: text, loader: "json" };
        // `import.meta` cannot be written without the word (an escaped keyword is a syntax error).
        if (!text.includes("meta")) return { contents: text, loader: "ts" };
        const transformed = await build.esbuild.transform(text, {
          loader: "ts",
          format: "esm",
          target: TARGET,
          sourcefile: path,
          sourcemap: "inline",
          tsconfigRaw: readFileSync(join(ROOT, "tsconfig.json"), "utf8"),
          define: { "import.meta.url": JSON.stringify(pathToFileURL(path).href) },
          // What is left of import.meta once its url is replaced is flagged, where it stands.
          supported: { "import-meta": false },
          logLevel: "silent",
        }).catch((error) => ({ errors: error.errors ?? [{ text: error.message }] }));
        if (transformed.errors) return { errors: transformed.errors };
        const { code, warnings } = transformed;
        const other = warnings.find((warning) => warning.id === "empty-import-meta");
        if (!other) return { contents: code, loader: "js" };
        const { lineText, column } = other.location;
        const named = /^import\s*\.\s*meta(?:\s*\.\s*\w+)?/.exec(lineText.slice(column))?.[0] ?? "import.meta";
        return { errors: [{ text: `${named} is not supported in bundled sources (only import.meta.url)`, location: other.location }] };
      });
    },
  };
}
