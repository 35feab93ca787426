// Inbound: a gRPC server (grpc/server.ts on our own HTTP/2 framing, h2c or mTLS) for the services of the pod's protos.
// Each call is handed to the app over its session (RpcChannel) untouched: method, metadata, deadline,
// every request and response message as bytes, headers, status and trailers. The gRPC layer itself
// answers unknown methods (UNIMPLEMENTED), a wrong content-type (HTTP 415) and broken gRPC framing.
import type { RpcChannel } from "../../runtime/rpc/channel.ts";
import { hasMetadata, type Metadata, Status } from "../../runtime/rpc/status.ts";
import type { ClientCall, ClientCallObserver, FinalStatus } from "../../runtime/rpc/types.ts";
import { logger } from "../../runtime/log.ts";
import { logAccess } from "./access-log.ts";
import { ConnectionError, ErrorCode } from "./grpc/h2/session.ts";
import { GrpcServer, type GrpcServerCall } from "./grpc/server.ts";
import type { InflightTracker } from "./inflight.ts";
import type { SidecarMetrics } from "./metrics.ts";
import type { MethodInfo } from "./protos.ts";
import type { MeshTls } from "./tls.ts";
import { nextHop, type TraceContext } from "./trace.ts";

export interface InboundDeps {
  pod: string;
  methods: Map<string, MethodInfo>;
  /** The app session to hand the next call to, or undefined when no app is connected. */
  pickApp: () => RpcChannel | undefined;
  metrics: SidecarMetrics;
  inflight: InflightTracker;
  maxMessageBytes: number;
  /** HTTP/2 streams one network client may have open at once. */
  maxConcurrentCalls: number;
  /** mTLS (client certificates required); h2c without. */
  tls?: MeshTls;
}

const log = logger("inbound");
const H2_ERROR_NAME: Record<number, string> = Object.fromEntries(Object.entries(ErrorCode).map(([name, code]) => [code, name]));
/** At most one log line per this many ms about client connections ended for an error: a flood of bad connections must not flood the log too (the counter counts every one). */
const CONNECTION_ERROR_LOG_MS = 10_000;

export class InboundServer {
  readonly server: GrpcServer;

  constructor(private readonly deps: InboundDeps) {
    this.server = new GrpcServer({
      maxMessageBytes: deps.maxMessageBytes,
      // One client connection cannot open more calls than the app session serves at once.
      maxConcurrentStreams: deps.maxConcurrentCalls,
      lookup: (path) => deps.methods.get(path)?.shape,
      onCall: (call) => this.handle(deps.methods.get(call.path)!, call),
      tls: deps.tls?.context(),
      onConnectionClose: (err) => this.connectionClosed(err),
    });
    deps.tls?.onChange((ctx) => this.server.setSecureContext(ctx));
  }

  private lastConnectionErrorLog = 0;
  private connectionErrorsNotLogged = 0;

  /** A client connection ended: one that we ended with GOAWAY for an error is counted and (throttled) logged. */
  private connectionClosed(err: Error | undefined): void {
    if (!(err instanceof ConnectionError)) return;
    const code = H2_ERROR_NAME[err.code] ?? `0x${err.code.toString(16)}`;
    this.deps.metrics.connectionErrors.inc({ code });
    const now = Date.now();
    if (now - this.lastConnectionErrorLog < CONNECTION_ERROR_LOG_MS) {
      this.connectionErrorsNotLogged++;
      return;
    }
    const more = this.connectionErrorsNotLogged;
    this.lastConnectionErrorLog = now;
    this.connectionErrorsNotLogged = 0;
    const since = more > 0 ? ` (and ${more} more since the last such line; mesh_inbound_connection_errors_total counts them all)` : "";
    log.warn({ code, reason: err.message, not_logged: more }, `ended a client connection with GOAWAY ${code}: ${err.message}${since}`);
  }

  /** Binds and starts serving; resolves with the bound port. */
  listen(host: string, port: number): Promise<number> {
    return this.server.listen(host, port);
  }

  /** Stops accepting new calls (GOAWAY to clients); resolves when every connection has finished. */
  drain(): Promise<void> {
    return this.server.drain();
  }

  forceStop(): void {
    this.server.forceStop();
  }

  /**
   * Not async: a unary call is watched with callbacks and needs no promise or suspended function of its
   * own; only the streaming shapes go on in relayStreaming(). The call's state is one InboundCall
   * object, which is also the unary call's observer (its methods instead of a closure and a captured
   * scope per callback: at 1,000 calls/s each call runs cache-cold, where every allocation shows).
   */
  private handle(m: MethodInfo, call: GrpcServerCall): void {
    const { pod } = this.deps;
    const ic = new InboundCall(this.deps, m, call);
    const app = this.deps.pickApp();
    if (!app) {
      ic.finish(
        Status.UNAVAILABLE,
        `no app is connected to the sidecar of pod ${pod} (the app is not running, restarting, or not connected to its MESH_SOCKET)`,
        undefined,
      );
      return;
    }
    const metadata = call.metadata;
    metadata.traceparent = ic.trace.traceparent;
    let appCall: ClientCall;
    try {
      // A unary or server-streaming request rides in the CALL frame itself (one frame to the app).
      const only = m.shape.clientStreaming ? undefined : call.request!;
      appCall = app.startCall(m.path, m.shape, { metadata, deadline: call.deadline }, only);
    } catch (e) {
      ic.finish(Status.UNAVAILABLE, `cannot reach the app of pod ${pod}: ${(e as Error).message}`, undefined);
      return;
    }
    call.onCancel = (reason) => appCall.cancel(`the network client cancelled the call: ${reason}`);
    if (!m.shape.clientStreaming && !m.shape.serverStreaming && appCall.observe) {
      // Unary: watched with callbacks (no headers or status promise, no iteration over the responses).
      appCall.observe(ic);
      return;
    }
    void this.relayStreaming(m, call, appCall, () => ic.done, (code, details, trailers, last) => ic.finish(code, details, trailers, last));
  }

  /** Streaming shapes: messages relayed as they come, then the app's status. */
  private async relayStreaming(
    m: MethodInfo,
    call: GrpcServerCall,
    appCall: ClientCall,
    isDone: () => boolean,
    finish: (code: number, details: string, trailers: Metadata | undefined, last?: Uint8Array) => void,
  ): Promise<void> {
    if (m.shape.clientStreaming) {
      void this.pumpRequests(call, appCall);
    }
    // Not awaited: the app may stream messages without sending headers first. A HEADERS frame arrives
    // before any message, so this runs before the first message is forwarded.
    void appCall.headers.then((headers) => {
      if (!isDone() && hasMetadata(headers)) call.sendHeaders(headers);
    });
    let response: Uint8Array | undefined;
    try {
      if (!m.shape.serverStreaming) {
        for await (const msg of appCall) response = msg;
      } else {
        for await (const msg of appCall) {
          // Backpressure from the network client: stop reading the app's messages until it drains (or goes
          // away: a cancelled call never drains, and the app call is cancelled with it).
          if (!call.write(msg) && !call.cancelled && !call.ended) await call.drained();
        }
      }
    } catch {
      // A non-OK end surfaces through appCall.status below.
    }
    const status = await appCall.status;
    let { code, details } = status;
    if (!m.shape.serverStreaming && code === Status.OK && response === undefined) {
      // Sending an empty message instead would hand the client a default-valued reply it never got.
      code = Status.INTERNAL;
      details = `the app ended ${m.path} OK without sending a response message`;
    }
    finish(code, details, status.trailers, code === Status.OK && !m.shape.serverStreaming ? response : undefined);
  }

  private async pumpRequests(call: GrpcServerCall, appCall: ClientCall): Promise<void> {
    try {
      for await (const msg of call.messages()) await appCall.write(msg);
      appCall.end();
    } catch (e) {
      appCall.cancel(`reading the request from the network failed: ${(e as Error).message}`);
    }
  }
}

/**
 * One inbound call: when it started, its trace context, and its end (status to the network client,
 * metrics, access log). For a unary call it is also the app call's observer.
 */
class InboundCall implements ClientCallObserver {
  /** end() writes the response into the HTTP/2 output (or a framed copy) before it returns, so the
   * channel may hand it over as a view of the app transport's buffer instead of copying it. */
  readonly transientResponse = true;
  readonly trace: TraceContext;
  done = false;
  private readonly started = performance.now();

  constructor(
    private readonly deps: InboundDeps,
    private readonly m: MethodInfo,
    private readonly call: GrpcServerCall,
  ) {
    deps.inflight.begin();
    const incoming = call.metadata.traceparent;
    this.trace = nextHop(typeof incoming === "string" ? incoming : undefined);
  }

  headers(headers: Metadata): void {
    if (!this.done && hasMetadata(headers)) this.call.sendHeaders(headers);
  }

  end(status: FinalStatus, response: Uint8Array | undefined): void {
    let { code, details } = status;
    if (code === Status.OK && response === undefined) {
      code = Status.INTERNAL;
      details = `the app ended ${this.m.path} OK without sending a response message`;
    }
    this.finish(code, details, status.trailers, code === Status.OK ? response : undefined);
  }

  finish(code: number, details: string, trailers: Metadata | undefined, last?: Uint8Array): void {
    if (this.done) return;
    this.done = true;
    const call = this.call;
    if (!call.ended) call.end(code, details, trailers, last);
    // The gRPC layer may have ended it first (a protocol error in the request stream, a response over
    // the size limit): record what the client got.
    code = call.endedCode ?? code;
    const ms = performance.now() - this.started;
    const path = this.m.path;
    this.deps.metrics.observe("inbound", path, code, ms / 1000);
    logAccess({ direction: "inbound", method: path, code, details, durationMs: ms, upstream: "app", attempts: 1, traceId: this.trace.traceId, spanId: this.trace.spanId });
    this.deps.inflight.end();
  }
}
