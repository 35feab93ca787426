import { describe, expect, test } from "bun:test";
import { parseBenchArgs, selected, UsageError, type BenchOptions } from "./args.ts";

const opts = (argv: string[]) => parseBenchArgs(argv) as BenchOptions;

describe("bench options", () => {
  test("defaults: everything selected, no placement override", () => {
    const o = opts([]);
    expect(o).toMatchObject({ json: false, quick: false, full: false, only: undefined, placement: undefined });
    expect(selected(o, "shm")).toBe(true);
  });

  test("--only c selects every C reference and no Bun row", () => {
    const o = opts(["--only", "c"]);
    expect(["c-uds", "c-pipe", "c-shm-spin"].every((n) => selected(o, n as never))).toBe(true);
    expect(selected(o, "uds")).toBe(false);
    expect(selected(o, "micro")).toBe(false);
  });

  test("--only shm also runs the references shm rows are divided by, not the pipe", () => {
    const o = opts(["--only", "shm"]);
    expect(selected(o, "c-uds")).toBe(true);
    expect(selected(o, "c-shm-spin")).toBe(true);
    expect(selected(o, "c-pipe")).toBe(false);
    expect(selected(o, "uds")).toBe(false);
  });

  test("--only floor selects the RPC floor rows and no C reference; the default run includes them", () => {
    const o = opts(["--only", "floor"]);
    expect(selected(o, "floor")).toBe(true);
    expect(["c-uds", "c-pipe", "c-shm-spin", "uds", "shm", "rpal", "micro"].some((n) => selected(o, n as never))).toBe(false);
    expect(selected(opts([]), "floor")).toBe(true);
    expect(selected(opts(["--only", "uds,shm,floor"]), "c-uds")).toBe(true);
  });

  test("bad input fails with what is accepted", () => {
    expect(() => parseBenchArgs(["--only", "tcp"])).toThrow(/unknown name 'tcp'; accepted: c, c-uds/);
    expect(() => parseBenchArgs(["--only", ","])).toThrow(UsageError);
    expect(() => parseBenchArgs(["--placement", "numa"])).toThrow(/same-cpu, apart or unpinned/);
    expect(() => parseBenchArgs(["--quick", "--full"])).toThrow(/contradict/);
    expect(() => parseBenchArgs(["--frobnicate"])).toThrow(UsageError);
  });
});
