// build-kernel.sh cannot download the real series or kernel here (no network beyond npm/Debian), so
// these tests feed it a stand-in: a fake "v6.15" tree and a generated 35-patch "RFC v2" thread whose
// last patch adds samples/rpal/librpal. That exercises the parts that can go wrong offline: picking
// patches out of a thread with replies, refusing an incomplete series or a wrong kernel, git am,
// the config-independent steps and building librpal.so.
import { afterEach, describe, expect, test } from "bun:test";
import { dlopen, FFIType } from "bun:ffi";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { REPO_ROOT, TestResources, scratchDir } from "../test/helpers.ts";

const SCRIPT = join(REPO_ROOT, "kernel-patches/build-kernel.sh");
const haveShellcheck = Bun.which("shellcheck") !== null;
const haveGcc = Bun.which("gcc") !== null && Bun.which("git") !== null;

const res = new TestResources();
afterEach(() => res.cleanup());

function sh(cmd: string[], cwd: string): string {
  const p = Bun.spawnSync(cmd, { cwd, stdout: "pipe", stderr: "pipe" });
  if (p.exitCode !== 0) throw new Error(`${cmd.join(" ")} failed in ${cwd}: ${p.stderr.toString()}`);
  return p.stdout.toString();
}

function git(cwd: string, ...args: string[]): string {
  return sh(["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main", ...args], cwd);
}

/** A directory that answers `make kernelversion` and `make headers_install` like a kernel tree. */
function fakeKernelTree(dir: string, version: string): void {
  mkdirSync(dir, { recursive: true });
  writeFileSync(
    join(dir, "Makefile"),
    `kernelversion:\n\t@echo ${version}\nheaders_install:\n\tmkdir -p usr/include/linux\n\tcp -f include/uapi/linux/*.h usr/include/linux/ 2>/dev/null || true\n`,
  );
  mkdirSync(join(dir, "include/uapi/linux"), { recursive: true });
  writeFileSync(join(dir, "include/uapi/linux/.keep"), "");
}

/**
 * A lore-style thread: cover letter, 35 "[RFC v2 NN/35]" patches out of order, a reply quoting one,
 * a duplicate and a folded Subject. Patch 35 adds a librpal source; the others touch a text file.
 */
function fakeThread(root: string, opts: { drop?: number } = {}): string {
  const tree = join(root, "series-src");
  fakeKernelTree(tree, "6.15.0");
  git(tree, "init", "-q");
  git(tree, "add", "-A");
  git(tree, "commit", "-q", "-m", "Linux 6.15");
  for (let i = 1; i <= 34; i++) {
    writeFileSync(join(tree, "RPAL-NOTES"), `step ${i}\n`.repeat(i));
    git(tree, "add", "-A");
    git(tree, "commit", "-q", "-m", `rpal: step ${i}`);
  }
  mkdirSync(join(tree, "samples/rpal/librpal"), { recursive: true });
  writeFileSync(join(tree, "include/uapi/linux/rpal.h"), "#define RPAL_IOCTL_MAGIC 0x33\n");
  writeFileSync(
    join(tree, "samples/rpal/librpal/librpal.c"),
    '#include <linux/rpal.h>\nint rpal_api_magic(void) { return RPAL_IOCTL_MAGIC; }\n',
  );
  git(tree, "add", "-A");
  git(tree, "commit", "-q", "-m", "samples: add librpal");
  const patchDir = join(root, "patches");
  git(tree, "format-patch", "-q", "--cover-letter", "--subject-prefix=RFC v2", "-o", patchDir, "HEAD~35");
  const files = sh(["ls", patchDir], root).trim().split("\n").sort();
  const patches = files.map((f) => readFileSync(join(patchDir, f), "utf8"));
  const [cover, ...rest] = patches;
  // A review reply to patch 3 that quotes it: must not be applied.
  const reply = rest[2]!
    .replace(/^Subject: \[RFC v2 03\/35\]/m, "Subject: Re: [RFC v2 03/35]")
    .replace(/^diff --git[\s\S]*$/m, "> quoted diff elided\nNAK.\n");
  // A folded Subject header (long subjects are folded by mailers).
  rest[9] = rest[9]!.replace(/^Subject: \[RFC v2 10\/35\] (.*)$/m, "Subject: [RFC v2 10/35]\n $1");
  const ordered = [cover!, rest[20]!, reply, ...rest.filter((_, i) => i !== 20), rest[4]!].filter(
    (p) => opts.drop === undefined || !p.includes(`[RFC v2 ${String(opts.drop).padStart(2, "0")}/35]`),
  );
  const thread = join(root, "thread.mbox");
  writeFileSync(thread, ordered.join("\n"));
  return thread;
}

function runScript(args: string[]) {
  const p = Bun.spawnSync(["bash", SCRIPT, ...args], { cwd: REPO_ROOT, stdout: "pipe", stderr: "pipe" });
  return { code: p.exitCode, out: p.stdout.toString() + p.stderr.toString() };
}

describe("build-kernel.sh", () => {
  test("--help names the cover Message-Id, v6.15 and every option", () => {
    const { code, out } = runScript(["--help"]);
    expect(code).toBe(0);
    expect(out).toContain("cover.1748594840.git.libo.gcs85@bytedance.com");
    expect(out).toContain("v6.15");
    for (const opt of ["--src", "--series", "--config", "--jobs", "--deb", "--librpal-only", "--dry-run"]) {
      expect(out).toContain(opt);
    }
  });

  test("--dry-run prints the download, apply, config and build steps and changes nothing", () => {
    const work = join(res.track(scratchDir()), "work");
    const { code, out } = runScript(["--dry-run", "--work", work]);
    expect(code).toBe(0);
    expect(out).toMatch(/b4 am .*cover\.1748594840|lore\.kernel\.org\/all\/cover\.1748594840.*t\.mbox\.gz/);
    expect(out).toContain("linux-6.15.tar.xz");
    expect(out).toContain("am -q --3way");
    expect(out).toContain("kernel-patches/rpal.config");
    expect(out).toContain("bzImage modules");
    expect(out).toContain("samples/rpal/librpal");
    expect(existsSync(work)).toBe(false);
  });

  test("unknown options and bad values fail with a message naming the fix", () => {
    expect(runScript(["--frobnicate"])).toMatchObject({ code: 1, out: expect.stringContaining("unknown argument '--frobnicate'") });
    expect(runScript(["--jobs", "many"])).toMatchObject({ code: 1, out: expect.stringContaining("--jobs must be a positive number") });
    expect(runScript(["--series", "/nonexistent.mbx"])).toMatchObject({ code: 1, out: expect.stringContaining("does not exist") });
    expect(runScript(["--src", "/tmp"])).toMatchObject({ code: 1, out: expect.stringContaining("is not a Linux source tree") });
    expect(runScript(["--work"])).toMatchObject({ code: 1, out: expect.stringContaining("--work needs a value") });
  });

  test.skipIf(!haveShellcheck)("is shellcheck-clean (with the VM scripts)", () => {
    const p = Bun.spawnSync(
      ["shellcheck", SCRIPT, join(REPO_ROOT, "kernel-patches/vm/run"), join(REPO_ROOT, "kernel-patches/vm/guest-init")],
      { stdout: "pipe", stderr: "pipe" },
    );
    expect(p.stdout.toString() + p.stderr.toString()).toBe("");
    expect(p.exitCode).toBe(0);
  });

  describe.skipIf(!haveGcc)("offline, against a stand-in tree and series", () => {
    test("picks patches 1..35 out of a thread with a cover letter, a reply and a duplicate, applies them and builds librpal.so", () => {
      const root = res.track(scratchDir());
      const thread = fakeThread(root);
      const src = join(root, "linux");
      fakeKernelTree(src, "6.15.0");
      const work = join(root, "work");
      const { code, out } = runScript(["--src", src, "--series", thread, "--work", work, "--librpal-only"]);
      expect(out).toContain("series ready: 35 patches");
      expect(code).toBe(0);
      // All 35 patches and nothing else: the reply's "NAK" never reached the tree.
      expect(git(src, "rev-list", "--count", "HEAD").trim()).toBe("36");
      expect(readFileSync(join(src, "RPAL-NOTES"), "utf8")).toBe("step 34\n".repeat(34));
      const lib = dlopen(join(work, "out/librpal.so"), { rpal_api_magic: { args: [], returns: FFIType.i32 } });
      try {
        expect(lib.symbols.rpal_api_magic()).toBe(0x33);
      } finally {
        lib.close();
      }
    });

    test("an incomplete series is refused, naming the missing patch", () => {
      const root = res.track(scratchDir());
      const thread = fakeThread(root, { drop: 17 });
      const src = join(root, "linux");
      fakeKernelTree(src, "6.15.0");
      const { code, out } = runScript(["--src", src, "--series", thread, "--work", join(root, "work"), "--librpal-only"]);
      expect(code).toBe(1);
      expect(out).toContain("lacks patches 17 of 35");
    });

    test("a tree that is not v6.15 is refused before anything is applied", () => {
      const root = res.track(scratchDir());
      const thread = fakeThread(root);
      const src = join(root, "linux");
      fakeKernelTree(src, "6.16.0");
      const { code, out } = runScript(["--src", src, "--series", thread, "--work", join(root, "work"), "--librpal-only"]);
      expect(code).toBe(1);
      expect(out).toContain("is Linux 6.16.0; the RPAL RFC v2 series applies to v6.15 only");
      expect(existsSync(join(src, ".git"))).toBe(false);
    });
  });
});
