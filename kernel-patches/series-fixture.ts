// A stand-in for the RPAL RFC v2 series and a v6.15 tree, so build-kernel.sh can be tested without
// the network: a fake tree that answers the make targets the script calls, and a lore-style thread.
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";

export function sh(cmd: string[], cwd: string): string {
  const p = Bun.spawnSync(cmd, { cwd, stdout: "pipe", stderr: "pipe" });
  if (p.exitCode !== 0) throw new Error(`${cmd.join(" ")} failed in ${cwd}: ${p.stderr.toString()}`);
  return p.stdout.toString();
}

export function git(cwd: string, ...args: string[]): string {
  return sh(["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main", ...args], cwd);
}

/** A directory that answers `make kernelversion` and `make headers_install` like a kernel tree. */
export function fakeKernelTree(dir: string, version: string): void {
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
export function fakeThread(root: string): string[] {
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
  return [cover!, rest[20]!, reply, ...rest.filter((_, i) => i !== 20), rest[4]!];
}

/** Writes the thread as one mbox, optionally without patch `drop`. */
export function writeThread(messages: string[], path: string, drop?: number): string {
  const tag = drop === undefined ? undefined : `[RFC v2 ${String(drop).padStart(2, "0")}/35]`;
  writeFileSync(path, messages.filter((m) => tag === undefined || !m.includes(tag)).join("\n"));
  return path;
}

