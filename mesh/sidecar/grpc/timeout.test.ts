// grpc-timeout: every unit, the 8-digit limit, and values that are not timeouts.
import { describe, expect, test } from "bun:test";
import { formatGrpcTimeout, parseGrpcTimeout } from "./timeout.ts";

describe("parseGrpcTimeout", () => {
  test("each unit", () => {
    expect(parseGrpcTimeout("2H")).toBe(7_200_000);
    expect(parseGrpcTimeout("3M")).toBe(180_000);
    expect(parseGrpcTimeout("5S")).toBe(5000);
    expect(parseGrpcTimeout("250m")).toBe(250);
    expect(parseGrpcTimeout("1500u")).toBe(1.5);
    expect(parseGrpcTimeout("2000000n")).toBe(2);
    expect(parseGrpcTimeout("0m")).toBe(0);
    expect(parseGrpcTimeout("99999999S")).toBe(99_999_999_000);
  });

  test("malformed values are refused", () => {
    for (const bad of ["", "S", "5", "5s", "5 S", " 5S", "-5S", "+5S", "5.5S", "123456789S", "1e3m", "５S", "0x10m", "5SS", "m5"]) {
      expect(parseGrpcTimeout(bad)).toBeUndefined();
    }
  });
});

describe("formatGrpcTimeout", () => {
  test("milliseconds while they fit in 8 digits, rounded up", () => {
    expect(formatGrpcTimeout(1500)).toBe("1500m");
    expect(formatGrpcTimeout(1.2)).toBe("2m");
    expect(formatGrpcTimeout(99_999_999)).toBe("99999999m");
  });

  test("coarser units for long timeouts; sub-millisecond in microseconds; passed deadlines as 1n", () => {
    expect(formatGrpcTimeout(100_000_000)).toBe("100000S");
    expect(formatGrpcTimeout(99_999_999_000 + 1)).toBe("1666667M");
    expect(formatGrpcTimeout(1e14)).toBe("27777778H");
    expect(formatGrpcTimeout(1e16)).toBe("99999999H"); // the most the header can say
    expect(formatGrpcTimeout(0.25)).toBe("250u");
    expect(formatGrpcTimeout(0)).toBe("1n");
    expect(formatGrpcTimeout(-5)).toBe("1n");
  });

  test("what it formats parses back to at least the time given", () => {
    for (const ms of [0.001, 0.5, 1, 999.4, 1234, 86_400_000, 5e11]) {
      const back = parseGrpcTimeout(formatGrpcTimeout(ms))!;
      expect(back).toBeGreaterThanOrEqual(ms);
      expect(back - ms).toBeLessThanOrEqual(Math.max(1, ms * 1e-6) * 60_000);
    }
  });
});
