// A gRPC client for one endpoint: one HTTP/2 connection on the sidecar's own framing (h2/session.ts
// over Bun.connect: h2c, or TLS presenting our certificate; MESH_GRPC_TLS_NODE=1 puts TLS on
// node:http2), made on first use and made again after GOAWAY or loss. Payloads are undecoded bytes.
// The status of a call comes from its trailers (or a trailers-only response); without one, from what
// ended the stream, the way grpc-js maps it: a connection that cannot be made or is lost → UNAVAILABLE,
// RST_STREAM → its code's status, an HTTP error status → the spec's mapping. A deadline goes upstream as
// grpc-timeout and is also kept here (the process's deadline queue): when it passes the stream is reset
// (CANCEL) and the call ends DEADLINE_EXCEEDED whatever the server does.
import type * as http2 from "node:http2";
import { createRequire } from "node:module";
import { isIP } from "../discovery/ip.ts";
import type { SecureContextOptions } from "node:tls";
import { type DeadlineEntry, deadlines, NOT_QUEUED } from "../../../runtime/rpc/deadline-queue.ts";
import { type Metadata, Status } from "../../../runtime/rpc/status.ts";
import { GrpcError } from "./errors.ts";
import { fromHeaders } from "./metadata.ts";
import { decodeGrpcMessage, parseGrpcStatus, statusFromHttp, statusFromRst } from "./status.ts";
import { formatGrpcTimeout } from "./timeout.ts";
import { decompress, frameMessage, MessageDecoder } from "./wire.ts";
import { type DecodeResult, field, type HeaderList } from "./h2/hpack.ts";
import { ALPN_H2, ErrorCode, H2Session, type H2Stream, type H2StreamOwner } from "./h2/session.ts";

const NGHTTP2_CANCEL = ErrorCode.CANCEL;
// node:http2 (about 10 MB of a process's RSS once loaded) is loaded only for TLS.
const nodeHttp2 = (): typeof http2 => createRequire(import.meta.url)("node:http2");

export interface GrpcClientOptions {
  /** "host:port" (IPv6 as "[addr]:port"). */
  address: string;
  maxMessageBytes: number;
  /** TLS: the files' current contents, read for each new connection (so rotated certificates apply). */
  tls?: () => SecureContextOptions;
  /**
   * Keepalive (own framing): a connection from which nothing has been read for this long gets a PING;
   * 0 turns it off. Default KEEPALIVE_MS (env MESH_GRPC_KEEPALIVE_MS).
   */
  keepaliveMs?: number;
  /** No PING ACK (nor any other byte) within this long: the connection is taken as dead and dropped. */
  keepaliveTimeoutMs?: number;
}

function envMs(name: string, dflt: number): number {
  const v = process.env[name];
  if (v === undefined || v === "") return dflt;
  const n = Number(v);
  return Number.isFinite(n) && n >= 0 ? n : dflt;
}

/**
 * 5 min: as often as grpc-go's and grpc-js's servers accept pings by default (their keepalive
 * enforcement answers more frequent ones with GOAWAY ENHANCE_YOUR_CALM "too_many_pings"), so any gRPC
 * upstream tolerates it. Timeout 20 s: gRPC's default keepalive timeout.
 */
export const KEEPALIVE_MS = envMs("MESH_GRPC_KEEPALIVE_MS", 300_000);
export const KEEPALIVE_TIMEOUT_MS = envMs("MESH_GRPC_KEEPALIVE_TIMEOUT_MS", 20_000);

export interface CallListener {
  /** Response headers (not called for a trailers-only response). */
  onHeaders(md: Metadata): void;
  onMessage(message: Buffer): void;
  /** Exactly once, last. */
  onStatus(code: number, details: string, trailers: Metadata): void;
}

const EMPTY: Metadata = Object.freeze({}) as Metadata;

/** Headers every call carries; per-call ones are added to a copy. */
export function baseRequestHeaders(path: string): http2.OutgoingHttpHeaders {
  return {
    ":method": "POST",
    ":path": path,
    "content-type": "application/grpc",
    te: "trailers",
    "user-agent": "rpal-mesh-sidecar",
  };
}

export class GrpcClientCall implements DeadlineEntry, H2StreamOwner {
  private done = false;
  private httpStatus = 0;
  private code: number | undefined;
  private details = "";
  private trailers: Metadata = EMPTY;
  private error: Error | undefined;
  private encoding: string | undefined;
  private readonly decoder: MessageDecoder;
  /** @internal The call's place in the deadline queue (runtime/rpc/deadline-queue.ts). */
  deadlineSlot = NOT_QUEUED;
  private stream: http2.ClientHttp2Stream | undefined;
  private own: H2Stream | undefined;
  private gotResponse = false;
  private drainWake: (() => void) | undefined;

  constructor(
    private readonly client: GrpcClient,
    private readonly listener: CallListener,
    private readonly maxBytes: number,
  ) {
    this.decoder = new MessageDecoder(maxBytes);
  }

  /** @internal */
  attach(stream: http2.ClientHttp2Stream, session: http2.ClientHttp2Session, deadline: number | undefined): void {
    this.stream = stream;
    if (deadline !== undefined) deadlines.add(this, deadline);
    stream.on("response", (headers: http2.IncomingHttpHeaders) => {
      if (!this.done) this.onResponse(headers);
    });
    stream.on("data", (chunk: Buffer) => this.onData(chunk, 0, chunk.length));
    stream.on("trailers", (headers: http2.IncomingHttpHeaders) => {
      if (!this.done) this.takeStatus(headers);
    });
    stream.on("error", (e: Error) => (this.error ??= e));
    stream.on("end", () => {
      if (this.code !== undefined) this.finish();
    });
    stream.on("close", () => this.finish(session));
  }

  /** @internal The call on our own HTTP/2 stream (h2c). */
  attachOwn(stream: H2Stream, deadline: number | undefined): void {
    this.own = stream;
    if (deadline !== undefined) deadlines.add(this, deadline);
    stream.owner = this;
  }

  /** @internal The own stream's response headers, then its trailers (H2StreamOwner). */
  streamHeaders(h: DecodeResult, endStream: boolean): void {
    if (this.done) return;
    const headers = h.headers as http2.IncomingHttpHeaders;
    if (this.gotResponse) {
      this.takeStatus(headers); // trailers
    } else {
      this.gotResponse = true;
      this.onResponse(headers);
    }
    if (endStream) this.finishOwn(0, false);
  }

  /** @internal (H2StreamOwner) */
  streamData(buf: Buffer, start: number, end: number, endStream: boolean): void {
    if (end > start) this.onData(buf, start, end);
    if (!endStream) return;
    // Ended without a status: an RST_STREAM may follow in the same read and says more.
    if (this.code === undefined) queueMicrotask(() => this.finishOwn(0, false));
    else this.finishOwn(0, false);
  }

  /** @internal (H2StreamOwner) */
  streamReset(code: number, lost: boolean): void {
    this.drainWake?.();
    this.finishOwn(code, lost);
  }

  private finishOwn(rstCode: number, lost: boolean): void {
    if (this.done) return;
    const stream = this.own!;
    if (this.code === undefined && (lost || rstCode)) {
      if (lost) {
        const err = stream.session.closeError;
        this.code = Status.UNAVAILABLE;
        this.details = err ? `${this.client.address}: ${err.message}` : `connection to ${this.client.address} lost before the call's status`;
      } else {
        ({ code: this.code, details: this.details } = statusFromRst(rstCode));
      }
      this.trailers = EMPTY;
    }
    this.finish();
  }

  private onResponse(headers: http2.IncomingHttpHeaders): void {
    // Compared before it is parsed: Number() of a string is a call into the runtime (0.4 % of the
    // frontend sidecar at 1,000 calls/s in perf), and nearly every response says "200".
    const status = headers[":status"];
    this.httpStatus = status === "200" ? 200 : Number(status) || 0;
    if (headers["grpc-status"] !== undefined) {
      this.takeStatus(headers); // trailers-only
      return;
    }
    if (this.httpStatus !== 200) return; // the end of the stream maps the HTTP status
    const enc = headers["grpc-encoding"];
    this.encoding = typeof enc === "string" ? enc : undefined;
    let md: Metadata;
    try {
      md = fromHeaders(headers);
    } catch (e) {
      this.abort(Status.INTERNAL, `bad response headers from ${this.client.address}: ${(e as Error).message}`);
      return;
    }
    this.listener.onHeaders(md);
  }

  /** Response data: chunk[start, end). */
  private onData(chunk: Buffer, start: number, end: number): void {
    if (this.done || this.code !== undefined) return;
    if (this.httpStatus !== 200) return;
    try {
      this.decoder.push(chunk, this, start, end);
    } catch (e) {
      const err = e instanceof GrpcError ? e : new GrpcError(Status.INTERNAL, (e as Error).message);
      this.abort(err.code, `response from ${this.client.address}: ${err.details}`);
    }
  }

  /** @internal A response message from the decoder (throws, into onData's catch, if it does not decompress). */
  onDecoded(m: Buffer, compressed: boolean): void {
    this.listener.onMessage(compressed ? decompress(m, this.encoding, this.maxBytes) : m);
  }

  private takeStatus(headers: http2.IncomingHttpHeaders): void {
    const code = parseGrpcStatus(headers["grpc-status"]);
    const msg = headers["grpc-message"];
    try {
      this.trailers = fromHeaders(headers);
    } catch (e) {
      this.trailers = {};
      this.code = Status.INTERNAL;
      this.details = `bad trailers from ${this.client.address}: ${(e as Error).message}`;
      return;
    }
    if (code === undefined) {
      this.code = Status.UNKNOWN;
      this.details = `malformed grpc-status ${JSON.stringify(headers["grpc-status"])} from ${this.client.address}`;
      return;
    }
    this.code = code;
    this.details = typeof msg === "string" ? decodeGrpcMessage(msg) : "";
  }

  /** @internal The outcome, once: from the status received, else from how the stream ended. */
  finish(session?: http2.ClientHttp2Session): void {
    if (this.done) return;
    let code = this.code;
    let details = this.details;
    const stream = this.stream;
    if (code !== undefined) {
      if (code === Status.OK && this.decoder.midMessage) {
        code = Status.INTERNAL;
        details = `the response from ${this.client.address} ended in the middle of a message`;
      }
    } else if (this.error && (this.error as { code?: string }).code !== "ERR_HTTP2_STREAM_ERROR") {
      // The connection could not be made (refused, TLS) or broke: the endpoint is unavailable.
      code = Status.UNAVAILABLE;
      details = `${this.client.address}: ${this.error.message}`;
    } else if (stream?.rstCode) {
      const gone = session !== undefined && (session.destroyed || session.closed);
      // A dropped connection shows up as CANCEL on its streams (grpc-js reports it UNAVAILABLE too).
      if (stream.rstCode === NGHTTP2_CANCEL && gone) {
        code = Status.UNAVAILABLE;
        details = `connection to ${this.client.address} lost`;
      } else {
        ({ code, details } = statusFromRst(stream.rstCode));
      }
    } else if (this.httpStatus && this.httpStatus !== 200) {
      ({ code, details } = statusFromHttp(this.httpStatus));
    } else if (session && (session.destroyed || session.closed)) {
      code = Status.UNAVAILABLE;
      details = `connection to ${this.client.address} lost before the call's status`;
    } else {
      code = Status.INTERNAL;
      details = `${this.client.address} ended the stream without a gRPC status`;
    }
    this.settle(code, details, this.trailers);
  }

  private settle(code: number, details: string, trailers: Metadata): void {
    if (this.done) return;
    this.done = true;
    deadlines.remove(this);
    this.listener.onStatus(code, details, trailers);
  }

  /** Ends the call here with `code` and resets the stream (CANCEL). */
  abort(code: number, details: string): void {
    if (this.done) return;
    if (this.own) {
      this.own.reset(NGHTTP2_CANCEL);
      this.settle(code, details, EMPTY);
      return;
    }
    const s = this.stream;
    if (s && !s.destroyed && !s.closed) {
      try {
        s.close(NGHTTP2_CANCEL);
      } catch {
        // gone
      }
    }
    this.settle(code, details, EMPTY);
  }

  /** @internal The call's deadline passed (see deadline-queue.ts). */
  onDeadline(): void {
    this.abort(Status.DEADLINE_EXCEEDED, `deadline exceeded waiting for ${this.client.address}`);
  }

  /** Cancels the call (the caller gave up): RST_STREAM CANCEL, status CANCELLED. */
  cancel(details = "cancelled by the caller"): void {
    this.abort(Status.CANCELLED, details);
  }

  /** @internal */
  fail(code: number, details: string): void {
    this.settle(code, details, EMPTY);
  }

  get finished(): boolean {
    return this.done;
  }

  /** Sends one request message; false when the window is full (wait with drained()) or the call is over. */
  write(message: Uint8Array): boolean {
    const s = this.stream;
    const own = this.own;
    if (this.done || (own ? own.closed : !s || s.destroyed || s.closed)) return false;
    if (message.byteLength > this.maxBytes) {
      this.abort(Status.RESOURCE_EXHAUSTED, `request message larger than max (${message.byteLength} vs. ${this.maxBytes})`);
      return false;
    }
    if (own) return own.writeMessage(message);
    try {
      return s!.write(frameMessage(message));
    } catch {
      return false;
    }
  }

  /** Stops taking response messages until resume() (HTTP/2 flow control then holds the server back). */
  pause(): void {
    if (this.own) this.own.pause();
    else this.stream?.pause();
  }

  resume(): void {
    if (this.own) this.own.resume();
    else this.stream?.resume();
  }

  /** Half-close: no more request messages. */
  end(): void {
    if (this.own) {
      if (!this.done) this.own.end();
      return;
    }
    const s = this.stream;
    if (this.done || !s || s.destroyed || s.writableEnded) return;
    try {
      s.end();
    } catch {
      // gone
    }
  }

  /** Resolves when the stream can take more or the call is over. */
  drained(): Promise<void> {
    const own = this.own;
    if (own) {
      if (this.done || own.closed || own.queued === 0) return Promise.resolve();
      return new Promise((resolve) => {
        const wake = () => {
          own.onDrain = undefined;
          this.drainWake = undefined;
          resolve();
        };
        own.onDrain = wake;
        this.drainWake = wake;
      });
    }
    const s = this.stream;
    if (this.done || !s || s.destroyed || s.closed) return Promise.resolve();
    return new Promise((resolve) => {
      const wake = () => {
        s.off("drain", wake);
        s.off("close", wake);
        resolve();
      };
      s.on("drain", wake);
      s.on("close", wake);
    });
  }
}

/** Request headers object → HPACK field list: pseudo-headers first, :scheme and :authority added. */
function toRequestList(h: http2.OutgoingHttpHeaders, authority: string, scheme: string): HeaderList {
  const list: HeaderList = [
    field(":method", String(h[":method"] ?? "POST")),
    field(":scheme", scheme),
    field(":path", String(h[":path"] ?? "/")),
    field(":authority", authority),
  ];
  for (const k in h) {
    if (k.charCodeAt(0) === 0x3a) continue;
    const v = h[k];
    if (v === undefined) continue;
    if (Array.isArray(v)) for (const x of v) list.push(field(k, String(x)));
    else list.push(field(k, String(v)));
  }
  return list;
}

export class GrpcClient {
  readonly address: string;
  private session: http2.ClientHttp2Session | undefined;
  private own: H2Session | undefined;
  private readonly host: string;
  private readonly port: number;
  private closed = false;
  private readonly servername: string | undefined;

  constructor(private readonly opts: GrpcClientOptions) {
    this.address = opts.address;
    const host = opts.address.slice(0, opts.address.lastIndexOf(":")).replace(/^\[|\]$/g, "");
    this.host = host;
    this.port = Number(opts.address.slice(opts.address.lastIndexOf(":") + 1));
    // Bun's TLS refuses an IP address as SNI server name, so for IP endpoints we send "localhost": the
    // server certificate is still verified against the mesh CA (every pod certificate `mesh certs` makes
    // carries localhost and 127.0.0.1), which is the identity that matters inside the mesh.
    this.servername = isIP(host) ? "localhost" : host;
  }

  private connect(): http2.ClientHttp2Session {
    const o = this.opts;
    const s = o.tls
      ? nodeHttp2().connect(`https://${o.address}`, { ...o.tls(), servername: this.servername, ALPNProtocols: ["h2"], settings: { enablePush: false } })
      : nodeHttp2().connect(`http://${o.address}`, { settings: { enablePush: false } });
    const drop = () => {
      if (this.session === s) this.session = undefined;
    };
    // Errors reach the streams too (each call fails UNAVAILABLE); the session is only replaced.
    s.on("error", drop);
    s.on("goaway", drop);
    s.on("close", drop);
    return s;
  }

  /** h2c: our own HTTP/2 over Bun.connect. Frames wait in the session until the socket is open. */
  private ownSession(): H2Session {
    const cur = this.own;
    if (cur && cur.usable) {
      if (cur.streamCount < cur.peerMaxStreams) return cur;
      // The server's SETTINGS_MAX_CONCURRENT_STREAMS is reached: that connection finishes its calls
      // (our GOAWAY tells the server no more come) and new calls go on a new one.
      cur.goaway();
    }
    const h2: H2Session = new H2Session(undefined, {
      server: false,
      onGoaway: () => {
        if (this.own === h2) this.own = undefined;
      },
      onClose: () => {
        if (this.own === h2) this.own = undefined;
      },
    });
    this.own = h2;
    this.keepalive(h2);
    const tls = this.opts.tls?.();
    Bun.connect({
      hostname: this.host,
      port: this.port,
      // mTLS: our certificate, the server's verified against the mesh CA, ALPN "h2" (wire format).
      tls: tls
        ? { ca: tls.ca as Buffer, cert: tls.cert as Buffer, key: tls.key as Buffer, serverName: this.servername, rejectUnauthorized: true, ALPNProtocols: ALPN_H2 }
        : undefined,
      socket: {
        open: (sock) => h2.attachSocket(sock),
        handshake: (sock, ok, authError) => {
          if (!ok || authError) {
            h2.onSocketClose(authError ?? new Error("TLS handshake failed"));
            sock.end();
          }
        },
        data: (_sock, d) => h2.onData(d),
        drain: () => h2.onSocketDrain(),
        close: () => h2.onSocketClose(),
        end: () => h2.onSocketClose(),
        error: (_sock, e) => h2.onSocketClose(e),
        connectError: (_sock, e) => h2.onSocketClose(e),
      },
    }).catch((e: Error) => h2.onSocketClose(e));
    return h2;
  }

  /**
   * PING-based liveness: every keepaliveMs, a connection that read nothing since the last look gets a
   * PING; if no byte comes back within keepaliveTimeoutMs the connection is dropped (its calls fail
   * UNAVAILABLE, retried by the policies where allowed) and the next call makes a new one. Catches an
   * upstream that vanished without a FIN or RST (host gone, network partition, a stuck peer).
   */
  private keepalive(h2: H2Session): void {
    const every = this.opts.keepaliveMs ?? KEEPALIVE_MS;
    if (!(every > 0)) return;
    const timeout = this.opts.keepaliveTimeoutMs ?? KEEPALIVE_TIMEOUT_MS;
    let seen = h2.reads;
    let deadline: Timer | undefined;
    const tag = Buffer.alloc(8);
    const tick = setInterval(() => {
      if (h2.destroyed) return stop();
      if (h2.reads !== seen || deadline) {
        seen = h2.reads;
        return;
      }
      tag.writeDoubleBE(Date.now(), 0);
      h2.ping(tag);
      h2.flush();
      const readsAtPing = h2.reads;
      deadline = setTimeout(() => {
        deadline = undefined;
        if (h2.reads === readsAtPing) {
          h2.destroy(new Error(`no answer to a keepalive PING from ${this.address} within ${timeout} ms: connection dropped`));
        }
        seen = h2.reads;
      }, timeout);
      deadline.unref?.();
    }, every);
    tick.unref?.();
    const stop = () => {
      clearInterval(tick);
      if (deadline) clearTimeout(deadline);
      deadline = undefined;
    };
    h2.onPingAck = () => {
      if (deadline) clearTimeout(deadline);
      deadline = undefined;
      seen = h2.reads;
    };
    const prevClose = h2.closeHook;
    h2.closeHook = () => {
      stop();
      prevClose?.();
    };
  }

  private startOwn(call: GrpcClientCall, headers: http2.OutgoingHttpHeaders, deadline: number | undefined, request: Uint8Array | undefined): GrpcClientCall {
    const list = toRequestList(headers, this.address, this.opts.tls ? "https" : "http");
    let stream: H2Stream;
    try {
      stream = this.ownSession().request(list, false);
    } catch (e) {
      call.fail(Status.UNAVAILABLE, `cannot start a call to ${this.address}: ${(e as Error).message}`);
      return call;
    }
    call.attachOwn(stream, deadline);
    if (request) stream.writeMessage(request, true);
    return call;
  }

  private currentSession(): http2.ClientHttp2Session {
    const s = this.session;
    if (s && !s.closed && !s.destroyed) return s;
    return (this.session = this.connect());
  }

  /**
   * Starts a call. `headers` are the request headers (see baseRequestHeaders) with the metadata; the
   * deadline adds grpc-timeout. With `request` the call sends that one message and half-closes
   * (unary, server streaming); without, write()/end() stream the requests.
   */
  start(headers: http2.OutgoingHttpHeaders, deadline: number | undefined, listener: CallListener, request?: Uint8Array): GrpcClientCall {
    const call = new GrpcClientCall(this, listener, this.opts.maxMessageBytes);
    if (this.closed) {
      call.fail(Status.UNAVAILABLE, `the client for ${this.address} is closed`);
      return call;
    }
    if (request && request.byteLength > this.opts.maxMessageBytes) {
      call.fail(Status.RESOURCE_EXHAUSTED, `request message larger than max (${request.byteLength} vs. ${this.opts.maxMessageBytes})`);
      return call;
    }
    // The caller's headers object is reused across attempts; each request is sent (copied into
    // frames) before the next attempt sets its own grpc-timeout.
    const h = headers;
    if (deadline !== undefined && Number.isFinite(deadline)) {
      const left = deadline - Date.now();
      if (left <= 0) {
        call.fail(Status.DEADLINE_EXCEEDED, `deadline exceeded before the call to ${this.address} started`);
        return call;
      }
      h["grpc-timeout"] = formatGrpcTimeout(left);
    } else {
      deadline = undefined;
      delete h["grpc-timeout"];
    }
    if (!this.opts.tls || process.env.MESH_GRPC_TLS_NODE !== "1") return this.startOwn(call, h, deadline, request);
    let session = this.currentSession();
    let stream: http2.ClientHttp2Stream;
    try {
      stream = session.request(h, { endStream: false });
    } catch {
      // The connection received GOAWAY or closed between our look and the request: one new connection.
      if (this.session === session) this.session = undefined;
      session = this.currentSession();
      try {
        stream = session.request(h, { endStream: false });
      } catch (e) {
        call.fail(Status.UNAVAILABLE, `cannot start a call to ${this.address}: ${(e as Error).message}`);
        return call;
      }
    }
    call.attach(stream, session, deadline);
    if (request) {
      try {
        stream.end(frameMessage(request));
      } catch {
        // the stream's close handler reports why
      }
    }
    return call;
  }

  close(): void {
    this.closed = true;
    const s = this.session;
    this.session = undefined;
    s?.close();
    const o = this.own;
    this.own = undefined;
    o?.goaway();
  }
}
