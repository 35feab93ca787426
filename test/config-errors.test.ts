// User mistakes reach `mesh up` as one short line and exit code 2 — no stack trace, nothing started.
import { afterEach, describe, expect, test, setDefaultTimeout } from "bun:test";
import { existsSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Subprocess } from "bun";
import { stopSupervisors } from "../mesh/supervisor/testdata/stop-supervisors.ts";
import { REPO_ROOT, TestResources } from "./helpers.ts";

// Real processes on a shared 2-vCPU machine: give each test room (the waits inside have their own deadlines).
setDefaultTimeout(60_000);

const MESH = join(REPO_ROOT, "mesh/cli/main.ts");
const FAKE_SIDECAR = join(REPO_ROOT, "mesh/supervisor/testdata/fake-sidecar.ts");
const res = new TestResources();
/** A `mesh up` that wrongly started must still drain its pods, not be SIGKILLed past them. */
const supervisors: Subprocess[] = [];
afterEach(async () => {
  await stopSupervisors(supervisors);
  await res.cleanup();
});

async function meshUp(yaml: string, args: string[] = [], extraEnv: Record<string, string> = {}) {
  const dir = res.scratchDir("rpal-mesh-cfg-");
  const file = join(dir, "mesh.yaml");
  writeFileSync(file, yaml);
  const runtime = join(dir, "rt");
  const p = res.spawnBun([MESH, "up", file, ...args], {
    cwd: dir,
    env: { MESH_RUNTIME_DIR: runtime, MESH_SIDECAR_ENTRY: FAKE_SIDECAR, ...extraEnv },
  });
  supervisors.push(p.proc);
  const code = await p.proc.exited;
  const out = p.output().trim();
  return { code, out, runtime };
}

function expectShortUserError(r: { code: number; out: string; runtime: string }, pattern: RegExp) {
  expect(r.code).toBe(2);
  expect(r.out).toMatch(pattern);
  // One line, no stack trace, and nothing was launched (no run directory was even made).
  expect(r.out.split("\n").length).toBe(1);
  expect(r.out).not.toMatch(/\n\s+at /);
  expect(existsSync(join(r.runtime, "runs")) ? readdirSync(join(r.runtime, "runs")) : []).toEqual([]);
}

const HEAD = "version: 1\npods:\n  - name: greeter\n";

describe("bad mesh.yaml → exit 2 with file:line: field: problem — fix", () => {
  test("unknown field", async () => {
    const r = await meshUp(`${HEAD}    app: { command: bun }\n    sidecar:\n      inbund: { port: 50051 }\n`);
    expectShortUserError(r, /^mesh: mesh\.yaml:6: pods\[0\]\.sidecar\.inbund: unknown field — did you mean inbound\?$/);
  });

  test("wrong type", async () => {
    const r = await meshUp(`${HEAD}    app: { command: bun }\n    sidecar:\n      inbound: { port: abc }\n`);
    expectShortUserError(
      r,
      /^mesh: mesh\.yaml:6: pods\[0\]\.sidecar\.inbound\.port: expected a number from 0 to 65535, got "abc" — set it to a free TCP port/,
    );
  });

  test("missing command", async () => {
    const r = await meshUp(`${HEAD}    app:\n      args: [x.ts]\n`);
    expectShortUserError(r, /^mesh: mesh\.yaml:5: pods\[0\]\.app\.command: missing — set command to the executable, e.g\. command: bun$/);
  });

  test("command not found", async () => {
    const r = await meshUp(`${HEAD}    app: { command: no-such-program-xyz }\n`);
    expectShortUserError(r, /^mesh: mesh\.yaml:4: pods\[0\]\.app\.command: "no-such-program-xyz" is not found in PATH — install it/);
  });

  test("port in use", async () => {
    const squatter = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
    try {
      const r = await meshUp(`${HEAD}    app: { command: bun }\n    sidecar:\n      inbound: { host: 127.0.0.1, port: ${squatter.port} }\n`);
      expectShortUserError(
        r,
        new RegExp(`^mesh: mesh\\.yaml:6: pods\\[0\\]\\.sidecar\\.inbound\\.port: 127\\.0\\.0\\.1:${squatter.port} is already in use — stop the program`),
      );
    } finally {
      squatter.stop(true);
    }
  });

  test("missing file, YAML syntax error, proto that does not exist", async () => {
    const missing = res.spawnBun([MESH, "up", "/nonexistent/mesh.yaml"]);
    expect(await missing.proc.exited).toBe(2);
    expect(missing.output().trim()).toBe("mesh: /nonexistent/mesh.yaml: cannot read mesh.yaml: no such file — check the path");
    expectShortUserError(await meshUp(`${HEAD}    app: { command: bun\n`), /^mesh: mesh\.yaml:\d+: YAML syntax error: /);
    expectShortUserError(
      await meshUp(`${HEAD}    app: { command: bun }\n    sidecar: { protos: [nope.proto] }\n`),
      /^mesh: mesh\.yaml:5: pods\[0\]\.sidecar\.protos\[0\]: .*nope\.proto does not exist — fix the path/,
    );
  });

  test("bad --transport and MESH_TRANSPORT", async () => {
    const ok = `${HEAD}    app: { command: bun }\n`;
    const flag = await meshUp(ok, ["--transport", "carrier-pigeon"]);
    expect(flag.code).toBe(2);
    expect(flag.out).toContain("argument 'carrier-pigeon' is invalid. Allowed choices are auto, uds, shm, rpal.");
    expectShortUserError(
      await meshUp(ok, [], { MESH_TRANSPORT: "tcp" }),
      /^mesh: MESH_TRANSPORT=tcp: expected one of auto, uds, shm, rpal — e\.g\. MESH_TRANSPORT=shm$/,
    );
  });
});

describe("forced rpal where it cannot work", () => {
  test.skipIf(existsSync("/proc/rpal"))("--transport rpal on a kernel without RPAL → exit 2 naming the missing precondition", async () => {
    const r = await meshUp(`${HEAD}    app: { command: bun }\n`, ["--transport", "rpal"]);
    expectShortUserError(r, /^mesh: --transport rpal: rpal cannot be used on this machine: \/proc\/rpal not found: .* `bun run mesh doctor` shows every check$/);
  });
  test.skipIf(existsSync("/proc/rpal"))("transport: rpal in mesh.yaml → the error points at that line", async () => {
    const r = await meshUp(`${HEAD}    app: { command: bun }\n    sidecar:\n      transport: rpal\n`);
    expectShortUserError(r, /^mesh: mesh\.yaml:6: pods\[0\]\.sidecar\.transport: rpal cannot be used on this machine: /);
  });
});

describe("mesh CLI basics", () => {
  test("--help lists only commands that exist; unknown commands exit 2", async () => {
    const help = res.spawnBun([MESH, "--help"]);
    expect(await help.proc.exited).toBe(0);
    expect(help.output()).toMatch(/^\s+up \[options\] \[file\]/m);
    expect(help.output()).toMatch(/^\s+status \[options\]/m);
    for (const [cmd, file] of [
      ["doctor", "mesh/cli/doctor.ts"],
      ["certs", "mesh/sidecar/certs.ts"],
      ["ab", "mesh/ab/main.ts"],
      ["k8s", "mesh/k8s/main.ts"],
    ] as const) {
      expect(new RegExp(`^\\s+${cmd}\\s`, "m").test(help.output())).toBe(existsSync(join(REPO_ROOT, file)));
    }
    const unknown = res.spawnBun([MESH, "upp"]);
    expect(await unknown.proc.exited).toBe(2);
    expect(unknown.output()).toContain("mesh: unknown command 'upp'");
    expect(unknown.output()).toContain("(Did you mean up?)");
  });
});
