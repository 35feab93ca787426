import { describe, expect, test } from "bun:test";
import { nextHop, parseTraceparent } from "./trace.ts";

describe("traceparent", () => {
  test("continues a valid trace with a new span id", () => {
    const incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const hop = nextHop(incoming);
    expect(hop.traceId).toBe("4bf92f3577b34da6a3ce929d0e0e4736");
    expect(hop.parentId).toBe("00f067aa0ba902b7");
    expect(hop.spanId).toMatch(/^[0-9a-f]{16}$/);
    expect(hop.spanId).not.toBe("00f067aa0ba902b7");
    expect(hop.traceparent).toBe(`00-4bf92f3577b34da6a3ce929d0e0e4736-${hop.spanId}-01`);
  });

  test("starts a new trace when absent or malformed", () => {
    for (const bad of [undefined, "", "garbage", "00-00000000000000000000000000000000-00f067aa0ba902b7-01", "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"]) {
      const hop = nextHop(bad);
      expect(hop.parentId).toBeUndefined();
      expect(parseTraceparent(hop.traceparent)).toEqual({ traceId: hop.traceId, spanId: hop.spanId, flags: "01" });
    }
  });

  test("ids differ between hops", () => {
    const ids = new Set(Array.from({ length: 100 }, () => nextHop(undefined).traceId));
    expect(ids.size).toBe(100);
  });
});
