// The shm transport across real processes: negotiated sessions (test/fixtures/shm-peer.ts) over a real
// Unix socket and a real sealed memfd segment. Every peer is killed in afterEach even if a test fails.
import { afterEach, describe, expect, test } from "bun:test";
import { readdirSync, readFileSync, readlinkSync } from "node:fs";
import { join } from "node:path";
import { FrameKind } from "../runtime/rpc/frame.ts";
import { connectToSidecar } from "../runtime/transport/negotiate.ts";
import { TestResources, leakedShmSegments, waitFor, type Spawned } from "./helpers.ts";

const PEER = join(import.meta.dir, "fixtures/shm-peer.ts");
const res = new TestResources();

afterEach(async () => {
  await res.cleanup();
  expect(leakedShmSegments()).toEqual([]);
});

async function sidecar(mode?: string): Promise<{ peer: Spawned; socket: string }> {
  const socket = join(res.scratchDir(), "sidecar.sock");
  const peer = res.spawnBun([PEER, "sidecar", socket, ...(mode ? [mode] : [])]);
  await peer.waitForLine(/^ready$/);
  return { peer, socket };
}

function app(socket: string, ...mode: string[]): Spawned {
  return res.spawnBun([PEER, "app", socket, ...mode]);
}

/** Mappings of shm segments in a process (a memfd mapping shows as "/memfd:rpal-mesh-shm (deleted)"). */
function segmentMappings(pid: number): number {
  return readFileSync(`/proc/${pid}/maps`, "utf8")
    .split("\n")
    .filter((l) => l.includes("memfd:rpal-mesh-shm")).length;
}

/** Open file descriptors of a process that refer to a shm segment. */
function segmentFds(pid: number): number {
  let n = 0;
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      if (readlinkSync(`/proc/${pid}/fd/${fd}`).includes("memfd:rpal-mesh-shm")) n++;
    } catch {
      // closed while we looked
    }
  }
  return n;
}

describe("shm transport across processes", () => {
  test("1,000,000 small frames pipelined: no loss, no reordering, no duplicate", async () => {
    const { peer, socket } = await sidecar();
    const sender = app(socket, "send", "1000000");
    await sender.waitForLine(/^acked 1000000$/, 60_000);
    // The sidecar checked each frame was exactly the next in sequence (callId, aux and body).
    await peer.waitForLine(/^done 1000000 errors=0$/);
    expect(peer.output()).not.toContain("ERROR");
  }, 90_000);

  test("a 4 MiB message through 4 KiB rings arrives whole (chunked, reassembled)", async () => {
    const { peer, socket } = await sidecar();
    const sender = res.spawnBun([PEER, "app", socket, "big", String(4 * 1024 * 1024)], { env: { MESH_SHM_RING_BYTES: "4k" } });
    await sender.waitForLine(/^ring 4096$/);
    const sent = (await sender.waitForLine(/^sent big \d+ \d+$/)).split(" ");
    const got = (await peer.waitForLine(/^big \d+ \d+$/)).split(" ");
    expect(got.slice(1)).toEqual(sent.slice(2));
    expect(got[1]).toBe(String(4 * 1024 * 1024));
  });

  test("kill -9 of the app: the sidecar's session ends, its segment is gone, the next app works", async () => {
    const { peer, socket } = await sidecar();
    const victim = app(socket, "idle");
    await victim.waitForLine(/^attached over shm$/);
    await peer.waitForLine(/^session 1 over shm$/);
    const pid = peer.proc.pid;
    expect(segmentMappings(pid)).toBe(1);
    // Once the app attached the sidecar closed its memfd: nobody else can open the segment any more.
    await waitFor(() => segmentFds(pid) === 0, { what: "the sidecar to close its memfd after the attach" });
    victim.proc.kill("SIGKILL");
    await peer.waitForLine(/^session 1 closed: control connection/);
    await waitFor(() => segmentMappings(pid) === 0, { what: "the sidecar to unmap the dead app's segment" });
    const next = app(socket, "send", "1000");
    await next.waitForLine(/^acked 1000$/);
    await peer.waitForLine(/^done 1000 errors=0$/);
  });

  test("kill -9 of the sidecar: the app's session ends with an error and its mapping is gone", async () => {
    const { peer, socket } = await sidecar();
    const survivor = app(socket, "idle");
    await survivor.waitForLine(/^attached over shm$/);
    expect(segmentMappings(survivor.proc.pid)).toBe(1);
    peer.proc.kill("SIGKILL");
    await survivor.waitForLine(/^closed: control connection/);
    expect(segmentMappings(survivor.proc.pid)).toBe(0);
    expect(survivor.proc.exitCode).toBeNull(); // detected, not crashed
  });

  test("random bytes written over the segment by the peer process: corrupt-segment error, no crash, next session works", async () => {
    const { peer, socket } = await sidecar();
    const vandal = app(socket, "scribble");
    await vandal.waitForLine(/^attached over shm$/);
    const line = await peer.waitForLine(/^\{.*"msg":"shm segment corrupt: /);
    expect(JSON.parse(line)).toMatchObject({ level: 50, component: "shm" });
    await peer.waitForLine(/^session 1 closed: shm segment corrupt: /);
    await vandal.waitForLine(/^sidecar hung up$/);
    expect(peer.proc.exitCode).toBeNull();
    await waitFor(() => segmentMappings(peer.proc.pid) === 0, { what: "the corrupt segment to be unmapped" });
    const next = app(socket, "send", "5000");
    await next.waitForLine(/^acked 5000$/);
    await peer.waitForLine(/^done 5000 errors=0$/);
  });

  test("random bytes written over the segment by the sidecar process: the app ends that session as corrupt, no crash", async () => {
    const { peer, socket } = await sidecar("scribble");
    const session = await connectToSidecar({ socketPath: socket, transport: "shm" });
    expect(session.chosen).toBe("shm");
    let closedWith: Error | undefined;
    let closed = false;
    session.transport.start({
      onFrame() {},
      onClose(error) {
        closed = true;
        closedWith = error;
      },
    });
    await waitFor(() => closed, { what: "the app to reject the scribbled segment" });
    expect(closedWith?.message).toMatch(/^shm segment corrupt: /);
    expect(() => session.transport.send(FrameKind.PING, 0, 0, 0)).toThrow(/closed: shm segment corrupt/);
    await peer.waitForLine(/^session 1: app hung up$/);
    expect(segmentMappings(process.pid)).toBe(0);
  });
});
