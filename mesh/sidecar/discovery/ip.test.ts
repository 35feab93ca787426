// ip.ts's isIP against node:net's (the one it replaces) over hand-picked and generated inputs.
import { describe, expect, test } from "bun:test";
import { isIP as oracle } from "node:net";
import { isIP } from "./ip.ts";

const CASES = [
  "", "1.1.1.1", "0.0.0.0", "255.255.255.255", "127.0.0.1", "10.96.0.10", "256.1.1.1", "1.1.1.256",
  "01.1.1.1", "1.1.1.01", "1.1.1.00", "1.1.1", "1.1.1.1.1", "1..1.1", ".1.1.1.1", "1.1.1.1.", " 1.1.1.1",
  "1.1.1.1 ", "1.1.1.1\n", "\n1.1.1.1", "１.1.1.1", "1.1.1.1:80", "0x1.1.1.1", "+1.1.1.1", "-1.1.1.1",
  "::", "::1", ":::", ":", "1:", ":1", "1::", "::ffff:1.2.3.4", "::ffff:1.2.3.256", "::1.2.3.04", "::0.0.0.0",
  "1::1.2.3.4", "1:2:3:4:5:6:1.2.3.4", "1:2:3:4:5:6:7:1.2.3.4", "1:2:3:4:5::1.2.3.4", "1:2:3:4:5:6::1.2.3.4",
  "1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7:8:9", "1:2:3:4:5:6:7", "1::2::3", "1:2:3:4:5:6:7::", "::2:3:4:5:6:7:8",
  "1:2:3:4:5:6:7::8", "0001:2:3:4:5:6:7:8", "00001::", "ABCD::EF", "abcd:EF01::", "g::1", "fe80::1%eth0",
  "fe80::1%", "fe80::1%25eth0", "fe80::1%a b", "fe80::1%a.b-c:d", "fe80::1%a_b", "::1%eth0%x", "::1%é",
  "1.2.3.4%eth0", "[::1]", "[::1]:80", "::1 ", " ::1", "2001:db8::", "2001:db8:0:0:0:0:2:1", "2001:db8::2:1",
  "::ffff:192.0.2.128", "64:ff9b::192.0.2.33", "fe80::", "ff02::1", "1:2:3:4::5:6:7", "1:2:3:4::5:6:7:8",
  "localhost", "greeter", "example.com", "1e3.1.1.1", "1.1.1.1/24", "::/0",
];

describe("isIP", () => {
  test("agrees with node:net on hand-picked addresses and non-addresses", () => {
    for (const s of CASES) expect([s, isIP(s) as number]).toEqual([s, oracle(s)]);
    // Sanity: the list has all three answers in it.
    const answers = new Set(CASES.map(oracle));
    expect([...answers].sort()).toEqual([0, 4, 6]);
  });

  test("agrees with node:net on generated near-addresses", () => {
    // A small deterministic generator (xorshift), so a failure names an input that reproduces.
    let seed = 0x9e3779b9;
    const rand = (n: number): number => {
      seed ^= seed << 13;
      seed ^= seed >>> 17;
      seed ^= seed << 5;
      return (seed >>> 0) % n;
    };
    const pick = <T>(xs: readonly T[]): T => xs[rand(xs.length)]!;
    const v4Seg = (): string => pick(["0", "1", "9", "10", "99", "100", "199", "200", "249", "250", "255", "256", "300", "01", "001", "1000", String(rand(300))]);
    const v6Seg = (): string => pick(["0", "1", "a", "F", "ff", "fff", "ffff", "FFFF", "0000", "00000", "12345", "g", "dB8", ""]);
    const v4 = (): string => Array.from({ length: pick([3, 4, 4, 4, 5]) }, v4Seg).join(".");
    const v6 = (): string => {
      const n = rand(10);
      const segs = Array.from({ length: n }, () => (rand(8) === 0 ? v4() : v6Seg()));
      if (rand(2) === 0 && n > 0) segs.splice(rand(n + 1), 0, ""); // a "::" somewhere
      let s = segs.join(":");
      if (rand(4) === 0) s = ":" + s;
      if (rand(4) === 0) s += ":";
      if (rand(6) === 0) s += "%" + pick(["eth0", "0", "a-b.c:d", "", "x y", "ü", "%"]);
      return s;
    };
    const noise = (s: string): string => {
      if (rand(10) !== 0) return s;
      const i = rand(s.length + 1);
      return s.slice(0, i) + pick([" ", ".", ":", "%", "x", "\n", "-", "0"]) + s.slice(i + rand(2));
    };
    const seen = { 0: 0, 4: 0, 6: 0 };
    for (let i = 0; i < 50_000; i++) {
      const s = noise(rand(3) === 0 ? v4() : v6());
      const want = oracle(s) as 0 | 4 | 6;
      seen[want]++;
      if (isIP(s) !== want) expect([s, isIP(s) as number]).toEqual([s, want]);
    }
    // The generator must produce plenty of each kind, or the comparison proves little.
    expect(seen[0]).toBeGreaterThan(1000);
    expect(seen[4]).toBeGreaterThan(1000);
    expect(seen[6]).toBeGreaterThan(1000);
  });
});
