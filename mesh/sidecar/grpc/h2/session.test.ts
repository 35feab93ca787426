// The own HTTP/2 framing under the gRPC server, fed hostile bytes over a real TCP socket: each connection
// error ends with GOAWAY and the right code, stream errors with RST_STREAM, flow control holds, and a
// well-behaved connection opened beside the broken ones keeps being served.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { Socket } from "bun";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Status } from "../../../../runtime/rpc/status.ts";
import type { CallShape } from "../../../../runtime/rpc/types.ts";
import { issueCertificates } from "../../certs.ts";
import { baseRequestHeaders, GrpcClient } from "../client.ts";
import { GrpcServer, type GrpcServerCall } from "../server.ts";
import { encodeHeaders, type HeaderMap, HpackDecoder, huffmanEncode } from "./hpack.ts";
import { type ConnectionError, ErrorCode, MAX_EMPTY_FRAMES, PREFACE, RESET_BURST } from "./session.ts";
import { type Frame, frame, SETTINGS, u32 } from "./test-frames.ts";

const SHAPES: Record<string, CallShape> = {
  "/t.S/Unary": { clientStreaming: false, serverStreaming: false },
  "/t.S/Hang": { clientStreaming: false, serverStreaming: false },
  "/t.S/Sink": { clientStreaming: true, serverStreaming: false },
};
const hanging: GrpcServerCall[] = [];
function handle(call: GrpcServerCall): void {
  if (call.path === "/t.S/Hang" || call.path === "/t.S/Sink") {
    hanging.push(call);
    return;
  }
  call.end(Status.OK, "", undefined, Buffer.concat([Buffer.from("echo:"), call.request!]));
}

/** Why the server ended each connection (newest last). */
const connectionErrors: (Error | undefined)[] = [];
const server = new GrpcServer({
  maxMessageBytes: 1 << 20,
  maxConcurrentStreams: 4,
  lookup: (p) => SHAPES[p],
  onCall: handle,
  onConnectionClose: (e) => connectionErrors.push(e),
});
let port = 0;
beforeAll(async () => {
  port = await server.listen("127.0.0.1", 0);
});
afterAll(() => server.forceStop());

const grpcMsg = (s: string) => {
  const p = Buffer.from(s);
  return Buffer.concat([Buffer.from([0]), u32(p.length), p]);
};
const requestHeaders = (path: string, extra: [string, string][] = []) =>
  Buffer.from(encodeHeaders([
    [":method", "POST"],
    [":scheme", "http"],
    [":path", path],
    [":authority", "x"],
    ["content-type", "application/grpc"],
    ["te", "trailers"],
    ...extra,
  ]));

/** A raw HTTP/2 client connection that records every frame the server sends. */
class Raw {
  frames: Frame[] = [];
  closed = false;
  private buf = Buffer.alloc(0);
  private waiters: (() => void)[] = [];
  readonly hpack: HpackDecoder;
  /** The decoded header list of each HEADERS frame. */
  readonly headers = new Map<Frame, HeaderMap>();
  constructor(
    private readonly sock: Socket<undefined>,
    tableSize = 4096,
  ) {
    this.hpack = new HpackDecoder(tableSize, 1 << 20);
  }

  /** `tableSize`: the SETTINGS_HEADER_TABLE_SIZE to announce (the default, 4096, when not given). */
  static async open(prefaceAndSettings = true, toPort = port, tableSize?: number): Promise<Raw> {
    let raw!: Raw;
    const sock = await Bun.connect({
      hostname: "127.0.0.1",
      port: toPort,
      socket: {
        data: (_s, d) => raw.onData(d),
        close: () => {
          raw.closed = true;
          raw.wake();
        },
      },
    });
    raw = new Raw(sock, tableSize);
    if (prefaceAndSettings) raw.send(PREFACE, SETTINGS(tableSize === undefined ? [] : [[1, tableSize]]));
    return raw;
  }

  send(...parts: Buffer[]): void {
    this.sock.write(Buffer.concat(parts));
  }

  /** Writes what the socket takes now; the bytes it did not take. */
  trySend(data: Buffer): number {
    const n = this.sock.write(data);
    return n < 0 ? 0 : n;
  }

  /** PING ACKs are counted, not kept (for floods). */
  pingAcks = 0;
  countPingAcks = false;
  pauseReading(): void {
    this.sock.pause();
  }
  resumeReading(): void {
    this.sock.resume();
  }

  private onData(d: Buffer): void {
    this.buf = Buffer.concat([this.buf, d]);
    while (this.buf.length >= 9) {
      const len = this.buf.readUIntBE(0, 3);
      if (this.buf.length < 9 + len) break;
      if (this.buf[3] === 6 && this.buf[4] === 1 && this.countPingAcks) {
        this.pingAcks++;
        this.buf = this.buf.subarray(9 + len);
        continue;
      }
      const f = { type: this.buf[3]!, flags: this.buf[4]!, stream: this.buf.readUInt32BE(5) & 0x7fffffff, payload: Buffer.from(this.buf.subarray(9, 9 + len)) };
      // Every header block decoded as it arrives, in order: the server's encoder indexes, so the
      // decoder's table must see each block once (the server's blocks fit in one frame).
      if (f.type === 1) this.headers.set(f, this.hpack.decode(f.payload).headers);
      this.frames.push(f);
      this.buf = this.buf.subarray(9 + len);
    }
    this.wake();
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  /** Resolves with the first frame matching, waiting for it (bounded by the test's timeout). */
  async until(pred: (f: Frame) => boolean, what: string): Promise<Frame> {
    for (;;) {
      const f = this.frames.find(pred);
      if (f) return f;
      if (this.closed) throw new Error(`connection closed before ${what}; got ${JSON.stringify(this.frames.slice(0, 20).map((x) => [x.type, x.flags, x.stream]))} (${this.frames.length} frames)`);
      await new Promise<void>((r) => this.waiters.push(r));
    }
  }

  async goaway(): Promise<{ last: number; code: number }> {
    const f = await this.until((x) => x.type === 7, "GOAWAY");
    return { last: f.payload.readUInt32BE(0), code: f.payload.readUInt32BE(4) };
  }

  async closedByPeer(): Promise<void> {
    while (!this.closed) await new Promise<void>((r) => this.waiters.push(r));
  }

  /** The gRPC status of stream `sid` (trailers or trailers-only). */
  async status(sid: number): Promise<{ code: number; data: Buffer }> {
    await this.until((x) => x.stream === sid && x.type === 1 && (x.flags & 1) === 1, `stream ${sid}'s trailers`);
    let code = -1;
    const data: Buffer[] = [];
    for (const f of this.frames) {
      if (f.stream !== sid) continue;
      if (f.type === 0) data.push(f.payload);
      if (f.type === 1) {
        const h = this.headers.get(f)!;
        if (h["grpc-status"] !== undefined) code = Number(h["grpc-status"]);
      }
    }
    return { code, data: Buffer.concat(data) };
  }

  private pings = 0;
  /** A PING round trip: the server has handled everything sent before it. */
  async barrier(): Promise<void> {
    const tag = Buffer.alloc(8);
    tag.writeUInt32BE(++this.pings, 4);
    this.send(frame(6, 0, 0, tag));
    await this.until((f) => f.type === 6 && f.flags === 1 && f.payload.equals(tag), "PING ACK");
  }

  close(): void {
    this.sock.end();
  }
}

async function stillServing(): Promise<void> {
  const c = await Raw.open();
  try {
    c.send(frame(1, 4, 1, requestHeaders("/t.S/Unary")), frame(0, 1, 1, grpcMsg("ok")));
    const r = await c.status(1);
    expect(r.code).toBe(Status.OK);
    expect(r.data.subarray(5).toString()).toBe("echo:ok");
  } finally {
    c.close();
  }
}

describe("own HTTP/2 framing: HPACK", () => {
  test("a client announcing a small header table: the first response block sets it, every block decodes in step", async () => {
    const c = await Raw.open(true, port, 64);
    try {
      for (let i = 0; i < 6; i++) {
        const sid = 1 + 2 * i;
        c.send(frame(1, 4, sid, requestHeaders("/t.S/Unary")), frame(0, 1, sid, grpcMsg(`m${i}`)));
        const r = await c.status(sid);
        expect(r.code).toBe(Status.OK);
        expect(r.data.subarray(5).toString()).toBe(`echo:m${i}`);
      }
      const blocks = c.frames.filter((f) => f.type === 1);
      expect([...blocks[0]!.payload.subarray(0, 2)]).toEqual([0x3f, 64 - 31]); // size update: 64
      for (const f of blocks.slice(1)) expect(f.payload[0]! & 0xe0).not.toBe(0x20);
      for (const f of blocks) {
        const h = c.headers.get(f)!;
        if (h[":status"] !== undefined) expect(h["content-type"]).toBe("application/grpc");
        else expect(h["grpc-status"]).toBe("0");
      }
    } finally {
      c.close();
    }
  });
});

describe("own HTTP/2 framing: connection errors end with GOAWAY and the right code", () => {
  const cases: [string, (c: Raw) => void, number, boolean][] = [
    ["not an HTTP/2 preface", (c) => c.send(Buffer.from("GET / HTTP/1.1\r\nHost: x\r\n\r\n")), ErrorCode.PROTOCOL_ERROR, false],
    ["first frame not SETTINGS", (c) => c.send(PREFACE, frame(6, 0, 0, Buffer.alloc(8))), ErrorCode.PROTOCOL_ERROR, false],
    ["a frame over 16 KiB", (c) => c.send(frame(0, 0, 1, Buffer.alloc(16385))), ErrorCode.FRAME_SIZE_ERROR, true],
    ["a frame header announcing 16 MiB", (c) => c.send(Buffer.from([0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 1])), ErrorCode.FRAME_SIZE_ERROR, true],
    ["SETTINGS of 5 bytes", (c) => c.send(frame(4, 0, 0, Buffer.alloc(5))), ErrorCode.FRAME_SIZE_ERROR, true],
    ["SETTINGS on a stream", (c) => c.send(frame(4, 0, 1)), ErrorCode.PROTOCOL_ERROR, true],
    ["SETTINGS_INITIAL_WINDOW_SIZE over 2^31-1", (c) => c.send(SETTINGS([[4, 0x80000000]])), ErrorCode.FLOW_CONTROL_ERROR, true],
    ["SETTINGS_MAX_FRAME_SIZE under 16384", (c) => c.send(SETTINGS([[5, 100]])), ErrorCode.PROTOCOL_ERROR, true],
    ["PING of 7 bytes", (c) => c.send(frame(6, 0, 0, Buffer.alloc(7))), ErrorCode.FRAME_SIZE_ERROR, true],
    ["DATA on stream 0", (c) => c.send(frame(0, 0, 0, Buffer.alloc(3))), ErrorCode.PROTOCOL_ERROR, true],
    ["DATA on an idle stream", (c) => c.send(frame(0, 0, 5, Buffer.alloc(3))), ErrorCode.PROTOCOL_ERROR, true],
    ["HEADERS with HPACK index 0", (c) => c.send(frame(1, 5, 1, [0x80])), ErrorCode.COMPRESSION_ERROR, true],
    ["HEADERS with a Huffman string holding EOS", (c) => c.send(frame(1, 5, 1, [0x00, 0x85, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00])), ErrorCode.COMPRESSION_ERROR, true],
    ["HEADERS on an even stream", (c) => c.send(frame(1, 5, 2, requestHeaders("/t.S/Unary"))), ErrorCode.PROTOCOL_ERROR, true],
    ["CONTINUATION without HEADERS", (c) => c.send(frame(9, 4, 1, requestHeaders("/t.S/Unary"))), ErrorCode.PROTOCOL_ERROR, true],
    ["another frame between HEADERS and CONTINUATION", (c) => c.send(frame(1, 0, 1, requestHeaders("/t.S/Unary")), frame(6, 0, 0, Buffer.alloc(8))), ErrorCode.PROTOCOL_ERROR, true],
    ["PUSH_PROMISE from a client", (c) => c.send(frame(5, 4, 1, Buffer.alloc(4))), ErrorCode.PROTOCOL_ERROR, true],
    ["WINDOW_UPDATE of 0 on the connection", (c) => c.send(frame(8, 0, 0, u32(0))), ErrorCode.PROTOCOL_ERROR, true],
    ["connection window over 2^31-1", (c) => c.send(frame(8, 0, 0, u32(0x7fffffff))), ErrorCode.FLOW_CONTROL_ERROR, true],
    ["RST_STREAM on an idle stream", (c) => c.send(frame(3, 0, 7, u32(8))), ErrorCode.PROTOCOL_ERROR, true],
    ["RST_STREAM of 3 bytes", (c) => c.send(frame(3, 0, 1, Buffer.alloc(3))), ErrorCode.FRAME_SIZE_ERROR, true],
    [
      "a CONTINUATION flood past the header list size",
      (c) => {
        c.send(frame(1, 0, 1, requestHeaders("/t.S/Unary")));
        for (let i = 0; i < 8; i++) c.send(frame(9, 0, 1, Buffer.alloc(16384, 0x40)));
      },
      ErrorCode.ENHANCE_YOUR_CALM,
      true,
    ],
  ];
  for (const [what, send, code, preface] of cases) {
    test(`${what} → GOAWAY ${Object.entries(ErrorCode).find(([, v]) => v === code)![0]}, connection closed; others served`, async () => {
      const c = await Raw.open(preface);
      send(c);
      const g = await c.goaway();
      expect(g.code).toBe(code);
      await c.closedByPeer();
      await stillServing();
    });
  }
});

describe("own HTTP/2 framing: what a connection survives", () => {
  test("grpc-timeout: a request that never comes ends DEADLINE_EXCEEDED; one in the same write, or a later one in time, is served", async () => {
    const raw = await Raw.open();
    const t0 = performance.now();
    // Headers only (the timer is armed after this read), headers + request in one write, and headers
    // now with the request in a later write.
    raw.send(frame(1, 4, 1, requestHeaders("/t.S/Unary", [["grpc-timeout", "150m"]])));
    raw.send(frame(1, 4, 3, requestHeaders("/t.S/Unary", [["grpc-timeout", "150m"]])), frame(0, 1, 3, grpcMsg("same-read")));
    raw.send(frame(1, 4, 5, requestHeaders("/t.S/Unary", [["grpc-timeout", "2S"]])));
    await raw.barrier();
    await Bun.sleep(20);
    raw.send(frame(0, 1, 5, grpcMsg("later")));
    const served = await raw.status(3);
    expect(served.code).toBe(Status.OK);
    expect(served.data.subarray(5).toString()).toBe("echo:same-read");
    const later = await raw.status(5);
    expect(later.code).toBe(Status.OK);
    expect(later.data.subarray(5).toString()).toBe("echo:later");
    const st = await raw.status(1);
    expect(st.code).toBe(Status.DEADLINE_EXCEEDED);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(140);
    // The stream the client left open is reset (NO_ERROR) once the status is out.
    await raw.until((f) => f.type === 3 && f.stream === 1, "RST_STREAM on stream 1");
    raw.close();
  });

  test("PING is answered with the same 8 bytes; SETTINGS is acknowledged", async () => {
    const c = await Raw.open();
    try {
      c.send(frame(6, 0, 0, Buffer.from("12345678")));
      const ack = await c.until((f) => f.type === 6 && f.flags === 1, "PING ACK");
      expect(ack.payload.toString()).toBe("12345678");
      await c.until((f) => f.type === 4 && f.flags === 1, "SETTINGS ACK");
      const settings = await c.until((f) => f.type === 4 && f.flags === 0, "SETTINGS");
      const values = new Map<number, number>();
      for (let i = 0; i < settings.payload.length; i += 6) values.set(settings.payload.readUInt16BE(i), settings.payload.readUInt32BE(i + 2));
      expect(values.get(3)).toBe(4); // SETTINGS_MAX_CONCURRENT_STREAMS
      expect(values.get(2)).toBe(0); // no push
    } finally {
      c.close();
    }
  });

  test("Huffman strings, the dynamic table, CONTINUATION and padding, as grpc clients send them", async () => {
    const c = await Raw.open();
    try {
      // First request: literal with incremental indexing of :path and a custom header, Huffman-coded.
      const huff = (s: string) => {
        const h = huffmanEncode(s);
        return Buffer.concat([Buffer.from([0x80 | h.length]), h]);
      };
      const block1 = Buffer.concat([
        Buffer.from([0x83, 0x86]), // :method POST, :scheme http
        Buffer.from([0x44]), // :path, incremental indexing, name index 4
        huff("/t.S/Unary"),
        Buffer.from([0x41]), // :authority, indexed name
        huff("x"),
        Buffer.from([0x40]), // new name, incremental indexing
        huff("content-type"),
        huff("application/grpc"),
      ]);
      // Split across HEADERS (padded) + CONTINUATION.
      const padded = Buffer.concat([Buffer.from([3]), block1.subarray(0, 5), Buffer.alloc(3)]);
      c.send(frame(1, 0x8, 1, padded), frame(9, 4, 1, block1.subarray(5)), frame(0, 1, 1, grpcMsg("one")));
      expect((await c.status(1)).code).toBe(Status.OK);
      // Second request: everything from the dynamic table (62 = content-type, 63 = :authority, 64 = :path).
      c.send(frame(1, 4, 3, Buffer.from([0x83, 0x86, 0xc0, 0xbf, 0xbe])), frame(0, 0x9, 3, Buffer.concat([Buffer.from([2]), grpcMsg("two"), Buffer.alloc(2)])));
      const r = await c.status(3);
      expect(r.code).toBe(Status.OK);
      expect(r.data.subarray(5).toString()).toBe("echo:two");
      // Third: one HEADERS frame, padded and with priority (the block sits between them in the frame).
      const block3 = Buffer.from([0x83, 0x86, 0xc0, 0xbf, 0xbe]);
      c.send(frame(1, 0x8 | 0x20 | 0x4, 5, Buffer.concat([Buffer.from([4]), Buffer.alloc(5), block3, Buffer.alloc(4, 0xff)])), frame(0, 1, 5, grpcMsg("three")));
      const r3 = await c.status(5);
      expect(r3.code).toBe(Status.OK);
      expect(r3.data.subarray(5).toString()).toBe("echo:three");
    } finally {
      c.close();
    }
  });

  test("streams beyond SETTINGS_MAX_CONCURRENT_STREAMS are refused; the connection goes on", async () => {
    const c = await Raw.open();
    const before = hanging.length;
    try {
      for (let i = 0; i < 5; i++) c.send(frame(1, 4, 1 + i * 2, requestHeaders("/t.S/Hang")), frame(0, 1, 1 + i * 2, grpcMsg("h")));
      const rst = await c.until((f) => f.type === 3, "RST_STREAM");
      expect(rst.stream).toBe(9);
      expect(rst.payload.readUInt32BE(0)).toBe(ErrorCode.REFUSED_STREAM);
      await c.barrier();
      expect(hanging.length).toBe(before + 4);
    } finally {
      for (const h of hanging.splice(before)) h.end(Status.OK, "", undefined, Buffer.from("late"));
      c.close();
    }
    await stillServing();
  });

  test("a malformed header block (upper-case name) resets its stream only", async () => {
    const c = await Raw.open();
    try {
      c.send(frame(1, 5, 1, requestHeaders("/t.S/Unary", [["X-Upper", "1"]])));
      const rst = await c.until((f) => f.type === 3 && f.stream === 1, "RST_STREAM");
      expect(rst.payload.readUInt32BE(0)).toBe(ErrorCode.PROTOCOL_ERROR);
      c.send(frame(1, 4, 3, requestHeaders("/t.S/Unary")), frame(0, 1, 3, grpcMsg("after")));
      expect((await c.status(3)).code).toBe(Status.OK);
    } finally {
      c.close();
    }
  });

  test("a header list over the announced size: RESOURCE_EXHAUSTED on that stream", async () => {
    const c = await Raw.open();
    try {
      const big = requestHeaders("/t.S/Unary", [["x-big", "a".repeat(66000)]]);
      const parts = [frame(1, 0, 1, big.subarray(0, 16000))];
      for (let off = 16000; off < big.length; off += 16000) parts.push(frame(9, off + 16000 >= big.length ? 4 : 0, 1, big.subarray(off, off + 16000)));
      c.send(...parts, frame(0, 1, 1, grpcMsg("x")));
      expect((await c.status(1)).code).toBe(Status.RESOURCE_EXHAUSTED);
    } finally {
      c.close();
    }
  });

  test("flow control: the response waits for the client's stream window", async () => {
    const c = await Raw.open(false);
    try {
      // Initial stream window 0: the server may send HEADERS but no DATA until WINDOW_UPDATE.
      c.send(PREFACE, SETTINGS([[4, 0]]), frame(1, 4, 1, requestHeaders("/t.S/Unary")), frame(0, 1, 1, grpcMsg("windowed")));
      await c.until((f) => f.type === 1 && f.stream === 1, "response HEADERS");
      // A PING round trip proves the server has had its turn without sending DATA.
      c.send(frame(6, 0, 0, Buffer.from("barrier!")));
      await c.until((f) => f.type === 6 && f.flags === 1, "PING ACK");
      expect(c.frames.some((f) => f.type === 0 && f.stream === 1)).toBe(false);
      c.send(frame(8, 0, 1, u32(5)));
      const first = await c.until((f) => f.type === 0 && f.stream === 1, "first DATA");
      expect(first.payload.length).toBe(5);
      c.send(frame(8, 0, 1, u32(100)));
      const r = await c.status(1);
      expect(r.code).toBe(Status.OK);
      expect(r.data.subarray(5).toString()).toBe("echo:windowed");
    } finally {
      c.close();
    }
  });

  test("a client that ignores flow control on a stream whose reader stopped gets RST_STREAM FLOW_CONTROL_ERROR", async () => {
    const c = await Raw.open();
    const before = hanging.length;
    try {
      // Sink never reads: its request queue fills (16 messages), the stream pauses, no more window.
      const many = Buffer.concat(Array.from({ length: 20 }, () => grpcMsg("m")));
      c.send(frame(1, 4, 1, requestHeaders("/t.S/Sink")), frame(0, 0, 1, many));
      await c.barrier();
      expect(hanging.length).toBe(before + 1);
      // 1 MiB and a bit more, in 16 KiB frames: past the stream's 1 MiB window. (Each frame is one
      // message's prefix announcing 16,379 bytes, and its body.)
      const chunk = grpcMsg("x".repeat(16379));
      const frames: Buffer[] = [];
      for (let i = 0; i < 65; i++) frames.push(frame(0, 0, 1, chunk));
      c.send(...frames);
      const rst = await c.until((f) => f.type === 3 && f.stream === 1, "RST_STREAM");
      expect(rst.payload.readUInt32BE(0)).toBe(ErrorCode.FLOW_CONTROL_ERROR);
      // The connection goes on.
      c.send(frame(1, 4, 3, requestHeaders("/t.S/Unary")), frame(0, 1, 3, grpcMsg("still")));
      expect((await c.status(3)).code).toBe(Status.OK);
    } finally {
      hanging.splice(before);
      c.close();
    }
  });

  test("thousands of empty request messages for a reader that stopped: RESOURCE_EXHAUSTED, connection goes on", async () => {
    const c = await Raw.open();
    const before = hanging.length;
    try {
      c.send(frame(1, 4, 1, requestHeaders("/t.S/Sink")), frame(0, 0, 1, Buffer.alloc(16380)), frame(0, 0, 1, Buffer.alloc(16380)));
      expect((await c.status(1)).code).toBe(Status.RESOURCE_EXHAUSTED);
      c.send(frame(1, 4, 3, requestHeaders("/t.S/Unary")), frame(0, 1, 3, grpcMsg("still")));
      expect((await c.status(3)).code).toBe(Status.OK);
    } finally {
      hanging.splice(before);
      c.close();
    }
  });

  test("a client RST_STREAM cancels its call; DATA after it is ignored", async () => {
    const c = await Raw.open();
    const before = hanging.length;
    try {
      c.send(frame(1, 4, 1, requestHeaders("/t.S/Hang")), frame(0, 1, 1, grpcMsg("h")));
      await c.barrier();
      const call = hanging[before]!;
      let reason = "";
      call.onCancel = (r) => (reason = r);
      c.send(frame(3, 0, 1, u32(ErrorCode.CANCEL)), frame(0, 0, 1, Buffer.alloc(4)));
      await c.barrier();
      expect(reason).toContain("reset");
      expect(call.cancelled).toBe(true);
    } finally {
      hanging.splice(before);
      c.close();
    }
    await stillServing();
  });
});

describe("own HTTP/2 framing: floods end the connection with ENHANCE_YOUR_CALM, other connections go on", () => {
  const headersAndRst = (from: number, n: number) => {
    const parts: Buffer[] = [];
    const h = requestHeaders("/t.S/Hang");
    for (let i = 0; i < n; i++) {
      const sid = from + 2 * i;
      parts.push(frame(1, 4, sid, h), frame(3, 0, sid, u32(ErrorCode.CANCEL)));
    }
    return Buffer.concat(parts);
  };
  /** A connection opened before the flood serves a call after it. */
  async function bystanderServed(other: Raw, sid: number): Promise<void> {
    other.send(frame(1, 4, sid, requestHeaders("/t.S/Unary")), frame(0, 1, sid, grpcMsg("still")));
    const r = await other.status(sid);
    expect(r.code).toBe(Status.OK);
    expect(r.data.subarray(5).toString()).toBe("echo:still");
  }

  test(`rapid reset: ${RESET_BURST + 100} streams opened and reset at once → GOAWAY ENHANCE_YOUR_CALM`, async () => {
    const other = await Raw.open();
    const c = await Raw.open();
    const before = hanging.length;
    try {
      await other.barrier();
      c.send(headersAndRst(1, RESET_BURST + 100));
      const g = await c.goaway();
      expect(g.code).toBe(ErrorCode.ENHANCE_YOUR_CALM);
      // It stopped near the limit: the streams after it were never handed to the server's calls.
      expect(g.last).toBeLessThan(2 * (RESET_BURST + 100));
      await c.closedByPeer();
      await bystanderServed(other, 1);
    } finally {
      hanging.splice(before);
      c.close();
      other.close();
    }
  });

  test("a client that cancels streams within the bucket keeps its connection", async () => {
    const c = await Raw.open();
    const before = hanging.length;
    try {
      c.send(headersAndRst(1, RESET_BURST / 2));
      await c.barrier();
      expect(c.frames.some((f) => f.type === 7)).toBe(false);
      await bystanderServed(c, RESET_BURST + 1);
    } finally {
      hanging.splice(before);
      c.close();
    }
  });

  test("streams opened past SETTINGS_MAX_CONCURRENT_STREAMS, refused over and over → GOAWAY ENHANCE_YOUR_CALM", async () => {
    const other = await Raw.open();
    const c = await Raw.open();
    const before = hanging.length;
    try {
      await other.barrier();
      const h = requestHeaders("/t.S/Hang");
      const parts: Buffer[] = [];
      for (let i = 0; i < RESET_BURST + 100; i++) parts.push(frame(1, 4, 1 + 2 * i, h));
      c.send(Buffer.concat(parts));
      const g = await c.goaway();
      expect(g.code).toBe(ErrorCode.ENHANCE_YOUR_CALM);
      await c.closedByPeer();
      await bystanderServed(other, 1);
    } finally {
      hanging.splice(before);
      c.close();
      other.close();
    }
  });

  test("empty DATA frames in a row → GOAWAY ENHANCE_YOUR_CALM", async () => {
    const other = await Raw.open();
    const c = await Raw.open();
    const before = hanging.length;
    try {
      const parts = [frame(1, 4, 1, requestHeaders("/t.S/Sink"))];
      for (let i = 0; i <= MAX_EMPTY_FRAMES; i++) parts.push(frame(0, 0, 1));
      c.send(Buffer.concat(parts));
      expect((await c.goaway()).code).toBe(ErrorCode.ENHANCE_YOUR_CALM);
      await c.closedByPeer();
      await bystanderServed(other, 1);
    } finally {
      hanging.splice(before);
      c.close();
      other.close();
    }
  });

  test("empty CONTINUATION frames in a row → GOAWAY ENHANCE_YOUR_CALM", async () => {
    const other = await Raw.open();
    const c = await Raw.open();
    try {
      const parts = [frame(1, 0, 1, requestHeaders("/t.S/Unary"))];
      for (let i = 0; i <= MAX_EMPTY_FRAMES; i++) parts.push(frame(9, 0, 1));
      c.send(Buffer.concat(parts));
      expect((await c.goaway()).code).toBe(ErrorCode.ENHANCE_YOUR_CALM);
      await c.closedByPeer();
      await bystanderServed(other, 1);
    } finally {
      c.close();
      other.close();
    }
  });

  for (const [what, one] of [
    ["PING", frame(6, 0, 0, Buffer.alloc(8))],
    ["SETTINGS", SETTINGS([[4, 65535]])],
  ] as const) {
    test(`a ${what} flood from a peer that does not read the ACKs → GOAWAY ENHANCE_YOUR_CALM`, async () => {
      const other = await Raw.open();
      const c = await Raw.open();
      try {
        await c.barrier();
        c.countPingAcks = true;
        c.pauseReading();
        // Keep sending until the server ends the connection (its ACKs back up in the socket buffers):
        // the condition is the server's own account of why it closed a connection.
        const batch = Buffer.concat(Array.from({ length: 4096 }, () => one));
        const floodEnded = () => connectionErrors.some((e) => e?.message.includes("control frames queued"));
        connectionErrors.length = 0;
        const deadline = Date.now() + 30_000;
        let sent = 0;
        while (!floodEnded() && Date.now() < deadline) {
          sent += c.trySend(batch);
          await Bun.sleep(0); // yield to the event loop so the server runs (the loop waits on floodEnded)
        }
        // The GOAWAY sits behind the ACKs the peer never read, so it may not arrive: the server's own
        // account of why it ended the connection is the check.
        c.resumeReading();
        await c.closedByPeer();
        const why = connectionErrors.find((e) => e?.message.includes("control frames queued")) as ConnectionError | undefined;
        expect(why?.code).toBe(ErrorCode.ENHANCE_YOUR_CALM);
        const g = c.frames.find((f) => f.type === 7);
        if (g) expect(g.payload.readUInt32BE(4)).toBe(ErrorCode.ENHANCE_YOUR_CALM);
        expect(sent).toBeGreaterThan(0);
        await bystanderServed(other, 1);
      } finally {
        c.close();
        other.close();
      }
    }, 60_000);
  }
});

describe("own HTTP/2 framing: idle connections and keepalive", () => {
  test("server: a connection without streams for idleTimeoutMs gets GOAWAY NO_ERROR and is closed; one with a stream open is kept", async () => {
    const held: GrpcServerCall[] = [];
    const idleServer = new GrpcServer({
      maxMessageBytes: 1 << 20,
      maxConcurrentStreams: 8,
      lookup: (p) => SHAPES[p],
      onCall: (call) => (call.path === "/t.S/Hang" ? held.push(call) : handle(call)),
      idleTimeoutMs: 300,
    });
    const p = await idleServer.listen("127.0.0.1", 0);
    const idle = await Raw.open(true, p);
    const busy = await Raw.open(true, p);
    try {
      idle.send(frame(1, 4, 1, requestHeaders("/t.S/Unary")), frame(0, 1, 1, grpcMsg("x")));
      expect((await idle.status(1)).code).toBe(Status.OK);
      busy.send(frame(1, 4, 1, requestHeaders("/t.S/Hang")), frame(0, 1, 1, grpcMsg("h")));
      await busy.barrier();
      const g = await idle.goaway();
      expect(g.code).toBe(ErrorCode.NO_ERROR);
      expect(g.last).toBe(1);
      await idle.closedByPeer();
      // Same age, same sweep: the one with a call open was not touched, and still answers.
      expect(busy.frames.some((f) => f.type === 7)).toBe(false);
      await busy.barrier();
      expect(busy.closed).toBe(false);
    } finally {
      idle.close();
      busy.close();
      idleServer.forceStop();
    }
  });

  test("client: an upstream that stops answering (no PING ACK) is dropped by the keepalive; the call fails UNAVAILABLE", async () => {
    const silent = Bun.listen<undefined>({
      hostname: "127.0.0.1",
      port: 0,
      socket: {
        // A server that says SETTINGS once and then never answers anything (a half-dead peer).
        open: (sock) => void sock.write(SETTINGS()),
        data: () => {},
      },
    });
    const client = new GrpcClient({ address: `127.0.0.1:${silent.port}`, maxMessageBytes: 1 << 20, keepaliveMs: 100, keepaliveTimeoutMs: 200 });
    try {
      const started = Date.now();
      const r = await new Promise<{ code: number; details: string }>((resolve) =>
        client.start(baseRequestHeaders("/t.S/Unary"), Date.now() + 30_000, { onHeaders() {}, onMessage() {}, onStatus: (code, details) => resolve({ code, details }) }, Buffer.from("x")),
      );
      expect(r.code).toBe(Status.UNAVAILABLE);
      expect(r.details).toContain("keepalive");
      expect(Date.now() - started).toBeLessThan(10_000);
    } finally {
      client.close();
      silent.stop(true);
    }
  });

  test("client: a live upstream answers the keepalive PINGs and keeps its connection", async () => {
    const client = new GrpcClient({ address: `127.0.0.1:${port}`, maxMessageBytes: 1 << 20, keepaliveMs: 30, keepaliveTimeoutMs: 1000 });
    const one = () =>
      new Promise<{ code: number }>((resolve) =>
        client.start(baseRequestHeaders("/t.S/Unary"), Date.now() + 10_000, { onHeaders() {}, onMessage() {}, onStatus: (code) => resolve({ code }) }, Buffer.from("x")),
      );
    try {
      expect((await one()).code).toBe(Status.OK);
      const session = (client as unknown as { own: { reads: number } }).own;
      // Wait (by condition) until several keepalive round trips have happened on the idle connection.
      const readsAfterCall = session.reads;
      const deadline = Date.now() + 10_000;
      while (session.reads < readsAfterCall + 3 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      expect(session.reads).toBeGreaterThanOrEqual(readsAfterCall + 3);
      expect((await one()).code).toBe(Status.OK);
      expect((client as unknown as { own: unknown }).own).toBe(session);
    } finally {
      client.close();
    }
  });
});

describe("own HTTP/2 framing on the client side", () => {
  const unary = (client: GrpcClient, path: string, body: string) =>
    new Promise<{ code: number; details: string; messages: string[] }>((resolve) => {
      const messages: string[] = [];
      client.start(baseRequestHeaders(path), Date.now() + 10_000, {
        onHeaders() {},
        onMessage: (m) => messages.push(m.toString()),
        onStatus: (code, details) => resolve({ code, details, messages }),
      }, Buffer.from(body));
    });

  test("a server that sends garbage: the call fails UNAVAILABLE, the next call gets a new connection", async () => {
    let connections = 0;
    const bad = Bun.listen<undefined>({
      hostname: "127.0.0.1",
      port: 0,
      socket: {
        open(sock) {
          connections++;
          // A valid SETTINGS, then a frame header announcing 16 MiB.
          sock.write(Buffer.concat([SETTINGS(), Buffer.from([0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0])]));
        },
        data() {},
      },
    });
    const client = new GrpcClient({ address: `127.0.0.1:${bad.port}`, maxMessageBytes: 1 << 20 });
    try {
      const r1 = await unary(client, "/t.S/Unary", "a");
      expect(r1.code).toBe(Status.UNAVAILABLE);
      expect(r1.details).toContain(`127.0.0.1:${bad.port}`);
      const r2 = await unary(client, "/t.S/Unary", "b");
      expect(r2.code).toBe(Status.UNAVAILABLE);
      expect(connections).toBe(2);
    } finally {
      client.close();
      bad.stop(true);
    }
  });

  test("at the server's SETTINGS_MAX_CONCURRENT_STREAMS, new calls go on a new connection", async () => {
    const held: GrpcServerCall[] = [];
    const one = new GrpcServer({
      maxMessageBytes: 1 << 20,
      maxConcurrentStreams: 1,
      lookup: (p) => SHAPES[p],
      onCall: (call) => (call.path === "/t.S/Hang" ? void held.push(call) : call.end(Status.OK, "", undefined, call.request!)),
    });
    const p = await one.listen("127.0.0.1", 0);
    const client = new GrpcClient({ address: `127.0.0.1:${p}`, maxMessageBytes: 1 << 20 });
    try {
      expect((await unary(client, "/t.S/Unary", "first")).code).toBe(Status.OK); // SETTINGS known now
      const hung = unary(client, "/t.S/Hang", "h");
      const second = await unary(client, "/t.S/Unary", "second");
      expect(second).toEqual({ code: Status.OK, details: "", messages: ["second"] });
      expect(held.length).toBe(1);
      held[0]!.end(Status.OK, "", undefined, Buffer.from("late"));
      expect((await hung).messages).toEqual(["late"]);
    } finally {
      client.close();
      one.forceStop();
    }
  });

  test("a grpc-js-style drain: GOAWAY from the server lets the call in flight finish; the next call reconnects", async () => {
    const held: GrpcServerCall[] = [];
    const s = new GrpcServer({
      maxMessageBytes: 1 << 20,
      maxConcurrentStreams: 10,
      lookup: (p) => SHAPES[p],
      onCall: (call) => (call.path === "/t.S/Hang" ? void held.push(call) : call.end(Status.OK, "", undefined, call.request!)),
    });
    const p = await s.listen("127.0.0.1", 0);
    const client = new GrpcClient({ address: `127.0.0.1:${p}`, maxMessageBytes: 1 << 20 });
    try {
      const hung = unary(client, "/t.S/Hang", "h");
      while (held.length === 0) expect((await unary(client, "/t.S/Unary", "tick")).code).toBe(Status.OK);
      const drained = s.drain();
      // The server refuses new calls while draining; the one in flight completes.
      held[0]!.end(Status.OK, "", undefined, Buffer.from("done"));
      expect((await hung).messages).toEqual(["done"]);
      await drained;
    } finally {
      client.close();
      s.forceStop();
    }
  });
});

describe("own HTTP/2 framing over Bun's TLS sockets (mTLS)", () => {
  let dir = "";
  let other = "";
  const material = (d: string, pod: string) => ({
    ca: readFileSync(join(d, "ca.pem")),
    cert: readFileSync(join(d, `${pod}.pem`)),
    key: readFileSync(join(d, `${pod}-key.pem`)),
  });
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "rpal-mesh-h2tls-"));
    other = mkdtempSync(join(tmpdir(), "rpal-mesh-h2tls-other-"));
    await issueCertificates({ dir, pods: ["srv", "cli"], sans: [], days: 1, newCa: false });
    await issueCertificates({ dir: other, pods: ["cli"], sans: [], days: 1, newCa: false });
  });
  afterAll(() => {
    rmSync(dir, { recursive: true, force: true });
    rmSync(other, { recursive: true, force: true });
  });

  const unary = (client: GrpcClient, body: string) =>
    new Promise<{ code: number; details: string; messages: string[] }>((resolve) => {
      const messages: string[] = [];
      client.start(baseRequestHeaders("/t.S/Unary"), Date.now() + 10_000, {
        onHeaders() {},
        onMessage: (m) => messages.push(m.toString()),
        onStatus: (code, details) => resolve({ code, details, messages }),
      }, Buffer.from(body));
    });

  test("both sides verify: the mesh CA's certificates are served, a foreign client or server is refused, plaintext too", async () => {
    const s = new GrpcServer({ maxMessageBytes: 1 << 20, maxConcurrentStreams: 10, lookup: (p) => SHAPES[p], onCall: handle, tls: material(dir, "srv") });
    const p = await s.listen("127.0.0.1", 0);
    const good = new GrpcClient({ address: `127.0.0.1:${p}`, maxMessageBytes: 1 << 20, tls: () => material(dir, "cli") });
    const foreignClient = new GrpcClient({ address: `127.0.0.1:${p}`, maxMessageBytes: 1 << 20, tls: () => material(other, "cli") });
    // Trusts only the other CA: must refuse our server's certificate.
    const distrustful = new GrpcClient({ address: `127.0.0.1:${p}`, maxMessageBytes: 1 << 20, tls: () => ({ ...material(dir, "cli"), ca: material(other, "cli").ca }) });
    const plain = new GrpcClient({ address: `127.0.0.1:${p}`, maxMessageBytes: 1 << 20 });
    try {
      expect(await unary(good, "secure")).toEqual({ code: Status.OK, details: "", messages: ["echo:secure"] });
      expect((await unary(foreignClient, "x")).code).toBe(Status.UNAVAILABLE);
      expect((await unary(distrustful, "x")).code).toBe(Status.UNAVAILABLE);
      expect((await unary(plain, "x")).code).toBe(Status.UNAVAILABLE);
      expect((await unary(good, "again")).messages).toEqual(["echo:again"]);
    } finally {
      for (const c of [good, foreignClient, distrustful, plain]) c.close();
      s.forceStop();
    }
  });
});
