// Outbound: the app's calls (ServerCalls on its session) routed by service to the upstream in mesh.yaml,
// with the per-route timeout, retries (backoff with jitter, retryable codes only, retry budget, deadline
// kept), circuit breaker and outlier ejection, spoken as gRPC to the remote sidecar. Payloads are bytes.
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
import { nextHop } from "./trace.ts";
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

function serviceOf(path: string): string {
  const end = path.indexOf("/", 1);
  return end > 1 ? path.slice(1, end) : "";
}

/** Sleeps `ms`; resolves false early if `signal` aborts. */
function sleep(ms: number, signal: AbortSignal): Promise<boolean> {
  if (signal.aborted) return Promise.resolve(false);
  return new Promise((resolve) => {
    const onAbort = () => {
      clearTimeout(timer);
      resolve(false);
    };
    const timer = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve(true);
    }, ms);
    signal.addEventListener("abort", onAbort, { once: true });
  });
}

export function makeOutboundHandler(deps: OutboundDeps): ServerHandler {
  return (call) => handleOutbound(deps, call);
}

async function handleOutbound(deps: OutboundDeps, sc: ServerCall): Promise<void> {
  const { metrics, inflight } = deps;
  const started = performance.now();
  inflight.begin();
  const methodLabel = deps.methods.has(sc.method) ? sc.method : "other";
  const incoming = sc.metadata.traceparent;
  const trace = nextHop(typeof incoming === "string" ? incoming : undefined);
  let attempts = 0;
  let upstream = "-";
  let finished = false;
  const finish = (code: number, details: string, trailers?: Metadata) => {
    if (finished) return;
    finished = true;
    const reason: unknown = sc.abortReason;
    if (sc.ended && reason instanceof RpcError) {
      // The channel already ended the call (deadline, the app cancelled, session lost): record what the
      // app saw, not the upstream attempt's CANCELLED.
      code = reason.code;
      details = reason.details;
    }
    sc.end(code, details, trailers);
    const ms = performance.now() - started;
    metrics.observe("outbound", methodLabel, code, ms / 1000);
    logAccess({ direction: "outbound", method: sc.method, code, details, durationMs: ms, upstream, attempts, traceId: trace.traceId, spanId: trace.spanId });
    inflight.end();
  };
  try {
    const service = serviceOf(sc.method);
    const cluster = deps.clusters.get(service);
    if (!cluster) {
      finish(
        Status.UNIMPLEMENTED,
        `the sidecar of pod ${deps.pod} has no upstream for service "${service}": add it under sidecar.upstreams in mesh.yaml`,
      );
      return;
    }
    const deadline = Math.min(sc.deadline ?? Infinity, Date.now() + cluster.timeoutMs);
    const headers = toHeaders(sc.metadata, baseRequestHeaders(sc.method));
    headers.traceparent = trace.traceparent;
    cluster.budget.recordRequest();

    if (sc.shape.clientStreaming) {
      // Request streams are not buffered for replay, so they get exactly one attempt.
      const slot = cluster.breaker.tryAcquire() ? undefined : await takeSlot(cluster, deadline, sc.signal);
      if (slot) return finish(slot.code, slot.details);
      const ep = cluster.pick();
      if (!ep) {
        cluster.breaker.release();
        return finish(Status.UNAVAILABLE, `no endpoints resolved for upstream ${service}`);
      }
      attempts = 1;
      upstream = ep.address;
      const r = await attempt(cluster, ep, sc, headers, undefined, deadline);
      finish(r.code, r.details, r.trailers);
      return;
    }

    // A unary request usually arrived with the call, half-closed: taken without iterating.
    let request = sc.takeRequest();
    let count = request === undefined ? 0 : 1;
    if (!sc.requestsDone) {
      for await (const m of sc) {
        request = m;
        count++;
      }
    }
    if (count !== 1 || !request) {
      finish(Status.INTERNAL, `${sc.method} takes exactly one request message; the app sent ${count}`);
      return;
    }
    const req = request; // sent as it is (the client frames it into its own buffer): no Buffer view made
    for (;;) {
      attempts++;
      if (Date.now() >= deadline) {
        finish(Status.DEADLINE_EXCEEDED, `deadline exceeded before attempt ${attempts} to ${service} (timeout_ms ${cluster.timeoutMs} or the caller's deadline)`);
        return;
      }
      // A free breaker slot is taken without a promise (and without making the call's AbortSignal).
      const slot = cluster.breaker.tryAcquire() ? undefined : await takeSlot(cluster, deadline, sc.signal);
      if (slot) return finish(slot.code, slot.details);
      const ep = cluster.pick();
      let r: AttemptResult;
      if (!ep) {
        cluster.breaker.release();
        r = { code: Status.UNAVAILABLE, details: `no endpoints resolved for upstream ${service}`, trailers: {}, committed: false, response: undefined, headers: undefined };
      } else {
        upstream = ep.address;
        r = await attempt(cluster, ep, sc, headers, req, deadline);
      }
      const retryable =
        r.code !== Status.OK && !r.committed && cluster.retry.retryOn.has(r.code) && attempts < cluster.retry.maxAttempts && sc.abortReason === undefined;
      if (!retryable) {
        if (r.code === Status.OK && !sc.shape.serverStreaming) {
          if (hasMetadata(r.headers)) sc.sendHeaders(r.headers);
          if (r.details === "" && r.response !== undefined) {
            // Response and OK status in one step: the channel sends the response before respond()
            // returns, so it needs no copy of it and no promise (write() copies a unary response,
            // since a handler may reuse its buffer once write() resolves).
            sc.respond(r.response, r.trailers);
            // The channel may have ended it otherwise (a response over the app's limit): record that.
            finish(sc.endCode ?? r.code, r.details, r.trailers);
            return;
          }
          await sc.write(r.response ?? Buffer.alloc(0));
        }
        finish(r.code, r.details, r.trailers);
        return;
      }
      const delay = backoffMs(cluster.retry, attempts);
      if (Date.now() + delay >= deadline) {
        finish(r.code, `${r.details} (not retried: the deadline would pass during backoff)`, r.trailers);
        return;
      }
      if (!cluster.budget.tryRetry()) {
        metrics.retryBudgetExhausted.inc({ service });
        finish(r.code, `${r.details} (not retried: retry budget of ${service} used up)`, r.trailers);
        return;
      }
      metrics.retries.inc({ service });
      if (!(await sleep(delay, sc.signal))) {
        finish(Status.CANCELLED, "the app cancelled the call during retry backoff");
        return;
      }
    }
  } catch (e) {
    const err = e as Error;
    finish(err instanceof RpcError ? err.code : Status.INTERNAL, `sidecar failed routing ${sc.method}: ${err.message}`);
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
 * One attempt on `ep`. Holds a breaker slot, which it releases. With `req` (unary, server streaming) the
 * request goes in one write with the half-close; without (client, bidi streaming) the app's requests
 * are pumped up as they come. Responses of streaming shapes go to the app as they arrive (the call is
 * then committed: no retry); a unary response is kept for the caller to send once the attempt is OK.
 */
function attempt(
  cluster: UpstreamCluster,
  ep: EndpointConn,
  sc: ServerCall,
  headers: OutgoingHttpHeaders,
  req: Uint8Array | undefined,
  deadline: number,
): Promise<AttemptResult> {
  return new Promise<AttemptResult>((resolve) => new Attempt(cluster, ep, sc, req === undefined, resolve).start(headers, req, deadline));
}

/**
 * The state of one attempt, and the listener of its upstream call: one object with methods instead of
 * a closure per callback (this runs on every proxied call).
 */
class Attempt implements CallListener {
  readonly result: AttemptResult;
  /** Unary: the one response is held (the attempt may still fail and be retried). Otherwise forwarded. */
  private readonly forward: boolean;
  private call: GrpcClientCall | undefined;
  /** True while sc.onAbort is ours (cleared when the attempt ends). */
  private listening = false;
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
    private readonly resolve: (r: AttemptResult) => void,
  ) {
    this.result = { code: Status.UNKNOWN, details: "", trailers: {}, committed: streamingIn, response: undefined, headers: undefined };
    this.forward = sc.shape.serverStreaming || streamingIn;
  }

  /** `req`: the one request (unary, server streaming); undefined when the app streams its requests. */
  start(headers: OutgoingHttpHeaders, req: Uint8Array | undefined, deadline: number): void {
    this.ep.active++;
    const call = this.ep.client.start(headers, Number.isFinite(deadline) ? deadline : undefined, this, req);
    this.call = call;
    if (call.finished) return;
    // The call's one abort listener (no AbortSignal made per call); cleared when the attempt ends.
    this.listening = true;
    this.sc.onAbort = () => call.cancel("the app cancelled the call");
    if (this.streamingIn) void pumpRequests(this.sc, call);
  }

  private sendHeadersOnce(): void {
    if (this.headersSent) return;
    this.headersSent = true;
    this.result.committed = true;
    if (hasMetadata(this.result.headers)) this.sc.sendHeaders(this.result.headers);
  }

  onHeaders(md: Metadata): void {
    this.result.headers = md;
  }

  onMessage(m: Buffer): void {
    const result = this.result;
    if (!this.forward) {
      if (result.response !== undefined) {
        this.call?.abort(Status.UNIMPLEMENTED, `${this.ep.address} sent a second response message for ${this.sc.method}`);
        return;
      }
      result.response = m;
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
    const result = this.result;
    if (this.listening) this.sc.onAbort = undefined;
    if (code === Status.OK && !this.forward && result.response === undefined) {
      code = Status.UNIMPLEMENTED;
      details = `${this.ep.address} ended ${this.sc.method} OK without a response message`;
    }
    result.code = code;
    result.details = details;
    result.trailers = trailers;
    settleAttempt(this.cluster, this.ep, code);
    if (this.chain) {
      const done = () => this.done();
      this.chain.then(done, done);
    } else {
      this.done();
    }
  }

  private done(): void {
    if (this.forward && this.result.code === Status.OK) this.sendHeadersOnce();
    this.resolve(this.result);
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
