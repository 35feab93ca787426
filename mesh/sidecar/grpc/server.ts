// A gRPC server on the sidecar's own HTTP/2 framing (h2/session.ts over Bun.listen: h2c, or TLS with
// client certificates; MESH_GRPC_TLS_NODE=1 puts TLS on node:http2) that hands each call to one
// handler with its payloads as undecoded bytes. It does what a gRPC library's server does on the wire
// (PROTOCOL-HTTP2.md, and the way grpc-js answers): a non-POST request gets HTTP 405, a content-type
// other than application/grpc[+...] HTTP 415, an unknown method UNIMPLEMENTED, a malformed grpc-timeout
// or -bin header INTERNAL, a message over the size limit RESOURCE_EXHAUSTED, a truncated message or a
// compressed flag without a compression INTERNAL, an unsupported compression UNIMPLEMENTED, and a unary
// or server-streaming call with other than one request message UNIMPLEMENTED ("request cardinality
// violation" in the spec's status table). Each of those ends only its own stream: the connection and
// the server keep serving. gzip and deflate requests are decompressed; responses are never compressed.
//
// Calls the handler sees: unary and server-streaming calls once their single request has arrived
// (`call.request`), streaming calls at once (read with `call.messages()`). A client's RST_STREAM or a
// lost connection fires `call.onCancel`. drain() sends GOAWAY and lets the calls in flight finish.
import type { TCPSocketListener } from "bun";
import type * as http2 from "node:http2";
import { createRequire } from "node:module";
import type { SecureContextOptions } from "node:tls";
import { type DeadlineEntry, deadlines, NOT_QUEUED } from "../../../runtime/rpc/deadline-queue.ts";
import { type Metadata, Status } from "../../../runtime/rpc/status.ts";
import type { CallShape } from "../../../runtime/rpc/types.ts";
import { GrpcError } from "./errors.ts";
import { fromHeaders, toHeaders } from "./metadata.ts";
import { encodeGrpcMessage } from "./status.ts";
import { parseGrpcTimeout } from "./timeout.ts";
import { ACCEPT_ENCODING, decompress, frameMessage, MessageDecoder } from "./wire.ts";
import { field, type HeaderList, type HeaderMap } from "./h2/hpack.ts";
import { ALPN_H2, ErrorCode, H2Session, type H2Stream, type H2StreamOwner } from "./h2/session.ts";

// node:http2 (about 10 MB of a process's RSS once loaded) is loaded only for TLS.
const nodeHttp2 = (): typeof http2 => createRequire(import.meta.url)("node:http2");
const HTTP2_HEADER_STATUS = ":status";
const HTTP2_HEADER_CONTENT_TYPE = "content-type";
const HTTP_STATUS_OK = 200;

type OutHeaders = http2.OutgoingHttpHeaders;

/**
 * What a call needs of its HTTP/2 stream, on node:http2 (TLS) or on our own framing (h2c). `respond`
 * and `finish` may throw when the stream is gone; callers catch.
 */
interface ServerPort {
  /** The stream is over (reset, connection lost, or both sides done): writes go nowhere. */
  readonly gone: boolean;
  /** The client has half-closed its side. */
  readonly requestEnded: boolean;
  readonly paused: boolean;
  respond(headers: OutHeaders, endStream: boolean): void;
  /** One gRPC message (framed here, with its length prefix). */
  writeMessage(message: Uint8Array): boolean;
  /** The message `last` (if any) then the trailers, ending our side. */
  finish(last: Uint8Array | undefined, trailers: OutHeaders): void;
  /** RST_STREAM with `code`. */
  close(code: number): void;
  pause(): void;
  resume(): void;
  /** Calls `wake` whenever the stream can take more or has closed. */
  onWritable(wake: () => void): void;
}

class NodePort implements ServerPort {
  constructor(private readonly s: Stream) {}
  get gone() {
    return this.s.destroyed || this.s.closed;
  }
  get requestEnded() {
    return this.s.readableEnded;
  }
  get paused() {
    return this.s.isPaused();
  }
  respond(headers: OutHeaders, endStream: boolean) {
    this.s.respond(headers, endStream ? { endStream: true } : { waitForTrailers: true });
  }
  writeMessage(m: Uint8Array) {
    return this.s.write(frameMessage(m));
  }
  finish(last: Uint8Array | undefined, t: OutHeaders) {
    const stream = this.s;
    stream.once("wantTrailers", () => {
      try {
        stream.sendTrailers(t);
      } catch {
        stream.close(ErrorCode.INTERNAL_ERROR);
      }
    });
    if (last) stream.end(frameMessage(last));
    else stream.end();
  }
  close(code: number) {
    // Once the status has gone (next turn), as the trailers are written asynchronously.
    const stream = this.s;
    setImmediate(() => {
      if (!stream.closed && !stream.destroyed) stream.close(code);
    });
  }
  pause() {
    this.s.pause();
  }
  resume() {
    this.s.resume();
  }
  onWritable(wake: () => void) {
    this.s.on("drain", wake);
    this.s.on("close", wake);
  }
}

// gRPC's codes as header text, made once: String() of a number is a call into the runtime.
const STATUS_TEXT = Array.from({ length: 17 }, (_, code) => String(code));

function statusText(code: number): string {
  return STATUS_TEXT[code] ?? String(code);
}

/** Outgoing header object → HPACK field list (pseudo-headers first, as node:http2 sends them). */
function toList(h: OutHeaders): HeaderList {
  const list: HeaderList = [];
  const status = h[HTTP2_HEADER_STATUS];
  if (status !== undefined) list.push(field(":status", status === HTTP_STATUS_OK ? "200" : String(status)));
  for (const k in h) {
    if (k === HTTP2_HEADER_STATUS) continue;
    const v = h[k];
    if (v === undefined) continue;
    if (Array.isArray(v)) for (const x of v) list.push(field(k, String(x)));
    else list.push(field(k, String(v)));
  }
  return list;
}

/** A call on our own HTTP/2 stream: the port the call writes to, and the stream's owner. */
class OwnPort implements ServerPort, H2StreamOwner {
  wake: (() => void) | undefined;
  /** Set once the request headers made a call. */
  events: RequestEvents | undefined;
  constructor(private readonly s: H2Stream) {}

  streamHeaders(): void {
    // The client's trailers: a gRPC client sends none; its END_STREAM comes with DATA.
  }

  streamData(buf: Buffer, start: number, end: number, endStream: boolean): void {
    if (end > start) this.events!.data(buf, start, end);
    if (endStream) this.events!.end();
  }

  streamReset(code: number, lost: boolean): void {
    this.events!.close(lost ? "the client connection closed" : `the client reset the stream (code ${code})`);
    this.wake?.();
  }

  get gone() {
    return this.s.closed;
  }
  get requestEnded() {
    return this.s.remoteEnded;
  }
  get paused() {
    return this.s.paused;
  }
  respond(headers: OutHeaders, endStream: boolean) {
    this.s.sendHeaders(toList(headers), endStream);
  }
  writeMessage(m: Uint8Array) {
    return this.s.writeMessage(m);
  }
  finish(last: Uint8Array | undefined, t: OutHeaders) {
    if (last) this.s.writeMessage(last);
    this.s.sendHeaders(toList(t), true);
  }
  close(code: number) {
    // Frames go out in order: the RST follows the status on the wire.
    this.s.reset(code);
  }
  pause() {
    this.s.pause();
  }
  resume() {
    this.s.resume();
  }
  onWritable(wake: () => void) {
    this.wake = wake;
    this.s.onDrain = wake;
  }
}

export interface GrpcServerOptions {
  maxMessageBytes: number;
  /** HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS: calls one client connection may have open at once. */
  maxConcurrentStreams: number;
  /** The call shape of a method path, or undefined if the server does not serve it (UNIMPLEMENTED). */
  lookup(path: string): CallShape | undefined;
  onCall(call: GrpcServerCall): void;
  /** TLS: the server's certificate and key and the CA client certificates must chain to (mTLS). */
  tls?: SecureContextOptions;
  /** A client connection ended (own framing): `error` says why for a connection error (e.g. a flood). */
  onConnectionClose?(error: Error | undefined): void;
  /**
   * A client connection with no stream open for this long gets GOAWAY (NO_ERROR) and is closed (own
   * framing); 0 turns it off. Default IDLE_TIMEOUT_MS (env MESH_GRPC_IDLE_MS).
   */
  idleTimeoutMs?: number;
  /** Rapid-reset bucket per connection (see RESET_BURST/RESET_RATE in h2/session.ts); env MESH_GRPC_RESET_BURST / _RATE. */
  resetBurst?: number;
  resetRate?: number;
}

function envNumber(name: string): number | undefined {
  const v = process.env[name];
  const n = Number(v);
  return v && Number.isFinite(n) && n >= 0 ? n : undefined;
}

/** 1 hour, Envoy's default idle_timeout for downstream connections. */
export const IDLE_TIMEOUT_MS = (() => {
  const n = Number(process.env.MESH_GRPC_IDLE_MS ?? "");
  return process.env.MESH_GRPC_IDLE_MS && Number.isFinite(n) && n >= 0 ? n : 3_600_000;
})();

type Stream = http2.ServerHttp2Stream;

function respondError(port: ServerPort, code: number, details: string, extra?: http2.OutgoingHttpHeaders): undefined {
  if (port.gone) return;
  try {
    port.respond(
      {
        [HTTP2_HEADER_STATUS]: HTTP_STATUS_OK,
        [HTTP2_HEADER_CONTENT_TYPE]: "application/grpc",
        "grpc-status": String(code),
        "grpc-message": encodeGrpcMessage(details),
        ...extra,
      },
      true,
    );
  } catch {
    // The stream went away while we answered: nothing left to tell.
  }
}

const MAX_QUEUED_REQUESTS = 4096;

/** A request message queue for streaming calls, read as an async iterable, pausing the stream when full. */
class RequestQueue implements AsyncIterable<Buffer> {
  private readonly items: Buffer[] = [];
  private waiter: ((r: IteratorResult<Buffer>) => void) | undefined;
  private failWaiter: ((e: Error) => void) | undefined;
  private done = false;
  private error: Error | undefined;

  constructor(private readonly stream: ServerPort) {}

  push(m: Buffer): void {
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = this.failWaiter = undefined;
      w({ value: m, done: false });
      return;
    }
    this.items.push(m);
    if (this.items.length >= 16) this.stream.pause();
    // Paused, the stream gets no more window, so what still comes is bounded in bytes; tiny (or empty)
    // messages could still pile up objects, so their number is bounded too.
    if (this.items.length > MAX_QUEUED_REQUESTS) {
      throw new GrpcError(Status.RESOURCE_EXHAUSTED, `more than ${MAX_QUEUED_REQUESTS} request messages waiting for the app`);
    }
  }

  end(error?: Error): void {
    if (this.done) return;
    this.done = true;
    this.error = error;
    const w = this.waiter;
    const f = this.failWaiter;
    this.waiter = this.failWaiter = undefined;
    if (error && f) f(error);
    else w?.({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): AsyncIterator<Buffer> {
    return {
      next: () => {
        const m = this.items.shift();
        if (m) {
          if (this.items.length < 4 && this.stream.paused) this.stream.resume();
          return Promise.resolve({ value: m, done: false });
        }
        if (this.done) return this.error ? Promise.reject(this.error) : Promise.resolve({ value: undefined, done: true });
        return new Promise((resolve, reject) => {
          this.waiter = resolve;
          this.failWaiter = reject;
        });
      },
    };
  }
}

/** One call as the handler sees it. */
export class GrpcServerCall implements DeadlineEntry {
  /** The single request of a unary or server-streaming call. */
  request: Buffer | undefined;
  /** Fired once if the call ends from the network side first: client reset, connection lost, bad request data. */
  onCancel: ((reason: string) => void) | undefined;
  /** The status the call ended with once ended (by end() or by the server on a protocol error). */
  endedCode: number | undefined;
  private pendingHeaders: Metadata | undefined;
  private responded = false;
  private wroteMessage = false;
  private queue: RequestQueue | undefined;
  private drainWaiters: (() => void)[] | undefined;
  /** @internal */ decoder: MessageDecoder;
  /** @internal The call's place in the deadline queue while the server holds its deadline (see armDeadlines). */
  deadlineSlot = NOT_QUEUED;
  /** @internal */ handed = false;

  constructor(
    private readonly stream: ServerPort,
    readonly path: string,
    readonly shape: CallShape,
    readonly metadata: Metadata,
    /** Absolute deadline (Date.now() ms) from grpc-timeout, if the client sent one. */
    readonly deadline: number | undefined,
    /** @internal */ readonly encoding: string | undefined,
    /** @internal */ readonly maxBytes: number,
  ) {
    this.decoder = new MessageDecoder(maxBytes);
  }

  get ended(): boolean {
    return this.endedCode !== undefined;
  }

  /** True once the client is gone (reset, connection lost): writes go nowhere. */
  get cancelled(): boolean {
    return this.stream.gone;
  }

  /** Request messages of a client- or bidi-streaming call, until the client half-closes. */
  messages(): AsyncIterable<Buffer> {
    return (this.queue ??= new RequestQueue(this.stream));
  }

  /** Response headers: sent with the first message (unary) or at once (server streaming). */
  sendHeaders(md: Metadata): void {
    if (this.responded || this.ended) return;
    this.pendingHeaders = md;
    if (this.shape.serverStreaming) this.respond();
  }

  private respond(): boolean {
    if (this.responded) return true;
    if (this.cancelled) return false;
    this.responded = true;
    const headers: http2.OutgoingHttpHeaders = { [HTTP2_HEADER_STATUS]: HTTP_STATUS_OK, [HTTP2_HEADER_CONTENT_TYPE]: "application/grpc" };
    if (this.pendingHeaders) toHeaders(this.pendingHeaders, headers);
    try {
      this.stream.respond(headers, false);
      return true;
    } catch {
      return false;
    }
  }

  /**
   * Sends one response message; false when the client's window is full (wait with drained()) or the
   * client is gone. A message over the size limit ends the call with RESOURCE_EXHAUSTED.
   */
  write(message: Uint8Array): boolean {
    if (this.ended || !this.respond()) return false;
    if (message.byteLength > this.maxBytes) {
      this.end(Status.RESOURCE_EXHAUSTED, `response message larger than max (${message.byteLength} vs. ${this.maxBytes})`);
      return false;
    }
    this.wroteMessage = true;
    try {
      return this.stream.writeMessage(message);
    } catch {
      return false;
    }
  }

  /** Resolves when the stream can take more, or the call is over (either way the writer should look). */
  drained(): Promise<void> {
    if (this.cancelled || this.ended) return Promise.resolve();
    return new Promise((resolve) => {
      if (!this.drainWaiters) {
        this.drainWaiters = [];
        const wake = () => {
          const w = this.drainWaiters!;
          this.drainWaiters = [];
          for (const f of w) f();
        };
        this.stream.onWritable(wake);
      }
      this.drainWaiters.push(resolve);
    });
  }

  /**
   * Ends the call with a status and trailers, after `lastMessage` if given. With nothing sent yet this
   * is one trailers-only HEADERS frame; otherwise the trailers follow the messages. Later calls do
   * nothing.
   */
  end(code: number, details: string, trailers?: Metadata, lastMessage?: Uint8Array): void {
    if (this.ended) return;
    let last: Uint8Array | undefined;
    if (lastMessage) {
      // A unary response goes out with the status in one stream.end(): one write fewer per call.
      if (lastMessage.byteLength > this.maxBytes) {
        return this.end(Status.RESOURCE_EXHAUSTED, `response message larger than max (${lastMessage.byteLength} vs. ${this.maxBytes})`);
      }
      last = lastMessage;
      this.wroteMessage = true;
    }
    this.endedCode = code;
    deadlines.remove(this);
    this.queue?.end();
    if (this.cancelled) return;
    const t: http2.OutgoingHttpHeaders = { "grpc-status": statusText(code) };
    if (details) t["grpc-message"] = encodeGrpcMessage(details);
    // An unsupported compression is answered with the ones we read, as the spec asks.
    if (code === Status.UNIMPLEMENTED) t["grpc-accept-encoding"] = ACCEPT_ENCODING;
    if (trailers) toHeaders(trailers, t);
    if (!this.responded && !this.wroteMessage && !this.pendingHeaders) {
      this.responded = true;
      t[HTTP2_HEADER_STATUS] = HTTP_STATUS_OK;
      t[HTTP2_HEADER_CONTENT_TYPE] = "application/grpc";
      try {
        this.stream.respond(t, true);
      } catch {
        // gone
      }
      this.closeRequestSide();
      return;
    }
    if (!this.respond()) return;
    try {
      this.stream.finish(last, t);
    } catch {
      // gone
    }
    this.closeRequestSide();
  }

  /**
   * The status is out but the client has not finished sending (a deadline or an error before its
   * half-close): reset the stream with NO_ERROR once the status has gone, as gRPC servers do, so a client
   * that keeps the request open does not hold the stream.
   */
  private closeRequestSide(): void {
    const stream = this.stream;
    if (stream.requestEnded || stream.gone) return;
    stream.close(ErrorCode.NO_ERROR);
  }

  /** @internal The network side ended the call (reset, lost connection, protocol error). */
  cancel(reason: string): void {
    deadlines.remove(this);
    this.queue?.end(new GrpcError(Status.CANCELLED, reason));
    const f = this.onCancel;
    this.onCancel = undefined;
    f?.(reason);
  }

  /** @internal Ends the call from the server side with a protocol error and tells the handler. */
  fail(e: GrpcError): void {
    if (this.ended) return;
    this.end(e.code, e.details);
    this.cancel(e.details);
  }

  /** @internal The deadline passed before the request arrived (the server queues it only until then). */
  onDeadline(): void {
    this.fail(new GrpcError(Status.DEADLINE_EXCEEDED, "deadline exceeded before the request arrived"));
  }

  /** @internal */
  /** @internal A request message from the decoder (throws, into the data handler's catch, if it does not decompress). */
  onDecoded(m: Buffer, compressed: boolean): void {
    this.pushRequest(compressed ? decompress(m, this.encoding, this.maxBytes) : m);
  }

  pushRequest(m: Buffer): void {
    if (this.shape.clientStreaming) {
      // Queued even if the handler has not asked for messages() yet (it may never: the queue pauses the stream).
      (this.queue ??= new RequestQueue(this.stream)).push(m);
      return;
    }
    if (this.request !== undefined) {
      throw new GrpcError(Status.UNIMPLEMENTED, `received a second request message for ${this.shape.serverStreaming ? "server-streaming" : "unary"} method ${this.path}`);
    }
    this.request = m;
  }

  /** @internal */
  endRequests(): void {
    this.queue?.end();
  }
}

/** What a request stream tells the call, from either HTTP/2 implementation. */
interface RequestEvents {
  /** Request data: chunk[start, end), valid only during the call. */
  data(chunk: Buffer, start: number, end: number): void;
  /** The client half-closed. */
  end(): void;
  /** The stream is over: `reason` when it ended before the call did (reset, connection lost). */
  close(reason: string): void;
}

/** A call's request stream events: one object per call, not a closure per event. */
class CallEvents implements RequestEvents {
  constructor(
    private readonly server: GrpcServer,
    private readonly call: GrpcServerCall,
  ) {}

  data(chunk: Buffer, start: number, end: number): void {
    const call = this.call;
    if (call.ended) return;
    try {
      call.decoder.push(chunk, call, start, end);
    } catch (e) {
      call.fail(e instanceof GrpcError ? e : new GrpcError(Status.INTERNAL, (e as Error).message));
    }
  }

  end(): void {
    const call = this.call;
    if (call.ended) return;
    if (call.decoder.midMessage) return call.fail(new GrpcError(Status.INTERNAL, "the request stream ended in the middle of a message (truncated gRPC frame)"));
    const shape = call.shape;
    if (!shape.clientStreaming) {
      if (call.request === undefined) {
        return call.fail(new GrpcError(Status.UNIMPLEMENTED, `received no request message for ${shape.serverStreaming ? "server-streaming" : "unary"} method ${call.path}`));
      }
      this.server.hand(call);
    } else {
      call.endRequests();
    }
  }

  close(reason: string): void {
    deadlines.remove(this.call);
    if (!this.call.ended) this.call.cancel(reason);
  }
}

type BunListener = TCPSocketListener<{ h2: H2Session }>;

export class GrpcServer {
  private readonly server: http2.Http2Server | http2.Http2SecureServer | undefined;
  private listener: BunListener | undefined;
  private readonly sessions = new Set<http2.ServerHttp2Session>();
  private readonly h2Sessions = new Set<H2Session>();
  private draining = false;
  private drainWaiters: (() => void)[] = [];
  /** Idle connections: when each was last seen with a stream open (or opening one), and its last stream id. */
  private readonly busy = new Map<H2Session, { at: number; lastStream: number }>();
  private idleSweep: Timer | undefined;

  /** TLS material for the own framing on Bun's TLS sockets (the current set; replaced on rotation). */
  private tls: SecureContextOptions | undefined;
  private bound: { host: string; port: number } | undefined;

  constructor(private readonly opts: GrpcServerOptions) {
    // Our own framing (set up in listen()), over TLS too unless MESH_GRPC_TLS_NODE=1 asks for node:http2.
    if (!opts.tls || process.env.MESH_GRPC_TLS_NODE !== "1") {
      this.tls = opts.tls;
      return;
    }
    const settings: http2.Settings = { maxConcurrentStreams: opts.maxConcurrentStreams };
    this.server = nodeHttp2().createSecureServer({ ...opts.tls, settings, requestCert: true, rejectUnauthorized: true, ALPNProtocols: ["h2"] });
    this.server.on("session", (s: http2.ServerHttp2Session) => {
      this.sessions.add(s);
      s.on("error", () => {}); // a broken connection ends its streams; nothing to do for the server
      s.on("close", () => this.sessions.delete(s));
      if (this.draining) s.close();
    });
    this.server.on("stream", (stream: Stream, headers: http2.IncomingHttpHeaders) => this.onNodeStream(stream, headers));
    // TLS handshake failures (no or foreign client certificate) concern one client only.
    this.server.on("tlsClientError", () => {});
    this.server.on("sessionError", () => {});
  }

  /** Binds; resolves with the bound port. */
  listen(host: string, port: number): Promise<number> {
    const target = host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
    const fail = (e: Error) => new Error(`cannot listen for inbound gRPC on ${target}: ${e.message} — pick a free port in sidecar.inbound.port`);
    if (!this.server) {
      try {
        this.listener = this.bunListen(host, port);
        this.bound = { host, port: this.listener.port };
        return Promise.resolve(this.listener.port);
      } catch (e) {
        return Promise.reject(fail(e as Error));
      }
    }
    const server = this.server;
    return new Promise((resolve, reject) => {
      const onError = (e: Error) => reject(fail(e));
      server.once("error", onError);
      server.listen(port, host, () => {
        server.off("error", onError);
        server.on("error", () => {});
        resolve((server.address() as { port: number }).port);
      });
    });
  }

  private bunListen(host: string, port: number): BunListener {
    const tls = this.tls;
    return Bun.listen<{ h2: H2Session }>({
      hostname: host,
      port,
      // mTLS: a client certificate chaining to the CA is required; ALPN "h2" (in wire format).
      tls: tls ? { ca: tls.ca as Buffer, cert: tls.cert as Buffer, key: tls.key as Buffer, requestCert: true, rejectUnauthorized: true, ALPNProtocols: ALPN_H2 } : undefined,
      socket: {
        open: (sock) => {
          const h2 = new H2Session(sock, {
            server: true,
            maxConcurrentStreams: this.opts.maxConcurrentStreams,
            resetBurst: this.opts.resetBurst ?? envNumber("MESH_GRPC_RESET_BURST"),
            resetRate: this.opts.resetRate ?? envNumber("MESH_GRPC_RESET_RATE"),
            onStream: (stream, h) => this.onOwnStream(stream, h.headers, h.tooLarge, h.malformed),
            onClose: (err) => {
              this.opts.onConnectionClose?.(err);
              this.h2Sessions.delete(h2);
              this.busy.delete(h2);
              if (this.h2Sessions.size === 0 && this.draining) this.drained();
            },
          });
          sock.data = { h2 };
          this.h2Sessions.add(h2);
          this.watchIdle(h2);
          if (this.draining) h2.goaway();
        },
        // A failed handshake (no or foreign client certificate) concerns that client only.
        handshake: (sock, ok, authError) => {
          if (!ok || authError) sock.data?.h2.destroy(authError ?? new Error("TLS handshake failed"));
        },
        data: (sock, d) => sock.data.h2.onData(d),
        drain: (sock) => sock.data.h2.onSocketDrain(),
        close: (sock) => sock.data?.h2.onSocketClose(),
        error: (sock, e) => sock.data?.h2.onSocketClose(e),
      },
    });
  }

  /**
   * New certificates (rotation): new connections use them, established ones keep theirs. A Bun listener
   * cannot change its TLS context, so the own framing stops listening and listens again on the same port
   * (connections in flight are untouched; a connect landing in between is refused and retried by clients).
   */
  setSecureContext(tls: SecureContextOptions): void {
    if (this.server) {
      (this.server as http2.Http2SecureServer).setSecureContext({ ...tls, requestCert: true, rejectUnauthorized: true } as SecureContextOptions);
      return;
    }
    const old = this.tls;
    this.tls = tls;
    const bound = this.bound;
    if (!this.listener || !bound || this.draining) return;
    this.listener.stop(false);
    try {
      this.listener = this.bunListen(bound.host, bound.port);
    } catch (e) {
      // Someone took the port in between: keep serving with the old certificates rather than not at all.
      this.tls = old;
      this.listener = this.bunListen(bound.host, bound.port);
      throw e;
    }
  }

  private drained(): void {
    const w = this.drainWaiters;
    this.drainWaiters = [];
    for (const f of w) f();
  }

  /** Starts the idle sweep with the first connection: one timer per server, a look every ≤ 60 s. */
  private watchIdle(h2: H2Session): void {
    const idle = this.opts.idleTimeoutMs ?? IDLE_TIMEOUT_MS;
    if (!(idle > 0)) return;
    this.busy.set(h2, { at: performance.now(), lastStream: 0 });
    if (this.idleSweep) return;
    this.idleSweep = setInterval(() => {
      const now = performance.now();
      for (const [s, b] of this.busy) {
        if (s.streamCount > 0 || s.lastStreamId !== b.lastStream) {
          b.at = now;
          b.lastStream = s.lastStreamId;
        } else if (now - b.at >= idle) {
          this.busy.delete(s);
          s.goaway(ErrorCode.NO_ERROR, `idle for ${Math.round(idle / 1000)} s`);
        }
      }
      if (this.busy.size === 0) this.stopIdleSweep();
    }, Math.max(10, Math.min(idle / 2, 60_000)));
    this.idleSweep.unref?.();
  }

  private stopIdleSweep(): void {
    if (this.idleSweep) clearInterval(this.idleSweep);
    this.idleSweep = undefined;
  }

  /** Stops accepting (GOAWAY to every client, listener closed); resolves once every connection has closed. */
  drain(): Promise<void> {
    this.draining = true;
    this.stopIdleSweep();
    if (!this.server) {
      this.listener?.stop(false);
      return new Promise((resolve) => {
        if (this.h2Sessions.size === 0) return resolve();
        this.drainWaiters.push(resolve);
        for (const s of [...this.h2Sessions]) s.goaway();
      });
    }
    const server = this.server;
    return new Promise((resolve) => {
      server.close(() => resolve());
      for (const s of this.sessions) s.close();
      if (this.sessions.size === 0) resolve();
    });
  }

  /** Closes every connection now; calls in flight end on the client side as UNAVAILABLE. */
  forceStop(): void {
    this.draining = true;
    this.stopIdleSweep();
    if (!this.server) {
      this.listener?.stop(true);
      for (const s of [...this.h2Sessions]) s.destroy(new Error("server stopped"));
      return;
    }
    this.server.close();
    for (const s of this.sessions) s.destroy();
  }

  private onOwnStream(stream: H2Stream, headers: HeaderMap, tooLarge: boolean, malformed: string | undefined): void {
    if (malformed) return stream.reset(ErrorCode.PROTOCOL_ERROR);
    const port = new OwnPort(stream);
    if (tooLarge) return respondError(port, Status.RESOURCE_EXHAUSTED, "request headers larger than the header list size the server announced");
    const events = this.onRequest(port, headers as http2.IncomingHttpHeaders);
    if (!events) {
      // Answered already; a client still sending gets its stream reset once the answer is out.
      if (!stream.remoteEnded && !stream.closed) stream.reset(ErrorCode.NO_ERROR);
      return;
    }
    port.events = events;
    stream.owner = port;
    if (stream.remoteEnded) events.end();
  }

  private onNodeStream(stream: Stream, headers: http2.IncomingHttpHeaders): void {
    stream.on("error", () => {}); // a reset stream; the close handler below sees it
    const events = this.onRequest(new NodePort(stream), headers);
    if (!events) return;
    stream.on("data", (chunk: Buffer) => events.data(chunk, 0, chunk.length));
    stream.on("end", () => {
      // Bun emits "end" also for a stream the client reset (RST_STREAM), and "aborted" only after this
      // tick's microtasks: wait one turn so a reset is not taken for the client's half-close.
      setImmediate(() => {
        if (!stream.aborted && !stream.rstCode) events.end();
      });
    });
    stream.on("close", () => events.close(stream.rstCode ? `the client reset the stream (code ${stream.rstCode})` : "the client connection closed"));
  }

  /** Checks the request headers; answers a bad request and returns undefined, or returns the call's events. */
  private onRequest(port: ServerPort, headers: http2.IncomingHttpHeaders): RequestEvents | undefined {
    if (headers[":method"] !== "POST") {
      try {
        port.respond({ [HTTP2_HEADER_STATUS]: 405, allow: "POST" }, true);
      } catch {
        // gone
      }
      return;
    }
    const ct = headers[HTTP2_HEADER_CONTENT_TYPE];
    if (typeof ct !== "string" || !ct.startsWith("application/grpc") || (ct.length > 16 && ct[16] !== "+" && ct[16] !== ";")) {
      try {
        port.respond({ [HTTP2_HEADER_STATUS]: 415 }, true);
      } catch {
        // gone
      }
      return;
    }
    if (this.draining) return respondError(port, Status.UNAVAILABLE, "the sidecar is draining: retry on another endpoint");
    const rawPath = headers[":path"];
    const path = typeof rawPath === "string" ? rawPath : "";
    const shape = this.opts.lookup(path);
    if (!shape) return respondError(port, Status.UNIMPLEMENTED, `method ${path} is not served here`);
    let deadline: number | undefined;
    const timeout = headers["grpc-timeout"];
    if (timeout !== undefined) {
      const ms = typeof timeout === "string" ? parseGrpcTimeout(timeout) : undefined;
      if (ms === undefined) return respondError(port, Status.INTERNAL, `invalid grpc-timeout value ${JSON.stringify(timeout)}`);
      deadline = Date.now() + ms;
    }
    let metadata: Metadata;
    try {
      metadata = fromHeaders(headers);
    } catch (e) {
      const err = e as GrpcError;
      return respondError(port, err.code ?? Status.INTERNAL, err.message);
    }
    const enc = headers["grpc-encoding"];
    const call = new GrpcServerCall(port, path, shape, metadata, deadline, typeof enc === "string" ? enc : undefined, this.opts.maxMessageBytes);

    const events = new CallEvents(this, call);
    if (shape.clientStreaming) {
      this.hand(call);
    } else if (deadline !== undefined) {
      // Until the request has arrived no handler holds the deadline: the server does. A unary request
      // usually arrives in the same read as its headers (handed before this read's microtasks run): the
      // deadline is queued only for calls still waiting then, not added and removed for each call.
      this.awaitingRequest.push(call);
      if (this.awaitingRequest.length === 1) queueMicrotask(this.armDeadlines);
    }
    return events;
  }

  /** Calls whose request had not arrived when their headers were read (see armDeadlines). */
  private awaitingRequest: GrpcServerCall[] = [];

  private readonly armDeadlines = (): void => {
    const calls = this.awaitingRequest;
    this.awaitingRequest = [];
    for (const call of calls) {
      if (call.handed || call.ended || call.cancelled || call.deadline === undefined) continue;
      deadlines.add(call, call.deadline);
    }
  };

  /** @internal The call goes to the handler (once). */
  hand(call: GrpcServerCall): void {
    if (call.handed) return;
    call.handed = true;
    deadlines.remove(call);
    this.opts.onCall(call);
  }
}
