// Which transports the shared RPC suite runs over on this machine. uds always; shm where its provider
// works here; rpal only against the librpal test double (see runtime/transport/rpal), named as such.
import { localUnavailableReason } from "../runtime/transport/negotiate.ts";
import type { TransportName } from "../runtime/transport/types.ts";

export interface SuiteTransport {
  /** Name shown in test titles. */
  label: string;
  transport: TransportName;
  /** Extra environment for both processes (e.g. the test double's library). */
  env: Record<string, string>;
  /**
   * Cases known to fail on this transport, each with the reason and where it is tracked. A case listed
   * here is skipped loudly (the run prints it); it is a bug to fix, not a pass.
   */
  knownFailures?: { flowControl?: string };
  /** Runs before the suite (e.g. to point this process at the test double) and after it. */
  setUp?(): void | Promise<void>;
  tearDown?(): void | Promise<void>;
}

export function suiteTransports(): SuiteTransport[] {
  const out: SuiteTransport[] = [{ label: "uds", transport: "uds", env: {} }];
  if (!localUnavailableReason("shm")) out.push({ label: "shm", transport: "shm", env: {} });
  return out;
}

/**
 * rpal against the librpal TEST DOUBLE (user-space emulation on a stock kernel, not RPAL). The app side
 * runs in the test process, so the double's environment is set for the suite only and taken back after,
 * or later files' `auto` would pick the double.
 */
export function rpalTestDoubleTransport(): SuiteTransport {
  const env: Record<string, string> = {};
  const saved: Record<string, string | undefined> = {};
  return {
    label: "rpal (librpal TEST DOUBLE, not real RPAL)",
    transport: "rpal",
    env,
    async setUp() {
      const { buildLibrpalTestDouble } = await import("../runtime/transport/rpal/double/build.ts");
      const { ALLOW_TEST_DOUBLE_ENV } = await import("../runtime/transport/rpal/double-guard.ts");
      const { resetRpalDetection } = await import("../runtime/transport/rpal/detect.ts");
      Object.assign(env, { MESH_LIBRPAL: buildLibrpalTestDouble(), [ALLOW_TEST_DOUBLE_ENV]: "1" });
      for (const k of Object.keys(env)) saved[k] = process.env[k];
      Object.assign(process.env, env);
      resetRpalDetection();
    },
    async tearDown() {
      const { resetRpalDetection } = await import("../runtime/transport/rpal/detect.ts");
      const { exitRpalProcess } = await import("../runtime/transport/rpal/librpal.ts");
      const { removeStaleTestDoubleFiles } = await import("../runtime/transport/rpal/double/build.ts");
      for (const [k, v] of Object.entries(saved)) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
      resetRpalDetection();
      exitRpalProcess();
      removeStaleTestDoubleFiles();
    },
  };
}
