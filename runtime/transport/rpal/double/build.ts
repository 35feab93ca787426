// Builds the librpal TEST DOUBLE (librpal-double.c) for tests, and cleans up after it. Nothing outside
// tests imports this: production detection refuses the library it produces.
import { closeSync, openSync, readdirSync, readSync, unlinkSync } from "node:fs";
import { join } from "node:path";
import { compileShared } from "../compile.ts";

export function buildLibrpalTestDouble(): string {
  return compileShared(join(import.meta.dir, "librpal-double.c"), ["-lpthread"]);
}

const PREFIX = `rpal-double-${process.getuid?.() ?? 0}-`;

/** The double's slot files and wake FIFOs of this user in /dev/shm. */
export function testDoubleFiles(): string[] {
  try {
    return readdirSync("/dev/shm").filter((n) => n.startsWith(PREFIX));
  } catch {
    return [];
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

/**
 * Removes slot files (and FIFOs) whose owner process is gone — what a SIGKILLed test peer leaves
 * behind (a clean exit removes its own). Returns what was removed.
 */
export function removeStaleTestDoubleFiles(): string[] {
  const removed: string[] = [];
  for (const name of testDoubleFiles()) {
    if (name.endsWith(".wake")) continue;
    const path = join("/dev/shm", name);
    let pid = 0;
    try {
      // The slot is 1 GiB (sparse): read only its header — magic u32, id u32, key u64, pid i32.
      const head = Buffer.alloc(24);
      const fd = openSync(path, "r");
      try {
        readSync(fd, head, 0, 24, 0);
      } finally {
        closeSync(fd);
      }
      pid = head.readInt32LE(16);
    } catch {
      continue;
    }
    if (pid > 0 && alive(pid)) continue;
    for (const p of [path, `${path}.wake`]) {
      try {
        unlinkSync(p);
        removed.push(p);
      } catch {
        // already gone
      }
    }
  }
  return removed;
}
