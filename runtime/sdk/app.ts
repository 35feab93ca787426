// The app-facing SDK: connect to the pod's sidecar, serve services, call services.
//
//   const mesh = await connect();                      // MESH_SOCKET, MESH_TRANSPORT from the env
//   mesh.serve("hello.proto", "hello.Greeter", { SayHello: async (req) => ({ message: `hi ${req.name}` }) });
//   const greeter = mesh.client("hello.proto", "hello.Greeter");
//   const reply = await greeter.SayHello({ name: "ada" }, { timeoutMs: 500 });
//
// The session survives the sidecar: when the connection drops, calls in flight fail UNAVAILABLE, the
// SDK reconnects with backoff, served services are served again, and new calls wait (up to their
// deadline, or connectTimeoutMs) for the new session instead of failing at once.
import { logger } from "../log.ts";
import { RpcChannel } from "../rpc/channel.ts";
import { type Metadata, RpcError, Status } from "../rpc/status.ts";
import {
  type CallOptions,
  type CallShape,
  type ChannelSettings,
  type ClientCall,
  DEFAULT_SETTINGS,
  type ServerCall,
  type ServerHandler,
  type UnaryResult,
} from "../rpc/types.ts";
import { connectToSidecar, parseTransportChoice } from "../transport/negotiate.ts";
import { type TransportChoice, type TransportName, TransportUnavailableError } from "../transport/types.ts";
import { loadService, lowerFirst, type MethodDef } from "./proto.ts";

const log = logger("sdk");

export interface ConnectOptions {
  /** The sidecar's socket. Default: $MESH_SOCKET. */
  socketPath?: string;
  /** Default: $MESH_TRANSPORT, else "auto". A forced transport that cannot be set up fails connect(). */
  transport?: TransportChoice;
  appName?: string;
  settings?: Partial<ChannelSettings>;
  /** How long a call waits for a (re)connection before failing UNAVAILABLE. Default 5000 ms. */
  connectTimeoutMs?: number;
  /** Reconnect after the session drops. Default true. */
  reconnect?: boolean;
}

export interface CallContext {
  metadata: Metadata;
  deadline: number | undefined;
  signal: AbortSignal;
  method: string;
  sendHeaders(md: Metadata): void;
  /** Trailers sent with the final status. */
  setTrailers(md: Metadata): void;
}

type UnaryImpl = (request: any, ctx: CallContext) => unknown;
type StreamImpl = (request: any, ctx: CallContext) => AsyncIterable<unknown> | Iterable<unknown>;
/** A service implementation: one function per method, named as in the .proto or lowerCamelCase. */
export type ServiceImpl = Record<string, UnaryImpl | StreamImpl>;

/** A server-streaming call's result: iterate the responses; `cancel()` stops it. */
export interface ResponseStream<T> extends AsyncIterable<T> {
  cancel(): void;
  readonly headers: Promise<Metadata>;
}

/** A typed client: one async function per method (both `SayHello` and `sayHello`). */
export type ServiceClient = Record<string, (request?: any, opts?: CallOptions) => any>;

export class MeshConnection {
  private channel: RpcChannel | undefined;
  private chosen: TransportName | undefined;
  private readonly handlers = new Map<string, ServerHandler>();
  private connecting: Promise<RpcChannel> | undefined;
  private closedByUser = false;
  private attempts = 0;
  private readonly settings: ChannelSettings;
  readonly socketPath: string;
  readonly transportChoice: TransportChoice;

  constructor(private readonly opts: ConnectOptions) {
    const socketPath = opts.socketPath ?? process.env.MESH_SOCKET;
    if (!socketPath) {
      throw new Error("no sidecar socket: set MESH_SOCKET (mesh up does it for you) or pass connect({ socketPath })");
    }
    this.socketPath = socketPath;
    this.transportChoice = opts.transport ?? parseTransportChoice(process.env.MESH_TRANSPORT, "MESH_TRANSPORT");
    this.settings = { ...DEFAULT_SETTINGS, ...opts.settings };
  }

  /** The transport of the current session, if connected. */
  get transport(): TransportName | undefined {
    return this.channel?.isOpen ? this.chosen : undefined;
  }

  /** The current session's RPC channel (for raw calls and stats), if connected. */
  get currentChannel(): RpcChannel | undefined {
    return this.channel?.isOpen ? this.channel : undefined;
  }

  /** @internal first connection: errors (bad socket, forced transport refused) reach the caller. */
  async open(): Promise<this> {
    await this.establish();
    return this;
  }

  private establish(): Promise<RpcChannel> {
    this.connecting ??= (async () => {
      try {
        const session = await connectToSidecar({
          socketPath: this.socketPath,
          transport: this.transportChoice,
          appName: this.opts.appName ?? process.env.MESH_POD,
          settings: this.settings,
        });
        const channel = new RpcChannel(session.transport, {
          initiator: true,
          local: session.local,
          peer: session.peer,
          peerName: "sidecar",
          handler: (call) => this.dispatch(call),
        });
        this.channel = channel;
        this.chosen = session.chosen;
        this.attempts = 0;
        log.info({ transport: session.chosen, socket: this.socketPath }, `connected to the sidecar over ${session.chosen}`);
        void channel.closed.then((err) => this.onSessionLost(channel, session.control, err));
        return channel;
      } finally {
        this.connecting = undefined;
      }
    })();
    return this.connecting;
  }

  private onSessionLost(channel: RpcChannel, control: { close(reason?: string): void }, err: Error | undefined): void {
    control.close("session over");
    if (this.channel === channel) this.channel = undefined;
    if (this.closedByUser || this.opts.reconnect === false) return;
    log.warn({ reason: err?.message }, "session with the sidecar lost; reconnecting");
    this.scheduleReconnect();
  }

  private scheduleReconnect(): void {
    if (this.closedByUser || this.connecting || this.opts.reconnect === false) return;
    const base = Math.min(2000, 50 * 2 ** Math.min(this.attempts, 6));
    const delay = base / 2 + Math.random() * (base / 2);
    this.attempts++;
    const timer = setTimeout(() => {
      this.establish().catch((e) => {
        const level = e instanceof TransportUnavailableError ? "error" : "debug";
        log[level]({ err: (e as Error).message, attempt: this.attempts }, "reconnect failed");
        this.scheduleReconnect();
      });
    }, delay);
    // An app that serves services lives to serve them: its reconnect timer keeps it alive. A pure
    // client whose only remaining work is reconnecting must still be able to exit.
    if (this.handlers.size === 0) (timer as { unref?: () => void }).unref?.();
  }

  /** A channel for a new call: the current one, or the next session (bounded wait). */
  private async ready(opts: CallOptions): Promise<RpcChannel> {
    const ch = this.channel;
    if (ch?.isOpen && !ch.peerIsDraining) return ch;
    if (this.closedByUser) throw new RpcError(Status.UNAVAILABLE, "connection closed by the app");
    if (this.opts.reconnect === false && !this.connecting) {
      throw new RpcError(Status.UNAVAILABLE, `the session with the sidecar at ${this.socketPath} is over (reconnect: false)`);
    }
    // A draining sidecar (GOAWAY) finishes what it has; new calls go to the next session.
    if (ch?.peerIsDraining) this.channel = undefined;
    let waitMs = this.opts.connectTimeoutMs ?? 5000;
    const deadline = opts.deadline ?? (opts.timeoutMs !== undefined ? Date.now() + opts.timeoutMs : undefined);
    if (deadline !== undefined) waitMs = Math.min(waitMs, Math.max(0, deadline - Date.now()));
    if (!this.connecting) this.scheduleReconnect();
    const started = Date.now();
    while (Date.now() - started <= waitMs) {
      const c = this.channel;
      if (c?.isOpen && !c.peerIsDraining) return c;
      const pending = this.connecting;
      if (pending) {
        const r = await Promise.race([pending.then(() => true, () => false), Bun.sleep(waitMs - (Date.now() - started)).then(() => false)]);
        if (r) continue;
      } else {
        await Bun.sleep(Math.min(20, waitMs));
      }
    }
    throw new RpcError(Status.UNAVAILABLE, `no session with the sidecar at ${this.socketPath} within ${waitMs} ms`);
  }

  // ---- raw calls (bytes in, bytes out) -------------------------------------------------------

  async unary(method: string, request: Uint8Array, opts: CallOptions = {}): Promise<UnaryResult> {
    return (await this.ready(opts)).unary(method, request, opts);
  }

  async startCall(method: string, shape: CallShape, opts: CallOptions = {}): Promise<ClientCall> {
    return (await this.ready(opts)).startCall(method, shape, opts);
  }

  // ---- typed clients and services -------------------------------------------------------------

  /** A client for `serviceName` as defined in `protoFile`. */
  client(protoFile: string | string[], serviceName: string): ServiceClient {
    const service = loadService(protoFile, serviceName);
    const client: ServiceClient = {};
    for (const m of service.methods) {
      const fn = m.shape.clientStreaming ? this.unsupported(m) : m.shape.serverStreaming ? this.streamMethod(m) : this.unaryMethod(m);
      client[m.name] = fn;
      client[lowerFirst(m.name)] = fn;
    }
    return client;
  }

  private unaryMethod(m: MethodDef) {
    return async (request: unknown = {}, opts: CallOptions = {}) => {
      const payload = m.encodeRequest(request);
      const { response } = await this.unary(m.path, payload, opts);
      return m.decodeResponse(response);
    };
  }

  private streamMethod(m: MethodDef) {
    return (request: unknown = {}, opts: CallOptions = {}): ResponseStream<Record<string, unknown>> => {
      const payload = m.encodeRequest(request);
      const started = this.startCall(m.path, m.shape, opts).then(async (call) => {
        call.write(payload).catch(() => undefined);
        call.end();
        return call;
      });
      let cancelled = false;
      return {
        headers: started.then((c) => c.headers),
        cancel() {
          cancelled = true;
          void started.then((c) => c.cancel(), () => undefined);
        },
        async *[Symbol.asyncIterator]() {
          const call = await started;
          if (cancelled) call.cancel();
          for await (const bytes of call) yield m.decodeResponse(bytes);
        },
      };
    };
  }

  private unsupported(m: MethodDef) {
    return () => {
      throw new RpcError(Status.UNIMPLEMENTED, `${m.path}: client-streaming methods are not supported by the SDK yet`);
    };
  }

  /** Serves `serviceName` with `impl` on this connection (and on every reconnection). */
  serve(protoFile: string | string[], serviceName: string, impl: ServiceImpl): this {
    const service = loadService(protoFile, serviceName);
    for (const m of service.methods) {
      const fn = impl[m.name] ?? impl[lowerFirst(m.name)];
      if (!fn) continue; // calls to it end UNIMPLEMENTED, naming the method
      if (m.shape.clientStreaming) continue;
      this.handlers.set(m.path, m.shape.serverStreaming ? streamHandler(m, fn as StreamImpl) : unaryHandler(m, fn as UnaryImpl));
    }
    return this;
  }

  /** Serves raw bytes for one method path (the handler sees the ServerCall). */
  handle(path: string, handler: ServerHandler): this {
    this.handlers.set(path, handler);
    return this;
  }

  private dispatch(call: ServerCall): void | Promise<void> {
    const handler = this.handlers.get(call.method);
    if (!handler) {
      call.end(Status.UNIMPLEMENTED, `this app does not serve ${call.method} (it serves: ${[...this.handlers.keys()].join(", ") || "nothing"})`);
      return;
    }
    return handler(call);
  }

  /** Graceful close: GOAWAY, in-flight calls served here finish (up to graceMs), then the session ends. */
  async close(graceMs = 5000): Promise<void> {
    this.closedByUser = true;
    const ch = this.channel;
    this.channel = undefined;
    if (!ch) return;
    await ch.goaway(graceMs);
    ch.close("closed by the app");
  }
}

/** The handler's view of its call. `signal` is made on first use: most handlers never look at it. */
function contextOf(call: ServerCall, trailers: { md: Metadata | undefined }): CallContext {
  return {
    metadata: call.metadata,
    deadline: call.deadline,
    get signal() {
      return call.signal;
    },
    method: call.method,
    sendHeaders: (md) => call.sendHeaders(md),
    setTrailers: (md) => {
      trailers.md = md;
    },
  };
}

async function readRequest(call: ServerCall, m: MethodDef): Promise<unknown> {
  const first = await call[Symbol.asyncIterator]().next();
  if (first.done) throw new RpcError(Status.INVALID_ARGUMENT, `${m.path}: the client sent no request message`);
  return m.decodeRequest(first.value);
}

function unaryHandler(m: MethodDef, fn: UnaryImpl): ServerHandler {
  return async (call) => {
    // The request usually came with the call: take it without a wait (readRequest waits otherwise).
    const first = call.takeRequest();
    const request = first !== undefined ? m.decodeRequest(first) : await readRequest(call, m);
    const trailers = { md: undefined as Metadata | undefined };
    const result = fn(request, contextOf(call, trailers));
    const response = result instanceof Promise ? await result : result;
    if (call.ended) return;
    call.respond(m.encodeResponse(response), trailers.md);
  };
}

function streamHandler(m: MethodDef, fn: StreamImpl): ServerHandler {
  return async (call) => {
    const request = await readRequest(call, m);
    const trailers = { md: undefined as Metadata | undefined };
    const responses = await fn(request, contextOf(call, trailers));
    for await (const r of responses as AsyncIterable<unknown>) {
      if (call.ended) return;
      await call.write(m.encodeResponse(r));
    }
    call.end(Status.OK, "", trailers.md);
  };
}

/** Connects to the pod's sidecar. Rejects if the sidecar is unreachable or a forced transport is refused. */
export async function connect(opts: ConnectOptions = {}): Promise<MeshConnection> {
  return new MeshConnection(opts).open();
}
