// The sidecar loads mesh.yaml and its protos in a child process (config-loader.ts), so that the sidecar
// process itself never maps the loaders (yaml, zod, protobufjs): these tests pin both halves.
import { afterAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { TestResources } from "../../test/helpers.ts";
import type { LoadReply } from "./config-loader.ts";
import { ECHO_PROTO, writeMeshYaml } from "./testdata/harness.ts";

const LOADER = join(import.meta.dir, "config-loader.ts");
const res = new TestResources();
afterAll(() => res.cleanup());

function runLoader(args: string[]): { code: number; stdout: string; stderr: string } {
  const r = Bun.spawnSync([process.execPath, LOADER, ...args], { stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  return { code: r.exitCode, stdout: r.stdout.toString(), stderr: r.stderr.toString() };
}

describe("config-loader.ts (the sidecar's child process)", () => {
  test("prints the pod and its protos' methods as one JSON line", () => {
    const dir = res.scratchDir("config-loader-");
    const config = writeMeshYaml(dir, [{ name: "greeter", sidecar: { inbound: { host: "127.0.0.1", port: 0 } } }]);
    const r = runLoader([config, "greeter"]);
    expect(r.code).toBe(0);
    expect(r.stderr).toBe("");
    expect(r.stdout.endsWith("\n")).toBe(true);
    expect(r.stdout.trimEnd().includes("\n")).toBe(false);
    const reply = JSON.parse(r.stdout) as LoadReply;
    if (!reply.ok) throw new Error(reply.message);
    expect(reply.pod.name).toBe("greeter");
    expect(reply.pod.sidecar.protos).toEqual([ECHO_PROTO]);
    expect(reply.methods.find((m) => m.path === "/meshtest.Echo/Unary")).toEqual({ service: "meshtest.Echo", name: "Unary", path: "/meshtest.Echo/Unary", shape: { clientStreaming: false, serverStreaming: false } });
  });

  test("a bad mesh.yaml, an unknown pod and a proto that does not load come back as the loader's own message", () => {
    const dir = res.scratchDir("config-loader-");
    const config = writeMeshYaml(dir, [
      { name: "real", sidecar: {} },
      { name: "proto", sidecar: { protos: ["missing.proto"] } },
    ]);
    const reply = (args: string[]) => {
      const r = runLoader(args);
      expect(r.code).toBe(0);
      expect(r.stderr).toBe("");
      return JSON.parse(r.stdout) as LoadReply;
    };
    expect(reply([config, "ghost"])).toEqual({ ok: false, message: expect.stringContaining('no pod named "ghost" — pods in this file: real, proto') });
    expect(reply([config, "proto"])).toEqual({ ok: false, message: expect.stringContaining("cannot load proto") });
    expect(reply([join(dir, "nope.yaml"), "real"])).toEqual({ ok: false, message: expect.stringContaining("nope.yaml") });
  });

  test("wrong arguments: usage on stderr, exit 2", () => {
    for (const args of [[], ["only-one"], ["a", "b", "c"]]) {
      const r = runLoader(args);
      expect(r.code).toBe(2);
      expect(r.stdout).toBe("");
      expect(r.stderr).toContain("usage: bun mesh/sidecar/config-loader.ts <mesh.yaml> <pod>");
    }
  });
});

describe("the sidecar process", () => {
  test("does not load the config and proto loaders (yaml, zod, protobufjs: ~4 MB RSS; they run in config-loader.ts's process)", async () => {
    // What main.ts pulls in: every static import and require() with a literal, which is what runs.
    const build = await Bun.build({ entrypoints: [join(import.meta.dir, "main.ts")], target: "bun", metafile: true });
    expect(build.success).toBe(true);
    const inputs = Object.keys(build.metafile!.inputs);
    expect(inputs.some((p) => p.endsWith("mesh/sidecar/sidecar.ts"))).toBe(true); // the check sees the graph
    expect(inputs.filter((p) => /node_modules\/(protobufjs|yaml|zod)\/|mesh\/config\/|mesh\/sidecar\/(protos|config-loader)\.ts$/.test(p))).toEqual([]);
  });
});
