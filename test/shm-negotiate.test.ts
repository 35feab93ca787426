// Choosing shm in session negotiation, against a real sidecar process (test/fixtures/rpc-peer.ts):
// auto picks shm when both sides can, falls back to uds with a logged reason when one side cannot, and
// a forced shm that cannot be set up fails with an error naming the cause (no silent fallback).
import { afterEach, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { connect } from "../runtime/sdk/app.ts";
import { TransportUnavailableError } from "../runtime/transport/types.ts";
import { FrameKind } from "../runtime/rpc/frame.ts";
import { decodeHello, encodeHello, type HelloMsg } from "../runtime/rpc/wire.ts";
import { connectUnix } from "../runtime/transport/uds.ts";
import { TestResources, leakedShmSegments, waitFor } from "./helpers.ts";

const PEER = join(import.meta.dir, "fixtures/rpc-peer.ts");
const enc = new TextEncoder();
const dec = new TextDecoder();
const res = new TestResources();

afterEach(async () => {
  await res.cleanup();
  expect(leakedShmSegments()).toEqual([]);
});

async function sidecar(env: Record<string, string> = {}): Promise<string> {
  const socket = join(res.scratchDir(), "sidecar.sock");
  const peer = res.spawnBun([PEER, socket], { env: { MESH_TRANSPORT: "auto", ...env } });
  await peer.waitForLine(/^ready$/);
  return socket;
}

/** Runs `fn` with environment overrides, restoring them even if it throws. */
async function withEnv<T>(env: Record<string, string>, fn: () => Promise<T>): Promise<T> {
  const saved = Object.fromEntries(Object.keys(env).map((k) => [k, process.env[k]]));
  Object.assign(process.env, env);
  try {
    return await fn();
  } finally {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
}

/** A Bun script that connects as an app and prints the transport chosen (or the error). */
function appScript(socket: string, transport: string): string {
  return `
    import { connect } from ${JSON.stringify(join(import.meta.dir, "../runtime/sdk/app.ts"))};
    try {
      const app = await connect({ socketPath: ${JSON.stringify(socket)}, transport: ${JSON.stringify(transport)}, reconnect: false });
      console.log("chosen " + app.transport);
      await app.close(100);
    } catch (e) {
      console.log("failed: " + e.message);
    }
    process.exit(0);`;
}

// A new PID namespace needs root (or user namespaces); where it cannot be made the test says so by name.
const canUnshare = process.getuid?.() === 0 && Bun.which("unshare") !== null;

describe("shm negotiation", () => {
  test("auto picks shm when both sides can, and calls work over it", async () => {
    const socket = await sidecar();
    const app = await connect({ socketPath: socket, transport: "auto", reconnect: false });
    try {
      expect(app.transport).toBe("shm");
      expect(dec.decode((await app.unary("/test.Echo/Unary", enc.encode("over shm"))).response)).toBe("over shm");
    } finally {
      await app.close(100);
    }
  });

  test("app side cannot: auto logs why and uses uds; forced shm fails naming the setting", async () => {
    const socket = await sidecar();
    // A separate app process, so its one-time "skipping shm" log line can be read.
    const auto = res.spawnBun(["-e", appScript(socket, "auto")], { env: { MESH_SHM_RING_BYTES: "3k" } });
    await auto.waitForLine(/^chosen uds$/);
    expect(auto.output()).toMatch(/auto: skipping shm: MESH_SHM_RING_BYTES=\\"3k\\" is not a ring size/);

    await withEnv({ MESH_SHM_RING_BYTES: "3k" }, async () => {
      const forced = connect({ socketPath: socket, transport: "shm", reconnect: false });
      await expect(forced).rejects.toBeInstanceOf(TransportUnavailableError);
      await expect(forced).rejects.toThrow(/transport shm cannot be used here: MESH_SHM_RING_BYTES="3k" is not a ring size: use a power of two/);
    });
  });

  test("sidecar side cannot: auto gets uds; forced shm is refused with the sidecar's reason", async () => {
    const socket = await sidecar({ MESH_SHM_SPIN: "fast" });
    const app = await connect({ socketPath: socket, transport: "auto", reconnect: false });
    try {
      expect(app.transport).toBe("uds");
      expect(dec.decode((await app.unary("/test.Echo/Unary", enc.encode("x"))).response)).toBe("x");
    } finally {
      await app.close(100);
    }
    const forced = connect({ socketPath: socket, transport: "shm", reconnect: false });
    await expect(forced).rejects.toThrow(/the sidecar refused it: .*shm: MESH_SHM_SPIN="fast" is not a spin setting/);
  });

  test.skipIf(!canUnshare)("app in another PID namespace (cannot reach /proc/<sidecar>/fd): auto falls back to uds with the reason; forced shm fails", async () => {
    const socket = await sidecar();
    const inNewPidNs = (transport: string) =>
      res.spawn(["unshare", "--pid", "--fork", "--mount-proc", "--kill-child", process.execPath, "-e", appScript(socket, transport)]);
    const auto = inNewPidNs("auto");
    await auto.waitForLine(/^chosen uds$/);
    expect(auto.output()).toMatch(/auto: skipping shm: could not attach: cannot map the sidecar's shm segment: open\(\\"\/proc\/\d+\/fd\/\d+\\"\) failed: No such file or directory/);
    const forced = inNewPidNs("shm");
    await forced.waitForLine(/^failed: transport shm cannot be used here: cannot map the sidecar's shm segment: .*same PID namespace/);
  });

  test("a refusal stays readable when the app's HELLO is as large as allowed (the reason is cut, not lost)", async () => {
    const socket = await sidecar();
    const control = await connectUnix(socket);
    let reply: HelloMsg | undefined;
    control.start({
      onFrame: (kind, _f, _c, _a, body) => {
        if (kind === FrameKind.HELLO) reply = decodeHello(body);
      },
      onClose: () => {},
      onWritable: () => {},
    });
    // 16 unknown transport names of 4,000 bytes: the sidecar's reason lists them all (64 KB), more than
    // the 4 KiB a HELLO string may carry.
    const transports = Array.from({ length: 16 }, (_, i) => `t${i}`.padEnd(4000, "x"));
    control.send(FrameKind.HELLO, 0, 0, 0, encodeHello({ version: 2, role: "app", transports, maxMessageBytes: 1 << 20, initialWindowBytes: 1 << 20, maxConcurrentCalls: 10 }));
    const refusal = await waitFor(() => reply, { timeoutMs: 5000, what: "the sidecar's refusal" });
    expect(refusal.error).toStartWith("the app offered no transport this sidecar knows (t0xxx");
    expect(refusal.error!.endsWith("…")).toBe(true);
    expect(refusal.error!.length).toBe(1001);
    control.close();
  });
});
