import { expect, test } from "bun:test";
import { SIDECAR_JSC_RAM_BYTES, sidecarProcessEnv } from "./process-env.ts";

test("a sidecar gets JSC's heap sized for a 512 MB pod", () => {
  expect(sidecarProcessEnv({ PATH: "/usr/bin" })).toEqual({ BUN_JSC_forceRAMSize: String(SIDECAR_JSC_RAM_BYTES) });
  expect(SIDECAR_JSC_RAM_BYTES).toBe(536870912);
});

test("a value the user's environment sets is left alone", () => {
  expect(sidecarProcessEnv({ BUN_JSC_forceRAMSize: "1073741824" })).toEqual({});
});
