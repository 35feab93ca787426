// Outbound: the app's calls (ServerCalls on its session) routed by service to the upstream in mesh.yaml,
// with the per-route timeout, retries (backoff with jitter, retryable codes only, retry budget, deadline
// kept), circuit breaker and outlier ejection, spoken as gRPC to the remote sidecar. Payloads are bytes.
//
// One OutboundCall object per call carries it from attempt to attempt in callbacks. At 1,000 calls/s
// each call runs cache-cold, so every closure, promise and microtask hop on its path costs far more than
// in a warm loop: the common case (a unary request already here, a breaker slot free, no retry) runs
// from the handler to the upstream and, when the upstream's status arrives, from the socket's data
// handler to the app's answer, with no async function, promise or closure made for it. Only waiting
// (the app's requests still arriving, a breaker slot, a response write) goes through an await.
import type { OutgoingHttpHeaders } from "node:http2";
import { hasMetadata, type Metadata, RpcError, Status } from "../../runtime/rpc/status.ts";
import type { ServerCall, ServerHandler } from "../../runtime/rpc/types.ts";
import { logAccess } from "./access-log.ts";
import { baseRequestHeaders, type CallListener, type GrpcClientCall } from "./grpc/client.ts";
import { toHeaders } from "./grpc/metadata.ts";
import type { InflightTracker } from "./inflight.ts";
import type { SidecarMetrics } from "./metrics.ts";
import type { MethodInfo } from "./protos.ts";
import { backoffMs } from "./retry.ts";
import { nextHop, type TraceContext } from "./trace.ts";
import type { EndpointConn, UpstreamCluster } from "./upstream.ts";

export interface OutboundDeps {
  pod: string;
  clusters: Map<string, UpstreamCluster>;
  methods: Map<string, MethodInfo>;
  metrics: SidecarMetrics;
  inflight: InflightTracker;
}

interface AttemptResult {
  code: number;
  details: string;
  trailers: Metadata;
  /** Response headers/messages already passed to the app: the call can no longer be retried. */
  committed: boolean;
  response: Buffer | undefined;
  headers: Metadata | undefined;
}

/** Told when an attempt is over: synchronously from the upstream call's status (or from start()). */
interface AttemptOwner {
  attemptDone(r: AttemptResult): void;
}

/** An attempt's trailers until its status sets them (never read before): no object per attempt. */
const NO_TRAILERS: Metadata = Object.freeze({}) as Metadata;

function serviceOf(path: string): string {
  const end = path.indexOf("/", 1);
  return end > 1 ? path.slice(1, end) : "";
}

export function makeOutboundHandler(deps: OutboundDeps): ServerHandler {
  // Returns at once, the call still open: OutboundCall ends it (the channel keeps a call a synchronous
  // handler did not end).
  return (call) => new OutboundCall(deps, call).route();
}

/** The retry backoff timer's callback, with the call as its argument: no closure per retry. */
function backoffOver(oc: OutboundCall): void {
  oc.backoffOver();
}

/**
 * One call from the app: what it needs from attempt to attempt (the loop's locals of an async handler),
 * and the owner of its attempts, which decides on each one's end whether to retry or answer.
 */
class OutboundCall implements AttemptOwner {
  private readonly started = performance.now();
  private readonly methodLabel: string;
  private readonly trace: TraceContext;
  private attempts = 0;
  private upstream = "-";
  private finished = false;
  // Set by route() once the upstream is known.
  private service = "";
  private cluster!: UpstreamCluster;
  private deadline = Infinity;
  private headers!: OutgoingHttpHeaders;
  /** The one request (unary, server streaming), kept for retries; undefined when the app streams them. */
  private request: Uint8Array | undefined;
  /** The attempt in flight, if any. */
  private attempt: Attempt | undefined;
  private backoffTimer: ReturnType<typeof setTimeout> | undefined;
  /**
   * sc.onAbort while an attempt runs or a retry waits. The channel calls onAbort as a plain function,
   * so this is the call's one closure, made the first time it listens.
   */
  private onAbort: (() => void) | undefined;

  constructor(
    private readonly deps: OutboundDeps,
    private readonly sc: ServerCall,
  ) {
    deps.inflight.begin();
    this.methodLabel = deps.methods.has(sc.method) ? sc.method : "other";
    const incoming = sc.metadata.traceparent;
    this.trace = nextHop(typeof incoming === "string" ? incoming : undefined);
  }

  /** The handler: finds the upstream and starts the first attempt. */
  route(): void {
    const sc = this.sc;
    try {
      const service = serviceOf(sc.method);
      const cluster = this.deps.clusters.get(service);
      if (!cluster) {
        this.finish(
          Status.UNIMPLEMENTED,
          `the sidecar of pod ${this.deps.pod} has no upstream for service "${service}": add it under sidecar.upstreams in mesh.yaml`,
        );
        return;
      }
      this.service = service;
      this.cluster = cluster;
      this.deadline = Math.min(sc.deadline ?? Infinity, Date.now() + cluster.timeoutMs);
      const headers = toHeaders(sc.metadata, baseRequestHeaders(sc.method));
      headers.traceparent = this.trace.traceparent;
      this.headers = headers;
      cluster.budget.recordRequest();

      if (sc.shape.clientStreaming) {
        // Request streams are not buffered for replay, so they get exactly one attempt.
        this.takeSlot();
        return;
      }
      // A unary request usually arrived with the call, half-closed: taken without iterating.
      const request = sc.takeRequest();
      if (sc.requestsDone) this.withRequest(request, request === undefined ? 0 : 1);
      else void this.readRequests(request);
    } catch (e) {
      this.failed(e);
    }
  }

  /** The app's one request is still coming (or more follow): read to the half-close, then go on. */
  private async readRequests(first: Uint8Array | undefined): Promise<void> {
    try {
      let request = first;
      let count = first === undefined ? 0 : 1;
      for await (const m of this.sc) {
        request = m;
        count++;
      }
      this.withRequest(request, count);
    } catch (e) {
      this.failed(e);
    }
  }

  private withRequest(request: Uint8Array | undefined, count: number): void {
    if (count !== 1 || !request) {
      this.finish(Status.INTERNAL, `${this.sc.method} takes exactly one request message; the app sent ${count}`);
      return;
    }
    this.request = request; // sent as it is (the client frames it into its own buffer): no Buffer view made
    this.nextAttempt();
  }

  private nextAttempt(): void {
    this.attempts++;
    if (Date.now() >= this.deadline) {
      this.finish(
        Status.DEADLINE_EXCEEDED,
        `deadline exceeded before attempt ${this.attempts} to ${this.service} (timeout_ms ${this.cluster.timeoutMs} or the caller's deadline)`,
      );
      return;
    }
    this.takeSlot();
  }

  /** A free breaker slot is taken at once (no promise, no AbortSignal); only waiting for one awaits. */
  private takeSlot(): void {
    if (this.cluster.breaker.tryAcquire()) this.startAttempt();
    else void this.waitForSlot();
  }

  private async waitForSlot(): Promise<void> {
    try {
      const slot = await takeSlot(this.cluster, this.deadline, this.sc.signal);
      if (slot) return this.finish(slot.code, slot.details);
      this.startAttempt();
    } catch (e) {
      this.failed(e);
    }
  }

  /** With a breaker slot held: an attempt on the endpoint the balancer picks. */
  private startAttempt(): void {
    const { cluster, sc } = this;
    const streamingIn = sc.shape.clientStreaming;
    const ep = cluster.pick();
    if (!ep) {
      cluster.breaker.release();
      const details = `no endpoints resolved for upstream ${this.service}`;
      if (streamingIn) return this.finish(Status.UNAVAILABLE, details);
      return this.attemptDone({ code: Status.UNAVAILABLE, details, trailers: {}, committed: false, response: undefined, headers: undefined });
    }
    if (streamingIn) this.attempts = 1;
    this.upstream = ep.address;
    const a = new Attempt(cluster, ep, sc, streamingIn, this);
    this.attempt = a;
    // False: it ended inside start() (attemptDone has run).
    if (a.start(this.headers, this.request, this.deadline)) this.listenForAbort();
  }

  attemptDone(r: AttemptResult): void {
    const sc = this.sc;
    this.attempt = undefined;
    this.stopListening();
    try {
      if (sc.shape.clientStreaming) return this.finish(r.code, r.details, r.trailers);
      const { cluster, service } = this;
      const retryable =
        r.code !== Status.OK && !r.committed && cluster.retry.retryOn.has(r.code) && this.attempts < cluster.retry.maxAttempts && sc.abortReason === undefined;
      if (!retryable) return this.answer(r);
      const delay = backoffMs(cluster.retry, this.attempts);
      if (Date.now() + delay >= this.deadline) {
        return this.finish(r.code, `${r.details} (not retried: the deadline would pass during backoff)`, r.trailers);
      }
      if (!cluster.budget.tryRetry()) {
        this.deps.metrics.retryBudgetExhausted.inc({ service });
        return this.finish(r.code, `${r.details} (not retried: retry budget of ${service} used up)`, r.trailers);
      }
      this.deps.metrics.retries.inc({ service });
      // The app had not given up (retryable says so); if it does during the backoff, onAbort tells us.
      this.backoffTimer = setTimeout(backoffOver, delay, this);
      this.listenForAbort();
    } catch (e) {
      this.failed(e);
    }
  }

  /** @internal The backoff before a retry is over. */
  backoffOver(): void {
    this.backoffTimer = undefined;
    this.stopListening();
    try {
      this.nextAttempt();
    } catch (e) {
      this.failed(e);
    }
  }

  /** The last attempt's outcome goes to the app. */
  private answer(r: AttemptResult): void {
    const sc = this.sc;
    if (r.code === Status.OK && !sc.shape.serverStreaming) {
      if (hasMetadata(r.headers)) sc.sendHeaders(r.headers);
      if (r.details === "" && r.response !== undefined) {
        // Response and OK status in one step: the channel sends the response before respond()
        // returns, so it needs no copy of it and no promise (write() copies a unary response,
        // since a handler may reuse its buffer once write() resolves).
        sc.respond(r.response, r.trailers);
        // The channel may have ended it otherwise (a response over the app's limit): record that.
        this.finish(sc.endCode ?? r.code, r.details, r.trailers);
        return;
      }
      void this.writeResponse(r);
      return;
    }
    this.finish(r.code, r.details, r.trailers);
  }

  private async writeResponse(r: AttemptResult): Promise<void> {
    try {
      await this.sc.write(r.response ?? Buffer.alloc(0));
      this.finish(r.code, r.details, r.trailers);
    } catch (e) {
      this.failed(e);
    }
  }

  private listenForAbort(): void {
    this.sc.onAbort = this.onAbort ??= () => this.appAborted();
  }

  private stopListening(): void {
    if (this.onAbort !== undefined && this.sc.onAbort === this.onAbort) this.sc.onAbort = undefined;
  }

  /**
   * The app cancelled, its deadline passed or its connection went, while an attempt ran or a retry
   * waited. The channel ends the call right after telling us: acting from inside would end it first,
   * with the attempt's CANCELLED instead of the channel's reason. So it waits a microtask, as every
   * step did when the handler awaited each one (and this path is rare).
   */
  private appAborted(): void {
    queueMicrotask(() => {
      if (this.attempt) {
        this.attempt.cancel("the app cancelled the call"); // its status comes back to attemptDone
      } else if (this.backoffTimer !== undefined) {
        clearTimeout(this.backoffTimer);
        this.backoffTimer = undefined;
        this.finish(Status.CANCELLED, "the app cancelled the call during retry backoff");
      }
    });
  }

  private failed(e: unknown): void {
    const err = e as Error;
    this.finish(err instanceof RpcError ? err.code : Status.INTERNAL, `sidecar failed routing ${this.sc.method}: ${err.message}`);
  }

  private finish(code: number, details: string, trailers?: Metadata): void {
    if (this.finished) return;
    this.finished = true;
    this.stopListening(); // (the cancel in a retry's backoff ends here while still listening)
    const sc = this.sc;
    const reason: unknown = sc.abortReason;
    if (sc.ended && reason instanceof RpcError) {
      // The channel already ended the call (deadline, the app cancelled, session lost): record what the
      // app saw, not the upstream attempt's CANCELLED.
      code = reason.code;
      details = reason.details;
    }
    sc.end(code, details, trailers);
    const ms = performance.now() - this.started;
    this.deps.metrics.observe("outbound", this.methodLabel, code, ms / 1000);
    const trace = this.trace;
    logAccess({ direction: "outbound", method: sc.method, code, details, durationMs: ms, upstream: this.upstream, attempts: this.attempts, traceId: trace.traceId, spanId: trace.spanId });
    this.deps.inflight.end();
  }
}

/** Takes a circuit-breaker slot; returns the status to fail with when none can be had. */
async function takeSlot(cluster: UpstreamCluster, deadline: number, signal: AbortSignal): Promise<{ code: number; details: string } | undefined> {
  const wait = cluster.breaker.acquire(deadline, signal);
  if (!wait) return undefined;
  try {
    await wait;
    return undefined;
  } catch (e) {
    if (e instanceof RpcError) {
      if (e.code === Status.RESOURCE_EXHAUSTED) cluster.metrics.breakerRejections.inc({ service: cluster.service });
      return { code: e.code, details: e.details };
    }
    throw e;
  }
}

function settleAttempt(cluster: UpstreamCluster, ep: EndpointConn, code: number): void {
  ep.active--;
  cluster.breaker.release();
  cluster.outlier.record(ep, code, cluster.endpoints);
  cluster.metrics.attempt(cluster.service, ep.address, code);
}

/**
 * One attempt on `ep`: the listener of its upstream call, and its result (one object, no closure per
 * callback: this runs on every proxied call). Holds a breaker slot, which it releases. With `req`
 * (unary, server streaming) the request goes in one write with the half-close; without (client, bidi
 * streaming) the app's requests are pumped up as they come. Responses of streaming shapes go to the
 * app as they arrive (the call is then committed: no retry); a unary response is kept for the owner to
 * send once the attempt is OK.
 */
class Attempt implements CallListener, AttemptResult {
  code: number = Status.UNKNOWN;
  details = "";
  trailers: Metadata = NO_TRAILERS;
  committed: boolean;
  response: Buffer | undefined = undefined;
  headers: Metadata | undefined = undefined;
  /** Unary: the one response is held (the attempt may still fail and be retried). Otherwise forwarded. */
  private readonly forward: boolean;
  private call: GrpcClientCall | undefined;
  /**
   * Streaming responses: forwarded in order, one sc.write at a time; the upstream stream pauses while
   * the app is slow to take them.
   */
  private chain: Promise<void> | undefined;
  private queued = 0;
  private headersSent = false;

  constructor(
    private readonly cluster: UpstreamCluster,
    private readonly ep: EndpointConn,
    private readonly sc: ServerCall,
    private readonly streamingIn: boolean,
    private readonly owner: AttemptOwner,
  ) {
    this.committed = streamingIn;
    this.forward = sc.shape.serverStreaming || streamingIn;
  }

  /**
   * `req`: the one request (unary, server streaming); undefined when the app streams its requests.
   * Returns false when the call ended at once (the owner has been told).
   */
  start(headers: OutgoingHttpHeaders, req: Uint8Array | undefined, deadline: number): boolean {
    this.ep.active++;
    const call = this.ep.client.start(headers, Number.isFinite(deadline) ? deadline : undefined, this, req);
    this.call = call;
    if (call.finished) return false;
    if (this.streamingIn) void pumpRequests(this.sc, call);
    return true;
  }

  cancel(details: string): void {
    this.call?.cancel(details);
  }

  private sendHeadersOnce(): void {
    if (this.headersSent) return;
    this.headersSent = true;
    this.committed = true;
    if (hasMetadata(this.headers)) this.sc.sendHeaders(this.headers);
  }

  onHeaders(md: Metadata): void {
    this.headers = md;
  }

  onMessage(m: Buffer): void {
    if (!this.forward) {
      if (this.response !== undefined) {
        this.call?.abort(Status.UNIMPLEMENTED, `${this.ep.address} sent a second response message for ${this.sc.method}`);
        return;
      }
      this.response = m;
      return;
    }
    this.sendHeadersOnce();
    this.queued++;
    if (this.queued > 8) this.call?.pause();
    const sc = this.sc;
    this.chain = (this.chain ?? Promise.resolve()).then(
      () => sc.write(m),
    ).then(
      () => {
        if (--this.queued <= 2) this.call?.resume();
      },
      () => this.call?.cancel("forwarding a response to the app failed (the app's call is over)"),
    );
  }

  onStatus(code: number, details: string, trailers: Metadata): void {
    if (code === Status.OK && !this.forward && this.response === undefined) {
      code = Status.UNIMPLEMENTED;
      details = `${this.ep.address} ended ${this.sc.method} OK without a response message`;
    }
    this.code = code;
    this.details = details;
    this.trailers = trailers;
    settleAttempt(this.cluster, this.ep, code);
    if (this.chain) {
      const done = () => this.done();
      this.chain.then(done, done);
    } else {
      this.done();
    }
  }

  private done(): void {
    if (this.forward && this.code === Status.OK) this.sendHeadersOnce();
    this.owner.attemptDone(this);
  }
}

/** Client and bidi streaming: the app's request messages go up as they come, then the half-close. */
async function pumpRequests(sc: ServerCall, call: GrpcClientCall): Promise<void> {
  try {
    for await (const m of sc) {
      if (call.finished) return;
      if (!call.write(m)) await call.drained();
    }
    call.end();
  } catch {
    call.cancel("reading the app's request stream failed");
  }
}
