// A gRPC server on node:http2 (h2c, or TLS with client certificates) that hands each call to one
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
import http2 from "node:http2";
import type { SecureContextOptions } from "node:tls";
import { type Metadata, Status } from "../../../runtime/rpc/status.ts";
import type { CallShape } from "../../../runtime/rpc/types.ts";
import { GrpcError } from "./errors.ts";
import { fromHeaders, toHeaders } from "./metadata.ts";
import { encodeGrpcMessage } from "./status.ts";
import { parseGrpcTimeout } from "./timeout.ts";
import { ACCEPT_ENCODING, decompress, frameMessage, MessageDecoder } from "./wire.ts";

const { HTTP2_HEADER_STATUS, HTTP2_HEADER_CONTENT_TYPE, HTTP_STATUS_OK } = http2.constants;

export interface GrpcServerOptions {
  maxMessageBytes: number;
  /** HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS: calls one client connection may have open at once. */
  maxConcurrentStreams: number;
  /** The call shape of a method path, or undefined if the server does not serve it (UNIMPLEMENTED). */
  lookup(path: string): CallShape | undefined;
  onCall(call: GrpcServerCall): void;
  /** TLS: the server's certificate and key and the CA client certificates must chain to (mTLS). */
  tls?: SecureContextOptions;
}

type Stream = http2.ServerHttp2Stream;

function respondError(stream: Stream, code: number, details: string, extra?: http2.OutgoingHttpHeaders): void {
  if (stream.destroyed || stream.closed || stream.headersSent) return;
  try {
    stream.respond(
      {
        [HTTP2_HEADER_STATUS]: HTTP_STATUS_OK,
        [HTTP2_HEADER_CONTENT_TYPE]: "application/grpc",
        "grpc-status": String(code),
        "grpc-message": encodeGrpcMessage(details),
        ...extra,
      },
      { endStream: true },
    );
  } catch {
    // The stream went away while we answered: nothing left to tell.
  }
}

/** A request message queue for streaming calls, read as an async iterable, pausing the stream when full. */
class RequestQueue implements AsyncIterable<Buffer> {
  private readonly items: Buffer[] = [];
  private waiter: ((r: IteratorResult<Buffer>) => void) | undefined;
  private failWaiter: ((e: Error) => void) | undefined;
  private done = false;
  private error: Error | undefined;

  constructor(private readonly stream: Stream) {}

  push(m: Buffer): void {
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = this.failWaiter = undefined;
      w({ value: m, done: false });
      return;
    }
    this.items.push(m);
    if (this.items.length >= 16) this.stream.pause();
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
          if (this.items.length < 4 && this.stream.isPaused()) this.stream.resume();
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
export class GrpcServerCall {
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
  /** @internal */ timer: ReturnType<typeof setTimeout> | undefined;
  /** @internal */ handed = false;

  constructor(
    private readonly stream: Stream,
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
    return this.stream.destroyed || this.stream.closed;
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
      this.stream.respond(headers, { waitForTrailers: true });
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
      return this.stream.write(frameMessage(message));
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
        this.stream.on("drain", wake);
        this.stream.on("close", wake);
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
    let last: Buffer | undefined;
    if (lastMessage) {
      // A unary response goes out with the status in one stream.end(): one write fewer per call.
      if (lastMessage.byteLength > this.maxBytes) {
        return this.end(Status.RESOURCE_EXHAUSTED, `response message larger than max (${lastMessage.byteLength} vs. ${this.maxBytes})`);
      }
      last = frameMessage(lastMessage);
      this.wroteMessage = true;
    }
    this.endedCode = code;
    if (this.timer) clearTimeout(this.timer);
    this.queue?.end();
    if (this.cancelled) return;
    const t: http2.OutgoingHttpHeaders = { "grpc-status": String(code) };
    if (details) t["grpc-message"] = encodeGrpcMessage(details);
    // An unsupported compression is answered with the ones we read, as the spec asks.
    if (code === Status.UNIMPLEMENTED) t["grpc-accept-encoding"] = ACCEPT_ENCODING;
    if (trailers) toHeaders(trailers, t);
    if (!this.responded && !this.wroteMessage && !this.pendingHeaders) {
      this.responded = true;
      t[HTTP2_HEADER_STATUS] = HTTP_STATUS_OK;
      t[HTTP2_HEADER_CONTENT_TYPE] = "application/grpc";
      try {
        this.stream.respond(t, { endStream: true });
      } catch {
        // gone
      }
      this.closeRequestSide();
      return;
    }
    if (!this.respond()) return;
    const stream = this.stream;
    stream.once("wantTrailers", () => {
      try {
        stream.sendTrailers(t);
      } catch {
        stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
      }
    });
    try {
      if (last) stream.end(last);
      else stream.end();
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
    if (stream.readableEnded) return;
    setImmediate(() => {
      if (!stream.closed && !stream.destroyed) stream.close(http2.constants.NGHTTP2_NO_ERROR);
    });
  }

  /** @internal The network side ended the call (reset, lost connection, protocol error). */
  cancel(reason: string): void {
    if (this.timer) clearTimeout(this.timer);
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

  /** @internal */
  pushRequest(m: Buffer): void {
    if (this.shape.clientStreaming) {
      this.queue!.push(m);
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

export class GrpcServer {
  private readonly server: http2.Http2Server | http2.Http2SecureServer;
  private readonly sessions = new Set<http2.ServerHttp2Session>();
  private draining = false;

  constructor(private readonly opts: GrpcServerOptions) {
    const settings: http2.Settings = { maxConcurrentStreams: opts.maxConcurrentStreams };
    this.server = opts.tls
      ? http2.createSecureServer({ ...opts.tls, settings, requestCert: true, rejectUnauthorized: true, ALPNProtocols: ["h2"] })
      : http2.createServer({ settings });
    this.server.on("session", (s: http2.ServerHttp2Session) => {
      this.sessions.add(s);
      s.on("error", () => {}); // a broken connection ends its streams; nothing to do for the server
      s.on("close", () => this.sessions.delete(s));
      if (this.draining) s.close();
    });
    this.server.on("stream", (stream: Stream, headers: http2.IncomingHttpHeaders) => this.onStream(stream, headers));
    // TLS handshake failures (no or foreign client certificate) concern one client only.
    this.server.on("tlsClientError", () => {});
    this.server.on("sessionError", () => {});
  }

  /** Binds; resolves with the bound port. */
  listen(host: string, port: number): Promise<number> {
    const target = host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
    return new Promise((resolve, reject) => {
      const onError = (e: Error) => reject(new Error(`cannot listen for inbound gRPC on ${target}: ${e.message} — pick a free port in sidecar.inbound.port`));
      this.server.once("error", onError);
      this.server.listen(port, host, () => {
        this.server.off("error", onError);
        this.server.on("error", () => {});
        resolve((this.server.address() as { port: number }).port);
      });
    });
  }

  /** New certificates (rotation): new connections use them, established ones keep theirs. */
  setSecureContext(tls: SecureContextOptions): void {
    (this.server as http2.Http2SecureServer).setSecureContext({ ...tls, requestCert: true, rejectUnauthorized: true } as SecureContextOptions);
  }

  /** Stops accepting (GOAWAY to every client, listener closed); resolves once every connection has closed. */
  drain(): Promise<void> {
    this.draining = true;
    return new Promise((resolve) => {
      this.server.close(() => resolve());
      for (const s of this.sessions) s.close();
      if (this.sessions.size === 0) resolve();
    });
  }

  /** Closes every connection now; calls in flight end on the client side as UNAVAILABLE. */
  forceStop(): void {
    this.draining = true;
    this.server.close();
    for (const s of this.sessions) s.destroy();
  }

  private onStream(stream: Stream, headers: http2.IncomingHttpHeaders): void {
    stream.on("error", () => {}); // a reset stream; the close handler below sees it
    if (headers[":method"] !== "POST") {
      try {
        stream.respond({ [HTTP2_HEADER_STATUS]: 405, allow: "POST" }, { endStream: true });
      } catch {
        // gone
      }
      return;
    }
    const ct = headers[HTTP2_HEADER_CONTENT_TYPE];
    if (typeof ct !== "string" || !ct.startsWith("application/grpc") || (ct.length > 16 && ct[16] !== "+" && ct[16] !== ";")) {
      try {
        stream.respond({ [HTTP2_HEADER_STATUS]: 415 }, { endStream: true });
      } catch {
        // gone
      }
      return;
    }
    if (this.draining) return respondError(stream, Status.UNAVAILABLE, "the sidecar is draining: retry on another endpoint");
    const path = headers[":path"] ?? "";
    const shape = this.opts.lookup(path);
    if (!shape) return respondError(stream, Status.UNIMPLEMENTED, `method ${path} is not served here`);
    let deadline: number | undefined;
    const timeout = headers["grpc-timeout"];
    if (timeout !== undefined) {
      const ms = typeof timeout === "string" ? parseGrpcTimeout(timeout) : undefined;
      if (ms === undefined) return respondError(stream, Status.INTERNAL, `invalid grpc-timeout value ${JSON.stringify(timeout)}`);
      deadline = Date.now() + ms;
    }
    let metadata: Metadata;
    try {
      metadata = fromHeaders(headers);
    } catch (e) {
      const err = e as GrpcError;
      return respondError(stream, err.code ?? Status.INTERNAL, err.message);
    }
    const enc = headers["grpc-encoding"];
    const call = new GrpcServerCall(stream, path, shape, metadata, deadline, typeof enc === "string" ? enc : undefined, this.opts.maxMessageBytes);

    stream.on("data", (chunk: Buffer) => {
      if (call.ended) return;
      try {
        call.decoder.push(chunk, (m, compressed) => call.pushRequest(compressed ? decompress(m, call.encoding, call.maxBytes) : m));
      } catch (e) {
        call.fail(e instanceof GrpcError ? e : new GrpcError(Status.INTERNAL, (e as Error).message));
      }
    });
    stream.on("end", () => {
      if (call.ended) return;
      if (call.decoder.midMessage) return call.fail(new GrpcError(Status.INTERNAL, "the request stream ended in the middle of a message (truncated gRPC frame)"));
      if (!shape.clientStreaming) {
        if (call.request === undefined) {
          return call.fail(new GrpcError(Status.UNIMPLEMENTED, `received no request message for ${shape.serverStreaming ? "server-streaming" : "unary"} method ${path}`));
        }
        this.hand(call);
      } else {
        // Bun emits "end" also for a stream the client reset (RST_STREAM), and "aborted" only after this
        // tick's microtasks: wait one turn so a reset is not taken for the client's half-close.
        setImmediate(() => {
          if (!stream.aborted && !stream.rstCode) call.endRequests();
        });
      }
    });
    stream.on("close", () => {
      if (call.timer) clearTimeout(call.timer);
      if (!call.ended) call.cancel(stream.rstCode ? `the client reset the stream (code ${stream.rstCode})` : "the client connection closed");
    });
    if (shape.clientStreaming) {
      this.hand(call);
    } else if (deadline !== undefined) {
      // Until the request has arrived no handler holds the deadline: the server does.
      call.timer = setTimeout(() => call.fail(new GrpcError(Status.DEADLINE_EXCEEDED, "deadline exceeded before the request arrived")), Math.max(0, deadline - Date.now()));
    }
  }

  private hand(call: GrpcServerCall): void {
    if (call.handed) return;
    call.handed = true;
    if (call.timer) {
      clearTimeout(call.timer);
      call.timer = undefined;
    }
    this.opts.onCall(call);
  }
}
