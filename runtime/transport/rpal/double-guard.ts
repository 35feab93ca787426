// Keeps the librpal TEST DOUBLE out of production: it exports a marker symbol, and nothing loads a
// library carrying it unless the test itself set MESH_RPAL_ALLOW_TEST_DOUBLE=1.
import { closeSync, openSync, readSync } from "node:fs";

/** The symbol only the test double exports. */
export const TEST_DOUBLE_MARKER = "rpal_mesh_test_double_marker";
/** Set by tests (and only tests) to let the double be loaded. */
export const ALLOW_TEST_DOUBLE_ENV = "MESH_RPAL_ALLOW_TEST_DOUBLE";

/** True if the file contains the double's marker symbol name (found by scanning bytes, not loading). */
export function isTestDouble(path: string): boolean {
  const needle = Buffer.from(TEST_DOUBLE_MARKER);
  const fd = openSync(path, "r");
  try {
    const chunk = Buffer.alloc(1 << 16);
    let carry = Buffer.alloc(0);
    for (;;) {
      const n = readSync(fd, chunk, 0, chunk.length, null);
      if (n <= 0) return false;
      const window = Buffer.concat([carry, chunk.subarray(0, n)]);
      if (window.includes(needle)) return true;
      carry = window.subarray(Math.max(0, window.length - needle.length));
    }
  } finally {
    closeSync(fd);
  }
}

export function testDoubleAllowed(env: Record<string, string | undefined> = process.env): boolean {
  return env[ALLOW_TEST_DOUBLE_ENV] === "1";
}

/** Throws if `path` is the test double and no test allowed it. */
export function refuseUnallowedTestDouble(path: string, env: Record<string, string | undefined> = process.env): void {
  if (isTestDouble(path) && !testDoubleAllowed(env)) {
    throw new Error(
      `${path} is the rpal-mesh TEST DOUBLE of librpal, not the real library: point MESH_LIBRPAL at the librpal.so built from the RPAL series`,
    );
  }
}
