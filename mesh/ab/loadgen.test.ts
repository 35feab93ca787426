// The load generator against a plain grpc-js server (no mesh): real processes, real HTTP/2.
import { afterEach, describe, expect, test } from "bun:test";
import * as hdr from "hdr-histogram-js";
import { TestResources } from "../../test/helpers.ts";
import type { LoadgenConfig, LoadgenResult } from "./loadgen.ts";
import { parseLoadgenConfig } from "./loadgen.ts";

const res = new TestResources();
afterEach(() => res.cleanup());

async function startEcho(): Promise<{ port: number; pid: number }> {
  const s = res.spawnBun(["mesh/ab/testdata/echo-server.ts"]);
  const line = await s.waitForLine(/"event":"ready"/);
  return { port: (JSON.parse(line) as { port: number }).port, pid: s.proc.pid };
}

async function runLoadgen(cfg: LoadgenConfig): Promise<{ lines: Record<string, unknown>[]; code: number | null }> {
  const lg = res.spawnBun(["mesh/ab/loadgen.ts", JSON.stringify(cfg)]);
  const code = await lg.proc.exited;
  const lines = lg
    .output()
    .split("\n")
    .filter((l) => l.startsWith("{"))
    .map((l) => JSON.parse(l) as Record<string, unknown>);
  return { lines, code };
}

const hello = (name: string) => Buffer.concat([Buffer.from([0x0a, name.length]), Buffer.from(name)]).toString("base64");

describe("loadgen", () => {
  test("drives the asked rate open-loop, records ordered percentiles and samples the server's CPU", async () => {
    const echo = await startEcho();
    const { lines, code } = await runLoadgen({
      target: { kind: "grpc", target: `127.0.0.1:${echo.port}`, method: "/hello.Greeter/SayHello", requestBase64: hello("x".repeat(32)), connections: 2 },
      rateRps: 400,
      warmupMs: 300,
      durationMs: 1000,
      timeoutMs: 5000,
      samplePids: [echo.pid],
    });
    expect(code).toBe(0);
    expect(lines.map((l) => l.event)).toEqual(["measuring", "measured", "result"]);
    const r = lines[2] as unknown as LoadgenResult;
    expect(r.measuredCalls).toBe(400);
    expect(r.errors).toBe(0);
    expect(r.achievedRps).toBeGreaterThan(360);
    expect(r.achievedRps).toBeLessThan(440);
    const l = r.latencyUs;
    expect(l.count).toBe(400);
    expect(0 < l.p50 && l.p50 <= l.p90 && l.p90 <= l.p99 && l.p99 <= l.p999 && l.p999 <= l.max).toBe(true);
    // the histogram travels whole, so reps can be merged later
    expect(hdr.decodeFromCompressedBase64(r.histogram).totalCount).toBe(400);
    expect(r.processes.length).toBe(1);
    expect(r.processes[0]!.pid).toBe(echo.pid);
    expect(r.processes[0]!.cpuNs).toBeGreaterThan(0); // the server worked during the window
    expect(r.processes[0]!.rssBytes).toBeGreaterThan(1e6);
    expect(r.missing).toEqual({});
  });

  test("counts failed calls by status and reports a process it could not sample", async () => {
    const echo = await startEcho();
    const failing = Buffer.from([0xff, 0x00]).toString("base64"); // the echo server fails these
    const { lines, code } = await runLoadgen({
      target: { kind: "grpc", target: `127.0.0.1:${echo.port}`, method: "/hello.Greeter/SayHello", requestBase64: failing, connections: 1 },
      rateRps: 200,
      warmupMs: 0,
      durationMs: 500,
      timeoutMs: 2000,
      samplePids: [echo.pid, 2 ** 22 + 12345],
    });
    expect(code).toBe(0);
    const r = lines.at(-1) as unknown as LoadgenResult;
    expect(r.errors).toBe(100);
    expect(r.errorKinds).toEqual({ UNAVAILABLE: 100 });
    expect(r.okInWindow).toBe(0);
    expect(Object.keys(r.missing)).toEqual([String(2 ** 22 + 12345)]);
  });

  test("an unreachable target fails with a message instead of hanging", async () => {
    const { lines, code } = await runLoadgen({
      target: { kind: "grpc", target: "127.0.0.1:1", method: "/hello.Greeter/SayHello", requestBase64: hello("a"), connections: 1 },
      rateRps: 10,
      warmupMs: 0,
      durationMs: 100,
      timeoutMs: 1000,
      samplePids: [],
    });
    expect(code).toBe(1);
    expect(String(lines.at(-1)!.message)).toMatch(/did not become ready/);
  });

  test("HTTP mode: GETs the URL open-loop and counts non-2xx answers by status", async () => {
    let n = 0;
    const server = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => (++n % 10 === 0 ? new Response("no", { status: 503 }) : new Response("hi")) });
    try {
      const { lines, code } = await runLoadgen({
        target: { kind: "http", url: `http://127.0.0.1:${server.port}/hello?name=xx` },
        rateRps: 200,
        warmupMs: 0,
        durationMs: 500,
        timeoutMs: 2000,
        samplePids: [process.pid],
      });
      expect(code).toBe(0);
      const r = lines.at(-1) as unknown as LoadgenResult;
      expect(r.measuredCalls).toBe(100);
      expect(r.errors).toBe(r.errorKinds.HTTP_503!);
      expect(r.errors).toBeGreaterThanOrEqual(9);
      expect(r.latencyUs.count).toBe(100 - r.errors);
    } finally {
      server.stop(true);
    }
  });

  test("rejects a malformed config naming the field", () => {
    expect(() => parseLoadgenConfig(JSON.stringify({ target: { kind: "grpc", target: "nohost", method: "/a.B/C" } }))).toThrow(/target must be host:port/);
    expect(() => parseLoadgenConfig(JSON.stringify({ target: { kind: "ftp" } }))).toThrow(/target.kind/);
    expect(() => parseLoadgenConfig(undefined)).toThrow(/JSON config/);
  });
});
