// Session setup between an app and its sidecar. The app connects to the sidecar's Unix socket; that
// connection is the control channel for the whole session. HELLO (app) offers transports in order of
// preference with the app's channel settings; HELLO (sidecar) answers with exactly one choice, or an
// error when the app forced a transport the sidecar cannot provide. `auto` tries rpal → shm → uds and
// logs, once per process, why each skipped tier was skipped.
import { logger } from "../log.ts";
import { FrameKind } from "../rpc/frame.ts";
import { type ChannelSettings, DEFAULT_SETTINGS } from "../rpc/types.ts";
import { decodeHello, encodeHello, type HelloMsg } from "../rpc/wire.ts";
import type { TransportProvider } from "./provider.ts";
import { rpalProvider } from "./rpal/provider.ts";
import { shmProvider } from "./shm/provider.ts";
import {
  type FrameSink,
  type Transport,
  type TransportChoice,
  type TransportName,
  TRANSPORT_NAMES,
  TransportUnavailableError,
  type TransportStats,
} from "./types.ts";
import { connectUnix, listenUnix, type UdsTransport, type UnixListener } from "./uds.ts";

export const PROTOCOL_VERSION = 2;
const HELLO_TIMEOUT_MS = 5_000;
const log = logger("negotiate");

/** Data transports in the order `auto` prefers them; uds is always last and always possible. */
const PROVIDERS: readonly TransportProvider[] = [rpalProvider, shmProvider];

export function providerFor(name: TransportName): TransportProvider | undefined {
  return PROVIDERS.find((p) => p.name === name);
}

/** Parses a transport choice from a flag, env var or config value; throws naming the source. */
export function parseTransportChoice(value: string | undefined, source: string): TransportChoice {
  if (value === undefined || value === "") return "auto";
  if (value === "auto" || (TRANSPORT_NAMES as readonly string[]).includes(value)) return value as TransportChoice;
  throw new Error(`${source}=${JSON.stringify(value)} is not a transport: use one of auto, ${TRANSPORT_NAMES.join(", ")}`);
}

/** Why `name` cannot work in this process (undefined: it can). uds always can. */
export function localUnavailableReason(name: TransportName): string | undefined {
  return providerFor(name)?.unavailableReason();
}

const loggedSkips = new Set<string>();
function logSkipOnce(name: string, reason: string): void {
  const key = `${name}:${reason}`;
  if (loggedSkips.has(key)) return;
  loggedSkips.add(key);
  log.info({ transport: name, reason }, `auto: skipping ${name}: ${reason}`);
}

/**
 * Forwards the control connection's frames to whoever owns the session now: the negotiation while
 * HELLOs are exchanged, then the RPC channel. Frames that arrive in between are held and replayed, so
 * a call the peer starts right after its HELLO is never lost.
 */
class ControlHandoff implements Transport {
  private target: FrameSink | undefined;
  private held: { kind: FrameKind; flags: number; callId: number; aux: number; body: Uint8Array }[] = [];
  private closedWith: { error?: Error } | undefined;
  onHello: ((body: Uint8Array) => void) | undefined;
  /** Set while a HELLO is awaited: the connection closing must fail the wait at once, with its reason. */
  private onClosedEarly: ((error?: Error) => void) | undefined;

  constructor(readonly control: UdsTransport) {
    control.start({
      onFrame: (kind, flags, callId, aux, body) => {
        if (kind === FrameKind.HELLO && this.onHello) return this.onHello(body);
        if (this.target) return this.target.onFrame(kind, flags, callId, aux, body);
        this.held.push({ kind: kind as FrameKind, flags, callId, aux, body: body.slice() });
      },
      onClose: (error) => {
        if (this.target) return this.target.onClose(error);
        this.closedWith = { error };
        this.onClosedEarly?.(error);
      },
      onWritable: () => this.target?.onWritable?.(),
    });
  }

  readonly name = "uds" as const;
  get bufferedBytes(): number {
    return this.control.bufferedBytes;
  }
  get closed(): boolean {
    return this.control.closed;
  }
  get stats(): TransportStats {
    return this.control.stats;
  }
  start(sink: FrameSink): void {
    this.target = sink;
    const held = this.held;
    this.held = [];
    for (const f of held) sink.onFrame(f.kind, f.flags, f.callId, f.aux, f.body);
    if (this.closedWith) sink.onClose(this.closedWith.error);
  }
  send(kind: FrameKind, flags: number, callId: number, aux: number, body?: Uint8Array): void {
    this.control.send(kind, flags, callId, aux, body);
  }
  close(reason?: string): void {
    this.control.close(reason);
  }

  /** Waits for the peer's HELLO. */
  nextHello(what: string): Promise<HelloMsg> {
    return new Promise((resolve, reject) => {
      const done = () => {
        clearTimeout(timer);
        this.onHello = undefined;
        this.onClosedEarly = undefined;
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`no HELLO from the ${what} within ${HELLO_TIMEOUT_MS} ms`));
      }, HELLO_TIMEOUT_MS);
      this.onClosedEarly = (error) => {
        done();
        reject(new Error(`the ${what} connection closed before HELLO${error ? `: ${error.message}` : ""}`));
      };
      this.onHello = (body) => {
        done();
        try {
          resolve(decodeHello(body));
        } catch (e) {
          reject(e);
        }
      };
      if (this.closedWith) this.onClosedEarly(this.closedWith.error);
    });
  }
}

export interface Session {
  /** Carries the frames of the RPC channel (shm/rpal transports, or the control connection itself for uds). */
  transport: Transport;
  /** The uds control connection: closes when the session ends. */
  control: UdsTransport;
  chosen: TransportName;
  local: ChannelSettings;
  peer: ChannelSettings;
  /** The peer's HELLO. */
  hello: HelloMsg;
}

function settingsOf(h: HelloMsg): ChannelSettings {
  return {
    maxMessageBytes: h.maxMessageBytes || DEFAULT_SETTINGS.maxMessageBytes,
    initialWindowBytes: h.initialWindowBytes || DEFAULT_SETTINGS.initialWindowBytes,
    maxConcurrentCalls: h.maxConcurrentCalls || DEFAULT_SETTINGS.maxConcurrentCalls,
  };
}

function helloFields(role: "app" | "sidecar", s: ChannelSettings): HelloMsg {
  return {
    version: PROTOCOL_VERSION,
    role,
    transports: [],
    maxMessageBytes: s.maxMessageBytes,
    initialWindowBytes: s.initialWindowBytes,
    maxConcurrentCalls: s.maxConcurrentCalls,
  };
}

export interface ConnectOptions {
  socketPath: string;
  transport?: TransportChoice;
  appName?: string;
  settings?: ChannelSettings;
  /** Transports to leave out of an `auto` offer (e.g. after one failed to attach). */
  exclude?: TransportName[];
}

/** App side: connects to the sidecar and negotiates a transport. */
export async function connectToSidecar(opts: ConnectOptions): Promise<Session> {
  const choice = opts.transport ?? "auto";
  const local = opts.settings ?? DEFAULT_SETTINGS;
  const offered: TransportName[] = [];
  if (choice !== "auto") {
    const reason = localUnavailableReason(choice);
    if (reason) throw new TransportUnavailableError(choice, reason);
    offered.push(choice);
  } else {
    for (const p of PROVIDERS) {
      if (opts.exclude?.includes(p.name)) continue;
      const reason = p.unavailableReason();
      if (reason) logSkipOnce(p.name, reason);
      else offered.push(p.name);
    }
    offered.push("uds");
  }
  const control = await connectUnix(opts.socketPath);
  const handoff = new ControlHandoff(control);
  try {
    const hello = helloFields("app", local);
    hello.transports = offered;
    hello.forced = choice !== "auto";
    if (opts.appName) hello.appName = opts.appName;
    for (const name of offered) Object.assign(hello, providerFor(name)?.offer() ?? {});
    const answer = handoff.nextHello("sidecar");
    control.send(FrameKind.HELLO, 0, 0, 0, encodeHello(hello));
    const reply = await answer;
    if (reply.role !== "sidecar") throw new Error(`expected the sidecar's HELLO, got role ${reply.role}`);
    if (reply.error) {
      if (choice !== "auto") throw new TransportUnavailableError(choice, `the sidecar refused it: ${reply.error}`);
      throw new Error(`the sidecar refused the session: ${reply.error}`);
    }
    const chosen = reply.transports[0] as TransportName | undefined;
    if (!chosen || !offered.includes(chosen)) {
      throw new Error(`the sidecar chose transport ${JSON.stringify(chosen)}, which was not offered (${offered.join(", ")})`);
    }
    let transport: Transport = handoff;
    if (chosen !== "uds") {
      const provider = providerFor(chosen)!;
      try {
        transport = await provider.appAttach(control, reply);
      } catch (e) {
        const reason = (e as Error).message;
        if (choice !== "auto") throw new TransportUnavailableError(chosen, reason);
        logSkipOnce(chosen, `could not attach: ${reason}`);
        control.close(`could not attach ${chosen}`);
        return connectToSidecar({ ...opts, exclude: [...(opts.exclude ?? []), chosen] });
      }
      handoff.start(sinkToClose(transport));
    }
    return { transport, control, chosen, local, peer: settingsOf(reply), hello: reply };
  } catch (e) {
    control.close("negotiation failed");
    throw e;
  }
}

/**
 * When shm/rpal carries the frames, what still arrives on the control connection (doorbells, frames
 * too big for a ring) goes to the data transport, and the control connection's close ends it too.
 */
function sinkToClose(data: Transport): FrameSink {
  return {
    onFrame: (kind, flags, callId, aux, body) => data.onControlFrame?.(kind, flags, callId, aux, body),
    onClose: (error) => {
      if (!data.closed) data.close(error ? `control connection lost: ${error.message}` : "control connection closed");
    },
  };
}

export interface AcceptOptions {
  socketPath: string;
  /** What the sidecar offers: `auto` = every transport that works here; a name = only that one. */
  transport?: TransportChoice;
  settings?: ChannelSettings;
  onSession(session: Session): void;
  /** A connection that failed before becoming a session (bad HELLO, forced transport refused…). */
  onRejected?(reason: string): void;
}

/** Sidecar side: listens for apps and negotiates each connection into a Session. */
export async function acceptAppSessions(opts: AcceptOptions): Promise<UnixListener> {
  const choice = opts.transport ?? "auto";
  const local = opts.settings ?? DEFAULT_SETTINGS;
  return await listenUnix(opts.socketPath, (control) => {
    negotiateWithApp(control, choice, local).then(
      (session) => {
        if (session) opts.onSession(session);
      },
      (e) => {
        const reason = (e as Error).message;
        log.warn({ reason }, `app connection rejected: ${reason}`);
        opts.onRejected?.(reason);
        control.close(reason);
      },
    );
  });
}

async function negotiateWithApp(control: UdsTransport, choice: TransportChoice, local: ChannelSettings): Promise<Session | undefined> {
  const handoff = new ControlHandoff(control);
  const app = await handoff.nextHello("app");
  const reply = helloFields("sidecar", local);
  const refuse = (why: string): never => {
    // The app's decoder caps strings at 4 KiB; a reason that long (it can list every transport the app
    // offered) would arrive as "too long" instead of the reason. 1,000 UTF-16 units are < 3 KiB of UTF-8.
    reply.error = why.length > 1000 ? `${why.slice(0, 1000)}…` : why;
    control.send(FrameKind.HELLO, 0, 0, 0, encodeHello(reply));
    throw new Error(why);
  };
  if (app.role !== "app") refuse(`expected an app's HELLO, got role ${JSON.stringify(app.role)}`);
  if (app.version !== PROTOCOL_VERSION) refuse(`protocol version ${app.version} is not supported (this sidecar speaks ${PROTOCOL_VERSION}): upgrade the app's runtime`);
  const offered = app.transports.filter((t): t is TransportName => (TRANSPORT_NAMES as readonly string[]).includes(t));
  const candidates = choice === "auto" ? offered : offered.filter((t) => t === choice);
  if (candidates.length === 0) {
    refuse(
      choice === "auto"
        ? `the app offered no transport this sidecar knows (${app.transports.join(", ") || "none"})`
        : `this sidecar is configured for transport ${choice}, the app offered ${offered.join(", ") || "none"}: set the same transport on both (mesh.yaml sidecar.transport / MESH_TRANSPORT)`,
    );
  }
  const reasons: string[] = [];
  for (const name of candidates) {
    if (name === "uds") {
      reply.transports = ["uds"];
      control.send(FrameKind.HELLO, 0, 0, 0, encodeHello(reply));
      return { transport: handoff, control, chosen: "uds", local, peer: settingsOf(app), hello: app };
    }
    const provider = providerFor(name)!;
    const reason = provider.unavailableReason();
    if (reason) {
      reasons.push(`${name}: ${reason}`);
      if (choice === "auto") logSkipOnce(name, reason);
      continue;
    }
    let setup;
    try {
      setup = await provider.sidecarSetup(control, app);
    } catch (e) {
      reasons.push(`${name}: ${(e as Error).message}`);
      if (choice === "auto") logSkipOnce(name, (e as Error).message);
      continue;
    }
    Object.assign(reply, setup.reply);
    reply.transports = [name];
    control.send(FrameKind.HELLO, 0, 0, 0, encodeHello(reply));
    let transport: Transport;
    try {
      transport = await setup.transport();
    } catch (e) {
      setup.abort();
      throw new Error(`${name} setup failed after HELLO: ${(e as Error).message}`);
    }
    handoff.start(sinkToClose(transport));
    return { transport, control, chosen: name, local, peer: settingsOf(app), hello: app };
  }
  return refuse(`no offered transport can be set up here (${reasons.join("; ")})`);
}
