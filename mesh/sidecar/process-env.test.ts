import { expect, test } from "bun:test";
import { SIDECAR_JSC_RAM_BYTES, sidecarProcessEnv } from "./process-env.ts";

test("a sidecar gets JSC's heap sized for a 512 MB pod and no FTL tier", () => {
  expect(sidecarProcessEnv({ PATH: "/usr/bin" })).toEqual({ BUN_JSC_forceRAMSize: String(SIDECAR_JSC_RAM_BYTES), BUN_JSC_useFTLJIT: "0" });
  expect(SIDECAR_JSC_RAM_BYTES).toBe(536870912);
});

test("a value the user's environment sets is left alone", () => {
  expect(sidecarProcessEnv({ BUN_JSC_forceRAMSize: "1073741824" })).toEqual({ BUN_JSC_useFTLJIT: "0" });
  expect(sidecarProcessEnv({ BUN_JSC_forceRAMSize: "1073741824", BUN_JSC_useFTLJIT: "1" })).toEqual({});
});

test("the settings reach JSC: Bun reads them at start-up", () => {
  // If Bun stopped reading BUN_JSC_* (or JSC renamed an option), a setting would silently do nothing.
  // dumpOptions=1 makes JSC print the options that differ from their defaults.
  const run = Bun.spawnSync([process.execPath, "-e", "0"], {
    env: { ...process.env, ...sidecarProcessEnv({}), BUN_JSC_dumpOptions: "1" },
    stdout: "pipe",
    stderr: "pipe",
  });
  const printed = run.stdout.toString() + run.stderr.toString();
  expect(run.exitCode).toBe(0);
  expect(printed).toContain("useFTLJIT=false");
  expect(printed).toContain(`forceRAMSize=${SIDECAR_JSC_RAM_BYTES}`);
});
