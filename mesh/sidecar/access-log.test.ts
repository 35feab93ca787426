// The hand-made access-log line is the line pino writes for the same fields, byte for byte (apart
// from the time), also when a field needs JSON escaping.
import { describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pino from "pino";
import { type AccessEntry, accessFields, durationText, formatAccessLine, timeText } from "./access-log.ts";

function viaPino(e: AccessEntry): string {
  let out = "";
  const log = pino({ level: "info", base: { pid: process.pid, component: "access" } }, { write: (s: string) => (out += s) });
  log.info(accessFields(e), "call");
  return out.replace(/"time":\d+/, '"time":0');
}

const head = `,"pid":${process.pid},"component":"access","direction":"`;
const base: AccessEntry = {
  direction: "outbound",
  method: "/meshtest.Echo/Unary",
  code: 0,
  details: "",
  durationMs: 1.23456,
  upstream: "127.0.0.1:50051",
  attempts: 1,
  traceId: "4bf92f3577b34da6a3ce929d0e0e4736",
  spanId: "00f067aa0ba902b7",
};

describe("access log line", () => {
  test("time and duration written by hand read as String() of the numbers", () => {
    const durations = [0, 0.0004, 0.0005, 0.001, 0.05, 0.1, 0.5, 1, 1.23456, 10.07, 99.9999, 999.9994, 999.9995, 1000, 1e6 + 0.5, -0, -1, NaN, Infinity];
    for (let i = 0; i < 20000; i++) durations.push(Math.random() * 1200, i / 1000, i / 100);
    for (const d of durations) expect(durationText(d)).toBe(String(Math.round(d * 1000) / 1000));
    const times = [0, 5, 999, 1000, 1001, 1795677921000, 1795677921005, 1795677921050, 1795677921999, 1795677922000, 1.5, -3];
    let t = 1795677921000;
    for (let i = 0; i < 5000; i++) times.push((t += Math.floor(Math.random() * 700)));
    for (const x of times) expect(timeText(x)).toBe(String(x));
  });

  test("same bytes as pino for an OK call, a failed call with details, and fields needing escapes", () => {
    for (const e of [
      base,
      { ...base, direction: "inbound" as const, code: 14, details: "no app is connected", upstream: "app", attempts: 3 },
      { ...base, code: 13, details: 'quote " backslash \\ newline \n tab \t ünï ☃', method: '/weird"/M\\' },
      { ...base, code: 2, details: "lone \ud800 surrogate" },
      { ...base, code: 5, details: "" },
    ]) {
      const line = formatAccessLine(e, 0, head);
      expect(line).toBe(viaPino(e));
      expect(() => JSON.parse(line)).not.toThrow();
    }
  });
});

// A child process that writes access-log lines to its stderr (a pipe: JSON lines).
function child(script: string) {
  const code = `import { logAccess } from ${JSON.stringify(new URL("./access-log.ts", import.meta.url).pathname)};\n${script}`;
  return Bun.spawn([process.execPath, "-e", code], {
    stdin: "ignore",
    stdout: "ignore",
    stderr: "pipe",
    env: { ...process.env, MESH_ACCESS_LOG: "on", MESH_LOG_LEVEL: "info", MESH_LOG_FORMAT: "json" },
  });
}

const ENTRY = `{ direction: "inbound", method: "/m.S/U", code: 0, details: "", durationMs: 1, upstream: "app", attempts: 1, traceId: "t".repeat(32), spanId: "s".repeat(16) }`;

describe("access log output", () => {
  test("a few lines of an idle process reach stderr without waiting for 4 KiB or exit", async () => {
    // Three short lines, then the process stays alive: the lines must come out on their own (timer).
    const p = child(`for (let i = 0; i < 3; i++) logAccess({ ...${ENTRY}, attempts: i + 1 });\nsetInterval(() => {}, 1000);`);
    const reader = p.stderr.getReader();
    let text = "";
    while (text.split("\n").length < 4) {
      const { value, done } = await reader.read();
      if (done) break;
      text += new TextDecoder().decode(value);
    }
    p.kill();
    await p.exited;
    const lines = text.trim().split("\n").map((l) => JSON.parse(l));
    expect(lines.map((l) => l.attempts)).toEqual([1, 2, 3]);
    expect(lines[0]).toMatchObject({ level: 30, component: "access", direction: "inbound", method: "/m.S/U", code: "OK", msg: "call" });
  });

  test("every line is out, in order, when the process exits right after writing many", async () => {
    const p = child(`for (let i = 0; i < 5000; i++) logAccess({ ...${ENTRY}, attempts: i, details: "x", method: i % 7 ? "/m.S/U" : "/m.S/ünï" });\nprocess.exit(0);`);
    const text = await new Response(p.stderr).text();
    expect(await p.exited).toBe(0);
    const lines = text.trim().split("\n").map((l) => JSON.parse(l));
    expect(lines.length).toBe(5000);
    expect(lines.every((l, i) => l.attempts === i && l.method === (i % 7 ? "/m.S/U" : "/m.S/ünï"))).toBe(true);
  });

  test("lines are formatted in batches but each keeps its own call's time and fields (slots reused across batches)", async () => {
    // 70 lines (one full batch of 64 and a partial one), 150 ms between the 10th and 11th call: the
    // times are those of the calls, not of the hand-over; a failed call's details are on its line only.
    const p = child(`for (let i = 0; i < 70; i++) { if (i === 10) { const t = Date.now(); while (Date.now() - t < 150) {} } logAccess({ ...${ENTRY}, attempts: i, code: i === 65 ? 14 : 0, details: i === 65 ? "gone" : "", upstream: i % 2 ? "127.0.0.1:1" : "app" }); }\nprocess.exit(0);`);
    const text = await new Response(p.stderr).text();
    expect(await p.exited).toBe(0);
    const lines = text.trim().split("\n").map((l) => JSON.parse(l));
    expect(lines.map((l) => l.attempts)).toEqual(Array.from({ length: 70 }, (_, i) => i));
    expect(lines[10].time - lines[9].time).toBeGreaterThanOrEqual(149);
    expect(lines[69].time - lines[10].time).toBeLessThan(100);
    expect(lines.filter((l) => "details" in l).map((l) => [l.attempts, l.code, l.details])).toEqual([[65, "UNAVAILABLE", "gone"]]);
    expect(lines.every((l, i) => l.upstream === (i % 2 ? "127.0.0.1:1" : "app"))).toBe(true);
  });

  test("a reader that stalls: lines wait (stderr is a full non-blocking pipe) and all come out, in order, once it reads", async () => {
    // 20,000 lines (~6 MB) in bursts while nobody reads: writes come back EAGAIN or short and are retried
    // on a timer; the process keeps running (no exit flush) and the lines reach the reader when it reads.
    const p = child(`let n = 0; const t = setInterval(() => { for (let i = 0; i < 2000; i++) logAccess({ ...${ENTRY}, attempts: n++ }); if (n >= 20000) clearInterval(t); }, 5);\nsetInterval(() => {}, 1000);`);
    await Bun.sleep(500);
    const reader = p.stderr.getReader();
    let text = "";
    const decoder = new TextDecoder();
    while (text.split("\n").length <= 20000) {
      const { value, done } = await reader.read();
      if (done) break;
      text += decoder.decode(value, { stream: true });
    }
    p.kill();
    await p.exited;
    const lines = text.trim().split("\n").map((l) => JSON.parse(l));
    expect(lines.length).toBe(20000);
    expect(lines.every((l, i) => l.attempts === i)).toBe(true);
  });
});

describe("access log when stderr goes away", () => {
  test("the reader exits (EPIPE): the process keeps running, and the lines it could not write are counted as dropped", async () => {
    const dir = mkdtempSync(join(tmpdir(), "access-epipe-"));
    try {
      const marker = join(dir, "marker");
      const code = `import { logAccess, flushAccessLog, accessLogDroppedLines } from ${JSON.stringify(new URL("./access-log.ts", import.meta.url).pathname)};
        import { writeFileSync } from "node:fs";
        let n = 0;
        const t = setInterval(() => { for (let i = 0; i < 200; i++) logAccess({ ...${ENTRY}, attempts: n++ }); }, 5);
        setTimeout(() => { clearInterval(t); flushAccessLog(); writeFileSync(${JSON.stringify(marker)}, JSON.stringify({ n, dropped: accessLogDroppedLines() })); process.exit(0); }, 1500);`;
      // stderr into a pipe whose reader (head) leaves after 100 bytes.
      const sh = Bun.spawn(["sh", "-c", `"$0" -e "$1" 2>&1 >/dev/null | head -c 100 >/dev/null`, process.execPath, code], {
        stdout: "pipe",
        stderr: "inherit",
        env: { ...process.env, MESH_ACCESS_LOG: "on", MESH_LOG_LEVEL: "info", MESH_LOG_FORMAT: "json" },
      });
      await sh.exited;
      const { n, dropped } = JSON.parse(readFileSync(marker, "utf8")) as { n: number; dropped: number };
      expect(n).toBeGreaterThan(10_000);
      // Almost all lines were written after the reader left; all of those are counted.
      expect(dropped).toBeGreaterThan(n / 2);
      expect(dropped).toBeLessThanOrEqual(n);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
