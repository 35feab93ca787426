// Outbound: the app's calls (ServerCalls on its session) routed by service to the upstream in mesh.yaml,
// with the per-route timeout, retries (backoff with jitter, retryable codes only, retry budget, deadline
// kept), circuit breaker and outlier ejection, spoken as gRPC to the remote sidecar. Payloads are bytes.
import type * as grpc from "@grpc/grpc-js";
import { type Metadata, RpcError, Status, statusName } from "../../runtime/rpc/status.ts";
import type { CallShape, ServerCall, ServerHandler } from "../../runtime/rpc/types.ts";
import { logAccess } from "./access-log.ts";
import type { InflightTracker } from "./inflight.ts";
import { fromGrpcMetadata, toGrpcMetadata } from "./metadata.ts";
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

const passThrough = (b: Buffer): Buffer => b;

function asBuffer(u: Uint8Array): Buffer {
  return Buffer.isBuffer(u) ? u : Buffer.from(u.buffer, u.byteOffset, u.byteLength);
}

function hasKeys(md: Metadata | undefined): md is Metadata {
  if (!md) return false;
  for (const _ in md) return true;
  return false;
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

/** Waits for the status event of a grpc-js call and drains its messages into `onMessage`. */
async function collect(
  call: grpc.ClientDuplexStream<Buffer, Buffer> | grpc.ClientReadableStream<Buffer>,
  onMessage: (b: Buffer) => Promise<void> | void,
  onHeaders: (md: grpc.Metadata) => void,
): Promise<grpc.StatusObject> {
  const status = new Promise<grpc.StatusObject>((resolve) => call.on("status", resolve));
  call.on("metadata", onHeaders);
  try {
    for await (const msg of call as AsyncIterable<Buffer>) await onMessage(msg);
  } catch {
    // A non-OK status also surfaces as a stream error (the status event carries the details). If instead
    // forwarding to the app failed, cancel so that grpc-js still ends the call with a status.
    call.cancel();
  }
  return await status;
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
    const reason: unknown = sc.signal.reason;
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
    const metadata = toGrpcMetadata(sc.metadata, { traceparent: trace.traceparent });
    cluster.budget.recordRequest();

    if (sc.shape.clientStreaming) {
      // Request streams are not buffered for replay, so they get exactly one attempt.
      const slot = await takeSlot(cluster, deadline, sc.signal);
      if (slot) return finish(slot.code, slot.details);
      const ep = cluster.pick();
      if (!ep) {
        cluster.breaker.release();
        return finish(Status.UNAVAILABLE, `no endpoints resolved for upstream ${service}`);
      }
      attempts = 1;
      upstream = ep.address;
      const r = await attemptStreaming(cluster, ep, sc, metadata, deadline);
      finish(r.code, r.details, r.trailers);
      return;
    }

    let request: Uint8Array | undefined;
    let count = 0;
    for await (const m of sc) {
      request = m;
      count++;
    }
    if (count !== 1 || !request) {
      finish(Status.INTERNAL, `${sc.method} takes exactly one request message; the app sent ${count}`);
      return;
    }
    const req = asBuffer(request);
    for (;;) {
      attempts++;
      if (Date.now() >= deadline) {
        finish(Status.DEADLINE_EXCEEDED, `deadline exceeded before attempt ${attempts} to ${service} (timeout_ms ${cluster.timeoutMs} or the caller's deadline)`);
        return;
      }
      const slot = await takeSlot(cluster, deadline, sc.signal);
      if (slot) return finish(slot.code, slot.details);
      const ep = cluster.pick();
      let r: AttemptResult;
      if (!ep) {
        cluster.breaker.release();
        r = { code: Status.UNAVAILABLE, details: `no endpoints resolved for upstream ${service}`, trailers: {}, committed: false, response: undefined, headers: undefined };
      } else {
        upstream = ep.address;
        r = await attemptOne(cluster, ep, sc, sc.shape, metadata, req, deadline);
      }
      const retryable =
        r.code !== Status.OK && !r.committed && cluster.retry.retryOn.has(r.code) && attempts < cluster.retry.maxAttempts && !sc.signal.aborted;
      if (!retryable) {
        if (r.code === Status.OK && !sc.shape.serverStreaming) {
          if (hasKeys(r.headers)) sc.sendHeaders(r.headers);
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
  cluster.metrics.attempts.inc({ service: cluster.service, endpoint: ep.address, code: statusName(code) });
}

/** One attempt of a unary or server-streaming call. Holds a breaker slot, which it releases. */
async function attemptOne(
  cluster: UpstreamCluster,
  ep: EndpointConn,
  sc: ServerCall,
  shape: CallShape,
  metadata: grpc.Metadata,
  req: Buffer,
  deadline: number,
): Promise<AttemptResult> {
  ep.active++;
  const options: grpc.CallOptions = Number.isFinite(deadline) ? { deadline } : {};
  const result: AttemptResult = { code: Status.UNKNOWN, details: "", trailers: {}, committed: false, response: undefined, headers: undefined };
  let cancel: (() => void) | undefined;
  try {
    if (!shape.serverStreaming) {
      const status = await new Promise<grpc.StatusObject>((resolve) => {
        const call = ep.client.makeUnaryRequest(sc.method, passThrough, passThrough, req, metadata.clone(), options, (_err, value) => {
          result.response = value;
        });
        call.on("metadata", (md) => (result.headers = fromGrpcMetadata(md)));
        call.on("status", resolve);
        cancel = () => call.cancel();
        sc.signal.addEventListener("abort", cancel, { once: true });
      });
      result.code = status.code;
      result.details = status.details;
      result.trailers = fromGrpcMetadata(status.metadata);
    } else {
      const call = ep.client.makeServerStreamRequest(sc.method, passThrough, passThrough, req, metadata.clone(), options);
      cancel = () => call.cancel();
      sc.signal.addEventListener("abort", cancel, { once: true });
      let headers: Metadata | undefined;
      const status = await collect(
        call,
        async (msg) => {
          if (!result.committed) {
            result.committed = true;
            if (hasKeys(headers)) sc.sendHeaders(headers);
          }
          await sc.write(msg);
        },
        (md) => (headers = fromGrpcMetadata(md)),
      );
      if (status.code === Status.OK && !result.committed && hasKeys(headers)) sc.sendHeaders(headers);
      result.code = status.code;
      result.details = status.details;
      result.trailers = fromGrpcMetadata(status.metadata);
    }
  } finally {
    if (cancel) sc.signal.removeEventListener("abort", cancel);
    settleAttempt(cluster, ep, result.code);
  }
  return result;
}

/** The single attempt of a client- or bidi-streaming call: requests and responses flow both ways. */
async function attemptStreaming(
  cluster: UpstreamCluster,
  ep: EndpointConn,
  sc: ServerCall,
  metadata: grpc.Metadata,
  deadline: number,
): Promise<AttemptResult> {
  ep.active++;
  const result: AttemptResult = { code: Status.UNKNOWN, details: "", trailers: {}, committed: true, response: undefined, headers: undefined };
  const options: grpc.CallOptions = Number.isFinite(deadline) ? { deadline } : {};
  // Bidi on the wire also carries client streaming: gRPC framing is the same for every shape.
  const call = ep.client.makeBidiStreamRequest(sc.method, passThrough, passThrough, metadata.clone(), options);
  let ended = false;
  call.once("status", () => (ended = true));
  const cancel = () => call.cancel();
  sc.signal.addEventListener("abort", cancel, { once: true });
  const pump = (async () => {
    try {
      for await (const m of sc) {
        if (ended) break;
        if (!call.write(asBuffer(m))) {
          // Wait for the upstream to take more, or for the call to end (a finished call never drains).
          await new Promise<void>((r) => {
            call.once("drain", r);
            call.once("status", r);
          });
        }
      }
      if (!ended) call.end();
    } catch {
      call.cancel();
    }
  })();
  let headersSent = false;
  let headers: Metadata | undefined;
  try {
    const status = await collect(
      call,
      async (msg) => {
        if (!headersSent) {
          headersSent = true;
          if (hasKeys(headers)) sc.sendHeaders(headers);
        }
        await sc.write(msg);
      },
      (md) => (headers = fromGrpcMetadata(md)),
    );
    if (!headersSent && hasKeys(headers)) sc.sendHeaders(headers);
    result.code = status.code;
    result.details = status.details;
    result.trailers = fromGrpcMetadata(status.metadata);
  } finally {
    sc.signal.removeEventListener("abort", cancel);
    void pump;
    settleAttempt(cluster, ep, result.code);
  }
  return result;
}
