// The RPC suite: real processes, one suite defined once and run over every transport (see
// test/transports.ts; test/rpc-suite.test.ts runs uds and shm, test/rpal-double-rpc.test.ts runs it
// over rpal against the librpal test double). The peer process (test/fixtures/rpc-peer.ts) plays the
// sidecar and serves test methods; this process plays the app and calls them through the SDK.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { connect, type MeshConnection } from "../runtime/sdk/app.ts";
import { RpcError, Status } from "../runtime/rpc/status.ts";
import { connectUnix } from "../runtime/transport/uds.ts";
import { TestResources, waitFor, type Spawned } from "./helpers.ts";
import type { SuiteTransport } from "./transports.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();
const u32 = (n: number) => {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n, true);
  return b;
};

async function expectStatus(p: Promise<unknown>, code: number): Promise<RpcError> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(RpcError);
    expect(Status[(e as RpcError).code as never] ?? (e as RpcError).code).toBe(Status[code as never] ?? code);
    return e as RpcError;
  }
  throw new Error(`expected the call to fail with status ${code}, it succeeded`);
}

export function defineRpcSuite(t: SuiteTransport): void {
  describe(`rpc over ${t.label}`, () => {
    const res = new TestResources();
    let socket: string;
    let peer: Spawned;
    let app: MeshConnection;

    async function startPeer(): Promise<Spawned> {
      const p = res.spawnBun([join(import.meta.dir, "fixtures/rpc-peer.ts"), socket], { env: { MESH_TRANSPORT: t.transport, ...t.env } });
      await p.waitForLine(/^ready$/);
      return p;
    }

    beforeAll(async () => {
      await t.setUp?.();
      socket = join(res.scratchDir(), "peer.sock");
      peer = await startPeer();
      app = await connect({ socketPath: socket, transport: t.transport, reconnect: false });
      expect(app.transport).toBe(t.transport);
    });

    afterAll(async () => {
      await app?.close(100).catch(() => undefined);
      await res.cleanup();
      await t.tearDown?.();
    });

    test("10,000 unary calls with payloads from 0 B to 1 MiB, every reply checked", async () => {
      const N = 10_000;
      let next = 0;
      let checked = 0;
      const worker = async () => {
        while (next < N) {
          const i = next++;
          // Mostly small messages, every 100th large (up to 1 MiB), and the edges 0 and 1 MiB.
          const size = i === 0 ? 0 : i === 1 ? 1024 * 1024 : i % 100 === 0 ? (i * 7919) % (1024 * 1024) : (i * 31) % 4096;
          const payload = new Uint8Array(size);
          for (let j = 0; j < size; j += 997) payload[j] = (i + j) & 0xff;
          if (size > 0) payload[size - 1] = i & 0xff;
          const { response } = await app.unary("/test.Echo/Unary", payload);
          expect(response.byteLength).toBe(size);
          if (Buffer.compare(Buffer.from(response), Buffer.from(payload)) !== 0) throw new Error(`reply ${i} differs from its request`);
          checked++;
        }
      };
      await Promise.all(Array.from({ length: 16 }, worker));
      expect(checked).toBe(N);
    });

    test("server streaming: 1,000 messages arrive in order", async () => {
      const ch = app.currentChannel!;
      const call = ch.serverStream("/test.Echo/Stream", u32(1000));
      let expected = 0;
      for await (const m of call) {
        expect(new DataView(m.buffer, m.byteOffset).getUint32(0, true)).toBe(expected);
        expected++;
      }
      expect(expected).toBe(1000);
      expect((await call.status).code).toBe(Status.OK);
    });

    test("deadline exceeded on a slow handler: client sees DEADLINE_EXCEEDED, the handler's signal aborts", async () => {
      const err = await expectStatus(app.unary("/test.Echo/Slow", new Uint8Array(0), { timeoutMs: 100 }), Status.DEADLINE_EXCEEDED);
      expect(err.details).toContain("deadline");
      const state = await waitFor(async () => {
        const r = JSON.parse(dec.decode((await app.unary("/test.Echo/WasAborted", new Uint8Array(0))).response));
        return r.aborted ? r : undefined;
      }, { what: "the handler's AbortSignal to fire" });
      expect(state.reason).toMatch(/deadline/i);
    });

    test("client-side cancel: CANCELLED for the caller, the handler's signal aborts", async () => {
      const ac = new AbortController();
      const pending = app.unary("/test.Echo/Slow", new Uint8Array(0), { signal: ac.signal });
      await waitFor(async () => app.currentChannel!.stats.activeClientCalls > 0, { what: "the call to start" });
      ac.abort();
      await expectStatus(pending, Status.CANCELLED);
      const state = await waitFor(async () => {
        const r = JSON.parse(dec.decode((await app.unary("/test.Echo/WasAborted", new Uint8Array(0))).response));
        return r.aborted ? r : undefined;
      }, { what: "the handler's AbortSignal to fire after CANCEL" });
      expect(state.reason).toMatch(/cancel/i);
    });

    test("a throwing handler gives the client a status with the message; the connection keeps working", async () => {
      const err = await expectStatus(app.unary("/test.Echo/Throw", enc.encode("kaput")), Status.UNKNOWN);
      expect(err.details).toBe("boom: kaput");
      const err2 = await expectStatus(app.unary("/test.Echo/Fail", new Uint8Array(0)), Status.FAILED_PRECONDITION);
      expect(err2.trailers["x-why"]).toBe("testing");
      const { response } = await app.unary("/test.Echo/Unary", enc.encode("still here"));
      expect(dec.decode(response)).toBe("still here");
    });

    test("metadata, response headers and trailers cross the hop", async () => {
      const call = app.currentChannel!.startCall("/test.Echo/Metadata", { serverStreaming: false, clientStreaming: false }, {
        metadata: { "x-request": "r1", "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" },
      });
      await call.write(new Uint8Array(0));
      call.end();
      const msgs: Uint8Array[] = [];
      for await (const m of call) msgs.push(m);
      const seen = JSON.parse(dec.decode(msgs[0]));
      expect(seen["x-request"]).toBe("r1");
      expect(seen.traceparent).toContain("0af7651916cd43dd");
      expect((await call.headers)["x-header"]).toBe("h1");
      const st = await call.status;
      expect(st.trailers["x-trailer"]).toBe("t1");
      expect(Array.from(st.trailers["x-bin-bin"] as Uint8Array)).toEqual([1, 2, 3]);
    });

    test("unknown method: UNIMPLEMENTED naming it", async () => {
      const err = await expectStatus(app.unary("/test.Echo/Nope", new Uint8Array(0)), Status.UNIMPLEMENTED);
      expect(err.details).toContain("/test.Echo/Nope");
    });

    test("oversize messages: RESOURCE_EXHAUSTED both ways, the connection survives", async () => {
      const max = app.currentChannel!.peerSettings.maxMessageBytes;
      expect(max).toBe(4 * 1024 * 1024);
      const err = await expectStatus(app.unary("/test.Echo/Unary", new Uint8Array(max + 1)), Status.RESOURCE_EXHAUSTED);
      expect(err.details).toContain("max message size");
      const err2 = await expectStatus(app.unary("/test.Echo/Big", u32(max + 1)), Status.RESOURCE_EXHAUSTED);
      expect(err2.details).toContain("max message size");
      const { response } = await app.unary("/test.Echo/Unary", new Uint8Array(max)); // exactly the limit is fine
      expect(response.byteLength).toBe(max);
    });

    const flowControlIssue = t.knownFailures?.flowControl;
    if (flowControlIssue) console.warn(`rpc over ${t.label}: flow-control case SKIPPED — known failure: ${flowControlIssue}`);
    (flowControlIssue ? test.skip : test)("flow control: a consumer that stops reading stops a fast streaming sender, and nothing is lost", async () => {
      const ch = app.currentChannel!;
      const window = ch.localSettings.initialWindowBytes;
      const total = Math.ceil((window * 1.5) / 4); // four-byte messages: half a window more than fits
      const call = ch.serverStream("/test.Echo/Stream", u32(total));
      // Headers resolve with the first message even when the server sends none; awaiting them
      // first must not wait for END (which this stalled stream would never reach).
      expect(await call.headers).toEqual({});
      const it = call[Symbol.asyncIterator]();
      expect((await it.next()).value).toBeDefined();
      let last = -1;
      const stalledAt = await waitFor(
        async () => {
          const now = JSON.parse(dec.decode((await app.unary("/test.Echo/StreamProgress", new Uint8Array(0))).response)).written as number;
          const stable = now === last && now > 0;
          last = now;
          return stable ? now : undefined;
        },
        { intervalMs: 50, what: "the streaming sender to stall on its window" },
      );
      expect(stalledAt * 4).toBeLessThanOrEqual(window + 4);
      expect(stalledAt).toBeLessThan(total);
      let received = 1;
      for (let r = await it.next(); !r.done; r = await it.next()) {
        expect(new DataView(r.value.buffer, r.value.byteOffset).getUint32(0, true)).toBe(received);
        received++;
      }
      expect(received).toBe(total);
    });

    test("garbage, a truncated frame and an absurd length prefix close only that connection, with a logged reason", async () => {
      const bad = [
        new Uint8Array(64).fill(0xab), // garbage: unknown frame kind
        Uint8Array.from([0xff, 0xff, 0xff, 0x7f, 2, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]), // absurd length (2 GiB) CALL
      ];
      for (const bytes of bad) {
        const raw = await connectUnix(socket);
        let closed = false;
        raw.start({ onFrame() {}, onClose: () => (closed = true) });
        (raw as unknown as { socket: { write(b: Uint8Array): number } }).socket.write(bytes);
        await waitFor(() => closed, { what: "the peer to close the bad connection" });
      }
      // A truncated frame: a header promising 100 bytes, then only 10, then the connection ends.
      const trunc = await connectUnix(socket);
      trunc.start({ onFrame() {}, onClose() {} });
      const partial = new Uint8Array(26);
      new DataView(partial.buffer).setUint32(0, 100, true);
      partial[4] = 1;
      (trunc as unknown as { socket: { write(b: Uint8Array): number; end(): void } }).socket.write(partial);
      (trunc as unknown as { socket: { end(): void } }).socket.end();
      await waitFor(() => /unknown frame kind/.test(peer.output()) && /exceeds the limit/.test(peer.output()), {
        what: "the peer to log why it closed the bad connections",
      });
      // The existing connection and a brand-new one both keep working.
      expect(dec.decode((await app.unary("/test.Echo/Unary", enc.encode("a"))).response)).toBe("a");
      const second = await connect({ socketPath: socket, transport: t.transport, reconnect: false });
      expect(dec.decode((await second.unary("/test.Echo/Unary", enc.encode("b"))).response)).toBe("b");
      await second.close(100);
    });

    test("peer killed mid-call: pending calls fail UNAVAILABLE within 1 s", async () => {
      const pending = [0, 1, 2].map(() => app.unary("/test.Echo/Hang", new Uint8Array(0)));
      await waitFor(() => app.currentChannel!.stats.activeClientCalls >= 3, { what: "calls in flight" });
      const killedAt = Date.now();
      peer.proc.kill("SIGKILL");
      const results = await Promise.allSettled(pending);
      const elapsed = Date.now() - killedAt;
      for (const r of results) {
        expect(r.status).toBe("rejected");
        expect((r as PromiseRejectedResult).reason.code).toBe(Status.UNAVAILABLE);
      }
      expect(elapsed).toBeLessThan(1000);
    });
  });
}
