import { describe, expect, test } from "bun:test";
import { AbUsageError, DEFAULT_CONFIG, parseAbFlags, parseDuration, type AbOptions } from "./flags.ts";

function run(argv: string[]): AbOptions {
  const r = parseAbFlags(argv);
  if (r.kind !== "run") throw new Error("expected a run");
  return r.options;
}

function usageError(argv: string[]): string {
  try {
    parseAbFlags(argv);
  } catch (e) {
    expect(e).toBeInstanceOf(AbUsageError);
    return (e as Error).message;
  }
  throw new Error(`no error for ${argv.join(" ")}`);
}

describe("parseAbFlags", () => {
  test("defaults follow the issue: hello example, 3 rates, 20 s, 2 payloads, 3 reps, uds baseline", () => {
    const o = run([]);
    expect(o.configPath).toBe(DEFAULT_CONFIG);
    expect(o.transports).toBeUndefined(); // resolved later from what this machine supports
    expect(o.ratesRps).toEqual([1000, 5000, 20000]);
    expect(o.durationMs).toBe(20_000);
    expect(o.payloadBytes).toEqual([32, 1024]);
    expect(o.reps).toBe(3);
    expect(o.baseline).toBe("uds");
    expect(o.strace).toBe(false);
  });

  test("the issue's full command line parses", () => {
    const o = run(["my/mesh.yaml", "--transports", "uds,shm,rpal", "--rates", "1000,5000,20000", "--duration", "20s", "--payload", "32,1024", "--reps", "3", "--out", "DIR"]);
    expect(o.configPath).toBe("my/mesh.yaml");
    expect(o.transports).toEqual(["uds", "shm", "rpal"]);
    expect(o.outDir).toBe("DIR");
  });

  test("--quick is a short smoke run unless flags say otherwise", () => {
    const o = run(["--quick"]);
    expect(o.quick).toBe(true);
    expect(o.ratesRps.length).toBe(1);
    expect(o.payloadBytes.length).toBe(1);
    expect(o.durationMs).toBeLessThanOrEqual(5000);
    expect(run(["--quick", "--rates", "300"]).ratesRps).toEqual([300]);
  });

  test("durations accept ms, s, m and bare seconds", () => {
    expect(parseDuration("--duration", "1500ms")).toBe(1500);
    expect(parseDuration("--duration", "2.5s")).toBe(2500);
    expect(parseDuration("--duration", "1m")).toBe(60_000);
    expect(parseDuration("--duration", "3")).toBe(3000);
  });

  test("--help is not an error", () => {
    expect(parseAbFlags(["-h"]).kind).toBe("help");
  });

  const bad: [string[], RegExp][] = [
    [["--rate", "5"], /Unknown option '--rate'.*--help/],
    [["--transports", "uds,tcp"], /unknown transport "tcp"; choose from uds, shm, rpal/],
    [["--transports", "uds,,shm"], /empty entry/],
    [["--transports", "uds,uds"], /twice/],
    [["--transports", "shm,rpal"], /--baseline uds is not among --transports shm,rpal/],
    [["--rates", "1000,abc"], /--rates: "abc" is not a whole number/],
    [["--rates", "0"], /--rates: 0 is outside 1\.\.1000000/],
    [["--rates", ""], /comma-separated list/],
    [["--duration", "20 parsecs"], /--duration "20 parsecs" is not a duration: write e\.g\. 20s/],
    [["--duration", "0s"], /longer than 0/],
    [["--reps", "-1"], /--reps/],
    [["--reps", "1.5"], /--reps expects a whole number/],
    [["--reps", "0"], /between 1 and 100/],
    [["--payload", "99999999"], /--payload: 99999999 is outside/],
    [["--max-error-rate", "2"], /fraction between 0 and 1/],
    [["--target", "Greeter!"], /not a pod name/],
    [["a.yaml", "b.yaml"], /at most one mesh\.yaml/],
    [["--quick", "--transports", "uds,shm,rpal"], /--quick compares 2 transports/],
    [["--reps"], /argument missing|--reps/],
    [["--method", "SayHello"], /not a gRPC method path: write \/package\.Service\/Method/],
    [["--http-get", "http://127.0.0.1:8080/hello"], /needs \{payload\}/],
    [["--http-get", "https://x:1/{payload}"], /http:\/\/ URL with an explicit port/],
    [["--http-get", "http://127.0.0.1/{payload}"], /explicit port/],
    [["--http-get", "http://127.0.0.1:8080/?n={payload}", "--target", "greeter"], /cannot be combined/],
  ];
  for (const [argv, re] of bad) {
    test(`rejects ${argv.join(" ") || "(empty)"} with a message naming the flag`, () => {
      expect(usageError(argv)).toMatch(re);
    });
  }
});
