import { describe, expect, test } from "bun:test";
import { detectRpal } from "../../runtime/transport/rpal/detect.ts";
import { AbUsageError, parseAbFlags, type AbOptions } from "./flags.ts";
import { chooseTransports } from "./transports.ts";

const opts = (argv: string[]): AbOptions => {
  const r = parseAbFlags(argv);
  if (r.kind !== "run") throw new Error("expected options");
  return r.options;
};
// On a machine with a real RPAL kernel these expectations would differ; this suite documents the
// fallback every CI machine here takes.
const rpalHere = detectRpal().preconditions.filter((p) => !p.ok && p.name !== "executable").length === 0;

describe.skipIf(rpalHere)("chooseTransports without an RPAL kernel", () => {
  test("the default is every transport available, baseline first, with why rpal is left out", async () => {
    const c = await chooseTransports(opts([]));
    expect(c.transports).toEqual(["uds", "shm"]);
    expect(c.notes.join(" ")).toMatch(/^rpal left out: .*kernel/);
  });

  test("--quick keeps the baseline and one other", async () => {
    expect((await chooseTransports(opts(["--quick", "--baseline", "shm"]))).transports).toEqual(["shm", "uds"]);
  });

  test("asking for rpal here is a usage error that says why", async () => {
    const err = await chooseTransports(opts(["--transports", "uds,rpal"])).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AbUsageError);
    expect((err as Error).message).toMatch(/--transports rpal cannot run on this machine \(rpal left out: .*\); drop it from --transports/);
  });

  test("--baseline rpal is refused the same way", async () => {
    const err = await chooseTransports(opts(["--baseline", "rpal"])).catch((e: unknown) => e);
    expect((err as Error).message).toMatch(/--baseline rpal cannot run here/);
  });
});
