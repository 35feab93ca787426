// Boots a stock (non-RPAL) kernel under QEMU with kernel-patches/vm/run and runs this checkout's
// transport tests inside it; checks that the harness reports the guest's status, honours --timeout
// and never leaves a QEMU behind. Opt-in (MESH_VM_TESTS=1): each boot costs 10-20 s under TCG.
import { afterAll, afterEach, describe, expect, test } from "bun:test";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { REPO_ROOT, TestResources, waitFor } from "./helpers.ts";

const RUN = join(REPO_ROOT, "kernel-patches/vm/run");

/** $MESH_VM_KERNEL, else the newest /boot/vmlinuz-* (Debian: apt-get install linux-image-amd64). */
function findKernel(): string | undefined {
  if (process.env.MESH_VM_KERNEL) return process.env.MESH_VM_KERNEL;
  try {
    const images = readdirSync("/boot").filter((n) => n.startsWith("vmlinuz-")).sort();
    return images.length ? join("/boot", images[images.length - 1]!) : undefined;
  } catch {
    return undefined;
  }
}

const kernel = findKernel();
const skipReason = !process.env.MESH_VM_TESTS
  ? "set MESH_VM_TESTS=1 to boot a VM (10-20 s per boot under TCG)"
  : process.env.MESH_VM_GUEST
    ? "already inside the VM"
    : !Bun.which("qemu-system-x86_64")
      ? "qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)"
      : !kernel
        ? "no kernel image: set MESH_VM_KERNEL or apt-get install linux-image-amd64"
        : undefined;
if (skipReason) console.warn(`vm-stock-kernel tests skipped: ${skipReason}`);

/** The uds and shm transport tests that exist in this checkout (rpal ones need a C compiler in the guest). */
function transportTests(): string[] {
  const found = new Set<string>();
  for (const pattern of ["runtime/transport/**/*.test.ts", "test/*{uds,shm,transport}*.test.ts"]) {
    for (const f of new Bun.Glob(pattern).scanSync({ cwd: REPO_ROOT })) {
      if (!/rpal|vm-/.test(f)) found.add(f);
    }
  }
  return [...found].sort();
}

const res = new TestResources();
// One work directory (and so one cached base archive) for the whole file.
const work = res.scratchDir("rpal-mesh-vm-");
afterEach(async () => {
  // Whatever a test did, no QEMU of ours may outlive it.
  await waitFor(() => qemuPids().length === 0, { timeoutMs: 15_000, what: "every QEMU of this test to exit" });
});
afterAll(() => res.cleanup());

/** PIDs of QEMU processes started from this file's work directory. */
function qemuPids(): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const cmdline = readFileSync(`/proc/${entry}/cmdline`, "utf8");
      if (cmdline.startsWith("qemu-system") && cmdline.includes(work)) pids.push(Number(entry));
    } catch {
      // the process exited while we looked
    }
  }
  return pids;
}

function startVm(args: string[]) {
  return res.spawn(["bash", RUN, "--kernel", kernel!, ...args], { env: { MESH_VM_WORK: work } });
}

describe.skipIf(skipReason !== undefined)(`VM harness on a stock kernel (${kernel})`, () => {
  test("the uds and shm transport tests pass inside the guest", async () => {
    const tests = transportTests();
    expect(tests.length).toBeGreaterThan(0);
    // TCG runs code 5-20x slower than the host, more on a busy one: bun's 5 s default per-test
    // timeout is a timing, and timings must not decide pass/fail.
    const vm = startVm(["--timeout", "540", "--", "bun", "test", "--timeout", "120000", ...tests.map((t) => `./${t}`)]);
    const code = await vm.proc.exited;
    const out = vm.output();
    expect({ code, tail: out.slice(-3000) }).toMatchObject({ code: 0 });
    expect(out).toMatch(/cpu flags: .*pku/); // TCG's -cpu max offers what RPAL needs
    expect(out).toMatch(/\n\s*0 fail/);
    expect(out).toMatch(/\n\s*[1-9]\d* pass/);
  }, 600_000);

  test("the guest command's exit status and --env values come back exactly", async () => {
    const tricky = `it's "quoted" $HOME \\ & spaced`;
    const vm = startVm([
      "--env",
      `MESH_VM_PROBE=${tricky}`,
      "--",
      "sh",
      "-c",
      `[ "$MESH_VM_PROBE" = '${tricky.replaceAll("'", "'\\''")}' ] && [ "$(pwd)" = '${REPO_ROOT}' ] && [ -f package.json ] && exit 7; exit 1`,
    ]);
    expect(await vm.proc.exited).toBe(7);
    expect(vm.output()).toContain("guest command exited with status 7");
  }, 180_000);

  test("a VM that overruns --timeout is killed and reported as 124", async () => {
    const vm = startVm(["--timeout", "25", "--", "sleep", "600"]);
    expect(await vm.proc.exited).toBe(124);
    expect(vm.output()).toContain("did not finish within 25s");
  }, 180_000);

  test("killing the harness with SIGKILL takes its QEMU down with it", async () => {
    // The marker is computed in the guest so the host's own echo of the command cannot match it.
    const vm = startVm(["--", "sh", "-c", "echo guest-is-$((40 + 2)); sleep 600"]);
    await vm.waitForLine(/guest-is-42/, 170_000);
    expect(qemuPids().length).toBe(1);
    vm.proc.kill("SIGKILL");
    await waitFor(() => qemuPids().length === 0, { timeoutMs: 15_000, what: "QEMU to die with its harness" });
    expect(existsSync(work)).toBe(true);
  }, 200_000);
});
