import { expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { canConnect } from "./probe.ts";

test("canConnect: true for a live TCP or Unix listener, false once it is gone; never rejects", async () => {
  const tcp = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const port = tcp.port;
  const dir = mkdtempSync(join(tmpdir(), "probe-"));
  const path = join(dir, "s.sock");
  const unix = Bun.listen({ unix: path, socket: { data() {} } });
  try {
    expect(await canConnect({ hostname: "127.0.0.1", port })).toBe(true);
    expect(await canConnect({ unix: path })).toBe(true);
  } finally {
    tcp.stop(true);
    unix.stop(true);
  }
  expect(await canConnect({ hostname: "127.0.0.1", port })).toBe(false);
  expect(await canConnect({ unix: path })).toBe(false);
  expect(await canConnect({ unix: join(dir, "never-there.sock") })).toBe(false);
  rmSync(dir, { recursive: true, force: true });
});
