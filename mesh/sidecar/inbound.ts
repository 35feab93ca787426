// Inbound: a gRPC server (grpc-js over HTTP/2, h2c or mTLS) for the services of the pod's protos. Each
// call is handed to the app over its session (RpcChannel) untouched: method, metadata, deadline, every
// request and response message as bytes, headers, status and trailers. grpc-js itself answers unknown
// methods (UNIMPLEMENTED), a wrong content-type (HTTP 415) and broken gRPC framing.
import * as grpc from "@grpc/grpc-js";
import type { RpcChannel } from "../../runtime/rpc/channel.ts";
import { type Metadata, Status } from "../../runtime/rpc/status.ts";
import type { ClientCall } from "../../runtime/rpc/types.ts";
import { logAccess } from "./access-log.ts";
import type { InflightTracker } from "./inflight.ts";
import { fromGrpcMetadata, toGrpcMetadata } from "./metadata.ts";
import type { SidecarMetrics } from "./metrics.ts";
import { type MethodInfo, passThroughServices } from "./protos.ts";
import { nextHop } from "./trace.ts";

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
}

type AnyServerCall = grpc.ServerUnaryCall<Buffer, Buffer> & grpc.ServerWritableStream<Buffer, Buffer> & grpc.ServerReadableStream<Buffer, Buffer>;
type UnaryCallback = grpc.sendUnaryData<Buffer>;

function asBuffer(u: Uint8Array): Buffer {
  return Buffer.isBuffer(u) ? u : Buffer.from(u.buffer, u.byteOffset, u.byteLength);
}

function hasKeys(md: Metadata): boolean {
  for (const _ in md) return true;
  return false;
}

function grpcDeadline(call: AnyServerCall): number | undefined {
  const d = call.getDeadline();
  const ms = d instanceof Date ? d.getTime() : d;
  return Number.isFinite(ms) ? ms : undefined;
}

export class InboundServer {
  readonly server: grpc.Server;

  constructor(private readonly deps: InboundDeps) {
    this.server = new grpc.Server({
      "grpc.max_receive_message_length": deps.maxMessageBytes,
      "grpc.max_send_message_length": deps.maxMessageBytes,
      // channelz bookkeeping runs on every call (~3% of the sidecar's CPU in profiles) and nothing reads it.
      "grpc.enable_channelz": 0,
      // One client connection cannot open more calls than the app session serves at once.
      "grpc.max_concurrent_streams": deps.maxConcurrentCalls,
    });
    for (const def of passThroughServices(deps.methods).values()) {
      const impl: grpc.UntypedServiceImplementation = {};
      for (const name of Object.keys(def)) {
        const m = deps.methods.get(def[name]!.path)!;
        impl[name] = ((call: AnyServerCall, callback?: UnaryCallback) => void this.handle(m, call, callback)) as grpc.UntypedHandleCall;
      }
      this.server.addService(def, impl);
    }
  }

  /** Binds and starts serving; resolves with the bound port. */
  listen(host: string, port: number, credentials: grpc.ServerCredentials): Promise<number> {
    const target = host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
    return new Promise((resolve, reject) => {
      this.server.bindAsync(target, credentials, (err, bound) => {
        if (err) reject(new Error(`cannot listen for inbound gRPC on ${target}: ${err.message} — pick a free port in sidecar.inbound.port`));
        else resolve(bound);
      });
    });
  }

  /** Stops accepting new calls (GOAWAY to clients); resolves when every call has finished. */
  drain(): Promise<void> {
    return new Promise((resolve) => this.server.tryShutdown(() => resolve()));
  }

  forceStop(): void {
    this.server.forceShutdown();
  }

  private async handle(m: MethodInfo, call: AnyServerCall, callback: UnaryCallback | undefined): Promise<void> {
    const { metrics, inflight, pod } = this.deps;
    const started = performance.now();
    inflight.begin();
    const incoming = call.metadata.get("traceparent")[0];
    const trace = nextHop(typeof incoming === "string" ? incoming : undefined);
    let done = false;
    const finish = (code: number, details: string, trailers: Metadata) => {
      if (done) return;
      done = true;
      const md = toGrpcMetadata(trailers);
      if (callback) {
        if (code === Status.OK && response === undefined) {
          // Sending an empty message instead would hand the client a default-valued reply it never got.
          code = Status.INTERNAL;
          details = `the app ended ${m.path} OK without sending a response message`;
        }
        if (code === Status.OK) callback(null, response, md);
        else callback({ code, details, metadata: md });
      } else if (code === Status.OK) {
        call.end(md);
      } else {
        call.emit("error", { code, details, metadata: md });
      }
      const ms = performance.now() - started;
      metrics.observe("inbound", m.path, code, ms / 1000);
      logAccess({ direction: "inbound", method: m.path, code, details, durationMs: ms, upstream: "app", attempts: 1, traceId: trace.traceId, spanId: trace.spanId });
      inflight.end();
    };
    let response: Buffer | undefined;
    const app = this.deps.pickApp();
    if (!app) {
      finish(
        Status.UNAVAILABLE,
        `no app is connected to the sidecar of pod ${pod} (the app is not running, restarting, or not connected to its MESH_SOCKET)`,
        {},
      );
      return;
    }
    const metadata = fromGrpcMetadata(call.metadata);
    metadata.traceparent = trace.traceparent;
    let appCall: ClientCall;
    try {
      appCall = app.startCall(m.path, m.shape, { metadata, deadline: grpcDeadline(call) });
    } catch (e) {
      finish(Status.UNAVAILABLE, `cannot reach the app of pod ${pod}: ${(e as Error).message}`, {});
      return;
    }
    call.on("cancelled", () => appCall.cancel("the network client cancelled the call"));
    void this.pumpRequests(m, call, appCall);
    // Not awaited: the app may stream messages without sending headers first. A HEADERS frame arrives
    // before any message, so this runs before the first message is forwarded.
    void appCall.headers.then((headers) => {
      if (!done && hasKeys(headers)) call.sendMetadata(toGrpcMetadata(headers));
    });
    try {
      for await (const msg of appCall) {
        if (callback) {
          response = asBuffer(msg);
        } else if (!call.write(asBuffer(msg)) && !call.cancelled) {
          // Backpressure from the network client: stop reading the app's messages until it drains (or
          // goes away: a cancelled call never drains, and the app call is cancelled with it).
          await new Promise<void>((r) => {
            call.once("drain", r);
            call.once("cancelled", r);
          });
        }
      }
    } catch {
      // A non-OK end surfaces through appCall.status below.
    }
    const status = await appCall.status;
    finish(status.code, status.details, status.trailers);
  }

  private async pumpRequests(m: MethodInfo, call: AnyServerCall, appCall: ClientCall): Promise<void> {
    try {
      if (!m.shape.clientStreaming) {
        await appCall.write(call.request);
      } else {
        // destroyOnReturn false: the default async iterator destroys the whole duplex when the request
        // side ends, which would kill the response side of a bidi call.
        for await (const msg of call.iterator({ destroyOnReturn: false }) as AsyncIterable<Buffer>) await appCall.write(msg);
      }
      appCall.end();
    } catch (e) {
      appCall.cancel(`reading the request from the network failed: ${(e as Error).message}`);
    }
  }
}
