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

// The parser before it was written by hand, kept here as the reference.
const RE = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$/;
function viaRegex(value: string | undefined) {
  if (!value) return undefined;
  const m = RE.exec(value.trim());
  if (!m) return undefined;
  const [, version, traceId, spanId, flags, rest] = m as unknown as [string, string, string, string, string, string | undefined];
  if (version === "ff" || (version === "00" && rest)) return undefined;
  if (traceId === "0".repeat(32) || spanId === "0".repeat(16)) return undefined;
  return { traceId, spanId, flags };
}

test("traceparent: the hand-written parser accepts exactly what the regular expression did", () => {
  const good = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
  const cases = new Set<string>([
    good,
    "00" + good.slice(2),
    good + "-extra",
    good + "-",
    good + "-a\nb",
    good + "-a\u2028",
    good + "x",
    " \t" + good + " \n",
    "\u3000" + good + "\ufeff",
    "\u00a0" + good,
    good + "\u2029",
    "00" + good.slice(2) + "-x",
    good.slice(0, 54),
    good.replace("-", "_"),
    "ff" + good.slice(2),
    "0g" + good.slice(2),
  ]);
  // Every single-character change of a valid header, to characters that matter to the grammar.
  let x = 7;
  const rnd = () => ((x = (x * 1103515245 + 12345) % 2147483648) / 2147483648);
  const alphabet = "0123456789abcdefgABF- \n\u2028\u3000é";
  for (let i = 0; i < good.length + 3; i++) {
    for (const c of alphabet) cases.add(good.slice(0, i) + c + good.slice(i + 1));
    cases.add(good.slice(0, i) + good.slice(i + 1));
  }
  for (let i = 0; i < 2000; i++) {
    let s = "";
    const n = 50 + Math.floor(rnd() * 12);
    for (let j = 0; j < n; j++) s += alphabet[Math.floor(rnd() * alphabet.length)]!;
    cases.add(s);
    cases.add(good.slice(0, Math.floor(rnd() * 56)) + s.slice(0, 5));
  }
  for (const c of cases) expect([c, parseTraceparent(c)]).toEqual([c, viaRegex(c)]);
  expect(parseTraceparent(good)).toEqual({ traceId: "4bf92f3577b34da6a3ce929d0e0e4736", spanId: "00f067aa0ba902b7", flags: "01" });
});
