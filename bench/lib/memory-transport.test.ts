// The bench-only in-memory transport pair behind the RPC floor rows: ordered, copying, batched
// delivery and closing, plus one real RpcChannel echo over it. No timings.
import { describe, expect, test } from "bun:test";
import { FrameKind } from "../../runtime/rpc/frame.ts";
import type { FrameSink } from "../../runtime/transport/types.ts";
import { echoHandler } from "./echo-handler.ts";
import { floorMemoryPair } from "./memory-transport.ts";
import { ECHO } from "./methods.ts";
import { openRpcFloor } from "./rpc-floor.ts";

interface Got {
  frames: { kind: number; flags: number; callId: number; aux: number; body: number[] }[];
  /** Which delivery (microtask) each frame came in. */
  batches: number[];
  closes: (Error | undefined)[];
}

function recorder(): { sink: FrameSink; got: Got } {
  const got: Got = { frames: [], batches: [], closes: [] };
  let batch = 0;
  let inBatch = false;
  const sink: FrameSink = {
    onFrame(kind, flags, callId, aux, body) {
      if (!inBatch) {
        inBatch = true;
        batch++;
        queueMicrotask(() => (inBatch = false));
      }
      got.frames.push({ kind, flags, callId, aux, body: [...body] });
      got.batches.push(batch);
    },
    onClose(error) {
      got.closes.push(error);
    },
  };
  return { sink, got };
}

/** Lets every queued microtask (the pair's deliveries) run. */
const settle = () => new Promise<void>((r) => setImmediate(r));

describe("floor memory transport (bench only)", () => {
  test("delivers frames in order, asynchronously, one batch per microtask round, with header fields intact", async () => {
    const [a, b] = floorMemoryPair();
    const ra = recorder();
    const rb = recorder();
    a.start(ra.sink);
    b.start(rb.sink);
    for (let i = 0; i < 300; i++) a.send(FrameKind.MESSAGE, i & 0xff, 2 * i + 1, 0xffff_fff0 + (i % 16), i % 3 === 0 ? undefined : new Uint8Array([i & 0xff, (i >> 8) & 0xff]));
    expect(rb.got.frames.length).toBe(0); // never inside send()
    expect(a.bufferedBytes).toBe(300 * 16 + 200 * 2);
    await settle();
    expect(rb.got.frames.length).toBe(300);
    expect(new Set(rb.got.batches)).toEqual(new Set([1])); // all 300 in one delivery
    rb.got.frames.forEach((f, i) => {
      expect(f).toEqual({ kind: FrameKind.MESSAGE, flags: i & 0xff, callId: 2 * i + 1, aux: 0xffff_fff0 + (i % 16), body: i % 3 === 0 ? [] : [i & 0xff, (i >> 8) & 0xff] });
    });
    expect(ra.got.frames.length).toBe(0);
    expect(a.bufferedBytes).toBe(0);
    expect(a.stats).toMatchObject({ framesSent: 300, bytesSent: 300 * 16 + 400, framesReceived: 0 });
    expect(b.stats).toMatchObject({ framesReceived: 300, bytesReceived: 300 * 16 + 400, framesSent: 0 });
    // Frames sent while a batch is being delivered form the next batch, in order.
    const echo: FrameSink = {
      onFrame: (kind, flags, callId, aux, body) => b.send(kind, flags, callId + 1, aux, body),
      onClose() {},
    };
    const [c, d] = floorMemoryPair();
    const rc = recorder();
    c.start(rc.sink);
    d.start(echo);
    c.send(FrameKind.PING, 0, 1, 7);
    c.send(FrameKind.PING, 0, 3, 8);
    await settle();
    expect(rc.got.frames.length).toBe(0); // d echoed on b, not on its own pair
    expect(rb.got.frames.length).toBe(300);
    expect(ra.got.frames.map((f) => [f.callId, f.aux])).toEqual([
      [2, 7],
      [4, 8],
    ]);
  });

  test("copies bodies on send: the caller may reuse its buffer at once", async () => {
    const [a, b] = floorMemoryPair();
    const rb = recorder();
    a.start(recorder().sink);
    b.start(rb.sink);
    const buf = new Uint8Array(32).fill(1);
    a.send(FrameKind.MESSAGE, 0, 1, 0, buf);
    buf.fill(2); // the channel reuses its transient call-head buffer like this
    a.send(FrameKind.MESSAGE, 0, 3, 0, buf);
    buf.fill(3);
    await settle();
    expect(rb.got.frames.map((f) => f.body)).toEqual([new Array(32).fill(1), new Array(32).fill(2)]);
    // A body larger than the arena grows it and still arrives whole.
    const big = new Uint8Array(200_000).map((_, i) => i % 251);
    a.send(FrameKind.MESSAGE, 0, 5, 0, big);
    big.fill(0);
    await settle();
    const got = rb.got.frames[2]!.body;
    expect(got.length).toBe(200_000);
    expect(got.every((v, i) => v === i % 251)).toBe(true);
  });

  test("frames sent before the peer starts wait for it", async () => {
    const [a, b] = floorMemoryPair();
    a.start(recorder().sink);
    a.send(FrameKind.PING, 0, 0, 1);
    await settle();
    const rb = recorder();
    b.start(rb.sink);
    expect(rb.got.frames.map((f) => f.aux)).toEqual([1]);
  });

  test("close: this end at once with the reason, the peer after what was already sent; both refuse to send", async () => {
    const [a, b] = floorMemoryPair();
    const ra = recorder();
    const rb = recorder();
    a.start(ra.sink);
    b.start(rb.sink);
    a.send(FrameKind.MESSAGE, 0, 1, 0, new Uint8Array([9]));
    a.close("bench over");
    expect(a.closed).toBe(true);
    expect(ra.got.closes.map((e) => e?.message)).toEqual(["bench over"]);
    expect(() => a.send(FrameKind.PING, 0, 0, 0)).toThrow(/closed: bench over/);
    expect(b.closed).toBe(false);
    await settle();
    expect(rb.got.frames.map((f) => f.body)).toEqual([[9]]); // flushed before the end, as uds does
    expect(b.closed).toBe(true);
    expect(rb.got.closes).toEqual([undefined]); // a clean end, like EOF
    expect(() => b.send(FrameKind.PING, 0, 0, 0)).toThrow(/closed/);
    b.close("again"); // idempotent
    a.close();
    await settle();
    expect(ra.got.closes.length).toBe(1);
    expect(rb.got.closes.length).toBe(1);
  });

  test("a body over the peer's limit is refused at send", () => {
    const [a] = floorMemoryPair();
    expect(() => a.send(FrameKind.MESSAGE, 0, 1, 0, new Uint8Array(a.maxBodyBytes + 1))).toThrow(RangeError);
  });

  test("the RPC floor: the real channels echo unary calls over the pair, then both close", async () => {
    const floor = openRpcFloor(echoHandler(() => 0));
    const reqs = Array.from({ length: 64 }, (_, i) => new Uint8Array(32).fill(i));
    const replies = await Promise.all(reqs.map((r) => floor.client.unary(ECHO, r)));
    replies.forEach((r, i) => expect([...r.response]).toEqual([...reqs[i]!]));
    expect(floor.server.stats.callsServed).toBe(64);
    expect(floor.ends.app.stats.framesSent).toBe(64); // each small unary call is one frame each way
    expect(floor.ends.sidecar.stats.framesSent).toBe(64);
    await floor.close();
    expect(floor.client.isOpen).toBe(false);
    expect(floor.server.isOpen).toBe(false);
    expect(floor.ends.app.closed && floor.ends.sidecar.closed).toBe(true);
  });
});
