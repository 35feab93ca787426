import { afterEach, describe, expect, test } from "bun:test";
import { TestResources } from "../../test/helpers.ts";
import { parseStraceSummary, StraceSession, straceAvailable } from "./strace.ts";

const SAMPLE = `% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 54.46    0.008460         769        11         8 futex
 21.98    0.003414          17       196           epoll_pwait2
  5.64    0.000876           2       389           read
------ ----------- ----------- --------- --------- ----------------
100.00    0.015535          15       596         8 total
`;

const res = new TestResources();
afterEach(() => res.cleanup());

describe("strace summary", () => {
  test("parses rows with and without an errors column and the total", () => {
    const s = parseStraceSummary(SAMPLE)!;
    expect(s.total).toBe(596);
    expect(s.top).toEqual([
      { name: "read", calls: 389 },
      { name: "epoll_pwait2", calls: 196 },
      { name: "futex", calls: 11 },
    ]);
  });

  test("garbage or an empty file gives null, not a crash", () => {
    expect(parseStraceSummary("")).toBeNull();
    expect(parseStraceSummary("strace: attach: ptrace(PTRACE_SEIZE, 1): Operation not permitted\n")).toBeNull();
  });

  test.skipIf(straceAvailable() === null)("counts the syscalls of a real busy process between start and stop", async () => {
    const busy = res.spawnBun(["-e", 'setInterval(() => require("fs").readFileSync("/etc/hostname"), 2); console.log("up")']);
    await busy.waitForLine(/^up$/);
    const dir = res.scratchDir();
    const session = new StraceSession(straceAvailable()!, dir);
    session.start([busy.proc.pid]);
    // strace attaches asynchronously; wait for the tracer to show up in the tracee's status
    const { waitFor } = await import("../../test/helpers.ts");
    await waitFor(async () => /TracerPid:\s+[1-9]/.test(await Bun.file(`/proc/${busy.proc.pid}/status`).text()), { what: "strace to attach" });
    // let the tracee make some read syscalls while traced (the kernel counts them in /proc/<pid>/io)
    const syscr = async () => Number(/syscr:\s+(\d+)/.exec(await Bun.file(`/proc/${busy.proc.pid}/io`).text())![1]);
    const start = await syscr();
    await waitFor(async () => (await syscr()) > start + 20, { what: "traced read syscalls" });
    const counts = (await session.stop()).get(busy.proc.pid)!;
    expect(counts).not.toBeNull();
    expect(counts.total).toBeGreaterThan(10);
    expect(counts.top.map((t) => t.name)).toContain("openat");
  });
});
