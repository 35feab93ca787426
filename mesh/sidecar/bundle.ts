// The sidecar as one pre-built file, which `mesh up` runs instead of main.ts (bench-mesh.ts measures it
// too). Why: a sidecar started from source runs Bun's TypeScript transpiler and module loader over ~100
// files, and the code pages and memory that costs stay resident for the sidecar's whole life. A bundle
// made with `bun build --target=bun` starts with a `// @bun` header, which tells Bun the file is already
// transpiled: ~3 MB less RSS per sidecar. Built in ~35 ms, once per `mesh up`.
//
// Lean built-ins (leanBuiltins below): pino and prom-client load node:util, node:assert,
// node:worker_threads and node:diagnostics_channel when they start, and pino's transport module (which
// we do not use: the sidecar logs to fd 2 in-process) brings thread-stream with them. In the bundle
// those are replaced by shims that load the real module only when something other than the start-up
// path reads it.
//
// Bundle-safe paths: the bundle lives elsewhere (the run directory), so `import.meta.dir`, `.dirname`,
// `.path`, `.filename` and `.url` in our sources are replaced by the values they have in the source
// tree (the config loader run as a child process, the rpal receiver shim's C source, …).
//
//   bun mesh/sidecar/bundle.ts <out-dir>    builds <out-dir>/sidecar.js and prints its path
import type { BunPlugin } from "bun";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { pathToFileURL } from "node:url";

export const SIDECAR_SOURCE = join(import.meta.dir, "main.ts");

const IMPORT_META = /\bimport\.meta\.(dir|dirname|path|filename|url)\b/g;

/** Gives each bundled source file its own `import.meta` paths, as literals. */
const sourcePaths: BunPlugin = {
  name: "mesh-source-paths",
  setup(build) {
    build.onLoad({ filter: /\.ts$/ }, ({ path }) => {
      const text = readFileSync(path, "utf8");
      const values: Record<string, string> = { dir: dirname(path), dirname: dirname(path), path, filename: path, url: pathToFileURL(path).href };
      return { loader: "ts", contents: text.replace(IMPORT_META, (_, key: string) => JSON.stringify(values[key])) };
    });
  },
};

// Built-ins that third-party modules (node_modules) load at start-up but use little of. Each shim
// exports what those modules read at start-up without the real module, and loads the real one the first
// time anything else is read (a Proxy), so behaviour stays node's: e.g. prom-client's util.format in its
// error messages still comes from node:util.
const LAZY = `let real; const load = () => (real ??= require(NAME));`;
const SHIMS: Record<string, string> = {
  // sonic-boom reads `inherits` at start-up; this is node:util's, with its argument errors left to it.
  util: `${LAZY}
function inherits(ctor, superCtor) {
  if (ctor == null || superCtor == null || superCtor.prototype === undefined) return load().inherits(ctor, superCtor);
  Object.defineProperty(ctor, "super_", { value: superCtor, writable: true, configurable: true });
  Object.setPrototypeOf(ctor.prototype, superCtor.prototype);
}
module.exports = new Proxy({}, { get: (_, key) => (key === "inherits" ? inherits : load()[key]) });`,
  // sonic-boom calls assert(condition, message): a true condition returns, as node:assert's does.
  assert: `${LAZY}
function assert(...args) {
  if (args.length > 0 && args[0]) return;
  return load()(...args);
}
module.exports = new Proxy(assert, { get: (_, key) => load()[key] });`,
  // pino reads isMainThread (to pick a synchronous flush at exit).
  worker_threads: `${LAZY}
module.exports = new Proxy({}, { get: (_, key) => (key === "isMainThread" ? Bun.isMainThread : load()[key]) });`,
  // pino makes a tracing channel "pino_asJson" at start-up and checks hasSubscribers on every line.
  // Nothing in the sidecar subscribes to it (a subscriber would have to be code in the bundle), so it
  // gets one that never has subscribers; every other use loads node:diagnostics_channel.
  diagnostics_channel: `${LAZY}
const unsubscribed = { hasSubscribers: false, traceSync: (fn, _context, self, ...args) => fn.apply(self, args) };
module.exports = new Proxy({}, { get: (_, key) => (key === "tracingChannel" ? () => unsubscribed : load()[key]) });`,
};
const SHIM_REQUIRE = new RegExp(String.raw`\brequire\((['"])(?:node:)?(${Object.keys(SHIMS).join("|")})\1\)`, "g");

// pino's transport module (thread-stream, a Worker per transport) and the call-site lookup that only
// it uses. runtime/log.ts formats pretty output in-process, so a transport is never requested; if one
// is, the error says so instead of failing somewhere inside thread-stream.
const PINO_STUBS: [RegExp, string][] = [
  [
    /\/node_modules\/pino\/lib\/transport\.js$/,
    `module.exports = function transport() {
  throw new Error("pino transports are left out of the sidecar bundle (they need thread-stream and worker threads); run the sidecar from source (MESH_SIDECAR_BUNDLE=off) to use one");
};`,
  ],
  [/\/node_modules\/pino\/lib\/caller\.js$/, `module.exports = function getCallers() { return []; };`],
];

/** Replaces the built-ins and pino modules above in third-party code; our own sources are left alone. */
const leanBuiltins: BunPlugin = {
  name: "mesh-lean-builtins",
  setup(build) {
    // The shim's path is "lean-<name>", not "<name>": the bundler would resolve the shim's own
    // require("node:<name>") to a module of that path in this namespace, i.e. to the shim itself.
    build.onResolve({ filter: /^mesh-lean-builtin:/ }, ({ path }) => ({ path: `lean-${path.slice("mesh-lean-builtin:".length)}`, namespace: "mesh-lean-builtin" }));
    build.onLoad({ filter: /.*/, namespace: "mesh-lean-builtin" }, ({ path }) => {
      const name = path.slice("lean-".length);
      return { loader: "js", contents: SHIMS[name]!.replace("require(NAME)", `require(${JSON.stringify(`node:${name}`)})`) };
    });
    build.onLoad({ filter: /\/node_modules\/.*\.[cm]?js$/ }, ({ path }) => {
      const stub = PINO_STUBS.find(([re]) => re.test(path));
      if (stub) return { loader: "js", contents: stub[1] };
      const text = readFileSync(path, "utf8");
      return { loader: "js", contents: text.replace(SHIM_REQUIRE, (_, _q: string, name: string) => `require("mesh-lean-builtin:${name}")`) };
    });
  },
};

/**
 * Builds the sidecar into `<outDir>/sidecar.js` and returns its path. Throws with the bundler's
 * messages when it cannot (the caller falls back to running main.ts).
 */
export async function buildSidecarBundle(outDir: string, entry = SIDECAR_SOURCE): Promise<string> {
  const result = await Bun.build({
    entrypoints: [entry],
    target: "bun",
    outdir: outDir,
    naming: "sidecar.js",
    // No source map: Bun reads one at start-up if it is there (+1.6 MB). A stack trace names lines of
    // the bundle, in which a `// mesh/sidecar/….ts` comment opens each module; MESH_SIDECAR_BUNDLE=off
    // runs the sources instead.
    sourcemap: "none",
    plugins: [sourcePaths, leanBuiltins],
    throw: false,
  });
  if (!result.success) throw new Error(result.logs.map((l) => String(l.message ?? l)).join("; ") || "bun build failed");
  const out = result.outputs.find((o) => o.kind === "entry-point");
  if (!out) throw new Error("bun build wrote no entry point");
  return out.path;
}

if (import.meta.main) {
  const outDir = process.argv[2];
  if (!outDir) {
    process.stderr.write("usage: bun mesh/sidecar/bundle.ts <out-dir>\n");
    process.exit(2);
  }
  try {
    console.log(await buildSidecarBundle(outDir));
  } catch (e) {
    process.stderr.write(`bundle: ${(e as Error).message}\n`);
    process.exit(1);
  }
}
