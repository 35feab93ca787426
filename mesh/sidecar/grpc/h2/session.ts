// A minimal HTTP/2 (RFC 9113) connection for gRPC over TCP (h2c with prior knowledge) or TLS (ALPN h2) on
// Bun's own sockets (Bun.listen / Bun.connect), without node:http2's streams: frames are parsed straight out of
// the socket's chunks and handed to plain callbacks. It does what gRPC needs and refuses the rest:
// SETTINGS (+ACK), PING (+ACK), WINDOW_UPDATE flow control on the connection and on each stream,
// HEADERS + CONTINUATION (HPACK with Huffman and the dynamic table), DATA, RST_STREAM and GOAWAY;
// PRIORITY is ignored and PUSH_PROMISE refused (push is disabled). A peer that breaks the protocol gets
// GOAWAY with PROTOCOL_ERROR, FRAME_SIZE_ERROR, FLOW_CONTROL_ERROR or COMPRESSION_ERROR and the
// connection ends; a broken stream gets RST_STREAM and the others go on. Memory is bounded by what we
// announce: frame size 16 KiB, header list size, concurrent streams, and the receive windows.
import { frameMessage } from "../wire.ts";
import { type DecodeResult, type HeaderList, headerBlockScratch, HpackDecoder, HpackEncoder, HpackError } from "./hpack.ts";

export const PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "latin1");

/** ALPN protocol list in wire format (length-prefixed) for Bun's TLS sockets; the string "h2" fails. */
export const ALPN_H2 = Buffer.from([2, 0x68, 0x32]);

export const enum FrameType {
  DATA = 0,
  HEADERS = 1,
  PRIORITY = 2,
  RST_STREAM = 3,
  SETTINGS = 4,
  PUSH_PROMISE = 5,
  PING = 6,
  GOAWAY = 7,
  WINDOW_UPDATE = 8,
  CONTINUATION = 9,
}

export const ErrorCode = {
  NO_ERROR: 0,
  PROTOCOL_ERROR: 1,
  INTERNAL_ERROR: 2,
  FLOW_CONTROL_ERROR: 3,
  SETTINGS_TIMEOUT: 4,
  STREAM_CLOSED: 5,
  FRAME_SIZE_ERROR: 6,
  REFUSED_STREAM: 7,
  CANCEL: 8,
  COMPRESSION_ERROR: 9,
  CONNECT_ERROR: 10,
  ENHANCE_YOUR_CALM: 11,
  INADEQUATE_SECURITY: 12,
  HTTP_1_1_REQUIRED: 13,
} as const;

const FLAG_END_STREAM = 0x1;
const FLAG_ACK = 0x1;
const FLAG_END_HEADERS = 0x4;
const FLAG_PADDED = 0x8;
const FLAG_PRIORITY = 0x20;

const DEFAULT_WINDOW = 65535;
const MAX_WINDOW = 0x7fffffff;
/** The largest frame we accept (SETTINGS_MAX_FRAME_SIZE left at its default). */
export const MAX_FRAME = 16384;
/** Our receive window per stream and for the connection (announced in SETTINGS / WINDOW_UPDATE). */
const STREAM_WINDOW = 1 << 20;
const CONN_WINDOW = 1 << 24;
/** Output queued to a peer that does not read, beyond which the connection is dropped. */
const MAX_QUEUED_OUTPUT = 64 << 20;
const OUT_CHUNK = 64 << 10;
/**
 * Rapid reset (CVE-2023-44487): streams the peer resets (RST_STREAM), streams we refuse and streams we
 * reset for its errors each take a token from a bucket per connection that holds RESET_BURST tokens and
 * refills RESET_RATE a second; an empty bucket ends the connection with GOAWAY ENHANCE_YOUR_CALM.
 * nghttp2's (and so Node's) defaults: burst 1000, 33/s. Servers only, as in nghttp2.
 */
export const RESET_BURST = 1000;
export const RESET_RATE = 33;
/**
 * PING and SETTINGS ACKs (and other control frames) queued while the peer does not read what we send:
 * past this many, GOAWAY ENHANCE_YOUR_CALM (Go's net/http2 maxQueuedControlFrames).
 */
export const MAX_QUEUED_CONTROL = 10000;
/**
 * DATA frames without payload or END_STREAM, and CONTINUATION without payload or END_HEADERS, in a row
 * (nothing useful between them): past this many, GOAWAY ENHANCE_YOUR_CALM. Envoy allows 1; gRPC peers
 * never send any, so 100 is lenient.
 */
export const MAX_EMPTY_FRAMES = 100;
/** CONTINUATION frames in one header block (a 68 KiB block needs 5 at 16 KiB). */
const MAX_CONTINUATIONS = 256;

/** The socket calls the session makes (a Bun TCP socket has them). */
export interface SocketLike {
  /** Writes data[byteOffset, byteOffset + byteLength) (the whole of it by default); returns the bytes taken. */
  write(data: Uint8Array, byteOffset?: number, byteLength?: number): number;
  end(): void;
}

export class ConnectionError extends Error {
  constructor(
    readonly code: number,
    message: string,
  ) {
    super(message);
  }
}

export interface H2SessionOptions {
  server: boolean;
  /** SETTINGS_MAX_CONCURRENT_STREAMS we announce (servers); streams beyond it are refused. */
  maxConcurrentStreams?: number;
  /** SETTINGS_MAX_HEADER_LIST_SIZE we announce; a larger header list gets its stream refused. */
  maxHeaderListSize?: number;
  /** A peer opened a stream (server): its request headers. */
  onStream?(stream: H2Stream, headers: DecodeResult, endStream: boolean): void;
  /** The peer sent GOAWAY (after it the session takes no new streams). */
  onGoaway?(code: number, lastStreamId: number): void;
  /** The connection is gone (every stream has been told). */
  onClose?(error: Error | undefined): void;
  /** Rapid-reset bucket (servers): tokens and refill per second; defaults RESET_BURST, RESET_RATE. */
  resetBurst?: number;
  resetRate?: number;
}

/**
 * What a stream's owner (the gRPC call on it) hears, in frame order: an object with methods, so that
 * a call costs no closures for them.
 */
export interface H2StreamOwner {
  streamHeaders(h: DecodeResult, endStream: boolean): void;
  /** The data is buf[start, end): a part of the socket's read, valid only during the call. */
  streamData(buf: Buffer, start: number, end: number, endStream: boolean): void;
  /** The stream ended without both sides' END_STREAM: RST_STREAM from the peer, or the connection went. */
  streamReset(code: number, connectionLost: boolean): void;
}

/** One HTTP/2 stream. */
export class H2Stream {
  owner: H2StreamOwner | undefined;
  /** The send queue drained (after write() returned false). */
  onDrain: (() => void) | undefined;

  /** @internal */ sendWindow: number;
  /** @internal */ recvWindow = STREAM_WINDOW;
  /** @internal */ unacked = 0;
  /** @internal Bytes received while paused: the connection window they use is given back on resume. */
  heldConn = 0;
  /** @internal */ queue: Buffer[] = [];
  /** @internal */ queued = 0;
  /** @internal */ queuedEnd = false;
  /** @internal */ queuedTrailers: HeaderList | undefined;
  /** @internal */ headersReceived = false;
  localEnded = false;
  remoteEnded = false;
  closed = false;
  /** The RST_STREAM code that ended it, if one did. */
  rstCode = 0;
  paused = false;

  constructor(
    readonly session: H2Session,
    readonly id: number,
  ) {
    this.sendWindow = session.peerInitialWindow;
  }

  /** Sends HEADERS (response headers, request headers, or trailers with endStream). */
  sendHeaders(list: HeaderList, endStream: boolean): void {
    if (this.closed || this.localEnded) return;
    if (endStream && this.queue.length > 0) {
      // Trailers wait behind queued DATA.
      this.queuedTrailers = list;
      this.queuedEnd = true;
      return;
    }
    this.session.writeHeaders(this, list, endStream);
    if (endStream) this.endLocal();
  }

  /** Sends DATA; false when it had to queue (flow control): wait for onDrain before writing more. */
  write(data: Buffer, endStream = false): boolean {
    if (this.closed || this.localEnded || this.queuedEnd) return false;
    if (endStream) this.queuedEnd = true;
    this.queue.push(data);
    this.queued += data.length;
    this.session.flushStream(this);
    return this.queued === 0;
  }

  /**
   * Sends one gRPC message (the 5-byte length prefix, then `message`) as DATA, like
   * write(frameMessage(message), endStream). When nothing is queued and flow control lets the whole of
   * it go as one frame, prefix and bytes are written straight into the connection's output (no framed
   * copy of the message); otherwise it is framed and queued as write() does.
   */
  writeMessage(message: Uint8Array, endStream = false): boolean {
    if (this.closed || this.localEnded || this.queuedEnd) return false;
    if (this.queue.length === 0 && this.session.writeMessageFrame(this, message, endStream)) return true;
    return this.write(frameMessage(message), endStream);
  }

  /** Half-closes with an empty DATA frame carrying END_STREAM (after any queued data). */
  end(): void {
    if (this.closed || this.localEnded || this.queuedEnd) return;
    this.write(Buffer.alloc(0), true);
  }

  /** Sends RST_STREAM and forgets the stream (no callback fires). */
  reset(code: number): void {
    if (this.closed) return;
    this.session.writeRst(this.id, code);
    this.rstCode = code;
    this.session.closeStream(this);
  }

  /** Stops granting the peer window for this stream (data in flight still arrives, bounded by it). */
  pause(): void {
    this.paused = true;
  }

  resume(): void {
    if (!this.paused) return;
    this.paused = false;
    this.session.grantStream(this);
  }

  /** @internal */
  endLocal(): void {
    this.localEnded = true;
    if (this.remoteEnded) this.session.closeStream(this);
  }
}

export class H2Session {
  readonly server: boolean;
  peerInitialWindow = DEFAULT_WINDOW;
  private peerMaxFrame = 16384;
  /** SETTINGS_MAX_CONCURRENT_STREAMS of the peer (a client beyond it has its streams refused). */
  peerMaxStreams = Infinity;
  private connSendWindow = DEFAULT_WINDOW;
  /** Received DATA bytes not yet given back with a connection WINDOW_UPDATE (the peer may not exceed CONN_WINDOW). */
  private connOutstanding = 0;
  /** Of those, the bytes consumed (not held by a paused stream): given back once half the window. */
  private connReleasable = 0;
  private readonly streams = new Map<number, H2Stream>();
  /** Streams waiting for connection window, in order. */
  private readonly blocked = new Set<H2Stream>();
  private readonly decoder: HpackDecoder;
  private readonly encoder = new HpackEncoder();
  private readonly maxStreams: number;
  private nextStreamId: number;
  /** Highest stream id the peer opened (server) — for GOAWAY. */
  private lastPeerStream = 0;
  private prefaceLeft: number;
  private buf: Buffer | undefined;
  // Header block being assembled from HEADERS + CONTINUATION.
  private hbStream = 0;
  private hbFlags = 0;
  private hbParts: Buffer[] | undefined;
  private hbSize = 0;
  private readonly maxHeaderBlock: number;
  // Output: frames gathered during one tick, written together.
  // Frames are written into one buffer, reused after each socket write.
  private obuf = Buffer.allocUnsafe(OUT_CHUNK);
  private olen = 0;
  private flushScheduled = false;
  private pendingWrite: Buffer | undefined;
  goawaySent = false;
  goawayReceived = false;
  /** Lowest stream id the peer said it did not process (client side, after GOAWAY). */
  private goawayLast = MAX_WINDOW;
  destroyed = false;
  /** Called with the payload of each PING ACK the peer sends (keepalive). */
  onPingAck: ((payload: Buffer) => void) | undefined;
  /** Socket reads so far: a keepalive sees whether anything arrived since it last looked. */
  reads = 0;
  /** Called once when the connection is gone, after onClose (timers of the owner). */
  closeHook: (() => void) | undefined;
  /** What ended the connection, once it has ended (undefined for a clean close). */
  closeError: Error | undefined;

  /** `socket` may come later (attachSocket) for a client still connecting: frames wait until then. */
  constructor(
    private socket: SocketLike | undefined,
    private readonly opts: H2SessionOptions,
  ) {
    this.server = opts.server;
    this.resetTokens = opts.resetBurst ?? RESET_BURST;
    this.maxStreams = opts.maxConcurrentStreams ?? 1000;
    const maxList = opts.maxHeaderListSize ?? 65536;
    this.decoder = new HpackDecoder(4096, maxList);
    this.maxHeaderBlock = maxList + 4096;
    this.nextStreamId = opts.server ? 2 : 1;
    this.prefaceLeft = opts.server ? PREFACE.length : 0;
    // Our SETTINGS: no push, concurrent streams, initial window, header list size; then the connection window.
    const settings: [number, number][] = [
      [0x2, 0],
      [0x4, STREAM_WINDOW],
      [0x6, maxList],
    ];
    if (opts.server) settings.push([0x3, this.maxStreams]);
    const payload = Buffer.allocUnsafe(settings.length * 6);
    settings.forEach(([id, v], i) => {
      payload.writeUInt16BE(id, i * 6);
      payload.writeUInt32BE(v, i * 6 + 2);
    });
    if (!opts.server) this.queue(PREFACE);
    this.frame(FrameType.SETTINGS, 0, 0, payload);
    this.windowUpdate(0, CONN_WINDOW - DEFAULT_WINDOW);
  }

  /** The connection is up: frames gathered meanwhile go out now. */
  attachSocket(socket: SocketLike): void {
    this.socket = socket;
    if (this.destroyed) {
      socket.end();
      return;
    }
    this.flush();
  }

  get streamCount(): number {
    return this.streams.size;
  }

  /** The highest stream id the peer opened (server): changes whenever it opens one. */
  get lastStreamId(): number {
    return this.lastPeerStream;
  }

  /** True when a new stream may be opened (client): connected, no GOAWAY either way. */
  get usable(): boolean {
    return !this.destroyed && !this.goawayReceived && !this.goawaySent && this.nextStreamId < MAX_WINDOW;
  }

  // ------------------------------------------------------------------ output

  private reserve(n: number): Buffer {
    if (this.olen + n > this.obuf.length) {
      const bigger = Buffer.allocUnsafe(Math.max(this.obuf.length * 2, this.olen + n));
      this.obuf.copy(bigger, 0, 0, this.olen);
      this.obuf = bigger;
    }
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      queueMicrotask(this.flushBound);
    }
    return this.obuf;
  }

  private readonly flushBound = () => this.flush();

  private queue(b: Uint8Array): void {
    const o = this.reserve(b.length);
    o.set(b, this.olen);
    this.olen += b.length;
  }

  private frame(type: number, flags: number, stream: number, payload?: Uint8Array): void {
    const len = payload ? payload.length : 0;
    const i = this.frameHeader(type, flags, stream, len);
    if (len) this.obuf.set(payload!, i);
    this.olen = i + len;
  }

  /** A frame whose payload is src[start, end) (copied by offsets, with no view made). */
  private frameFrom(type: number, flags: number, stream: number, src: Buffer, start: number, end: number): void {
    const len = end - start;
    const i = this.frameHeader(type, flags, stream, len);
    src.copy(this.obuf, i, start, end);
    this.olen = i + len;
  }

  /** Reserves room for a frame of `len` payload bytes, writes its 9-byte header; returns where the payload goes. */
  private frameHeader(type: number, flags: number, stream: number, len: number): number {
    const o = this.reserve(9 + len);
    let i = this.olen;
    o[i++] = len >>> 16;
    o[i++] = (len >>> 8) & 0xff;
    o[i++] = len & 0xff;
    o[i++] = type;
    o[i++] = flags;
    o[i++] = stream >>> 24;
    o[i++] = (stream >>> 16) & 0xff;
    o[i++] = (stream >>> 8) & 0xff;
    o[i++] = stream & 0xff;
    return i;
  }

  /** Writes what the tick gathered in one socket write. */
  flush(): void {
    this.flushScheduled = false;
    if (this.destroyed || this.olen === 0 || !this.socket) return;
    if (this.pendingWrite) {
      // The socket is full: keep gathering until it drains.
      if (this.olen + this.pendingWrite.length > MAX_QUEUED_OUTPUT) this.destroy(new Error("the peer does not read its connection"));
      return;
    }
    // Written from the reused buffer by offset and length (no view made per write); what the socket
    // did not take is copied out, as the buffer is reused at once.
    const len = this.olen;
    this.olen = 0;
    const n = this.socket.write(this.obuf, 0, len);
    if (n < len) this.pendingWrite = Buffer.from(this.obuf.subarray(Math.max(0, n), len));
    if (this.obuf.length > OUT_CHUNK * 4) this.obuf = Buffer.allocUnsafe(OUT_CHUNK);
  }

  /** The socket can take more (Bun's drain handler). */
  onSocketDrain(): void {
    const p = this.pendingWrite;
    if (!p || !this.socket) return;
    this.pendingWrite = undefined;
    const n = this.socket.write(p);
    if (n < p.length) {
      this.pendingWrite = p.subarray(Math.max(0, n));
      return;
    }
    this.queuedControl = 0;
    if (this.olen) this.flush();
  }

  private windowUpdate(stream: number, inc: number): void {
    const p = Buffer.allocUnsafe(4);
    p.writeUInt32BE(inc, 0);
    this.frame(FrameType.WINDOW_UPDATE, 0, stream, p);
  }

  /** @internal */
  writeRst(stream: number, code: number): void {
    const p = Buffer.allocUnsafe(4);
    p.writeUInt32BE(code, 0);
    this.frame(FrameType.RST_STREAM, 0, stream, p);
  }

  /** @internal */
  writeHeaders(s: H2Stream, list: HeaderList, endStream: boolean): void {
    // The block is copied from the encoder's scratch buffer by offsets: no view of it per call.
    const length = this.encoder.encode(list);
    const block = headerBlockScratch();
    const max = this.peerMaxFrame;
    if (length <= max) {
      this.frameFrom(FrameType.HEADERS, FLAG_END_HEADERS | (endStream ? FLAG_END_STREAM : 0), s.id, block, 0, length);
      return;
    }
    this.frameFrom(FrameType.HEADERS, endStream ? FLAG_END_STREAM : 0, s.id, block, 0, max);
    for (let off = max; off < length; off += max) {
      const last = off + max >= length;
      this.frameFrom(FrameType.CONTINUATION, last ? FLAG_END_HEADERS : 0, s.id, block, off, Math.min(length, off + max));
    }
  }

  /**
   * @internal One DATA frame holding a gRPC message (prefix + bytes) written into the output buffer, if
   * the stream's and the connection's windows and the peer's frame size take all of it; false (nothing
   * written) otherwise. The stream's queue must be empty.
   */
  writeMessageFrame(s: H2Stream, message: Uint8Array, endStream: boolean): boolean {
    const m = message.byteLength;
    const len = m + 5;
    if (len > s.sendWindow || len > this.connSendWindow || len > this.peerMaxFrame) return false;
    s.sendWindow -= len;
    this.connSendWindow -= len;
    const o = this.reserve(9 + len);
    const stream = s.id;
    let i = this.olen;
    o[i++] = len >>> 16;
    o[i++] = (len >>> 8) & 0xff;
    o[i++] = len & 0xff;
    o[i++] = FrameType.DATA;
    o[i++] = endStream ? FLAG_END_STREAM : 0;
    o[i++] = stream >>> 24;
    o[i++] = (stream >>> 16) & 0xff;
    o[i++] = (stream >>> 8) & 0xff;
    o[i++] = stream & 0xff;
    o[i++] = 0; // not compressed
    o[i++] = m >>> 24;
    o[i++] = (m >>> 16) & 0xff;
    o[i++] = (m >>> 8) & 0xff;
    o[i++] = m & 0xff;
    if (m) o.set(message, i);
    this.olen = i + m;
    if (endStream) s.endLocal();
    return true;
  }

  /** @internal Sends what flow control allows of a stream's queued DATA (and its trailers once it is out). */
  flushStream(s: H2Stream): void {
    while (s.queue.length > 0) {
      const head = s.queue[0]!;
      const allowed = Math.min(s.sendWindow, this.connSendWindow, this.peerMaxFrame);
      if (head.length > 0 && allowed <= 0) {
        if (this.connSendWindow <= 0) this.blocked.add(s);
        return;
      }
      const n = Math.min(head.length, allowed);
      const chunk = n === head.length ? head : head.subarray(0, n);
      if (n === head.length) s.queue.shift();
      else s.queue[0] = head.subarray(n);
      s.queued -= n;
      s.sendWindow -= n;
      this.connSendWindow -= n;
      const last = s.queue.length === 0 && s.queuedEnd && !s.queuedTrailers;
      this.frame(FrameType.DATA, last ? FLAG_END_STREAM : 0, s.id, n ? chunk : undefined);
      if (last) {
        s.endLocal();
        return;
      }
    }
    if (s.queuedTrailers) {
      const t = s.queuedTrailers;
      s.queuedTrailers = undefined;
      this.writeHeaders(s, t, true);
      s.endLocal();
    }
  }

  /** @internal */
  grantStream(s: H2Stream): void {
    this.releaseConn(s);
    if (s.unacked > 0 && !s.closed && !s.remoteEnded) {
      this.windowUpdate(s.id, s.unacked);
      s.recvWindow += s.unacked;
      s.unacked = 0;
    }
  }

  /** A stream's held bytes count as consumed again (it resumed, or it is gone). */
  private releaseConn(s: H2Stream): void {
    if (s.heldConn === 0) return;
    this.connReleasable += s.heldConn;
    s.heldConn = 0;
    this.grantConn();
  }

  private grantConn(): void {
    if (this.connReleasable >= CONN_WINDOW / 2) {
      this.windowUpdate(0, this.connReleasable);
      this.connOutstanding -= this.connReleasable;
      this.connReleasable = 0;
    }
  }

  /** @internal */
  closeStream(s: H2Stream): void {
    if (s.closed) return;
    s.closed = true;
    this.releaseConn(s);
    this.streams.delete(s.id);
    this.blocked.delete(s);
    // Only when there is something to drop: setting an array's length is a call into the runtime
    // each time (no inline cache takes it), 0.8 % of the greeter sidecar at 1,000 calls/s (perf), and a
    // unary call's queue is empty by now.
    if (s.queue.length !== 0) s.queue.length = 0;
    s.queued = 0;
    if (this.streams.size === 0 && (this.goawaySent || this.goawayReceived)) this.finishIfIdle();
  }

  /** Sends a PING (8 bytes); the ACK comes to onPingAck. */
  ping(payload: Buffer): void {
    if (this.destroyed) return;
    this.frame(FrameType.PING, 0, 0, payload);
  }

  /** Opens a stream (client) with request headers. */
  request(list: HeaderList, endStream: boolean): H2Stream {
    if (!this.usable) throw new Error("the connection is closing (GOAWAY) or gone");
    const s = new H2Stream(this, this.nextStreamId);
    this.nextStreamId += 2;
    this.streams.set(s.id, s);
    this.writeHeaders(s, list, endStream);
    if (endStream) s.localEnded = true;
    return s;
  }

  /** GOAWAY (NO_ERROR): no new streams; the connection ends once the open ones are done. */
  goaway(code: number = ErrorCode.NO_ERROR, debug?: string): void {
    if (this.destroyed) return;
    if (!this.goawaySent) {
      this.goawaySent = true;
      const d = debug ? Buffer.from(debug) : undefined;
      const p = Buffer.allocUnsafe(8 + (d ? d.length : 0));
      p.writeUInt32BE(this.lastPeerStream, 0);
      p.writeUInt32BE(code, 4);
      if (d) d.copy(p, 8);
      this.frame(FrameType.GOAWAY, 0, 0, p);
    }
    if (code !== ErrorCode.NO_ERROR) {
      this.flush();
      this.destroy(new ConnectionError(code, debug ?? "connection error"));
      return;
    }
    this.finishIfIdle();
  }

  private finishIfIdle(): void {
    if (this.streams.size > 0 || this.destroyed) return;
    this.flush();
    if (this.pendingWrite && this.socket) {
      // Let the last frames go out; the socket's close ends the session.
      this.socket.end();
      return;
    }
    this.destroy(undefined);
  }

  /** Closes the connection now; open streams' owners see streamReset(CANCEL, connectionLost). */
  destroy(err: Error | undefined): void {
    if (this.destroyed) return;
    this.destroyed = true;
    try {
      if (this.socket && this.olen && !this.pendingWrite) this.socket.write(this.obuf, 0, this.olen);
      this.olen = 0;
      this.socket?.end();
    } catch {
      // already gone
    }
    const streams = [...this.streams.values()];
    this.streams.clear();
    this.closeError = err;
    for (const s of streams) {
      s.closed = true;
      s.owner?.streamReset(ErrorCode.CANCEL, true);
    }
    this.opts.onClose?.(err);
    this.closeHook?.();
  }

  /** The socket closed under us. */
  onSocketClose(err?: Error): void {
    this.pendingWrite = undefined;
    this.destroy(err ?? new Error("connection closed"));
  }

  // ------------------------------------------------------------------ input

  /** Feeds bytes from the socket. Never throws: protocol errors end the connection with GOAWAY. */
  onData(chunk: Buffer): void {
    if (this.destroyed) return;
    try {
      this.parse(chunk);
    } catch (e) {
      if (e instanceof ConnectionError) this.goaway(e.code, e.message);
      else if (e instanceof HpackError) this.goaway(ErrorCode.COMPRESSION_ERROR, e.message);
      else this.goaway(ErrorCode.INTERNAL_ERROR, (e as Error).message);
    }
  }

  private parse(chunk: Buffer): void {
    this.reads++;
    let data: Buffer;
    if (this.buf) {
      data = Buffer.concat([this.buf, chunk]);
      this.buf = undefined;
    } else {
      data = chunk;
    }
    let pos = 0;
    if (this.prefaceLeft > 0) {
      const off = PREFACE.length - this.prefaceLeft;
      const n = Math.min(this.prefaceLeft, data.length);
      for (let i = 0; i < n; i++) {
        if (data[i] !== PREFACE[off + i]) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "not an HTTP/2 connection preface (this port speaks gRPC over h2c)");
      }
      this.prefaceLeft -= n;
      pos = n;
    }
    const len = data.length;
    while (len - pos >= 9 && !this.destroyed) {
      const flen = (data[pos]! << 16) | (data[pos + 1]! << 8) | data[pos + 2]!;
      if (flen > MAX_FRAME) throw new ConnectionError(ErrorCode.FRAME_SIZE_ERROR, `frame of ${flen} bytes over SETTINGS_MAX_FRAME_SIZE ${MAX_FRAME}`);
      if (len - pos < 9 + flen) break;
      const type = data[pos + 3]!;
      const flags = data[pos + 4]!;
      const sid = ((data[pos + 5]! & 0x7f) << 24) | (data[pos + 6]! << 16) | (data[pos + 7]! << 8) | data[pos + 8]!;
      const start = pos + 9;
      pos = start + flen;
      this.onFrame(type, flags, sid, data, start, pos);
    }
    if (pos < len && !this.destroyed) this.buf = Buffer.from(data.subarray(pos));
  }

  /** One frame whose payload is buf[start, end). */
  private onFrame(type: number, flags: number, sid: number, buf: Buffer, start: number, end: number): void {
    if (this.hbParts && type !== FrameType.CONTINUATION) {
      throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "expected CONTINUATION");
    }
    if (!this.firstFrameSeen) {
      if (type !== FrameType.SETTINGS || flags & FLAG_ACK) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "the first frame must be SETTINGS");
      this.firstFrameSeen = true;
    }
    // HEADERS and DATA, a call's frames, are read straight from the read buffer by offsets: a
    // Buffer#subarray per frame is a call into the runtime, ~1 % of a sidecar's CPU at 1,000 calls/s
    // (perf). The rarer frames get a view.
    if (type === FrameType.HEADERS) return this.onHeadersFrame(flags, sid, buf, start, end);
    if (type === FrameType.DATA) return this.onDataFrame(flags, sid, buf, start, end);
    const p = buf.subarray(start, end);
    switch (type) {
      case FrameType.PRIORITY:
        if (sid === 0) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "PRIORITY on stream 0");
        if (p.length !== 5) throw new ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "PRIORITY frame not 5 bytes");
        return;
      case FrameType.RST_STREAM: {
        if (sid === 0) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "RST_STREAM on stream 0");
        if (p.length !== 4) throw new ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "RST_STREAM frame not 4 bytes");
        if (this.isIdle(sid)) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, `RST_STREAM on idle stream ${sid}`);
        this.chargeReset();
        const s = this.streams.get(sid);
        if (s) {
          s.rstCode = p.readUInt32BE(0);
          this.closeStream(s);
          s.owner?.streamReset(s.rstCode, false);
        }
        return;
      }
      case FrameType.SETTINGS:
        return this.onSettings(flags, sid, p);
      case FrameType.PUSH_PROMISE:
        throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "PUSH_PROMISE (push is disabled)");
      case FrameType.PING:
        if (sid !== 0) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "PING on a stream");
        if (p.length !== 8) throw new ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "PING frame not 8 bytes");
        if (!(flags & FLAG_ACK)) {
          this.chargeControl();
          this.frame(FrameType.PING, FLAG_ACK, 0, p);
        } else this.onPingAck?.(p);
        return;
      case FrameType.GOAWAY: {
        if (sid !== 0) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "GOAWAY on a stream");
        if (p.length < 8) throw new ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "GOAWAY frame under 8 bytes");
        const last = p.readUInt32BE(0) & 0x7fffffff;
        const code = p.readUInt32BE(4);
        this.goawayReceived = true;
        this.goawayLast = Math.min(this.goawayLast, last);
        this.opts.onGoaway?.(code, last);
        // Streams we opened that the peer will not process: refused (safe to retry elsewhere).
        for (const s of [...this.streams.values()]) {
          if (s.id > last && (s.id & 1) === (this.server ? 0 : 1)) {
            s.rstCode = ErrorCode.REFUSED_STREAM;
            this.closeStream(s);
            s.owner?.streamReset(ErrorCode.REFUSED_STREAM, false);
          }
        }
        if (code !== ErrorCode.NO_ERROR) this.destroy(new ConnectionError(code, `the peer sent GOAWAY code ${code}: ${p.subarray(8).toString("latin1")}`));
        else this.finishIfIdle();
        return;
      }
      case FrameType.WINDOW_UPDATE: {
        if (p.length !== 4) throw new ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "WINDOW_UPDATE frame not 4 bytes");
        const inc = p.readUInt32BE(0) & 0x7fffffff;
        if (sid === 0) {
          if (inc === 0) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "WINDOW_UPDATE of 0 on the connection");
          this.connSendWindow += inc;
          if (this.connSendWindow > MAX_WINDOW) throw new ConnectionError(ErrorCode.FLOW_CONTROL_ERROR, "connection window over 2^31-1");
          this.unblock();
          return;
        }
        if (this.isIdle(sid)) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, `WINDOW_UPDATE on idle stream ${sid}`);
        const s = this.streams.get(sid);
        if (!s) return;
        if (inc === 0) return this.streamError(s, ErrorCode.PROTOCOL_ERROR);
        s.sendWindow += inc;
        if (s.sendWindow > MAX_WINDOW) return this.streamError(s, ErrorCode.FLOW_CONTROL_ERROR);
        this.resumeStream(s);
        return;
      }
      case FrameType.CONTINUATION:
        return this.onContinuation(flags, sid, p);
      default:
        return; // unknown frame types are ignored
    }
  }

  private firstFrameSeen = false;
  // Flood bounds (see RESET_BURST, MAX_QUEUED_CONTROL, MAX_EMPTY_FRAMES).
  private resetTokens: number;
  private resetStamp = 0;
  private queuedControl = 0;
  private emptyFrames = 0;

  /** A stream reset by the peer, refused, or reset for its error: one token; none left → ENHANCE_YOUR_CALM. */
  private chargeReset(): void {
    if (!this.server) return;
    const burst = this.opts.resetBurst ?? RESET_BURST;
    const now = performance.now();
    if (this.resetTokens < burst) {
      this.resetTokens = Math.min(burst, this.resetTokens + ((now - this.resetStamp) / 1000) * (this.opts.resetRate ?? RESET_RATE));
    }
    this.resetStamp = now;
    if (this.resetTokens < 1) {
      throw new ConnectionError(ErrorCode.ENHANCE_YOUR_CALM, `too many streams reset or refused (over ${burst}, then ${this.opts.resetRate ?? RESET_RATE}/s)`);
    }
    this.resetTokens -= 1;
  }

  /** A control frame answered to the peer: bounded while the peer does not read. */
  private chargeControl(): void {
    if (this.pendingWrite && ++this.queuedControl > MAX_QUEUED_CONTROL) {
      throw new ConnectionError(ErrorCode.ENHANCE_YOUR_CALM, `over ${MAX_QUEUED_CONTROL} control frames queued to a peer that does not read`);
    }
  }

  private chargeEmpty(): void {
    if (++this.emptyFrames > MAX_EMPTY_FRAMES) throw new ConnectionError(ErrorCode.ENHANCE_YOUR_CALM, `over ${MAX_EMPTY_FRAMES} empty frames in a row`);
  }

  /** A stream id the peer could not have used yet. */
  private isIdle(sid: number): boolean {
    const peerInitiated = (sid & 1) === (this.server ? 1 : 0);
    return peerInitiated ? sid > this.lastPeerStream : sid >= this.nextStreamId;
  }

  private streamError(s: H2Stream, code: number): void {
    this.chargeReset();
    this.chargeControl();
    s.reset(code);
    s.owner?.streamReset(code, false);
  }

  private resumeStream(s: H2Stream): void {
    const before = s.queued;
    if (s.queue.length) this.flushStream(s);
    if (before > 0 && s.queued === 0) s.onDrain?.();
  }

  private unblock(): void {
    for (const s of [...this.blocked]) {
      if (this.connSendWindow <= 0) return;
      this.blocked.delete(s);
      this.resumeStream(s);
    }
  }

  private onSettings(flags: number, sid: number, p: Buffer): void {
    if (sid !== 0) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "SETTINGS on a stream");
    if (flags & FLAG_ACK) {
      if (p.length !== 0) throw new ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "SETTINGS ACK with a payload");
      return;
    }
    if (p.length % 6 !== 0) throw new ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "SETTINGS length not a multiple of 6");
    for (let i = 0; i < p.length; i += 6) {
      const id = p.readUInt16BE(i);
      const v = p.readUInt32BE(i + 2);
      switch (id) {
        case 0x2:
          if (v > 1) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "SETTINGS_ENABLE_PUSH not 0 or 1");
          if (v === 1 && !this.server) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "a server may not enable push");
          break;
        case 0x3:
          this.peerMaxStreams = v;
          break;
        case 0x4: {
          if (v > MAX_WINDOW) throw new ConnectionError(ErrorCode.FLOW_CONTROL_ERROR, "SETTINGS_INITIAL_WINDOW_SIZE over 2^31-1");
          const delta = v - this.peerInitialWindow;
          this.peerInitialWindow = v;
          for (const s of this.streams.values()) {
            s.sendWindow += delta;
            if (s.sendWindow > MAX_WINDOW) throw new ConnectionError(ErrorCode.FLOW_CONTROL_ERROR, "stream window over 2^31-1");
          }
          if (delta > 0) for (const s of [...this.streams.values()]) this.resumeStream(s);
          break;
        }
        case 0x5:
          if (v < 16384 || v > 16777215) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, `SETTINGS_MAX_FRAME_SIZE ${v} out of range`);
          this.peerMaxFrame = v;
          break;
        case 0x1:
          this.encoder.setPeerTableSize(v);
          break;
        default:
          // MAX_HEADER_LIST_SIZE: advisory.
          break;
      }
    }
    this.chargeControl();
    this.frame(FrameType.SETTINGS, FLAG_ACK, 0);
  }

  /** A DATA frame whose payload is buf[pstart, pend). */
  private onDataFrame(flags: number, sid: number, buf: Buffer, pstart: number, pend: number): void {
    if (sid === 0) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "DATA on stream 0");
    // Flow control counts the whole payload, padding included.
    const flen = pend - pstart;
    if (flen === 0 && !(flags & FLAG_END_STREAM)) this.chargeEmpty();
    else this.emptyFrames = 0;
    this.connOutstanding += flen;
    if (this.connOutstanding > CONN_WINDOW) throw new ConnectionError(ErrorCode.FLOW_CONTROL_ERROR, "DATA beyond the connection window");
    const s = this.streams.get(sid);
    if (s !== undefined && s.paused) {
      // A paused stream's data stays counted against the connection: what paused streams buffer is
      // bounded by the connection window, not by streams x stream window.
      s.heldConn += flen;
    } else {
      this.connReleasable += flen;
      this.grantConn();
    }
    let start = pstart;
    let end = pend;
    if (flags & FLAG_PADDED) {
      if (flen < 1) throw new ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "padded DATA without a pad length");
      const pad = buf[pstart]!;
      if (pad >= flen) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "DATA padding longer than the frame");
      start++;
      end -= pad;
    }
    if (!s) {
      if (this.isIdle(sid)) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, `DATA on idle stream ${sid}`);
      // A stream we closed or reset: the frame may have been in flight. Dropped (its connection window
      // was given back above).
      return;
    }
    if (s.remoteEnded) return this.streamError(s, ErrorCode.STREAM_CLOSED);
    // Bun's node:http2 server closes a stream it resets with an empty DATA END_STREAM before any HEADERS
    // (then the RST_STREAM): take that as the end, not as a protocol error.
    if (!s.headersReceived && (flen > 0 || this.server)) return this.streamError(s, ErrorCode.PROTOCOL_ERROR);
    s.recvWindow -= flen;
    if (s.recvWindow < 0) return this.streamError(s, ErrorCode.FLOW_CONTROL_ERROR);
    s.unacked += flen;
    const endStream = (flags & FLAG_END_STREAM) !== 0;
    if (endStream) s.remoteEnded = true;
    else if (!s.paused && s.unacked >= STREAM_WINDOW / 2) this.grantStream(s);
    s.owner?.streamData(buf, start, end, endStream);
    if (endStream && s.localEnded) this.closeStream(s);
  }

  /** A HEADERS frame whose payload is buf[pstart, pend). */
  private onHeadersFrame(flags: number, sid: number, buf: Buffer, pstart: number, pend: number): void {
    if (sid === 0) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "HEADERS on stream 0");
    let start = pstart;
    let end = pend;
    if (flags & FLAG_PADDED) {
      if (pend - pstart < 1) throw new ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "padded HEADERS without a pad length");
      const pad = buf[pstart]!;
      start++;
      end -= pad;
    }
    if (flags & FLAG_PRIORITY) start += 5;
    if (end < start) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "HEADERS padding longer than the frame");
    if (flags & FLAG_END_HEADERS) {
      this.onHeaderBlock(sid, flags, buf, start, end);
      return;
    }
    this.hbStream = sid;
    this.hbFlags = flags;
    this.hbParts = [Buffer.from(buf.subarray(start, end))];
    this.hbSize = end - start;
  }

  private onContinuation(flags: number, sid: number, p: Buffer): void {
    if (!this.hbParts || sid !== this.hbStream) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "CONTINUATION without HEADERS on its stream");
    this.hbSize += p.length;
    if (p.length === 0 && !(flags & FLAG_END_HEADERS)) this.chargeEmpty();
    else this.emptyFrames = 0;
    if (this.hbParts.length >= MAX_CONTINUATIONS) throw new ConnectionError(ErrorCode.ENHANCE_YOUR_CALM, `over ${MAX_CONTINUATIONS} CONTINUATION frames in one header block`);
    if (this.hbSize > this.maxHeaderBlock) {
      throw new ConnectionError(ErrorCode.ENHANCE_YOUR_CALM, `header block over ${this.maxHeaderBlock} bytes`);
    }
    this.hbParts.push(Buffer.from(p));
    if (!(flags & FLAG_END_HEADERS)) return;
    const block = Buffer.concat(this.hbParts);
    this.hbParts = undefined;
    this.onHeaderBlock(sid, this.hbFlags, block, 0, block.length);
  }

  /** A complete header block: buf[start, end). */
  private onHeaderBlock(sid: number, flags: number, buf: Buffer, start: number, end: number): void {
    // Decode first, always: the HPACK table must stay in step even for a stream we refuse.
    const h = this.decoder.decode(buf, start, end);
    const endStream = (flags & FLAG_END_STREAM) !== 0;
    const existing = this.streams.get(sid);
    if (existing) {
      if (existing.remoteEnded) return this.streamError(existing, ErrorCode.STREAM_CLOSED);
      if (existing.headersReceived && !endStream) return this.streamError(existing, ErrorCode.PROTOCOL_ERROR);
      existing.headersReceived = true;
      if (endStream) existing.remoteEnded = true;
      if (h.tooLarge || h.malformed) return this.streamError(existing, ErrorCode.PROTOCOL_ERROR);
      existing.owner?.streamHeaders(h, endStream);
      if (endStream && existing.localEnded) this.closeStream(existing);
      return;
    }
    if (!this.server) {
      if (this.isIdle(sid)) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, `HEADERS on stream ${sid} the client did not open`);
      return; // a stream we already closed
    }
    if ((sid & 1) === 0) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, `client stream id ${sid} is even`);
    if (sid <= this.lastPeerStream) {
      // Closed stream (HEADERS after its end): RST as a stream error.
      this.chargeReset();
      this.chargeControl();
      this.writeRst(sid, ErrorCode.STREAM_CLOSED);
      return;
    }
    this.lastPeerStream = sid;
    if (this.goawaySent || this.streams.size >= this.maxStreams) {
      this.chargeReset();
      this.chargeControl();
      this.writeRst(sid, ErrorCode.REFUSED_STREAM);
      return;
    }
    const s = new H2Stream(this, sid);
    s.headersReceived = true;
    if (endStream) s.remoteEnded = true;
    this.streams.set(sid, s);
    this.opts.onStream?.(s, h, endStream);
  }
}
