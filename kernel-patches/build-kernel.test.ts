// build-kernel.sh cannot download the real series or kernel here (no network beyond npm/Debian), so
// these tests feed it a stand-in: a fake "v6.15" tree and a generated 35-patch "RFC v2" thread whose
// last patch adds samples/rpal/librpal. That exercises the parts that can go wrong offline: picking
// patches out of a thread with replies, refusing an incomplete series or a wrong kernel, git am,
// the config-independent steps and building librpal.so.
import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import { dlopen, FFIType } from "bun:ffi";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { REPO_ROOT, TestResources, scratchDir } from "../test/helpers.ts";
import { fakeKernelTree, fakeThread, git, writeThread } from "./series-fixture.ts";

const SCRIPT = join(REPO_ROOT, "kernel-patches/build-kernel.sh");
const haveShellcheck = Bun.which("shellcheck") !== null;
const haveGcc = Bun.which("gcc") !== null && Bun.which("git") !== null;

const res = new TestResources();
afterEach(() => res.cleanup());

function runScript(args: string[]) {
  // A hung script is killed instead of hanging the suite (the offline runs finish in seconds).
  const p = Bun.spawnSync(["bash", SCRIPT, ...args], { cwd: REPO_ROOT, stdout: "pipe", stderr: "pipe", timeout: 120_000 });
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
  }, 30_000);

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
  }, 60_000);

  describe.skipIf(!haveGcc)("offline, against a stand-in tree and series", () => {
    // Generating 35 commits and format-patch takes seconds; do it once for the three tests.
    const fixtures = new TestResources();
    let messages: string[] = [];
    beforeAll(() => {
      messages = fakeThread(fixtures.track(scratchDir()));
    }, 60_000);
    afterAll(() => fixtures.cleanup());

    test("picks patches 1..35 out of a thread with a cover letter, a reply and a duplicate, applies them and builds librpal.so", () => {
      const root = res.track(scratchDir());
      const thread = writeThread(messages, join(root, "thread.mbox"));
      const src = join(root, "linux");
      fakeKernelTree(src, "6.15.0");
      const work = join(root, "work");
      const { code, out } = runScript(["--src", src, "--series", thread, "--work", work, "--librpal-only"]);
      // The whole output appears in the diff when this fails.
      expect({ code, out }).toMatchObject({ code: 0, out: expect.stringContaining("series ready: 35 patches") });
      // All 35 patches and nothing else: the reply's "NAK" never reached the tree.
      expect(git(src, "rev-list", "--count", "HEAD").trim()).toBe("36");
      expect(readFileSync(join(src, "RPAL-NOTES"), "utf8")).toBe("step 34\n".repeat(34));
      const lib = dlopen(join(work, "out/librpal.so"), { rpal_api_magic: { args: [], returns: FFIType.i32 } });
      try {
        expect(lib.symbols.rpal_api_magic()).toBe(0x33);
      } finally {
        lib.close();
      }
    }, 60_000);

    test("an incomplete series is refused, naming the missing patch", () => {
      const root = res.track(scratchDir());
      const thread = writeThread(messages, join(root, "thread.mbox"), 17);
      const src = join(root, "linux");
      fakeKernelTree(src, "6.15.0");
      const { code, out } = runScript(["--src", src, "--series", thread, "--work", join(root, "work"), "--librpal-only"]);
      expect(code).toBe(1);
      expect(out).toContain("lacks patches 17 of 35");
    }, 30_000);

    test("a tree that is not v6.15 is refused before anything is applied", () => {
      const root = res.track(scratchDir());
      const thread = writeThread(messages, join(root, "thread.mbox"));
      const src = join(root, "linux");
      fakeKernelTree(src, "6.16.0");
      const { code, out } = runScript(["--src", src, "--series", thread, "--work", join(root, "work"), "--librpal-only"]);
      expect(code).toBe(1);
      expect(out).toContain("is Linux 6.16.0; the RPAL RFC v2 series applies to v6.15 only");
      expect(existsSync(join(src, ".git"))).toBe(false);
    }, 30_000);
  });
});
