// CALL and END frames that carry a message (FrameFlag.WITH_MESSAGE), seen from a raw peer on a real
// Unix socket: what the channel sends for a small unary call, and what it does with malformed ones.
import { afterEach, describe, expect, test } from "bun:test";
import { rmSync } from "node:fs";
import { join } from "node:path";
import { scratchDir, waitFor } from "../../test/helpers.ts";
import { connectedUdsPair, type UdsTransport } from "../transport/uds.ts";
import { encodeCallHead, decodeEndStatus, encodeEndStatus } from "./wire.ts";
import { RpcChannel } from "./channel.ts";
import { FrameFlag, FrameKind } from "./frame.ts";
import { RpcError, Status } from "./status.ts";

interface Seen {
  kind: number;
  flags: number;
  callId: number;
  aux: number;
  body: Uint8Array;
}

const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const c of cleanups.splice(0)) c();
});

/** A channel on one end of a real socket and a raw transport (the test plays the peer) on the other. */
async function pair(initiatorChannel: boolean): Promise<{ channel: RpcChannel; raw: UdsTransport; seen: Seen[] }> {
  const dir = scratchDir();
  const { dialled, accepted, listener } = await connectedUdsPair(join(dir, "s.sock"));
  const [mine, raw] = initiatorChannel ? [dialled, accepted] : [accepted, dialled];
  const seen: Seen[] = [];
  raw.start({ onFrame: (kind, flags, callId, aux, body) => seen.push({ kind, flags, callId, aux, body: body.slice() }), onClose() {} });
  const channel = new RpcChannel(mine, { initiator: initiatorChannel });
  cleanups.push(() => {
    channel.close();
    raw.close();
    listener.stop();
    rmSync(dir, { recursive: true, force: true });
  });
  return { channel, raw, seen };
}

describe("frames that carry a message", () => {
  test("a small unary call is one CALL frame each way: head + request in, response + OK END out", async () => {
    const { channel, raw, seen } = await pair(true);
    const reply = channel.unary("/t.S/M", new Uint8Array([1, 2, 3]));
    const call = await waitFor(() => seen.find((f) => f.kind === FrameKind.CALL), { what: "the CALL frame" });
    expect(call.flags).toBe(FrameFlag.WITH_MESSAGE | FrameFlag.END_STREAM);
    expect([...call.body.subarray(call.aux)]).toEqual([1, 2, 3]);
    expect(seen.filter((f) => f.kind === FrameKind.MESSAGE)).toHaveLength(0);
    raw.send(FrameKind.END, FrameFlag.WITH_MESSAGE, call.callId, Status.OK, new Uint8Array([9, 8]));
    const r = await reply;
    expect([...r.response]).toEqual([9, 8]);
    expect(r.trailers).toEqual({});
  });

  test("the server side answers a one-frame call with its response in the END frame", async () => {
    const { channel, raw, seen } = await pair(false);
    channel.setHandler(async (call) => {
      for await (const m of call) await call.write(new Uint8Array([...m].reverse()));
    });
    const head = encodeCallHead({ method: "/t.S/M", metadata: {}, timeoutUs: 0, serverStreaming: false, clientStreaming: false });
    const body = new Uint8Array(head.byteLength + 3);
    body.set(head);
    body.set([1, 2, 3], head.byteLength);
    raw.send(FrameKind.CALL, FrameFlag.WITH_MESSAGE | FrameFlag.END_STREAM, 1, head.byteLength, body);
    const end = await waitFor(() => seen.find((f) => f.kind === FrameKind.END), { what: "the END frame" });
    expect(end.flags).toBe(FrameFlag.WITH_MESSAGE);
    expect(end.aux).toBe(Status.OK);
    expect([...end.body]).toEqual([3, 2, 1]);
  });

  test("a failing handler's response still goes out, followed by its error status", async () => {
    const { channel, raw, seen } = await pair(false);
    channel.setHandler(async (call) => {
      await call.write(new Uint8Array([7]));
      throw new RpcError(Status.FAILED_PRECONDITION, "not now");
    });
    const head = encodeCallHead({ method: "/t.S/M", metadata: {}, timeoutUs: 0, serverStreaming: false, clientStreaming: false });
    raw.send(FrameKind.CALL, FrameFlag.WITH_MESSAGE | FrameFlag.END_STREAM, 1, head.byteLength, head);
    const end = await waitFor(() => seen.find((f) => f.kind === FrameKind.END), { what: "the END frame" });
    expect(end.flags & FrameFlag.WITH_MESSAGE).toBe(0);
    expect(end.aux).toBe(Status.FAILED_PRECONDITION);
    expect(decodeEndStatus(end.body).message).toBe("not now");
    expect(seen.filter((f) => f.kind === FrameKind.MESSAGE).map((f) => [...f.body])).toEqual([[7]]);
  });

  test("a CALL whose head length runs past its body fails that call INTERNAL; the connection serves the next", async () => {
    const { channel, raw, seen } = await pair(false);
    channel.setHandler(async (call) => {
      for await (const m of call) await call.write(m);
    });
    raw.send(FrameKind.CALL, FrameFlag.WITH_MESSAGE | FrameFlag.END_STREAM, 1, 1000, new Uint8Array(10));
    const bad = await waitFor(() => seen.find((f) => f.kind === FrameKind.END && f.callId === 1), { what: "END of the bad call" });
    expect(bad.aux).toBe(Status.INTERNAL);
    expect(decodeEndStatus(bad.body).message).toMatch(/head length 1000 exceeds the 10-byte body/);
    const head = encodeCallHead({ method: "/t.S/M", metadata: {}, timeoutUs: 0, serverStreaming: false, clientStreaming: false });
    const body = new Uint8Array(head.byteLength + 1);
    body.set(head);
    body[head.byteLength] = 42;
    raw.send(FrameKind.CALL, FrameFlag.WITH_MESSAGE | FrameFlag.END_STREAM, 3, head.byteLength, body);
    const good = await waitFor(() => seen.find((f) => f.kind === FrameKind.END && f.callId === 3), { what: "END of the good call" });
    expect(good.aux).toBe(Status.OK);
    expect([...good.body]).toEqual([42]);
    expect(channel.isOpen).toBe(true);
  });

  test("an END that carries a message with a non-OK status fails the call INTERNAL, not the connection", async () => {
    const { channel, raw, seen } = await pair(true);
    const reply = channel.unary("/t.S/M", new Uint8Array([1])).catch((e: unknown) => e);
    const call = await waitFor(() => seen.find((f) => f.kind === FrameKind.CALL), { what: "the CALL frame" });
    raw.send(FrameKind.END, FrameFlag.WITH_MESSAGE, call.callId, Status.NOT_FOUND, new Uint8Array([5]));
    const err = (await reply) as RpcError;
    expect(err).toBeInstanceOf(RpcError);
    expect(err.code).toBe(Status.INTERNAL);
    expect(err.details).toMatch(/malformed END/);
    expect(channel.isOpen).toBe(true);
  });

  test("respond(): the request taken without a wait, the answer and OK status in one END frame", async () => {
    const { channel, raw, seen } = await pair(false);
    channel.setHandler((call) => {
      const req = call.takeRequest();
      call.respond(new Uint8Array([...(req ?? [])].map((b) => b + 1)));
    });
    const head = encodeCallHead({ method: "/t.S/M", metadata: {}, timeoutUs: 0, serverStreaming: false, clientStreaming: false });
    const body = new Uint8Array(head.byteLength + 2);
    body.set(head);
    body.set([4, 5], head.byteLength);
    raw.send(FrameKind.CALL, FrameFlag.WITH_MESSAGE | FrameFlag.END_STREAM, 1, head.byteLength, body);
    const end = await waitFor(() => seen.find((f) => f.kind === FrameKind.END), { what: "the END frame" });
    expect(end.flags).toBe(FrameFlag.WITH_MESSAGE);
    expect([...end.body]).toEqual([5, 6]);
  });

  test("respond() with trailers sends MESSAGE then END carrying them; over the client's limit it is RESOURCE_EXHAUSTED", async () => {
    const { channel, raw, seen } = await pair(false);
    channel.setHandler((call) => {
      if (call.method === "/t.S/Big") call.respond(new Uint8Array(channel.peerSettings.maxMessageBytes + 1));
      else call.respond(new Uint8Array([1]), { "x-t": "v" });
    });
    const send = (id: number, method: string) => {
      const head = encodeCallHead({ method, metadata: {}, timeoutUs: 0, serverStreaming: false, clientStreaming: false });
      raw.send(FrameKind.CALL, FrameFlag.WITH_MESSAGE | FrameFlag.END_STREAM, id, head.byteLength, head);
    };
    send(1, "/t.S/M");
    send(3, "/t.S/Big");
    const end1 = await waitFor(() => seen.find((f) => f.kind === FrameKind.END && f.callId === 1), { what: "END of call 1" });
    expect(end1.flags & FrameFlag.WITH_MESSAGE).toBe(0);
    expect(decodeEndStatus(end1.body).trailers).toEqual({ "x-t": "v" });
    expect(seen.filter((f) => f.kind === FrameKind.MESSAGE && f.callId === 1).map((f) => [...f.body])).toEqual([[1]]);
    const end3 = await waitFor(() => seen.find((f) => f.kind === FrameKind.END && f.callId === 3), { what: "END of call 3" });
    expect(end3.aux).toBe(Status.RESOURCE_EXHAUSTED);
    expect(seen.filter((f) => f.kind === FrameKind.MESSAGE && f.callId === 3)).toHaveLength(0);
    expect(channel.isOpen).toBe(true);
  });

  test("unary(): settled by the call's end, whatever form the answer takes", async () => {
    const { channel, raw, seen } = await pair(true);
    const callFrame = (n: number) => waitFor(() => seen.filter((f) => f.kind === FrameKind.CALL)[n], { what: `CALL ${n}` });
    // The response in its own MESSAGE frame, then an empty OK END.
    const a = channel.unary("/t.S/M", new Uint8Array([1]));
    const ca = await callFrame(0);
    raw.send(FrameKind.MESSAGE, 0, ca.callId, 0, new Uint8Array([2]));
    raw.send(FrameKind.END, 0, ca.callId, Status.OK);
    const ra = await a;
    expect([...ra.response]).toEqual([2]);
    expect(ra.trailers).toEqual({});
    // OK without a response message.
    const b = channel.unary("/t.S/M", new Uint8Array([1])).catch((e: unknown) => e);
    raw.send(FrameKind.END, 0, (await callFrame(1)).callId, Status.OK);
    expect(((await b) as RpcError).code).toBe(Status.INTERNAL);
    expect(((await b) as RpcError).details).toMatch(/without a response message/);
    // A non-OK status with details.
    const c = channel.unary("/t.S/M", new Uint8Array([1])).catch((e: unknown) => e);
    raw.send(FrameKind.END, 0, (await callFrame(2)).callId, Status.NOT_FOUND, encodeEndStatus(Status.NOT_FOUND, "no such thing"));
    expect(((await c) as RpcError).code).toBe(Status.NOT_FOUND);
    expect(((await c) as RpcError).details).toBe("no such thing");
    // A call that ends before it starts (the channel is closed) rejects too.
    channel.close();
    const d = await channel.unary("/t.S/M", new Uint8Array([1])).catch((e: unknown) => e);
    expect((d as RpcError).code).toBe(Status.UNAVAILABLE);
  });

  test("a call's status promise, asked for before or after the end, is one promise with the final status", async () => {
    const { channel, raw, seen } = await pair(true);
    const early = channel.startCall("/t.S/M", { serverStreaming: false, clientStreaming: false }, {}, new Uint8Array([1]));
    const late = channel.startCall("/t.S/M", { serverStreaming: false, clientStreaming: false }, {}, new Uint8Array([1]));
    const earlyStatus = early.status;
    expect(early.status).toBe(earlyStatus);
    const calls = await waitFor(() => (seen.filter((f) => f.kind === FrameKind.CALL).length === 2 ? seen : undefined), { what: "two CALLs" });
    for (const f of calls) raw.send(FrameKind.END, FrameFlag.WITH_MESSAGE, f.callId, Status.OK, new Uint8Array([3]));
    expect((await earlyStatus).code).toBe(Status.OK);
    await waitFor(() => seen.length >= 2 && channel.stats.activeClientCalls === 0, { what: "both calls over" });
    const lateStatus = late.status;
    expect(late.status).toBe(lateStatus);
    expect(await lateStatus).toEqual({ code: Status.OK, details: "", trailers: {} });
  });

  test("an async handler that responds before its first await: one END; a later throw changes nothing", async () => {
    const { channel, raw, seen } = await pair(false);
    let later: (() => void) | undefined;
    channel.setHandler(async (call) => {
      call.respond(call.takeRequest() ?? new Uint8Array(0));
      if (call.method === "/t.S/ThrowLater") {
        await new Promise<void>((r) => (later = r));
        throw new Error("after the answer");
      }
    });
    const send = (id: number, method: string) => {
      const head = encodeCallHead({ method, metadata: {}, timeoutUs: 0, serverStreaming: false, clientStreaming: false });
      const body = new Uint8Array(head.byteLength + 1);
      body.set(head);
      body[head.byteLength] = id;
      raw.send(FrameKind.CALL, FrameFlag.WITH_MESSAGE | FrameFlag.END_STREAM, id, head.byteLength, body);
    };
    send(1, "/t.S/M");
    send(3, "/t.S/ThrowLater");
    await waitFor(() => later, { what: "the second handler waiting" });
    later!();
    send(5, "/t.S/M");
    await waitFor(() => seen.find((f) => f.kind === FrameKind.END && f.callId === 5), { what: "END of call 5" });
    const ends = seen.filter((f) => f.kind === FrameKind.END);
    expect(ends.map((f) => [f.callId, f.aux, [...f.body]])).toEqual([
      [1, Status.OK, [1]],
      [3, Status.OK, [3]],
      [5, Status.OK, [5]],
    ]);
    expect(channel.stats.activeServerCalls).toBe(0);
  });
});
