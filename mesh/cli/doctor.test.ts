import { describe, expect, test } from "bun:test";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { doctorMain, type DoctorReport } from "./doctor.ts";

const stock = !existsSync("/proc/rpal");

async function run(argv: string[]): Promise<{ code: number; out: string }> {
  let out = "";
  const code = await doctorMain(argv, (s) => {
    out += s;
  });
  return { code, out };
}

describe("mesh doctor", () => {
  test.skipIf(!stock)("text report: rpal ✗ naming /proc/rpal with the fix, every transport listed, auto's pick and why", async () => {
    const { code, out } = await run([]);
    expect(code).toBe(0);
    expect(out).toContain("rpal  ✗ unavailable");
    expect(out).toMatch(/✗ kernel +\/proc\/rpal not found: this kernel has no RPAL\n/);
    expect(out).toContain("fix: boot a kernel with the RPAL patch series (RFC v2 on v6.15); see kernel-patches/README.md");
    expect(out).toContain("uds   ✓ available");
    expect(out).toMatch(/^shm {3}[✓✗]/m);
    expect(out).toMatch(/auto would pick: (shm|uds)\n {2}skipped rpal: \/proc\/rpal not found/);
  });

  test.skipIf(!stock)("--json: the same facts, machine-readable", async () => {
    const { code, out } = await run(["--json"]);
    expect(code).toBe(0);
    const r = JSON.parse(out) as DoctorReport;
    expect(Object.keys(r.transports).sort()).toEqual(["rpal", "shm", "uds"]);
    expect(r.transports.rpal.available).toBe(false);
    const kernel = r.transports.rpal.preconditions.find((p) => p.name === "kernel")!;
    expect(kernel).toMatchObject({ ok: false, detail: "/proc/rpal not found: this kernel has no RPAL" });
    expect(r.autoSkipped.rpal).toStartWith("/proc/rpal not found");
    expect(r.auto).toBe(r.transports.shm.available ? "shm" : "uds");
  });

  test("unknown flags fail with usage (exit 2); --help prints it", async () => {
    expect((await run(["--bogus"])).code).toBe(2);
    const help = await run(["--help"]);
    expect(help.code).toBe(0);
    expect(help.out).toContain("usage: mesh doctor [--json]");
  });

  test.skipIf(!stock)("as a real process: `bun mesh/cli/doctor.ts` prints the report", () => {
    const p = Bun.spawnSync([process.execPath, join(import.meta.dir, "doctor.ts")], { env: { ...process.env, MESH_LIBRPAL: "" } });
    expect(p.exitCode).toBe(0);
    expect(p.stdout.toString()).toContain("/proc/rpal not found: this kernel has no RPAL");
  });
});
