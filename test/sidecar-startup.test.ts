// The sidecar process refuses bad input at start with exit code 2 and one clear line (no stack trace).
import { afterAll, describe, expect, test, setDefaultTimeout } from "bun:test";
import { createServer, type Server } from "node:net";
import { join } from "node:path";
import { TestResources } from "./helpers.ts";
import { SIDECAR_MAIN, writeMeshYaml } from "../mesh/sidecar/testdata/harness.ts";

// Real processes on a shared 2-vCPU machine: room for start-up (the waits inside have their own deadlines).
setDefaultTimeout(60_000);

const res = new TestResources();
afterAll(() => res.cleanup());

async function runSidecar(args: string[], env: Record<string, string> = {}): Promise<{ code: number; output: string }> {
  const p = res.spawnBun([SIDECAR_MAIN, ...args], { env });
  const code = await p.proc.exited;
  return { code, output: p.output() };
}

function expectCleanError(r: { code: number; output: string }, contains: string): void {
  expect(r.code).toBe(2);
  expect(r.output).toContain(contains);
  expect(r.output).not.toMatch(/^\s+at /m);
}

describe("sidecar start-up errors", () => {
  test("missing arguments name the flag and show usage", async () => {
    expectCleanError(await runSidecar(["--pod", "x"]), "missing --config");
  });

  test("an unknown pod lists the pods that exist", async () => {
    const dir = res.scratchDir("sidecar-startup-");
    const config = writeMeshYaml(dir, [{ name: "real", sidecar: {} }]);
    expectCleanError(await runSidecar(["--config", config, "--pod", "ghost", "--app-socket", join(dir, "a.sock")]), 'no pod named "ghost"');
  });

  test("a bad transport override names where it came from", async () => {
    const dir = res.scratchDir("sidecar-startup-");
    const config = writeMeshYaml(dir, [{ name: "real", sidecar: {} }]);
    expectCleanError(await runSidecar(["--config", config, "--pod", "real", "--app-socket", join(dir, "a.sock")], { MESH_TRANSPORT: "carrier-pigeon" }), "MESH_TRANSPORT");
  });

  test("a proto that does not load, and TLS files that do not exist, say how to fix it", async () => {
    const dir = res.scratchDir("sidecar-startup-");
    const config = writeMeshYaml(dir, [
      { name: "proto", sidecar: { protos: ["missing.proto"] } },
      { name: "tls", sidecar: { tls: { ca: "certs/ca.pem", cert: "certs/tls.pem", key: "certs/tls-key.pem" } } },
    ]);
    expectCleanError(await runSidecar(["--config", config, "--pod", "proto", "--app-socket", join(dir, "a.sock")]), "cannot load proto");
    expectCleanError(await runSidecar(["--config", config, "--pod", "tls", "--app-socket", join(dir, "b.sock")]), "mesh certs");
  });

  test("an inbound port in use is refused with the port named", async () => {
    const busy: Server = createServer();
    const port = await new Promise<number>((r) => busy.listen(0, "127.0.0.1", () => r((busy.address() as { port: number }).port)));
    try {
      const dir = res.scratchDir("sidecar-startup-");
      const config = writeMeshYaml(dir, [{ name: "web", sidecar: { inbound: { host: "127.0.0.1", port } } }]);
      expectCleanError(await runSidecar(["--config", config, "--pod", "web", "--app-socket", join(dir, "a.sock")]), `127.0.0.1:${port}`);
    } finally {
      busy.close();
    }
  });
});
