// No Docker engine here, so the Dockerfile cannot be built in tests. What can be checked is checked:
// it copies paths that exist, the manifests' commands point into what it copies, the base image is the
// Bun this project is developed on, and its RPAL-marking line really produces a marked, working bun.
import { afterEach, describe, expect, test } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { REPO_ROOT, TestResources } from "../../test/helpers.ts";
import { carriesRpalMark } from "../../runtime/transport/rpal/elf-mark.ts";
import { IMAGE_ROOT, RPAL_BUN, SIDECAR_BUNDLE, SIDECAR_BUNDLE_DIR } from "./names.ts";

const DOCKERFILE = readFileSync(join(import.meta.dir, "Dockerfile"), "utf8");
const res = new TestResources();
afterEach(() => res.cleanup());

/** Instructions with their continuation lines joined, comments dropped. */
function instructions(): string[] {
  return DOCKERFILE.replace(/\\\n/g, " ")
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith("#"));
}

describe("mesh/k8s/Dockerfile", () => {
  test("every COPY from the build context names a path that exists in the project", () => {
    const copies = instructions().filter((l) => l.startsWith("COPY ") && !l.includes("--from="));
    expect(copies.length).toBeGreaterThan(0);
    for (const line of copies) {
      const parts = line.split(/\s+/).slice(1);
      for (const src of parts.slice(0, -1)) expect(existsSync(join(REPO_ROOT, src))).toBe(true);
    }
    const copied = copies.flatMap((l) => l.split(/\s+/).slice(1, -1));
    // The manifests run the sidecar bundle built from /app/mesh and the apps under /app/examples.
    expect(copied).toContain("mesh");
    expect(copied).toContain("runtime");
    expect(copied).toContain("examples");
    expect(copied).toContain("bun.lock");
  });

  test("the base image is the Bun this project runs on", () => {
    const arg = /^ARG BUN_VERSION=(\S+)$/m.exec(DOCKERFILE);
    expect(arg?.[1]).toBe(Bun.version);
    expect(instructions().filter((l) => l.startsWith("FROM "))).toEqual(["FROM oven/bun:${BUN_VERSION} AS deps", "FROM oven/bun:${BUN_VERSION}"]);
  });

  test("its RPAL-marking step yields a bun that carries the mark and still runs", async () => {
    const run = instructions().find((l) => l.includes(RPAL_BUN));
    expect(run).toBeDefined();
    const dir = res.scratchDir("rpal-mesh-docker-");
    const target = join(dir, "bun-rpal");
    // The same shell line, with the image's bun and target path swapped for this machine's.
    const script = run!.replace(/^RUN\s+/, "").replaceAll(RPAL_BUN, target).replace('"$(command -v bun)"', JSON.stringify(process.execPath));
    const sh = res.spawn(["sh", "-c", script]);
    expect(await sh.proc.exited).toBe(0);
    expect(carriesRpalMark(target)).toBe(true);
    expect(carriesRpalMark(process.execPath)).toBe(false);
    const version = res.spawn([target, "--version"]);
    expect(await version.proc.exited).toBe(0);
    expect(version.output().trim()).toBe(Bun.version);
  });

  test("its bundle step builds the sidecar the manifests run, and that file starts", async () => {
    const run = instructions().find((l) => l.startsWith("RUN ") && l.includes("mesh/sidecar/bundle.ts"));
    expect(run).toBe(`RUN bun mesh/sidecar/bundle.ts ${SIDECAR_BUNDLE_DIR}`);
    expect(SIDECAR_BUNDLE).toBe(`${SIDECAR_BUNDLE_DIR}/sidecar.js`);
    expect(SIDECAR_BUNDLE.startsWith(`${IMAGE_ROOT}/`)).toBe(true);
    // The same line here (WORKDIR is the project root), writing into a scratch directory instead.
    const dir = res.scratchDir("rpal-mesh-docker-bundle-");
    const build = res.spawn([process.execPath, "mesh/sidecar/bundle.ts", dir], { cwd: REPO_ROOT });
    expect(await build.proc.exited).toBe(0);
    const bundle = join(dir, "sidecar.js");
    expect(readFileSync(bundle, "utf8").startsWith("// @bun")).toBe(true);
    // Started with a config file that does not exist, it loads and answers as main.ts does: exit 2, one line.
    const missing = join(dir, "no-such-mesh.yaml");
    const sidecar = res.spawn([process.execPath, bundle, "--config", missing, "--pod", "greeter", "--app-socket", join(dir, "app.sock")]);
    expect(await sidecar.proc.exited).toBe(2);
    expect(sidecar.output()).toContain(missing);
  });
});
