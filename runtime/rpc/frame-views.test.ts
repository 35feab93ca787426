// Which message buffers the channel copies and which it may pass on as views. A frame body from the
// transport is valid only during onFrame (shm reuses its ring), so the channel copies what it keeps,
// except where the consumer said it takes the bytes synchronously (ClientCallObserver.transientResponse);
// and what a handler passes to write() must survive the handler reusing its buffer, while respond()
// sends before it returns. The transport here reuses one receive buffer for every frame and scribbles
// over it after each onFrame, as a ring would once the slot is reused.
import { describe, expect, test } from "bun:test";
import type { FrameKind } from "./frame.ts";
import type { FrameSink, Transport, TransportStats } from "../transport/types.ts";
import { RpcChannel } from "./channel.ts";
import { Status } from "./status.ts";
import type { FinalStatus } from "./types.ts";

/** One end of an in-process pair: frames go to the peer in a microtask, each through one reused buffer. */
class ReusingEnd implements Transport {
  readonly name = "uds";
  readonly stats: TransportStats = { framesSent: 0, framesReceived: 0, bytesSent: 0, bytesReceived: 0 };
  readonly bufferedBytes = 0;
  closed = false;
  peer!: ReusingEnd;
  private sink: FrameSink | undefined;
  private readonly pending: { kind: FrameKind; flags: number; callId: number; aux: number; body: Uint8Array }[] = [];
  /** The one receive buffer: every frame body is a view of it, scribbled over after its onFrame. */
  readonly rx = new Uint8Array(64 * 1024);
  /** Every body handed to onFrame (views of rx). */
  readonly delivered: Uint8Array[] = [];

  start(sink: FrameSink): void {
    this.sink = sink;
    this.deliver();
  }

  send(kind: FrameKind, flags: number, callId: number, aux: number, body?: Uint8Array): void {
    // Copied now, as the Transport contract says (the caller may reuse its memory at once).
    this.peer.pending.push({ kind, flags, callId, aux, body: body ? body.slice() : new Uint8Array(0) });
    queueMicrotask(() => this.peer.deliver());
  }

  private deliver(): void {
    while (this.sink && this.pending.length > 0) {
      const f = this.pending.shift()!;
      this.rx.set(f.body);
      const view = this.rx.subarray(0, f.body.byteLength);
      this.delivered.push(view);
      this.sink.onFrame(f.kind, f.flags, f.callId, f.aux, view);
      this.rx.fill(0xee, 0, f.body.byteLength);
    }
  }

  close(): void {
    this.closed = true;
  }
}

function pair(): { app: RpcChannel; sidecar: RpcChannel; appEnd: ReusingEnd; sidecarEnd: ReusingEnd } {
  const appEnd = new ReusingEnd();
  const sidecarEnd = new ReusingEnd();
  appEnd.peer = sidecarEnd;
  sidecarEnd.peer = appEnd;
  return { app: new RpcChannel(appEnd, { initiator: true }), sidecar: new RpcChannel(sidecarEnd, { initiator: false }), appEnd, sidecarEnd };
}

const bytes = (n: number, v: number) => new Uint8Array(n).fill(v);

describe("frame bodies are views valid only during onFrame", () => {
  test("a unary response is a stable copy: reading it after the transport reused its buffer sees the bytes sent", async () => {
    const { app, sidecar } = pair();
    sidecar.setHandler((call) => call.respond(bytes(100, 7)));
    const r = await app.unary("/t.S/M", bytes(10, 1));
    await Bun.sleep(0);
    expect([...r.response]).toEqual([...bytes(100, 7)]);
  });

  test("a request message is a stable copy the handler may keep past the frame", async () => {
    const { app, sidecar } = pair();
    let kept: Uint8Array | undefined;
    sidecar.setHandler(async (call) => {
      kept = call.takeRequest();
      await Bun.sleep(1);
      call.respond(bytes(1, 0));
    });
    await app.unary("/t.S/M", bytes(300, 3));
    expect([...kept!]).toEqual([...bytes(300, 3)]);
  });

  test("an observer with transientResponse gets the END frame's body itself, and the call keeps no reference to it", async () => {
    const { app, sidecar, appEnd } = pair();
    sidecar.setHandler((call) => call.respond(bytes(200, 9)));
    const call = app.startCall("/t.S/M", { serverStreaming: false, clientStreaming: false }, {}, bytes(5, 1));
    const seen: { status: FinalStatus; response: Uint8Array | undefined; copyDuringEnd: number[] }[] = [];
    call.observe!({
      transientResponse: true,
      end: (status, response) => seen.push({ status, response, copyDuringEnd: [...(response ?? [])] }),
    });
    await call.status;
    expect(seen).toHaveLength(1);
    expect(seen[0]!.status.code).toBe(Status.OK);
    // During end() the view held the response; it is the transport's buffer (no copy was made)...
    expect(seen[0]!.copyDuringEnd).toEqual([...bytes(200, 9)]);
    expect(seen[0]!.response!.buffer).toBe(appEnd.rx.buffer);
    // ...which the transport reused afterwards, and the call holds no reference to it.
    expect(seen[0]!.response![0]).toBe(0xee);
    const left: Uint8Array[] = [];
    for await (const m of call) left.push(m);
    expect(left).toHaveLength(0);
  });

  test("without transientResponse the observer's response is a copy that outlives the frame", async () => {
    const { app, sidecar, appEnd } = pair();
    sidecar.setHandler((call) => call.respond(bytes(200, 9)));
    const call = app.startCall("/t.S/M", { serverStreaming: false, clientStreaming: false }, {}, bytes(5, 1));
    let response: Uint8Array | undefined;
    call.observe!({ end: (_s, r) => (response = r) });
    await call.status;
    expect(response!.buffer).not.toBe(appEnd.rx.buffer);
    expect([...response!]).toEqual([...bytes(200, 9)]);
  });

  test("a transientResponse observer still gets a copy when the response came in its own MESSAGE frame before END", async () => {
    const { app, sidecar, appEnd } = pair();
    // Trailers keep the response out of the END frame: MESSAGE, then END with the trailers.
    sidecar.setHandler((call) => call.respond(bytes(200, 4), { "x-t": "1" }));
    const call = app.startCall("/t.S/M", { serverStreaming: false, clientStreaming: false }, {}, bytes(5, 1));
    let response: Uint8Array | undefined;
    call.observe!({ transientResponse: true, end: (_s, r) => (response = r) });
    const status = await call.status;
    expect(status.trailers).toEqual({ "x-t": "1" });
    expect(response!.buffer).not.toBe(appEnd.rx.buffer);
    expect([...response!]).toEqual([...bytes(200, 4)]);
  });
});

describe("a handler's buffer", () => {
  test("reused once write() resolves: the unary response sent is what was written", async () => {
    const { app, sidecar } = pair();
    sidecar.setHandler(async (call) => {
      const buf = bytes(100, 5);
      await call.write(buf);
      buf.fill(6); // the handler reuses its buffer: the response held for the END frame must not change
    });
    const r = await app.unary("/t.S/M", bytes(1, 1));
    expect([...r.response]).toEqual([...bytes(100, 5)]);
  });

  test("reused once respond() returns: the response went out before, untouched", async () => {
    const { app, sidecar } = pair();
    sidecar.setHandler((call) => {
      const buf = bytes(100, 5);
      call.respond(buf, { "x-t": "1" });
      buf.fill(6);
    });
    const r = await app.unary("/t.S/M", bytes(1, 1));
    expect([...r.response]).toEqual([...bytes(100, 5)]);
  });

  test("endCode is the status the call was ended with, also when respond() could not send (over the client's limit)", async () => {
    const { app, sidecar } = pair();
    const codes: (number | undefined)[] = [];
    sidecar.setHandler((call) => {
      codes.push(call.endCode);
      call.respond(bytes(sidecar.peerSettings.maxMessageBytes + 1, 0));
      codes.push(call.endCode);
    });
    await expect(app.unary("/t.S/M", bytes(1, 1))).rejects.toMatchObject({ code: Status.RESOURCE_EXHAUSTED });
    sidecar.setHandler((call) => call.respond(bytes(1, 0)));
    let served: number | undefined;
    sidecar.setHandler((call) => {
      call.respond(bytes(1, 0));
      served = call.endCode;
    });
    await app.unary("/t.S/M", bytes(1, 1));
    expect(codes).toEqual([undefined, Status.RESOURCE_EXHAUSTED]);
    expect(served).toBe(Status.OK);
  });
});
