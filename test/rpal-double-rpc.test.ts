// The RPC layer over the rpal transport, end to end through negotiation and the SDK, with both
// processes on the librpal TEST DOUBLE (user-space emulation: this proves our code, not RPAL).
// Also: what a user on a stock kernel sees when forcing rpal, and that the double is never picked
// up without a test's permission.
import { afterAll, describe, expect, test } from "bun:test";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { ALLOW_TEST_DOUBLE_ENV } from "../runtime/transport/rpal/double-guard.ts";
import { buildLibrpalTestDouble, removeStaleTestDoubleFiles } from "../runtime/transport/rpal/double/build.ts";
import { TestResources } from "./helpers.ts";

const res = new TestResources();
const stock = !existsSync("/proc/rpal");

afterAll(async () => {
  await res.cleanup();
  removeStaleTestDoubleFiles();
});

// The shared RPC suite, every case of it, over rpal with both processes on the test double, in a bun
// test process of its own (see test/rpal-double-rpc-suite.isolated.ts for why).
describe("rpc over rpal (librpal TEST DOUBLE, not real RPAL)", () => {
  test("double: the shared RPC suite passes in full, in its own test process", async () => {
    const run = res.spawnBun(["test", "--timeout", "60000", join(import.meta.dir, "rpal-double-rpc-suite.isolated.ts")]);
    const code = await run.proc.exited;
    const out = run.output();
    const passed = Number(/^\s*(\d+) pass$/m.exec(out)?.[1] ?? -1);
    const failed = Number(/^\s*(\d+) fail$/m.exec(out)?.[1] ?? -1);
    if (code !== 0 || failed !== 0) throw new Error(`the RPC suite over the rpal test double failed (exit ${code}):\n${out.split("\n").filter((l) => !l.startsWith('{"level"')).join("\n")}`);
    expect(failed).toBe(0);
    // Every case passes: nothing is skipped (test/transports.ts lists no known failures for rpal).
    const skipped = Number(/^\s*(\d+) skip$/m.exec(out)?.[1] ?? 0);
    expect(skipped).toBe(0);
    expect(passed).toBeGreaterThanOrEqual(11);
    expect(out).toContain("(pass) rpc over rpal (librpal TEST DOUBLE, not real RPAL) > flow control:");
    expect(out).toContain("(pass) rpc over rpal (librpal TEST DOUBLE, not real RPAL) > peer killed mid-call");
  }, 180_000);
});

describe("rpal on a machine without an RPAL kernel", () => {
  test.skipIf(!stock)("MESH_TRANSPORT=rpal fails with the /proc/rpal reason and the fix", async () => {
    const socket = join(res.scratchDir(), "none.sock");
    const app = res.spawnBun([join(import.meta.dir, "fixtures/connect-app.ts"), socket], {
      env: { MESH_TRANSPORT: "rpal", MESH_LIBRPAL: "", [ALLOW_TEST_DOUBLE_ENV]: "" },
    });
    const code = await app.proc.exited;
    expect(code).not.toBe(0);
    expect(app.output()).toContain(
      "transport rpal cannot be used here: /proc/rpal not found: this kernel has no RPAL; boot a kernel with the RPAL patch series (RFC v2 on v6.15); see kernel-patches/README.md",
    );
    expect(app.output()).not.toContain('"transport"');
  }, 30_000);

  test.skipIf(!stock)("the test double is never used without a test's permission: doctor refuses it and auto does not pick rpal", async () => {
    const cacheDir = res.scratchDir("rpal-rpc-cache-");
    const prev = process.env.MESH_CACHE_DIR;
    process.env.MESH_CACHE_DIR = cacheDir;
    const lib = buildLibrpalTestDouble();
    if (prev === undefined) delete process.env.MESH_CACHE_DIR;
    else process.env.MESH_CACHE_DIR = prev;
    const doctor = res.spawnBun([join(import.meta.dir, "../mesh/cli/doctor.ts"), "--json"], {
      env: { MESH_LIBRPAL: lib, [ALLOW_TEST_DOUBLE_ENV]: "", MESH_CACHE_DIR: cacheDir },
    });
    expect(await doctor.proc.exited).toBe(0);
    const report = JSON.parse(doctor.output().slice(doctor.output().indexOf("{")));
    const librpal = report.transports.rpal.preconditions.find((p: { name: string }) => p.name === "librpal");
    expect(librpal.ok).toBe(false);
    expect(librpal.detail).toContain("TEST DOUBLE");
    expect(report.auto).not.toBe("rpal");
  }, 30_000);
});
