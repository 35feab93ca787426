// bench/c/tcp-proxy.c, the C forwarder bench-mesh measures as the floor of a sidecar's CPU: it must pass
// bytes unchanged both ways (or the reference is measuring a different workload), hold back a side it
// cannot write to, pass half-closes on, and outlive a refused upstream. Real processes and sockets; every
// wait is a condition with a deadline, and afterEach removes whatever a test started.
import { afterEach, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import type { Socket, TCPSocketListener } from "bun";
import { join } from "node:path";
import { type Spawned, TestResources, waitFor } from "../test/helpers.ts";
import { callUnary, echoClient } from "../mesh/sidecar/testdata/harness.ts";
import { buildC } from "./lib/build-c.ts";

const DIRECT_ECHO = join(import.meta.dir, "..", "mesh", "sidecar", "testdata", "direct-echo.ts");

// Above the waits' own deadlines, so a failure reports what it was waiting for.
setDefaultTimeout(15_000);

let exe = "";
beforeAll(() => {
  exe = buildC("tcp-proxy");
});

const res = new TestResources();
const listeners: TCPSocketListener<any>[] = [];
const sockets: Socket<any>[] = [];
afterEach(async () => {
  for (const s of sockets.splice(0)) s.terminate();
  for (const l of listeners.splice(0)) l.stop(true);
  await res.cleanup();
});

async function startProxy(upstreamPort: number): Promise<{ port: number; proc: Spawned }> {
  const proc = res.spawn([exe, "127.0.0.1", String(upstreamPort)]);
  const line = await proc.waitForLine(/"ready":true/, 5000);
  return { port: (JSON.parse(line) as { port: number }).port, proc };
}

/** Per socket: bytes the kernel did not take yet, and what arrived. */
interface Conn {
  queue: Uint8Array[];
  chunks: Uint8Array[];
  received: number;
  /** shutdown(SHUT_WR) once the queue is empty (a half-close after the last byte). */
  finAfterDrain: boolean;
  /** The peer's FIN arrived. */
  gotEnd: boolean;
  closed: boolean;
  /** What close() reported (a reset, say); undefined after a clean close. */
  closeError?: Error;
}
const newConn = (): Conn => ({ queue: [], chunks: [], received: 0, finAfterDrain: false, gotEnd: false, closed: false });

/** Bun's write() takes what the kernel takes and returns the count; the rest waits for drain. */
function send(s: Socket<Conn>, bytes: Uint8Array): void {
  if (s.data.queue.length === 0) {
    const n = Math.max(0, s.write(bytes));
    if (n === bytes.length) return;
    bytes = bytes.subarray(n);
  }
  s.data.queue.push(new Uint8Array(bytes)); // a copy: Bun may reuse a data() chunk's memory
}

function drain(s: Socket<Conn>): void {
  const q = s.data.queue;
  while (q.length) {
    const n = Math.max(0, s.write(q[0]!));
    if (n < q[0]!.length) {
      q[0] = q[0]!.subarray(n);
      return;
    }
    q.shift();
  }
  if (s.data.finAfterDrain) {
    s.data.finAfterDrain = false;
    s.shutdown();
  }
}

function finWhenDrained(s: Socket<Conn>): void {
  s.data.finAfterDrain = true;
  drain(s);
}

/** An echo server on 127.0.0.1 (`port` 0: any free one) that answers a half-close with its own after echoing everything. */
function echoUpstream(port = 0): { port: number; conns: Socket<Conn>[] } {
  const conns: Socket<Conn>[] = [];
  const l = Bun.listen<Conn>({
    hostname: "127.0.0.1",
    port,
    allowHalfOpen: true,
    socket: {
      open: (s) => {
        s.data = newConn();
        conns.push(s);
      },
      data: (s, chunk) => {
        s.data.received += chunk.length;
        send(s, chunk);
      },
      drain,
      end: (s) => {
        s.data.gotEnd = true;
        finWhenDrained(s);
      },
    },
  });
  listeners.push(l);
  return { port: l.port, conns };
}

async function client(port: number): Promise<Socket<Conn>> {
  const s = await Bun.connect<Conn>({
    hostname: "127.0.0.1",
    port,
    allowHalfOpen: true,
    data: newConn(),
    socket: {
      data: (s, chunk) => {
        s.data.chunks.push(new Uint8Array(chunk));
        s.data.received += chunk.length;
      },
      drain,
      end: (s) => void (s.data.gotEnd = true),
      close: (s, error) => {
        s.data.closed = true;
        s.data.closeError = error;
      },
    },
  });
  sockets.push(s);
  return s;
}

function received(s: Socket<Conn>): Buffer {
  return Buffer.concat(s.data.chunks);
}

/** Bytes that differ at every offset and between seeds, so a reordering or a mix-up shows. */
function payload(bytes: number, seed: number): Uint8Array {
  const out = new Uint8Array(bytes);
  let x = seed * 2654435761 + 1;
  for (let i = 0; i < bytes; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    out[i] = x >>> 24;
  }
  return out;
}

/** A port nothing listens on (bound, then released). */
function closedPort(): number {
  const l = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const port = l.port;
  l.stop(true);
  return port;
}

describe("tcp-proxy (bench/c/tcp-proxy.c)", () => {
  test("forwards MiBs both ways unchanged, holding back a side whose receiver is slow (partial sends)", async () => {
    const up = echoUpstream();
    const proxy = await startProxy(up.port);
    const c = await client(proxy.port);
    // Loopback socket buffers autotune to several MiB here (tcp_rmem max 32 MiB), so an echo of 1 MiB
    // never makes the proxy's send come up short. The client reads nothing and adds 1 MiB at a time
    // until the echo server's writes back up: then the proxy's send to the client came up short and
    // it stopped reading the upstream (the only way the upstream's socket fills).
    c.pause();
    const pieces: Uint8Array[] = [];
    await waitFor(
      () => {
        if ((up.conns[0]?.data.queue.length ?? 0) > 0) return true;
        if (c.data.queue.length === 0 && pieces.length < 64) {
          pieces.push(payload(1 << 20, pieces.length + 1));
          send(c, pieces[pieces.length - 1]!);
        }
        return false;
      },
      { timeoutMs: 8000, what: "the upstream's echo to back up behind the paused client (up to 64 MiB sent)" },
    );
    c.resume();
    const data = Buffer.concat(pieces);
    await waitFor(() => c.data.received >= data.length, { timeoutMs: 8000, what: `${data.length} bytes back through the proxy` });
    expect(c.data.received).toBe(data.length);
    expect(received(c).equals(data)).toBe(true);
    expect(proxy.proc.output()).not.toContain("tcp-proxy:"); // no error on the way
  });

  test("passes a half-close on both ways: the client's FIN reaches the upstream and the upstream's comes back after its bytes", async () => {
    const up = echoUpstream();
    const proxy = await startProxy(up.port);
    const c = await client(proxy.port);
    const data = payload(300_000, 2);
    send(c, data);
    finWhenDrained(c);
    // Bun reports a FIN on a socket whose own side is already shut as a close without an error.
    await waitFor(() => c.data.gotEnd || c.data.closed, { timeoutMs: 5000, what: "the upstream's FIN back at the client" });
    expect(c.data.closeError).toBeUndefined(); // not a reset
    expect(up.conns.map((u) => u.data.gotEnd)).toEqual([true]);
    expect(received(c).equals(data)).toBe(true);
    expect(proxy.proc.output()).not.toContain("tcp-proxy:");
  });

  test("an upstream's FIN that arrives behind bytes the client has not taken yet waits for them", async () => {
    // The upstream sends 4 MiB and its FIN while the client reads nothing: the bytes fill the path to
    // the client (the proxy's send comes up short) and the rest wait in the proxy's upstream socket with
    // the FIN behind them, which epoll reports as a hang-up on a side the proxy is not reading.
    const blob = payload(4 << 20, 7);
    const sender = { off: 0, fin: false, finSent: false };
    const pump = (s: Socket<undefined>) => {
      while (sender.off < blob.length) {
        const n = s.write(blob.subarray(sender.off));
        if (n <= 0) return;
        sender.off += n;
      }
      if (sender.fin && !sender.finSent) {
        sender.finSent = true;
        s.shutdown();
      }
    };
    const l = Bun.listen<undefined>({
      hostname: "127.0.0.1",
      port: 0,
      allowHalfOpen: true,
      socket: {
        open: pump,
        drain: pump,
        data() {},
        end: (s) => {
          sender.fin = true;
          pump(s);
        },
      },
    });
    listeners.push(l);
    const proxy = await startProxy(l.port);
    const c = await client(proxy.port);
    c.pause();
    finWhenDrained(c);
    await waitFor(() => sender.finSent, { timeoutMs: 5000, what: "the upstream to hand its 4 MiB and FIN to the kernel (the socket buffers on the way hold them)" });
    c.resume();
    await waitFor(() => c.data.gotEnd || c.data.closed, { timeoutMs: 5000, what: "the upstream's FIN at the client" });
    expect(c.data.closeError).toBeUndefined();
    expect(c.data.received).toBe(blob.length);
    expect(received(c).equals(blob)).toBe(true);
    expect(proxy.proc.output()).not.toContain("tcp-proxy:");
  });

  test("two concurrent connections each get back only their own bytes", async () => {
    const up = echoUpstream();
    const proxy = await startProxy(up.port);
    const [a, b] = await Promise.all([client(proxy.port), client(proxy.port)]);
    const da = payload(256 * 1024, 3);
    const db = payload(256 * 1024, 4);
    // Interleaved in pieces, so both connections are in flight in the proxy at once.
    for (let off = 0; off < da.length; off += 16 * 1024) {
      send(a, da.subarray(off, off + 16 * 1024));
      send(b, db.subarray(off, off + 16 * 1024));
    }
    await waitFor(() => a.data.received >= da.length && b.data.received >= db.length, { timeoutMs: 5000, what: "both payloads back" });
    expect(received(a).equals(da)).toBe(true);
    expect(received(b).equals(db)).toBe(true);
  });

  test("a refused upstream closes the downstream connection, and the proxy goes on serving", async () => {
    const port = closedPort();
    const proxy = await startProxy(port);
    const c = await client(proxy.port);
    // allowHalfOpen: the proxy's close shows as the peer's FIN (end), or as a close.
    await waitFor(() => c.data.gotEnd || c.data.closed, { timeoutMs: 5000, what: "the proxy to close the downstream connection" });
    await waitFor(() => /connect\(upstream\).*Connection refused/.test(proxy.proc.output()), { timeoutMs: 2000, what: "the refusal on stderr" });
    expect(proxy.proc.proc.exitCode, proxy.proc.output()).toBeNull();
    // The upstream comes up on that port: the next connection goes through.
    echoUpstream(port);
    const c2 = await client(proxy.port);
    const data = payload(1000, 5);
    send(c2, data);
    await waitFor(() => c2.data.received >= data.length, { timeoutMs: 5000, what: "an echo through the proxy once the upstream is up" });
    expect(received(c2).equals(data)).toBe(true);
  });

  test("exits 0 on SIGTERM, with a connection open", async () => {
    const up = echoUpstream();
    const proxy = await startProxy(up.port);
    const c = await client(proxy.port);
    send(c, payload(10, 6));
    await waitFor(() => c.data.received === 10, { timeoutMs: 5000, what: "the echo" });
    proxy.proc.proc.kill("SIGTERM");
    const code = await Promise.race([proxy.proc.proc.exited, Bun.sleep(5000).then(() => "still running after 5 s")]);
    expect(code).toBe(0);
    expect(proxy.proc.proc.signalCode).toBeNull();
    await waitFor(() => c.data.closed || c.data.gotEnd, { timeoutMs: 5000, what: "the client's connection to go when the proxy exits" });
  });

  test("a grpc-js unary call goes through two chained proxies to a grpc-js server (bench-mesh's C path)", async () => {
    const server = res.spawnBun([DIRECT_ECHO]);
    const address = (JSON.parse(await server.waitForLine(/direct-ready/)) as { address: string }).address;
    const g = await startProxy(Number(address.split(":").pop()));
    const f = await startProxy(g.port);
    const grpcClient = echoClient(`127.0.0.1:${f.port}`);
    try {
      const padding = new Uint8Array(1024).fill(7);
      const out = await callUnary(grpcClient, "Unary", { text: "through C", padding }, undefined, { deadline: Date.now() + 5000 });
      expect(out.err).toBeNull();
      expect(out.reply.text).toBe("through C");
      expect(out.reply.app).toBe("direct");
      expect(Buffer.from(out.reply.padding).equals(Buffer.from(padding))).toBe(true);
    } finally {
      grpcClient.close();
    }
  });
});
