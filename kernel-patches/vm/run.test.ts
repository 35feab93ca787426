// The VM harness's command line: what it accepts, what it refuses and the QEMU command it would run.
// Booting is covered by test/vm-stock-kernel.test.ts (opt-in: it needs QEMU and a kernel image).
import { afterAll, describe, expect, test } from "bun:test";
import { accessSync, constants, existsSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { REPO_ROOT, TestResources } from "../../test/helpers.ts";

const RUN = join(REPO_ROOT, "kernel-patches/vm/run");
const res = new TestResources();
afterAll(() => res.cleanup());

const scratch = res.scratchDir("rpal-mesh-vm-args-");
const fakeKernel = join(scratch, "vmlinuz");
writeFileSync(fakeKernel, "not really a kernel; only --dry-run reads this path\n");
const work = join(scratch, "work");

function vm(args: string[]) {
  const p = Bun.spawnSync(["bash", RUN, ...args], {
    cwd: REPO_ROOT,
    env: { ...process.env, MESH_VM_WORK: work },
    stdout: "pipe",
    stderr: "pipe",
  });
  return { code: p.exitCode, out: p.stdout.toString() + p.stderr.toString() };
}

function kvmUsable(): boolean {
  try {
    accessSync("/dev/kvm", constants.R_OK | constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

describe("kernel-patches/vm/run arguments", () => {
  test("--help documents every option and the exit statuses", () => {
    const { code, out } = vm(["--help"]);
    expect(code).toBe(0);
    for (const opt of ["--kernel", "--initrd", "--rootfs", "--kvm", "--mem", "--smp", "--timeout", "--env", "--copy", "--modules", "--no-modules", "--dry-run"]) {
      expect(out).toContain(opt);
    }
    expect(out).toContain("124 timed out");
    expect(out).toContain("125 the guest never reported");
  });

  test.each([
    [[], "--kernel PATH is required"],
    [["--kernel"], "--kernel needs a value"],
    [["--kernel", "/nonexistent/vmlinuz", "--", "true"], "kernel image '/nonexistent/vmlinuz' does not exist"],
    [["--kernel", fakeKernel], "no command given"],
    [["--kernel", fakeKernel, "--rootfs", "alpine", "--", "true"], "--rootfs must be minimal or debian"],
    [["--kernel", fakeKernel, "--timeout", "0", "--", "true"], "--timeout must be a positive number"],
    [["--kernel", fakeKernel, "--mem", "lots", "--", "true"], "--mem must look like 3G"],
    [["--kernel", fakeKernel, "--env", "1BAD=x", "--", "true"], "--env '1BAD=x' must look like NAME=VALUE"],
    [["--kernel", fakeKernel, "--copy", "relative/path", "--", "true"], "must be an absolute path"],
    [["--kernel", fakeKernel, "bun", "test"], "unknown argument 'bun' (the command goes after --"],
    [["--kernel", fakeKernel, "--copy", "/tmp", "--", "true"], "the guest mounts a fresh tmpfs on /tmp and /dev/shm"],
    [["--kernel", fakeKernel, "--modules", "/nonexistent/modules", "--", "true"], "--modules '/nonexistent/modules' is not a directory"],
    [["--kernel", fakeKernel, "--modules", scratch, "--no-modules", "--", "true"], "--modules and --no-modules contradict"],
  ])("refuses %j with exit 2 and a message naming the fix", (args, message) => {
    const { code, out } = vm(args as string[]);
    expect(out).toContain(message);
    expect(code).toBe(2);
  });

  test("--dry-run prints a TCG command with -cpu max (pku, fsgsbase) and 4-level paging, and builds nothing", () => {
    const { code, out } = vm(["--kernel", fakeKernel, "--dry-run", "--", "bun", "test", "runtime/transport"]);
    expect(code).toBe(0);
    expect(out).toContain("qemu-system-x86_64");
    expect(out).toContain("-accel tcg,thread=multi -cpu max,la57=off");
    expect(out).toContain("-no-reboot");
    expect(out).toContain(`-kernel ${fakeKernel}`);
    expect(out).toContain("console=ttyS0");
    expect(existsSync(work)).toBe(false);
  });

  test("--modules DIR goes to /usr/lib/modules/<its name> in the guest; a non-bzImage brings none by default", () => {
    const none = vm(["--kernel", fakeKernel, "--dry-run", "--", "true"]);
    expect(none.code).toBe(0);
    expect(none.out).toContain("would copy no kernel modules");
    const mods = join(scratch, "6.1.0-test");
    mkdirSync(join(mods, "kernel"), { recursive: true });
    const some = vm(["--kernel", fakeKernel, "--modules", mods, "--dry-run", "--", "true"]);
    expect(some.code).toBe(0);
    expect(some.out).toContain(`would copy kernel modules from ${mods} (without drivers/ and sound/) to /usr/lib/modules/6.1.0-test`);
  });

  test("--kvm switches to -cpu host only where /dev/kvm is usable", () => {
    const { code, out } = vm(["--kernel", fakeKernel, "--kvm", "--dry-run", "--", "true"]);
    if (kvmUsable()) {
      expect(code).toBe(0);
      expect(out).toContain("-accel kvm -cpu host");
    } else {
      expect(code).toBe(2);
      expect(out).toContain("/dev/kvm is missing or not accessible");
    }
  });
});
