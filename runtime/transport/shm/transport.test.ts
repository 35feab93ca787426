import { afterEach, describe, expect, test } from "bun:test";
import { existsSync, readdirSync, readlinkSync } from "node:fs";
import { FrameKind } from "../../rpc/frame.ts";
import { TestResources, leakedShmSegments, waitFor } from "../../../test/helpers.ts";
import type { FrameSink } from "../types.ts";
import { connectedShmPair, type ShmPair } from "./pair.ts";
import { ShmSegment } from "./segment.ts";

interface Frame {
  kind: number;
  flags: number;
  callId: number;
  aux: number;
  body: Uint8Array;
}

function recorder(): FrameSink & { frames: Frame[]; closed?: { error?: Error }; writable: number } {
  const r = {
    frames: [] as Frame[],
    closed: undefined as { error?: Error } | undefined,
    writable: 0,
    onFrame(kind: number, flags: number, callId: number, aux: number, body: Uint8Array) {
      r.frames.push({ kind, flags, callId, aux, body: body.slice() });
    },
    onClose(error?: Error) {
      r.closed = { error };
    },
    onWritable() {
      r.writable++;
    },
  };
  return r;
}

const res = new TestResources();
let pair: ShmPair | undefined;
afterEach(async () => {
  pair?.close();
  pair = undefined;
  await res.cleanup();
});

/** This process's fds that refer to an rpal-mesh memfd (counting every fd raced other tests' sockets). */
function memfdFds(): string[] {
  return readdirSync("/proc/self/fd").filter((fd) => {
    try {
      return readlinkSync(`/proc/self/fd/${fd}`).startsWith("/memfd:rpal-mesh-shm");
    } catch {
      return false; // closed between readdir and readlink
    }
  });
}

describe("ShmTransport (in one process, real memfd, real uds control)", () => {
  test("frames cross both ways in order, including one bigger than the ring", async () => {
    pair = await connectedShmPair({ dir: res.scratchDir(), ringBytes: 4096 });
    const a = recorder();
    const s = recorder();
    pair.app.start(a);
    pair.sidecar.start(s);
    const big = new Uint8Array(50_000).map((_, i) => i * 7);
    for (let i = 1; i <= 100; i++) pair.app.send(FrameKind.MESSAGE, 0, i, i, new Uint8Array([i]));
    pair.app.send(FrameKind.MESSAGE, 1, 101, 0, big);
    pair.sidecar.send(FrameKind.END, 0, 5, 3, new Uint8Array([9, 9]));
    await waitFor(() => s.frames.length === 101 && a.frames.length === 1, { what: "all frames delivered" });
    expect(s.frames.slice(0, 100).map((f) => f.callId)).toEqual(Array.from({ length: 100 }, (_, i) => i + 1));
    expect(s.frames[100]!.body).toEqual(big);
    expect(a.frames[0]).toEqual({ kind: FrameKind.END, flags: 0, callId: 5, aux: 3, body: new Uint8Array([9, 9]) });
    expect(pair.app.stats.backlogged).toBeGreaterThan(0); // a 4 KiB ring could not take it all at once
    await waitFor(() => pair!.app.bufferedBytes === 0 && a.writable > 0, { what: "backlog drained and onWritable" });
  });

  test("an idle reader parks and is woken by exactly the doorbells it needs", async () => {
    pair = await connectedShmPair({ dir: res.scratchDir(), spin: "off" });
    const s = recorder();
    pair.app.start(recorder());
    pair.sidecar.start(s);
    await waitFor(() => pair!.sidecar.isParked, { what: "sidecar parked" });
    const before = pair.app.stats.doorbellsSent;
    for (let i = 0; i < 50; i++) pair.app.send(FrameKind.PING, 0, 0, i);
    await waitFor(() => s.frames.length === 50, { what: "50 pings" });
    // 50 frames published in one go while the reader slept: one doorbell, not 50.
    expect(pair.app.stats.doorbellsSent - before).toBe(1);
    await waitFor(() => pair!.sidecar.isParked, { what: "sidecar parked again" });
  });

  test("spin off: a poll that drains the ring parks at once, and answers sent after it still flow", async () => {
    pair = await connectedShmPair({ dir: res.scratchDir(), spin: "off" });
    const a = recorder();
    const parkedWhenHandled: boolean[] = [];
    const sidecar = pair.sidecar;
    pair.app.start(a);
    sidecar.start({
      onFrame(kind, _flags, callId, aux) {
        // As a handler does: answer a few microtasks later, after the poll that delivered the frame.
        queueMicrotask(() => {
          parkedWhenHandled.push(sidecar.isParked);
          sidecar.send(FrameKind.PONG, 0, callId, aux);
        });
      },
      onClose() {},
    });
    await waitFor(() => sidecar.isParked, { what: "sidecar parked" });
    const parks = sidecar.stats.parks;
    for (let round = 0; round < 20; round++) {
      pair.app.send(FrameKind.PING, 0, 0, round);
      await waitFor(() => a.frames.length === round + 1, { what: `pong ${round}` });
    }
    expect(a.frames.map((f) => f.aux)).toEqual(Array.from({ length: 20 }, (_, i) => i));
    // Parked before its handlers ran: no extra microtask poll just to find the ring empty.
    expect(parkedWhenHandled).toEqual(Array.from({ length: 20 }, () => true));
    expect(sidecar.stats.parks - parks).toBe(20);
  });

  test("spinUs counts the time spent spinning: each wait that spun out a fixed 200 µs adds 200 µs; spin off adds none", async () => {
    for (const spin of [200, "off"] as const) {
      pair = await connectedShmPair({ dir: res.scratchDir(), spin });
      const a = recorder();
      const s = recorder();
      pair.app.start(a);
      pair.sidecar.start(s);
      for (let round = 0; round < 10; round++) {
        pair.app.send(FrameKind.PING, 0, 0, round);
        await waitFor(() => s.frames.length === round + 1, { what: `ping ${round}` });
      }
      await waitFor(() => pair!.app.isParked && pair!.sidecar.isParked, { what: "both parked" });
      for (const t of [pair.app, pair.sidecar]) {
        // In one process the peer cannot answer during a spin: every spin ran its whole budget.
        if (spin === "off") {
          expect(t.stats.spinUs).toBe(0);
        } else {
          expect(t.stats.spinMisses).toBeGreaterThan(0);
          expect(t.stats.spinHits).toBe(0);
          expect(t.stats.spinUs).toBeGreaterThanOrEqual(200 * t.stats.spinMisses);
          expect(t.stats.spinUs).toBeLessThan(300 * t.stats.spinMisses);
        }
      }
      pair.close();
      pair = undefined;
    }
  });

  test("the sidecar closes its memfd once the app attached, and nothing is in /dev/shm", async () => {
    const before = memfdFds();
    const seg = ShmSegment.create(8192);
    const sidecarFd = seg.info.path.split("/").pop()!;
    expect(memfdFds()).toEqual([...before, sidecarFd].sort((a, b) => Number(a) - Number(b)));
    expect(seg.appAttached()).toBe(false);
    const app = ShmSegment.open(seg.info);
    expect(seg.appAttached()).toBe(true);
    seg.closeFd();
    expect(memfdFds()).not.toContain(sidecarFd);
    expect(memfdFds().length).toBe(before.length);
    expect(existsSync(seg.info.path)).toBe(false);
    expect(leakedShmSegments()).toEqual([]);
    app.release();
    seg.release();
  });

  test("opening with a wrong nonce or size is refused with a reason", () => {
    const seg = ShmSegment.create(8192);
    try {
      const nonce = seg.info.nonce.slice();
      nonce[3]! ^= 1;
      expect(() => ShmSegment.open({ ...seg.info, nonce })).toThrow(/nonce differs/);
      expect(() => ShmSegment.open({ ...seg.info, segmentBytes: 4096 })).toThrow(/segment for 8192-byte rings/);
      expect(() => ShmSegment.open({ ...seg.info, ringBytes: 8191 })).toThrow(/invalid ring size/);
      expect(() => ShmSegment.open({ ...seg.info, path: "/etc/passwd" })).toThrow(/expected \/proc/);
      expect(() => ShmSegment.open({ ...seg.info, path: "/proc/1/fd/999999" })).toThrow(/open\("\/proc\/1\/fd\/999999"\) failed/);
    } finally {
      seg.release();
    }
  });

  test("closing one side ends the other with an error", async () => {
    pair = await connectedShmPair({ dir: res.scratchDir() });
    const a = recorder();
    const s = recorder();
    pair.app.start(a);
    pair.sidecar.start(s);
    pair.app.close("app going away");
    await waitFor(() => s.closed, { what: "sidecar notices" });
    expect(s.closed!.error?.message).toMatch(/control connection/);
    expect(() => pair!.app.send(FrameKind.PING, 0, 0, 0)).toThrow(/closed/);
  });

  test("a body that the peer does not accept is refused at send", async () => {
    pair = await connectedShmPair({ dir: res.scratchDir() });
    pair.app.start(recorder());
    pair.sidecar.start(recorder());
    expect(() => pair!.app.send(FrameKind.MESSAGE, 0, 1, 0, new Uint8Array(5 * 1024 * 1024))).toThrow(/exceeds/);
    expect(pair.app.closed).toBe(false);
  });
});
