// The sidecar bundle `mesh up` runs (bundle.ts): pre-transpiled, and its paths still point into the
// source tree, so the config loader child process and the proto files are found from anywhere.
import { afterAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { TestResources } from "../../test/helpers.ts";
import { buildSidecarBundle } from "./bundle.ts";
import { startSidecar, writeMeshYaml } from "./testdata/harness.ts";

setDefaultTimeout(60_000);
const res = new TestResources();
afterAll(() => res.cleanup());

describe("the sidecar bundle", () => {
  let bundle = "";

  test("is one file Bun runs without transpiling, with our import.meta paths made literal", async () => {
    bundle = await buildSidecarBundle(join(res.scratchDir("sidecar-bundle-"), "out"));
    const text = readFileSync(bundle, "utf8");
    expect(text.startsWith("// @bun\n")).toBe(true);
    expect(text).toContain(JSON.stringify(join(import.meta.dir, "config-loader.ts").slice(0, -"/config-loader.ts".length)));
    expect(text).not.toMatch(/\bimport\.meta\.(dir|dirname|path|filename|url)\b/);
  });

  test("starts a sidecar that serves, and refuses a bad pod with the loader's message, from another directory", async () => {
    const dir = res.scratchDir("sidecar-bundle-");
    const config = writeMeshYaml(dir, [{ name: "web", sidecar: { inbound: { host: "127.0.0.1", port: 0 } } }]);
    const sc = await startSidecar(res, config, "web", join(dir, "a.sock"), {}, [], [], bundle);
    expect(sc.ready.pod).toBe("web");
    expect(await (await fetch(`${sc.admin}/config`)).json()).toMatchObject({ name: "web" });
    const bad = res.spawnBun([bundle, "--config", config, "--pod", "ghost", "--app-socket", join(dir, "b.sock")], { cwd: "/" });
    expect(await bad.proc.exited).toBe(2);
    expect(bad.output()).toContain('no pod named "ghost"');
    expect(bad.output()).not.toMatch(/^\s+at /m);
  });

  test("loads pino's and prom-client's built-ins lazily, leaves pino transports out, and they still work", async () => {
    const text = readFileSync(bundle, "utf8");
    // thread-stream (pino transports: a Worker each) is not in it, and the built-ins the shims stand
    // for are required only inside the shims' lazy loaders.
    expect(text).not.toContain("node_modules/thread-stream/");
    const eager = text.split("\n").filter((l) => /__require\("(util|assert|worker_threads|diagnostics_channel)"\)/.test(l) && !l.includes("real ??="));
    expect(eager).toEqual([]);
    // node:net (+0.2-0.5 MB loaded) is not imported: isIP comes from discovery/ip.ts.
    expect(text).not.toMatch(/from "(node:)?net"|require\("(node:)?net"\)/);

    // A bundle of pino, prom-client and our logger, run: what the shims stand in for behaves as before.
    const dir = res.scratchDir("sidecar-bundle-");
    const file = join(dir, "sonic.log");
    const built = await buildSidecarBundle(join(dir, "out"), join(import.meta.dir, "testdata/lean-bundle-entry.ts"));
    const run = res.spawnBun([built, file], { cwd: "/" });
    expect(await run.proc.exited).toBe(0);
    const lines = run.output().trim().split("\n");
    expect(JSON.parse(lines.find((l) => l.includes('"hello"'))!)).toMatchObject({ level: 30, component: "lean", n: 1, msg: "hello" });
    expect(JSON.parse(lines.find((l) => l.startsWith('{"emitter"'))!)).toEqual({
      emitter: true,
      promError: "Value is not a valid number: x",
      transportError: expect.stringContaining("pino transports are left out of the sidecar bundle"),
    });
    expect(readFileSync(file, "utf8")).toBe("line\n");
  });

  test("a build that fails says why", async () => {
    const broken = join(res.scratchDir("sidecar-bundle-"), "broken.ts");
    await Bun.write(broken, 'import "./does-not-exist.ts";\n');
    await expect(buildSidecarBundle(join(res.scratchDir("sidecar-bundle-"), "out"), broken)).rejects.toThrow(/does-not-exist/);
  });
});
