import { afterAll, describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, rmSync, statSync, symlinkSync, writeFileSync, chmodSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { LiveDisplay, PlainDisplay } from "./display.ts";
import { backoffDelay } from "./managed-process.ts";
import { ensurePrivateDir, RuntimeDirError } from "./runtime-dir.ts";
import { readRuns, writeState, type RunState } from "./state.ts";
import { crashSummary, parseReadyLine } from "./supervisor.ts";
import { renderStatusTable } from "./table.ts";

const dir = mkdtempSync(join(tmpdir(), "rpal-mesh-sup-unit-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("backoff", () => {
  test("doubles from 250 ms and stops at 10 s", () => {
    expect([1, 2, 3, 4, 5, 6, 7, 100].map((n) => backoffDelay(n))).toEqual([250, 500, 1000, 2000, 4000, 8000, 10000, 10000]);
  });
});

describe("the sidecar's ready line", () => {
  test("is recognised and its addresses taken", () => {
    expect(parseReadyLine('{"event":"ready","pod":"g","inbound":"127.0.0.1:50051","admin":"127.0.0.1:9901","app_socket":"/x"}')).toEqual({
      inbound: "127.0.0.1:50051",
      admin: "127.0.0.1:9901",
    });
    expect(parseReadyLine('{"event":"ready","inbound":null,"admin":"127.0.0.1:1"}')).toEqual({ inbound: null, admin: "127.0.0.1:1" });
  });
  test("anything else is ignored, including hostile lines", () => {
    for (const line of ["ready", '{"event":"started"}', "{not json", `{"event":"ready","admin":"${"x".repeat(5000)}"}`, "[1,2]", ""]) {
      expect(parseReadyLine(line)).toBeNull();
    }
    expect(parseReadyLine('{"event":"ready","admin":{"a":1},"inbound":42}')).toEqual({ inbound: null, admin: null });
  });
});

describe("status table", () => {
  test("aligns columns and shows - for unknowns", () => {
    const lines = renderStatusTable([
      { pod: "greeter", role: "sidecar", pid: 12, state: "running", transport: "shm", ports: "inbound 127.0.0.1:50051", restarts: 0 },
      { pod: "greeter", role: "app", pid: null, state: "backoff", transport: null, ports: "", restarts: 3 },
    ]);
    expect(lines).toEqual([
      "POD      PROCESS  PID  STATE    TRANSPORT  PORTS                    RESTARTS",
      "greeter  sidecar  12   running  shm        inbound 127.0.0.1:50051  0",
      "greeter  app      -    backoff  -          -                        3",
    ]);
  });
});

describe("displays", () => {
  function sink() {
    const chunks: string[] = [];
    return { stream: { write: (s: string) => chunks.push(s), isTTY: true } as unknown as NodeJS.WriteStream, chunks };
  }
  test("live: events scroll above the table, which is redrawn in place", () => {
    const { stream, chunks } = sink();
    const d = new LiveDisplay(stream);
    d.table(["A", "B"]);
    d.event("hello");
    d.table(["A", "C"]);
    d.table(["A", "C"]); // unchanged: not redrawn
    expect(chunks).toEqual(["A\nB\n", "\x1b[2F\x1b[Jhello\nA\nB\n", "\x1b[2F\x1b[JA\nC\n"]);
  });
  test("plain: each line once, an unchanged table not repeated", () => {
    const { stream, chunks } = sink();
    const d = new PlainDisplay(stream);
    d.table(["A"]);
    d.table(["A"]);
    d.event("e");
    d.table(["B"]);
    expect(chunks).toEqual(["A\n", "e\n", "B\n"]);
  });
});

describe("runtime directory", () => {
  test("is created 0700 and an existing one with a looser mode is tightened", () => {
    const d = join(dir, "rt1");
    ensurePrivateDir(d);
    expect(statSync(d).mode & 0o777).toBe(0o700);
    chmodSync(d, 0o755);
    ensurePrivateDir(d);
    expect(statSync(d).mode & 0o777).toBe(0o700);
  });
  test("a symlink or a file in the way is refused with the fix", () => {
    const target = join(dir, "elsewhere");
    mkdirSync(target);
    symlinkSync(target, join(dir, "link"));
    expect(() => ensurePrivateDir(join(dir, "link"))).toThrow(RuntimeDirError);
    expect(() => ensurePrivateDir(join(dir, "link"))).toThrow(/not a directory .* set MESH_RUNTIME_DIR/);
  });
});

describe("state files", () => {
  const state = (pid: number): RunState => ({
    version: 1,
    run_id: "r",
    supervisor_pid: pid,
    config: "/x/mesh.yaml",
    started_at: new Date().toISOString(),
    pods: [{ name: "p", inbound: null, admin: null, app_socket: "/nope", transport_requested: "auto", transport: null, processes: [] }],
  });
  test("round-trip with mode 0600; runs of dead supervisors are skipped, and removed only when reaping", () => {
    const runs = join(dir, "runs");
    mkdirSync(join(runs, "live"), { recursive: true });
    mkdirSync(join(runs, "dead"), { recursive: true });
    writeState(join(runs, "live"), state(process.pid));
    writeState(join(runs, "dead"), state(2 ** 22 + 12345)); // above pid_max: never alive
    expect(statSync(join(runs, "live", "state.json")).mode & 0o777).toBe(0o600);
    let found = readRuns(runs);
    expect(found.runs.map((r) => r.supervisor_pid)).toEqual([process.pid]);
    expect(statSync(join(runs, "dead")).isDirectory()).toBe(true);
    found = readRuns(runs, { reapStale: true });
    expect(() => statSync(join(runs, "dead"))).toThrow();
    expect(found.runs.length).toBe(1);
  });
  test("a corrupt or foreign file is reported, not fatal", () => {
    const runs = join(dir, "runs2");
    mkdirSync(join(runs, "bad"), { recursive: true });
    writeFileSync(join(runs, "bad", "state.json"), '{"version": 1, "pods": "nope"');
    mkdirSync(join(runs, "wrong"), { recursive: true });
    writeFileSync(join(runs, "wrong", "state.json"), JSON.stringify({ ...state(process.pid), supervisor_pid: "x" }));
    const found = readRuns(runs);
    expect(found.runs).toEqual([]);
    expect(found.problems.length).toBe(2);
    expect(found.problems[0]).toMatch(/not a valid state file .* — delete it$/);
  });
});

describe("crash summaries", () => {
  test("an uncaught error's line wins over Bun's stack and version lines", () => {
    expect(
      crashSummary([
        '{"level":30,"msg":"auto: skipping rpal"}',
        "error: cannot connect to /x/app.sock (ECONNREFUSED): is the sidecar running?",
        "      at connectUnix (/work/main/runtime/transport/uds.ts:297:15)",
        "",
        "Bun v1.4.5 (Linux x64)",
      ]),
    ).toEqual(["error: cannot connect to /x/app.sock (ECONNREFUSED): is the sidecar running?"]);
  });
  test("otherwise the last lines, pino JSON shown as its message", () => {
    expect(crashSummary(["a", "b", '{"level":50,"msg":"boom","err":{"message":"disk full"}}', "c"])).toEqual(["b", "boom: disk full", "c"]);
  });
});
