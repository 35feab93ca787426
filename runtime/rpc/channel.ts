// RpcChannel: gRPC-shaped calls in both directions over any Transport.
//
// A call is a CALL frame (head: method, metadata, timeout) followed by MESSAGE frames each way and
// one END frame (status + trailers) from the server; CANCEL aborts it from the client side. Call ids
// are odd for calls started by the side that connected (the app) and even for the other side, as in
// HTTP/2, so both sides can start calls without coordination.
//
// Flow control is per call and counted in bytes, like HTTP/2: the receiver grants `initialWindowBytes`
// and tops it up (WINDOW frames) only as its consumer reads, so a fast sender cannot grow the peer's
// memory without bound. A sender may send while its window is positive (one message may overshoot);
// a peer that ignores its window loses that call (RESOURCE_EXHAUSTED), not the connection.
import { logger, type Logger } from "../log.ts";
import type { Transport } from "../transport/types.ts";
import { encodeCallHeadAndMessageTransient } from "./call-head-codec.ts";
import { type DeadlineEntry, deadlines, NOT_QUEUED } from "./deadline-queue.ts";
import { FrameFlag, FrameKind, MAX_CONTROL_BODY } from "./frame.ts";
import { MessageQueue } from "./message-queue.ts";
import { hasMetadata, type Metadata, RpcError, Status } from "./status.ts";
import {
  type CallOptions,
  type CallShape,
  type ChannelSettings,
  type ClientCall,
  type ClientCallObserver,
  DEFAULT_SETTINGS,
  type FinalStatus,
  type ServerCall,
  type ServerHandler,
  type UnaryResult,
} from "./types.ts";
// Transient encoders: every body goes straight to Transport.send, which copies it before returning.
import { decodeCallHead, decodeEndStatus, decodeHeaders, encodeCallHeadTransient, encodeEndStatusTransient, encodeHeadersTransient, WireError } from "./wire.ts";

/** Above this many bytes buffered in the transport, writers wait for it to drain. */
const TRANSPORT_HIGH_WATER = 8 * 1024 * 1024;
const UNARY: CallShape = { serverStreaming: false, clientStreaming: false };
const SERVER_STREAMING: CallShape = { serverStreaming: true, clientStreaming: false };
const CLIENT_STREAMING: CallShape = { serverStreaming: false, clientStreaming: true };
const BIDI_STREAMING: CallShape = { serverStreaming: true, clientStreaming: true };
/**
 * A request or unary response this small rides in the CALL or END frame (FrameFlag.WITH_MESSAGE)
 * instead of a MESSAGE frame of its own. Bounded well under every peer's frame limit (maxFrameBody
 * is at least MAX_CONTROL_BODY), leaving room for the call head.
 */
const COMBINE_LIMIT = MAX_CONTROL_BODY / 2;
const NO_METADATA: Metadata = Object.freeze({}) as Metadata;
const NO_OPTIONS: CallOptions = Object.freeze({});
/** The status of nearly every call, shared (frozen, like NO_METADATA): OK, no details, no trailers. */
const OK_STATUS: FinalStatus = Object.freeze({ code: Status.OK, details: "", trailers: NO_METADATA });

export interface ChannelOptions {
  /** True on the side that opened the connection (the app): its calls get odd ids. */
  initiator: boolean;
  local?: ChannelSettings;
  peer?: ChannelSettings;
  /** For logs: who is on the other end. */
  peerName?: string;
  log?: Logger;
  /** Serves the peer's calls from the first frame on (frames the transport buffered included). */
  handler?: ServerHandler;
  /**
   * Do not take frames from the transport until start() is called: lets the owner set the handler
   * first, so a call the peer sent right after the handshake is not answered UNIMPLEMENTED.
   */
  deferStart?: boolean;
}

export interface ChannelStats {
  callsStarted: number;
  callsServed: number;
  activeClientCalls: number;
  activeServerCalls: number;
  flowControlViolations: number;
}

/**
 * Per-call flow-control state (our send window, what we owe the peer). Both call classes extend it:
 * one object per call instead of two.
 */
class Window {
  /** Bytes we may still send before the peer grants more. */
  sendWindow: number;
  /** Bytes the peer sent us beyond what we granted back (what its window thinks is in flight). */
  recvBalance = 0;
  /** Bytes our consumer read that we have not yet granted back. */
  recvUnacked = 0;
  /** Made only when somebody waits: most calls never run out of window. */
  private waiters: (() => void)[] | undefined;

  constructor(initialSend: number) {
    this.sendWindow = initialSend;
  }

  grant(bytes: number): void {
    this.sendWindow += bytes;
    if (this.sendWindow > 0) this.wakeWriters();
  }

  waitForRoom(): Promise<void> {
    return new Promise((resolve) => (this.waiters ??= []).push(resolve));
  }

  wakeWriters(): void {
    const w = this.waiters;
    if (w === undefined || w.length === 0) return;
    this.waiters = undefined;
    for (const f of w) f();
  }
}

/** How a unary call hands its outcome to the promise unary() returned. */
type UnaryResolve = (r: UnaryResult) => void;
type UnaryReject = (e: RpcError) => void;

class ClientCallImpl extends Window implements ClientCall, DeadlineEntry {
  /**
   * A unary call's response, kept here until somebody wants a queue: unary() takes it directly, so
   * the common call never builds one.
   */
  private single: Uint8Array | undefined;
  private queue: MessageQueue | undefined;
  finished = false;
  begun = false;
  halfClosed = false;
  finalStatus: FinalStatus | undefined;
  deadline: number | undefined;
  /** @internal The call's place in the deadline queue. */
  deadlineSlot = NOT_QUEUED;
  /** @internal The time it had when it started (ms, for DEADLINE_EXCEEDED's details). */
  deadlineMs = 0;
  /** Writers waiting for a call queued behind the concurrency limit to begin (made on first use). */
  beginWaiters: (() => void)[] | undefined;
  /** The one request of a unary or server-streaming call, sent with the CALL frame when it begins. */
  request: Uint8Array | undefined;
  /** Response headers once known; the promise is made only if somebody asks before that. */
  headersValue: Metadata | undefined;
  private headersPromise: Promise<Metadata> | undefined;
  private resolveHeaders: ((md: Metadata) => void) | undefined;
  /** The status promise, made only if somebody asks for it (unary() does not). */
  private statusPromise: Promise<FinalStatus> | undefined;
  private resolveStatus: ((s: FinalStatus) => void) | undefined;
  /** Set by unary(): settle() resolves or rejects its promise directly. */
  private unaryResolve: UnaryResolve | undefined;
  private unaryReject: UnaryReject | undefined;

  constructor(
    private readonly ch: RpcChannel,
    readonly callId: number,
    readonly method: string,
    readonly shape: CallShape,
    readonly options: CallOptions,
  ) {
    super(ch.peerSettings.initialWindowBytes);
  }

  /** @internal The deadline passed (see deadline-queue.ts). */
  onDeadline(): void {
    this.ch.clientCancel(this, Status.DEADLINE_EXCEEDED, `deadline exceeded after ${this.deadlineMs} ms (${this.method})`);
  }

  get status(): Promise<FinalStatus> {
    if (this.statusPromise === undefined) {
      const s = this.finalStatus;
      this.statusPromise = s !== undefined ? Promise.resolve(s) : new Promise((r) => (this.resolveStatus = r));
    }
    return this.statusPromise;
  }

  /** @internal unary(): `resolve` gets the response once the call ends OK with one; `reject` any failure. */
  awaitUnary(resolve: UnaryResolve, reject: UnaryReject): void {
    if (this.finalStatus !== undefined) return this.settleUnary(this.finalStatus, resolve, reject);
    this.unaryResolve = resolve;
    this.unaryReject = reject;
  }

  private settleUnary(status: FinalStatus, resolve: UnaryResolve, reject: UnaryReject): void {
    if (status.code !== Status.OK) return reject(new RpcError(status.code, status.details, status.trailers));
    const response = this.takeResponse();
    if (response === undefined) return reject(new RpcError(Status.INTERNAL, `${this.method}: the server ended the call OK without a response message`));
    resolve({ response, headers: this.headersValue ?? NO_METADATA, trailers: status.trailers });
  }

  /** The responses as an async queue (made on first use, holding anything that already arrived). */
  get responses(): MessageQueue {
    if (this.queue !== undefined) return this.queue;
    const q = new MessageQueue(this);
    this.queue = q;
    if (this.single !== undefined) {
      q.push(this.single);
      this.single = undefined;
    }
    const s = this.finalStatus;
    if (s !== undefined) q.end(s.code === Status.OK ? undefined : new RpcError(s.code, s.details, s.trailers));
    return q;
  }

  /** True once a response message arrived (a unary call takes exactly one). */
  get hasResponse(): boolean {
    return this.single !== undefined || (this.queue !== undefined && this.queue.length > 0);
  }

  /**
   * @internal True when a response arriving now may be kept as a view of the transport's buffer: the
   * call is unary, nobody made the response queue, and its observer takes the response only during
   * end() (ClientCallObserver.transientResponse). The channel then ends the call before onFrame returns.
   */
  get takesTransientResponse(): boolean {
    return this.observer?.transientResponse === true && this.queue === undefined && !this.shape.serverStreaming;
  }

  /** @internal A response from the peer. */
  pushResponse(message: Uint8Array): void {
    if (this.queue === undefined && !this.shape.serverStreaming && this.single === undefined) this.single = message;
    else this.responses.push(message);
  }

  /** @internal The unary response, if one arrived (never waits). */
  takeResponse(): Uint8Array | undefined {
    const m = this.single;
    if (m !== undefined) {
      this.single = undefined;
      return m;
    }
    return this.queue?.take();
  }

  /** @internal The caller read `bytes` of response: the channel may grant the server more window. */
  onConsumed(bytes: number): void {
    this.ch.consumed(this, this.callId, bytes, this.finished);
  }

  get headers(): Promise<Metadata> {
    if (this.headersValue !== undefined) return Promise.resolve(this.headersValue);
    this.headersPromise ??= new Promise((r) => (this.resolveHeaders = r));
    return this.headersPromise;
  }

  setHeaders(md: Metadata): void {
    if (this.headersValue !== undefined) return;
    this.headersValue = md;
    this.resolveHeaders?.(md);
    this.observer?.headers?.(md);
  }

  private observer: ClientCallObserver | undefined;

  observe(observer: ClientCallObserver): void {
    const s = this.finalStatus;
    if (s !== undefined) {
      if (this.headersValue !== undefined) observer.headers?.(this.headersValue);
      observer.end(s, s.code === Status.OK ? this.takeResponse() : undefined);
      return;
    }
    this.observer = observer;
    if (this.headersValue !== undefined) observer.headers?.(this.headersValue);
  }

  settle(status: FinalStatus): void {
    this.finalStatus = status;
    this.request = undefined;
    this.setHeaders(NO_METADATA);
    this.queue?.end(status.code === Status.OK ? undefined : new RpcError(status.code, status.details, status.trailers));
    this.wakeWriters();
    if (this.beginWaiters !== undefined) {
      const w = this.beginWaiters;
      this.beginWaiters = undefined;
      for (const f of w) f();
    }
    this.resolveStatus?.(status);
    const o = this.observer;
    if (o !== undefined) {
      this.observer = undefined;
      o.end(status, status.code === Status.OK ? this.takeResponse() : undefined);
    }
    const resolve = this.unaryResolve;
    if (resolve !== undefined) {
      const reject = this.unaryReject!;
      this.unaryResolve = this.unaryReject = undefined;
      this.settleUnary(status, resolve, reject);
    }
  }

  write(message: Uint8Array): Promise<void> {
    return this.ch.clientWrite(this, message, false);
  }

  /** Sends the last request message and half-closes in one frame. */
  writeLast(message: Uint8Array): Promise<void> {
    return this.ch.clientWrite(this, message, true);
  }

  end(): void {
    this.ch.clientHalfClose(this);
  }

  cancel(reason = "cancelled by the caller"): void {
    this.ch.clientCancel(this, Status.CANCELLED, reason);
  }

  [Symbol.asyncIterator](): AsyncIterator<Uint8Array> {
    return this.responses[Symbol.asyncIterator]();
  }
}

class ServerCallImpl extends Window implements ServerCall, DeadlineEntry {
  readonly requests: MessageQueue;
  /** Created on first use: most unary handlers never look at their signal. */
  private abortController: AbortController | undefined;
  ended = false;
  endCode: number | undefined;
  responsesSent = 0;
  /** A unary call's small response, held back to travel in the END frame (FrameFlag.WITH_MESSAGE). */
  heldResponse: Uint8Array | undefined;
  /** @internal The call's place in the deadline queue. */
  deadlineSlot = NOT_QUEUED;
  /** @internal The client's timeout (µs, for DEADLINE_EXCEEDED's details). */
  timeoutUs = 0;

  constructor(
    private readonly ch: RpcChannel,
    readonly callId: number,
    readonly method: string,
    readonly metadata: Metadata,
    readonly deadline: number | undefined,
    readonly shape: CallShape,
  ) {
    super(ch.peerSettings.initialWindowBytes);
    this.requests = new MessageQueue(this);
  }

  /** @internal The handler read `bytes` of request: the channel may grant the client more window. */
  onConsumed(bytes: number): void {
    this.ch.consumed(this, this.callId, bytes, this.ended);
  }

  abortReason: RpcError | undefined;
  onAbort: ((reason: unknown) => void) | undefined;

  get signal(): AbortSignal {
    if (this.abortController === undefined) {
      this.abortController = new AbortController();
      if (this.abortReason !== undefined) this.abortController.abort(this.abortReason);
    }
    return this.abortController.signal;
  }

  abort(reason: RpcError): void {
    // Only the first abort counts (as with an AbortController); the signal is made only if asked for.
    if (this.abortReason !== undefined) return;
    this.abortReason = reason;
    this.abortController?.abort(reason);
    const f = this.onAbort;
    if (f !== undefined) {
      this.onAbort = undefined;
      f(reason);
    }
  }

  /** @internal The deadline passed (see deadline-queue.ts): the handler is told, the client gets the status. */
  onDeadline(): void {
    if (this.ended) return;
    const details = `deadline exceeded (${(this.timeoutUs / 1000).toFixed(1)} ms) while serving ${this.method}`;
    this.abort(new RpcError(Status.DEADLINE_EXCEEDED, details));
    this.ch.serverEnd(this, Status.DEADLINE_EXCEEDED, details);
  }

  sendHeaders(metadata: Metadata): void {
    this.ch.serverSendHeaders(this, metadata);
  }

  write(message: Uint8Array): Promise<void> {
    return this.ch.serverWrite(this, message);
  }

  end(code: number = Status.OK, details = "", trailers?: Metadata): void {
    this.ch.serverEnd(this, code, details, trailers);
  }

  takeRequest(): Uint8Array | undefined {
    return this.requests.take();
  }

  get requestsDone(): boolean {
    return this.requests.finished && this.requests.length === 0;
  }

  respond(message: Uint8Array, trailers?: Metadata): void {
    this.ch.serverRespond(this, message, trailers);
  }

  [Symbol.asyncIterator](): AsyncIterator<Uint8Array> {
    return this.requests[Symbol.asyncIterator]();
  }
}

export class RpcChannel {
  readonly localSettings: ChannelSettings;
  readonly peerSettings: ChannelSettings;
  readonly closed: Promise<Error | undefined>;
  readonly stats: ChannelStats = {
    callsStarted: 0,
    callsServed: 0,
    activeClientCalls: 0,
    activeServerCalls: 0,
    flowControlViolations: 0,
  };

  private readonly log: Logger;
  private readonly peerName: string;
  private nextCallId: number;
  private readonly clientCalls = new Map<number, ClientCallImpl>();
  private readonly serverCalls = new Map<number, ServerCallImpl>();
  private readonly startQueue: ClientCallImpl[] = [];
  private handler: ServerHandler | undefined;
  private isClosed = false;
  private closeError: Error | undefined;
  private resolveClosed!: (e: Error | undefined) => void;
  private draining = false;
  private peerDraining = false;
  private drainWaiters: (() => void)[] = [];
  private writableWaiters: (() => void)[] = [];
  private pingSeq = 0;
  private readonly pings = new Map<number, (rttMs: number) => void>();

  constructor(
    readonly transport: Transport,
    opts: ChannelOptions,
  ) {
    this.localSettings = opts.local ?? DEFAULT_SETTINGS;
    this.peerSettings = opts.peer ?? DEFAULT_SETTINGS;
    this.nextCallId = opts.initiator ? 1 : 2;
    this.peerName = opts.peerName ?? "peer";
    this.log = opts.log ?? logger("rpc");
    this.closed = new Promise((r) => (this.resolveClosed = r));
    this.handler = opts.handler;
    if (!opts.deferStart) this.start();
  }

  private started = false;

  /** Starts taking frames from the transport (once; the constructor does it unless deferStart). */
  start(): void {
    if (this.started) return;
    this.started = true;
    this.transport.start({
      onFrame: (kind, flags, callId, aux, body) => this.onFrame(kind, flags, callId, aux, body),
      onClose: (error) => this.onClose(error),
      onWritable: () => this.onWritable(),
    });
  }

  get isOpen(): boolean {
    return !this.isClosed;
  }

  /** True once the peer said GOAWAY: new calls should go to a new connection. */
  get peerIsDraining(): boolean {
    return this.peerDraining;
  }

  setHandler(handler: ServerHandler | undefined): void {
    this.handler = handler;
  }

  // ---- client side -------------------------------------------------------------------------

  /**
   * Starts a call. With `request`, that is the call's only request message (unary and server-streaming
   * shapes): it goes out with the CALL frame, in the same frame when small, and the call is half-closed.
   */
  startCall(method: string, shape: CallShape, opts: CallOptions = NO_OPTIONS, request?: Uint8Array): ClientCall {
    return this.open(method, shape, opts, request);
  }

  /**
   * Starts a call; with `request`, that is its only request message: it goes out with the CALL frame
   * (in the same frame when small) and the call is half-closed.
   */
  private open(method: string, shape: CallShape, opts: CallOptions, request: Uint8Array | undefined): ClientCallImpl {
    const id = this.nextCallId;
    this.nextCallId += 2;
    if (this.nextCallId > 0xfffffff0) this.nextCallId = (this.nextCallId & 1) + 2; // wrap far from live ids
    const call = new ClientCallImpl(this, id, method, shape, opts);
    this.stats.callsStarted++;
    if (this.isClosed) {
      call.settle(this.status(Status.UNAVAILABLE, `connection to ${this.peerName} is closed${this.closeError ? `: ${this.closeError.message}` : ""}`));
      return call;
    }
    if (this.peerDraining) {
      call.settle(this.status(Status.UNAVAILABLE, `${this.peerName} is draining (GOAWAY): retry on a new connection`));
      return call;
    }
    let deadline = opts.deadline;
    if (opts.timeoutMs !== undefined) deadline = Math.min(deadline ?? Infinity, Date.now() + opts.timeoutMs);
    call.deadline = deadline;
    if (deadline !== undefined) {
      call.deadlineMs = Math.max(0, deadline - Date.now());
      deadlines.add(call, deadline);
    }
    if (opts.signal) {
      if (opts.signal.aborted) {
        this.clientCancel(call, Status.CANCELLED, "cancelled by the caller before it started");
        return call;
      }
      cancelOnAbort(this, call, opts.signal);
    }
    if (request !== undefined) {
      if (request.byteLength > this.peerSettings.maxMessageBytes) {
        this.clientCancel(
          call,
          Status.RESOURCE_EXHAUSTED,
          `request message of ${request.byteLength} bytes exceeds the server's max message size of ${this.peerSettings.maxMessageBytes} bytes`,
        );
        return call;
      }
      call.request = request;
      call.halfClosed = true;
    }
    this.clientCalls.set(id, call);
    this.stats.activeClientCalls++;
    if (this.stats.activeClientCalls > this.peerSettings.maxConcurrentCalls) this.startQueue.push(call);
    else this.begin(call);
    return call;
  }

  /**
   * One request, one response. The returned promise is the only one made for the call: the call's
   * end settles it directly (no status promise, no async function).
   */
  unary(method: string, request: Uint8Array, opts: CallOptions = NO_OPTIONS): Promise<UnaryResult> {
    const call = this.open(method, UNARY, opts, request);
    return new Promise((resolve, reject) => call.awaitUnary(resolve, reject));
  }

  /** Starts a server-streaming call with one request; iterate the result for the responses. */
  serverStream(method: string, request: Uint8Array, opts: CallOptions = NO_OPTIONS): ClientCall {
    return this.open(method, SERVER_STREAMING, opts, request);
  }

  private begin(call: ClientCallImpl): void {
    const timeoutUs = call.deadline === undefined ? 0 : Math.max(1, Math.round((call.deadline - Date.now()) * 1000));
    const fields = {
      method: call.method,
      metadata: call.options.metadata ?? NO_METADATA,
      timeoutUs,
      serverStreaming: call.shape.serverStreaming,
      clientStreaming: call.shape.clientStreaming,
    };
    call.begun = true;
    const request = call.request;
    if (request !== undefined) {
      // The only request message goes with the call: the window always lets a call's first message
      // through (one message may overshoot it).
      call.request = undefined;
      call.sendWindow -= request.byteLength;
      if (request.byteLength <= COMBINE_LIMIT) {
        // Transient: Transport.send copies it before the next call head is encoded.
        const body = encodeCallHeadAndMessageTransient(fields, request);
        const headLength = body.byteLength - request.byteLength;
        this.transport.send(FrameKind.CALL, FrameFlag.WITH_MESSAGE | FrameFlag.END_STREAM, call.callId, headLength, body);
      } else {
        this.transport.send(FrameKind.CALL, 0, call.callId, 0, encodeCallHeadTransient(fields));
        this.transport.send(FrameKind.MESSAGE, FrameFlag.END_STREAM, call.callId, 0, request);
      }
    } else {
      this.transport.send(FrameKind.CALL, 0, call.callId, 0, encodeCallHeadTransient(fields));
    }
    const w = call.beginWaiters;
    if (w !== undefined) {
      call.beginWaiters = undefined;
      for (const f of w) f();
    }
  }

  /** @internal */
  async clientWrite(call: ClientCallImpl, message: Uint8Array, last: boolean): Promise<void> {
    if (!call.begun && !call.finished) await new Promise<void>((r) => (call.beginWaiters ??= []).push(r));
    if (call.finished) throw this.finishedError(call);
    if (call.halfClosed) throw new RpcError(Status.INTERNAL, `${call.method}: write after end()`);
    if (message.byteLength > this.peerSettings.maxMessageBytes) {
      const details = `request message of ${message.byteLength} bytes exceeds the server's max message size of ${this.peerSettings.maxMessageBytes} bytes`;
      this.clientCancel(call, Status.RESOURCE_EXHAUSTED, details);
      throw new RpcError(Status.RESOURCE_EXHAUSTED, details);
    }
    while (call.sendWindow <= 0 && !call.finished) await call.waitForRoom();
    if (call.finished) throw this.finishedError(call);
    call.sendWindow -= message.byteLength;
    if (last) call.halfClosed = true;
    this.transport.send(FrameKind.MESSAGE, last ? FrameFlag.END_STREAM : 0, call.callId, 0, message);
    if (this.transport.bufferedBytes > TRANSPORT_HIGH_WATER) await this.writable();
  }

  /** @internal */
  clientHalfClose(call: ClientCallImpl): void {
    if (call.finished || call.halfClosed) return;
    call.halfClosed = true;
    const send = () => {
      if (!call.finished) this.transport.send(FrameKind.MESSAGE, FrameFlag.END_STREAM | FrameFlag.NO_MESSAGE, call.callId, 0);
    };
    if (call.begun) send();
    else (call.beginWaiters ??= []).push(send);
  }

  /** @internal */
  clientCancel(call: ClientCallImpl, code: number, details: string): void {
    if (call.finished) return;
    if (call.begun && !this.isClosed) this.transport.send(FrameKind.CANCEL, 0, call.callId, code);
    this.finishClient(call, this.status(code, details));
  }

  private finishClient(call: ClientCallImpl, status: FinalStatus): void {
    if (call.finished) return;
    call.finished = true;
    deadlines.remove(call);
    if (this.clientCalls.delete(call.callId)) this.stats.activeClientCalls--;
    if (!call.begun) {
      // Only a call that has not begun can wait in the start queue.
      const queued = this.startQueue.indexOf(call);
      if (queued >= 0) this.startQueue.splice(queued, 1);
    }
    call.settle(status);
    this.startQueued();
  }

  private startQueued(): void {
    while (this.startQueue.length > 0 && this.stats.activeClientCalls - this.startQueue.length < this.peerSettings.maxConcurrentCalls) {
      this.begin(this.startQueue.shift()!);
    }
  }

  private finishedError(call: ClientCallImpl): RpcError {
    const s = call.finalStatus;
    return s ? new RpcError(s.code, s.details, s.trailers) : new RpcError(Status.CANCELLED, "call already finished");
  }

  // ---- server side -------------------------------------------------------------------------

  /** @internal */
  serverSendHeaders(call: ServerCallImpl, metadata: Metadata): void {
    if (call.ended || this.isClosed) return;
    this.transport.send(FrameKind.MESSAGE, FrameFlag.HEADERS, call.callId, 0, encodeHeadersTransient(metadata));
  }

  /** @internal */
  async serverWrite(call: ServerCallImpl, message: Uint8Array): Promise<void> {
    if (call.ended) throw new RpcError(Status.CANCELLED, `${call.method}: write after the call ended (cancelled, deadline, or end() called)`);
    if (message.byteLength > this.peerSettings.maxMessageBytes) {
      const details = `response message of ${message.byteLength} bytes exceeds the client's max message size of ${this.peerSettings.maxMessageBytes} bytes`;
      this.serverEnd(call, Status.RESOURCE_EXHAUSTED, details);
      throw new RpcError(Status.RESOURCE_EXHAUSTED, details);
    }
    if (!call.shape.serverStreaming && call.responsesSent > 0) {
      throw new RpcError(Status.INTERNAL, `${call.method}: a unary call has exactly one response; the handler wrote a second`);
    }
    while (call.sendWindow <= 0 && !call.ended) await call.waitForRoom();
    if (call.ended) throw new RpcError(Status.CANCELLED, `${call.method}: the call ended while waiting to send`);
    call.sendWindow -= message.byteLength;
    call.responsesSent++;
    if (!call.shape.serverStreaming && message.byteLength <= COMBINE_LIMIT) {
      // A unary response is read by the client only at END: send both in one frame. Copied, since the
      // handler may reuse its buffer once write() resolves.
      call.heldResponse = message.slice();
      return;
    }
    this.transport.send(FrameKind.MESSAGE, 0, call.callId, 0, message);
    if (this.transport.bufferedBytes > TRANSPORT_HIGH_WATER) await this.writable();
  }

  /** @internal */
  serverRespond(call: ServerCallImpl, message: Uint8Array, trailers?: Metadata): void {
    if (call.ended) return;
    if (message.byteLength > this.peerSettings.maxMessageBytes) {
      const details = `response message of ${message.byteLength} bytes exceeds the client's max message size of ${this.peerSettings.maxMessageBytes} bytes`;
      return this.serverEnd(call, Status.RESOURCE_EXHAUSTED, details);
    }
    if (call.shape.serverStreaming || call.responsesSent > 0 || call.heldResponse !== undefined) {
      // Not the one-response case: the general path keeps its checks and flow control.
      return this.writeThenEnd(call, message, trailers);
    }
    call.responsesSent++;
    call.sendWindow -= message.byteLength;
    // Held only for the next line (serverEnd sends it before returning): no copy needed, so a caller
    // may pass a buffer it reuses or a view of memory that is valid only during this call.
    call.heldResponse = message;
    this.serverEnd(call, Status.OK, "", trailers);
  }

  /** respond()'s general path. Its own method, so that serverRespond captures nothing (no scope object per call). */
  private writeThenEnd(call: ServerCallImpl, message: Uint8Array, trailers: Metadata | undefined): void {
    void this.serverWrite(call, message).then(
      () => this.serverEnd(call, Status.OK, "", trailers),
      (e) => this.handlerFailed(call, e),
    );
  }

  /** @internal */
  serverEnd(call: ServerCallImpl, code: number, details: string, trailers?: Metadata): void {
    if (call.ended) return;
    call.endCode = code;
    if (!this.isClosed) {
      const held = call.heldResponse;
      if (held !== undefined) {
        call.heldResponse = undefined;
        if (code === Status.OK && !details && !hasMetadata(trailers) && held.byteLength <= COMBINE_LIMIT) {
          this.transport.send(FrameKind.END, FrameFlag.WITH_MESSAGE, call.callId, Status.OK, held);
          this.retireServer(call);
          return;
        }
        this.transport.send(FrameKind.MESSAGE, 0, call.callId, 0, held);
      }
      this.transport.send(FrameKind.END, 0, call.callId, code, encodeEndStatusTransient(code, details, trailers));
    }
    this.retireServer(call);
  }

  private retireServer(call: ServerCallImpl): void {
    call.ended = true;
    call.heldResponse = undefined;
    deadlines.remove(call);
    call.wakeWriters();
    call.requests.end();
    if (this.serverCalls.delete(call.callId)) this.stats.activeServerCalls--;
    if (this.draining && this.serverCalls.size === 0) this.wakeDrainWaiters();
  }

  private onCall(callId: number, flags: number, aux: number, body: Uint8Array): void {
    if (this.serverCalls.has(callId)) {
      this.protocolError(`CALL for call id ${callId}, which is already active`);
      return;
    }
    if (this.draining) return this.rejectCall(callId, Status.UNAVAILABLE, "server is draining (GOAWAY sent): retry on a new connection");
    if (this.serverCalls.size >= this.localSettings.maxConcurrentCalls) {
      return this.rejectCall(callId, Status.RESOURCE_EXHAUSTED, `too many concurrent calls (limit ${this.localSettings.maxConcurrentCalls})`);
    }
    const withMessage = (flags & FrameFlag.WITH_MESSAGE) !== 0;
    if (withMessage && aux > body.byteLength) {
      return this.rejectCall(callId, Status.INTERNAL, `malformed CALL: head length ${aux} exceeds the ${body.byteLength}-byte body`);
    }
    const headEnd = withMessage ? aux : body.byteLength;
    let head;
    try {
      head = decodeCallHead(body, headEnd);
    } catch (e) {
      return this.rejectCall(callId, Status.INTERNAL, (e as WireError).message);
    }
    if (!wellFormedMethod(head.method)) return this.rejectCall(callId, Status.UNIMPLEMENTED, `malformed method name ${JSON.stringify(head.method.slice(0, 200))}: expected /package.Service/Method`);
    const deadline = head.timeoutUs > 0 ? Date.now() + head.timeoutUs / 1000 : undefined;
    const shape = head.serverStreaming ? (head.clientStreaming ? BIDI_STREAMING : SERVER_STREAMING) : head.clientStreaming ? CLIENT_STREAMING : UNARY;
    const call = new ServerCallImpl(this, callId, head.method, head.metadata, deadline, shape);
    this.serverCalls.set(callId, call);
    this.stats.activeServerCalls++;
    this.stats.callsServed++;
    if (deadline !== undefined) {
      call.timeoutUs = head.timeoutUs;
      deadlines.add(call, deadline);
    }
    if (withMessage) {
      this.requestMessage(call, flags & FrameFlag.END_STREAM, body, headEnd);
      if (call.ended) return;
    } else if (flags & FrameFlag.END_STREAM) {
      call.requests.end();
    }
    const handler = this.handler;
    if (!handler) return this.serverEnd(call, Status.UNIMPLEMENTED, `no service is served on this connection (${head.method})`);
    let result: void | Promise<void>;
    try {
      result = handler(call);
    } catch (e) {
      this.handlerFailed(call, e);
      return;
    }
    if (result && typeof (result as Promise<void>).then === "function") {
      // Most unary handlers answer (respond) before their first await: their promise is already
      // fulfilled and the call over, and a reaction would only cost a promise and a microtask.
      if (call.ended && Bun.peek.status(result) === "fulfilled") return;
      this.endWhenSettled(call, result as Promise<void>);
    } else {
      // A synchronous handler that did not end the call keeps it open (it may end it later).
    }
  }

  /**
   * Ends the call when its handler's promise settles. Its own method: the closures live here, so onCall
   * itself captures nothing and makes no scope object per call.
   */
  private endWhenSettled(call: ServerCallImpl, result: Promise<void>): void {
    result.then(
      () => this.serverEnd(call, Status.OK, ""),
      (e) => this.handlerFailed(call, e),
    );
  }

  /** Ends a call the peer started before any state was made for it. */
  private rejectCall(callId: number, code: number, details: string): void {
    this.transport.send(FrameKind.END, 0, callId, code, encodeEndStatusTransient(code, details));
  }

  private handlerFailed(call: ServerCallImpl, e: unknown): void {
    if (call.ended) return;
    if (e instanceof RpcError) return this.serverEnd(call, e.code, e.details, e.trailers);
    const message = e instanceof Error ? e.message : String(e);
    this.log.debug({ method: call.method, err: message }, "handler threw");
    this.serverEnd(call, Status.UNKNOWN, message);
  }

  // ---- frames from the peer ------------------------------------------------------------------

  private onFrame(kind: number, flags: number, callId: number, aux: number, body: Uint8Array): void {
    const mine = (callId & 1) === (this.nextCallId & 1);
    switch (kind) {
      case FrameKind.CALL:
        if (mine || callId === 0) return this.protocolError(`CALL with call id ${callId} from the wrong id space`);
        return this.onCall(callId, flags, aux, body);
      case FrameKind.MESSAGE:
        if (mine) return this.onResponseMessage(callId, flags, body);
        return this.onRequestMessage(callId, flags, body);
      case FrameKind.END: {
        const call = mine ? this.clientCalls.get(callId) : undefined;
        if (!call) return;
        if (flags & FrameFlag.WITH_MESSAGE) {
          if (aux !== Status.OK) return this.clientCancel(call, Status.INTERNAL, `malformed END: a response message with status ${aux}`);
          // The call ends in this same onFrame: an observer that takes the response only during end()
          // gets a view of the frame body instead of a copy.
          this.onResponseMessage(callId, 0, body, call.takesTransientResponse);
          if (call.finished) return;
          return this.finishClient(call, OK_STATUS);
        }
        if (aux === Status.OK && body.byteLength === 0) return this.finishClient(call, OK_STATUS);
        let status: FinalStatus;
        try {
          const s = decodeEndStatus(body);
          status = { code: aux, details: s.message, trailers: s.trailers };
        } catch (e) {
          status = this.status(Status.INTERNAL, (e as Error).message);
        }
        return this.finishClient(call, status);
      }
      case FrameKind.CANCEL: {
        const call = mine ? undefined : this.serverCalls.get(callId);
        if (!call) return;
        const code = aux === Status.DEADLINE_EXCEEDED ? aux : Status.CANCELLED;
        call.abort(new RpcError(code, code === Status.CANCELLED ? "cancelled by the client" : "the client's deadline passed"));
        return this.retireServer(call);
      }
      case FrameKind.WINDOW: {
        const call = mine ? this.clientCalls.get(callId) : this.serverCalls.get(callId);
        call?.grant(aux);
        return;
      }
      case FrameKind.PING:
        if (!this.isClosed) this.transport.send(FrameKind.PONG, 0, 0, aux);
        return;
      case FrameKind.PONG: {
        const done = this.pings.get(aux);
        if (done) {
          this.pings.delete(aux);
          done(0);
        }
        return;
      }
      case FrameKind.GOAWAY:
        this.peerDraining = true;
        return;
      default:
        return; // HELLO and DOORBELL belong to the transport layer
    }
  }

  /** A MESSAGE frame from the client of a call we serve. */
  private onRequestMessage(callId: number, flags: number, body: Uint8Array): void {
    const call = this.serverCalls.get(callId);
    if (!call) return; // the call ended on our side already (cancel/deadline race): drop
    this.requestMessage(call, flags, body, 0);
  }

  /** A request message for `call`: body[from, end) (a CALL that carries its message passes the head's length). */
  private requestMessage(call: ServerCallImpl, flags: number, body: Uint8Array, from: number): void {
    if (!(flags & FrameFlag.NO_MESSAGE)) {
      const length = body.byteLength - from;
      if (!this.accept(call, length, call.method)) {
        call.abort(new RpcError(Status.RESOURCE_EXHAUSTED, "client ignored flow control"));
        return this.serverEnd(call, Status.RESOURCE_EXHAUSTED, "client sent more than its flow-control window allows");
      }
      if (length > this.localSettings.maxMessageBytes) {
        const details = `request message of ${length} bytes exceeds this server's max message size of ${this.localSettings.maxMessageBytes} bytes`;
        call.abort(new RpcError(Status.RESOURCE_EXHAUSTED, details));
        return this.serverEnd(call, Status.RESOURCE_EXHAUSTED, details);
      }
      call.requests.push(body.slice(from));
    }
    if (flags & FrameFlag.END_STREAM) call.requests.end();
  }

  /**
   * `transient`: the body may be passed on as the view it is, because the call ends (and its observer
   * takes the response) before this onFrame returns. Otherwise it is copied: a frame body is valid only
   * during onFrame.
   */
  private onResponseMessage(callId: number, flags: number, body: Uint8Array, transient = false): void {
    const call = this.clientCalls.get(callId);
    if (!call) return;
    if (flags & FrameFlag.HEADERS) {
      try {
        call.setHeaders(decodeHeaders(body));
      } catch (e) {
        this.clientCancel(call, Status.INTERNAL, (e as Error).message);
      }
      return;
    }
    if (flags & FrameFlag.NO_MESSAGE) return;
    if (!this.accept(call, body.byteLength, call.method)) {
      return this.clientCancel(call, Status.RESOURCE_EXHAUSTED, "server sent more than its flow-control window allows");
    }
    if (body.byteLength > this.localSettings.maxMessageBytes) {
      return this.clientCancel(
        call,
        Status.RESOURCE_EXHAUSTED,
        `response message of ${body.byteLength} bytes exceeds this client's max message size of ${this.localSettings.maxMessageBytes} bytes`,
      );
    }
    if (!call.shape.serverStreaming && call.hasResponse) {
      return this.clientCancel(call, Status.INTERNAL, `${call.method}: server sent more than one response to a unary call`);
    }
    // A server that sends no explicit headers has none: a caller awaiting them must not wait for END.
    call.setHeaders(NO_METADATA);
    call.pushResponse(transient ? body : body.slice());
  }

  /** Accounts received bytes against what we granted; false if the peer overran its window. */
  private accept(w: Window, bytes: number, method: string): boolean {
    w.recvBalance += bytes;
    if (w.recvBalance > this.localSettings.initialWindowBytes + this.localSettings.maxMessageBytes) {
      this.stats.flowControlViolations++;
      this.log.warn({ method, balance: w.recvBalance }, "peer overran its flow-control window; failing the call");
      return false;
    }
    return true;
  }

  /** @internal The consumer read `bytes`: grant them back once half a window has accumulated. */
  consumed(w: Window, callId: number, bytes: number, finished: boolean): void {
    w.recvUnacked += bytes;
    if (finished || this.isClosed) return;
    if (w.recvUnacked >= this.localSettings.initialWindowBytes / 2) {
      const grant = w.recvUnacked;
      w.recvUnacked = 0;
      w.recvBalance -= grant;
      this.transport.send(FrameKind.WINDOW, 0, callId, grant);
    }
  }

  // ---- connection --------------------------------------------------------------------------

  /** Round trip of a PING, in milliseconds. */
  async ping(timeoutMs = 5000): Promise<number> {
    if (this.isClosed) throw new RpcError(Status.UNAVAILABLE, "connection is closed");
    const seq = (this.pingSeq = (this.pingSeq + 1) >>> 0);
    const t0 = performance.now();
    return await new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pings.delete(seq);
        reject(new RpcError(Status.DEADLINE_EXCEEDED, `no PONG within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pings.set(seq, () => {
        clearTimeout(timer);
        resolve(performance.now() - t0);
      });
      this.transport.send(FrameKind.PING, 0, 0, seq);
    });
  }

  /**
   * Graceful close: tells the peer to start no new calls here, refuses new ones, and resolves once
   * every call this side serves has finished (or `graceMs` passed; then the rest are cancelled).
   */
  async goaway(graceMs = 30_000): Promise<void> {
    if (this.isClosed) return;
    if (!this.draining) {
      this.draining = true;
      this.transport.send(FrameKind.GOAWAY, 0, 0, 0);
    }
    if (this.serverCalls.size > 0) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        new Promise<void>((r) => this.drainWaiters.push(r)),
        new Promise<void>((r) => (timer = setTimeout(r, graceMs))),
      ]);
      clearTimeout(timer);
      for (const call of [...this.serverCalls.values()]) {
        call.abort(new RpcError(Status.UNAVAILABLE, "server drain grace period over"));
        this.serverEnd(call, Status.UNAVAILABLE, `server shut down before the call finished (drain grace ${graceMs} ms)`);
      }
    }
  }

  close(reason = "closed locally"): void {
    if (this.isClosed) return;
    this.transport.close(reason);
    this.onClose(new Error(reason));
  }

  private wakeDrainWaiters(): void {
    const w = this.drainWaiters;
    this.drainWaiters = [];
    for (const f of w) f();
  }

  private writable(): Promise<void> {
    if (this.isClosed) return Promise.resolve();
    return new Promise((r) => this.writableWaiters.push(r));
  }

  private onWritable(): void {
    const w = this.writableWaiters;
    this.writableWaiters = [];
    for (const f of w) f();
  }

  private protocolError(what: string): void {
    this.log.warn({ peer: this.peerName }, `protocol error from ${this.peerName}: ${what}; closing the connection`);
    this.close(`protocol error: ${what}`);
  }

  private onClose(error?: Error): void {
    if (this.isClosed) return;
    this.isClosed = true;
    this.closeError = error;
    const why = `connection to ${this.peerName} lost${error ? `: ${error.message}` : ""}`;
    if (error && !/closed locally/.test(error.message)) this.log.info({ peer: this.peerName, reason: error.message }, why);
    for (const call of [...this.clientCalls.values()]) this.finishClient(call, this.status(Status.UNAVAILABLE, why));
    for (const call of [...this.serverCalls.values()]) {
      call.abort(new RpcError(Status.UNAVAILABLE, why));
      this.retireServer(call);
    }
    this.onWritable();
    this.wakeDrainWaiters();
    for (const done of this.pings.values()) done(Number.NaN);
    this.pings.clear();
    this.resolveClosed(error);
  }

  private status(code: number, details: string, trailers: Metadata = {}): FinalStatus {
    return { code, details, trailers };
  }
}

/** Outside open(), so that open() captures nothing (a call with a signal is rare). */
function cancelOnAbort(ch: RpcChannel, call: ClientCallImpl, signal: AbortSignal): void {
  signal.addEventListener("abort", () => ch.clientCancel(call, Status.CANCELLED, "cancelled by the caller"), { once: true });
}

/** Method names already checked: a connection sees the same few on every call. */
const checkedMethods = new Set<string>();
const CHECKED_METHODS_LIMIT = 4096;

function wellFormedMethod(method: string): boolean {
  if (checkedMethods.has(method)) return true;
  if (!/^\/[^/]+\/[^/]+$/.test(method)) return false;
  if (checkedMethods.size < CHECKED_METHODS_LIMIT) checkedMethods.add(method);
  return true;
}
