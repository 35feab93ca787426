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

  test("a build that fails says why", async () => {
    const broken = join(res.scratchDir("sidecar-bundle-"), "broken.ts");
    await Bun.write(broken, 'import "./does-not-exist.ts";\n');
    await expect(buildSidecarBundle(join(res.scratchDir("sidecar-bundle-"), "out"), broken)).rejects.toThrow(/does-not-exist/);
  });
});
