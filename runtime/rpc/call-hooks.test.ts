// The promise-free hooks a proxy uses per call, between two channels on a real Unix socket:
// ClientCall.observe (headers and end as callbacks), ServerCall.requestsDone, ServerCall.onAbort and
// abortReason (an abort seen without making the AbortSignal; the signal, when made, agrees).
import { afterEach, describe, expect, test } from "bun:test";
import { rmSync } from "node:fs";
import { join } from "node:path";
import { scratchDir, waitFor } from "../../test/helpers.ts";
import { connectedUdsPair } from "../transport/uds.ts";
import { RpcChannel } from "./channel.ts";
import { RpcError, Status } from "./status.ts";
import type { FinalStatus, ServerCall, ServerHandler } from "./types.ts";

const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const c of cleanups.splice(0)) c();
});

async function pair(handler: ServerHandler): Promise<RpcChannel> {
  const dir = scratchDir();
  const { dialled, accepted, listener } = await connectedUdsPair(join(dir, "s.sock"));
  const client = new RpcChannel(dialled, { initiator: true });
  const server = new RpcChannel(accepted, { initiator: false, handler });
  cleanups.push(() => {
    client.close();
    server.close();
    listener.stop();
    rmSync(dir, { recursive: true, force: true });
  });
  return client;
}

const UNARY = { serverStreaming: false, clientStreaming: false };
const CLIENT_STREAMING = { serverStreaming: false, clientStreaming: true };

function observed(call: ReturnType<RpcChannel["startCall"]>) {
  const events: string[] = [];
  const done = new Promise<{ status: FinalStatus; response: Uint8Array | undefined }>((resolve) =>
    call.observe!({
      headers: (md) => events.push(`headers ${JSON.stringify(md)}`),
      end: (status, response) => {
        events.push(`end ${status.code}`);
        resolve({ status, response });
      },
    }),
  );
  return { events, done };
}

describe("ClientCall.observe", () => {
  test("headers, then the end with the one response and the trailers; a failure ends with no response", async () => {
    const client = await pair((call) => {
      const req = call.takeRequest()!;
      if (req[0] === 1) {
        call.sendHeaders({ "x-h": "v" });
        call.respond(new Uint8Array([7, 7]), { "x-t": "w" });
      } else call.end(Status.NOT_FOUND, "nope", { "x-t": "z" });
    });
    const ok = observed(client.startCall("/t.S/M", UNARY, {}, new Uint8Array([1])));
    const r = await ok.done;
    expect(ok.events).toEqual(['headers {"x-h":"v"}', "end 0"]);
    expect([...r.response!]).toEqual([7, 7]);
    expect(r.status.trailers).toEqual({ "x-t": "w" });

    const bad = observed(client.startCall("/t.S/M", UNARY, {}, new Uint8Array([2])));
    const b = await bad.done;
    expect(bad.events).toEqual(["headers {}", "end 5"]);
    expect(b.response).toBeUndefined();
    expect(b.status).toEqual({ code: Status.NOT_FOUND, details: "nope", trailers: { "x-t": "z" } });
  });

  test("observing a call that is already over calls end at once", async () => {
    const client = await pair((call) => call.respond(new Uint8Array([3])));
    const call = client.startCall("/t.S/M", UNARY, {}, new Uint8Array([1]));
    await call.status;
    const events: string[] = [];
    let response: Uint8Array | undefined;
    call.observe!({ headers: () => events.push("headers"), end: (s, r) => (events.push(`end ${s.code}`), (response = r)) });
    expect(events).toEqual(["headers", "end 0"]);
    expect([...response!]).toEqual([3]);
  });
});

describe("ServerCall hooks", () => {
  test("requestsDone: true once a unary request is taken; false while a client stream is open", async () => {
    const seen: (boolean | undefined)[] = [];
    let streaming: ServerCall | undefined;
    const client = await pair((call) => {
      if (call.shape.clientStreaming) {
        streaming = call;
        return new Promise<void>(() => {});
      }
      seen.push(call.requestsDone);
      call.takeRequest();
      seen.push(call.requestsDone);
      call.respond(new Uint8Array([1]));
    });
    await client.unary("/t.S/M", new Uint8Array([1]));
    expect(seen).toEqual([false, true]);
    const c = client.startCall("/t.S/C", CLIENT_STREAMING);
    await c.write(new Uint8Array([1]));
    await waitFor(() => streaming?.takeRequest(), { what: "the first streamed request" });
    expect(streaming!.requestsDone).toBe(false);
    c.end();
    await waitFor(() => streaming!.requestsDone, { what: "the half-close" });
    c.cancel();
  });

  test("onAbort and abortReason see a cancel without the signal; a signal made later is already aborted with the same reason", async () => {
    let served: ServerCall | undefined;
    const reasons: unknown[] = [];
    const client = await pair((call) => {
      served = call;
      expect(call.abortReason).toBeUndefined();
      call.onAbort = (r) => reasons.push(r);
      return new Promise<void>(() => {});
    });
    const call = client.startCall("/t.S/M", UNARY, {}, new Uint8Array([1]));
    await waitFor(() => served, { what: "the call at the server" });
    call.cancel();
    await waitFor(() => reasons.length > 0, { what: "the abort at the server" });
    expect(reasons).toHaveLength(1);
    expect(reasons[0]).toBeInstanceOf(RpcError);
    expect((reasons[0] as RpcError).code).toBe(Status.CANCELLED);
    expect(served!.abortReason).toBe(reasons[0]);
    expect(served!.onAbort).toBeUndefined();
    expect(served!.signal.aborted).toBe(true);
    expect(served!.signal.reason).toBe(reasons[0]);
  });

  test("a signal made before the abort fires too, alongside onAbort", async () => {
    let served: ServerCall | undefined;
    const order: string[] = [];
    const client = await pair((call) => {
      served = call;
      call.signal.addEventListener("abort", () => order.push("signal"));
      call.onAbort = () => order.push("onAbort");
      return new Promise<void>(() => {});
    });
    const call = client.startCall("/t.S/M", UNARY, { timeoutMs: 50 }, new Uint8Array([1]));
    expect((await call.status).code).toBe(Status.DEADLINE_EXCEEDED);
    await waitFor(() => order.length === 2, { what: "both abort listeners" });
    expect(order).toEqual(["signal", "onAbort"]);
    expect((served!.abortReason as RpcError).code).toBe(Status.DEADLINE_EXCEEDED);
  });
});
