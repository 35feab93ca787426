// The hand-made access-log line is the line pino writes for the same fields, byte for byte (apart
// from the time), also when a field needs JSON escaping.
import { describe, expect, test } from "bun:test";
import pino from "pino";
import { statusName } from "../../runtime/rpc/status.ts";
import { type AccessEntry, formatAccessLine } from "./access-log.ts";

function viaPino(e: AccessEntry): string {
  let out = "";
  const log = pino({ level: "info", base: { pid: process.pid, component: "access" } }, { write: (s: string) => (out += s) });
  log.info(
    {
      direction: e.direction,
      method: e.method,
      code: statusName(e.code),
      duration_ms: Math.round(e.durationMs * 1000) / 1000,
      upstream: e.upstream,
      attempts: e.attempts,
      trace_id: e.traceId,
      span_id: e.spanId,
      ...(e.code !== 0 && e.details ? { details: e.details } : {}),
    },
    "call",
  );
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
