// The sidecar as one pre-built file, which `mesh up` runs instead of main.ts (bench-mesh.ts measures it
// too). Why: a sidecar started from source runs Bun's TypeScript transpiler and module loader over ~100
// files, and the code pages and memory that costs stay resident for the sidecar's whole life. A bundle
// made with `bun build --target=bun` starts with a `// @bun` header, which tells Bun the file is already
// transpiled: ~3 MB less RSS per sidecar. Built in ~35 ms, once per `mesh up`.
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
    plugins: [sourcePaths],
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
