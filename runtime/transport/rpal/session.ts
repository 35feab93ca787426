// Sets up one rpal session with a peer whose service key and id came over the control channel:
// the native side connects a private data socket, exchanges outbox addresses, requests the peer's
// service and parks its receiver; then this (sending) thread registers as an RPAL sender and maps the
// data socket to the peer's end (rpal_uds_fdmap). Resolves with a ready RpalTransport.
import { DEFAULT_SETTINGS } from "../../rpc/types.ts";
import { maxFrameBody } from "../../rpc/frame.ts";
import { rpalProcess, type RpalProcess } from "./librpal.ts";
import { loadShim, SessionState, type Shim } from "./shim.ts";
import { RpalTransport } from "./transport.ts";

export const DEFAULT_RING_BYTES = 1 << 20;
const SETUP_TIMEOUT_MS = 12_000;

export interface RpalSessionOptions {
  librpalPath: string;
  /** The sidecar listens on the data socket, the app connects. */
  role: "listen" | "connect";
  peerKey: bigint;
  peerId: number;
  inboxBytes?: number;
  outboxBytes?: number;
  maxBodyBytes?: number;
  peerMaxBodyBytes?: number;
  timeoutMs?: number;
}

/** This process's rpal identity and receiver thread (librpal initialised once per process). */
export function rpalLocal(librpalPath: string): { proc: RpalProcess; shim: Shim } {
  const proc = rpalProcess(librpalPath);
  const shim = loadShim(librpalPath);
  return { proc, shim };
}

/** The abstract socket name both sides derive from the two service keys (listener's key first). */
export function dataSocketName(listenerKey: bigint, connectorKey: bigint): string {
  return `rpal-mesh-${process.getuid?.() ?? 0}-${listenerKey.toString(16)}-${connectorKey.toString(16)}`;
}

export interface PendingRpalSession {
  /** Resolves once both receivers wait and this thread can send. */
  ready: Promise<RpalTransport>;
  /** Abandons the setup (the native session is freed). */
  abort(): void;
}

export function openRpalSession(o: RpalSessionOptions): PendingRpalSession {
  const { proc, shim } = rpalLocal(o.librpalPath);
  const inboxBytes = o.inboxBytes ?? DEFAULT_RING_BYTES;
  const outboxBytes = o.outboxBytes ?? DEFAULT_RING_BYTES;
  const maxBodyBytes = o.maxBodyBytes ?? maxFrameBody(DEFAULT_SETTINGS.maxMessageBytes);
  const name = o.role === "listen" ? dataSocketName(proc.key, o.peerKey) : dataSocketName(o.peerKey, proc.key);
  const session = shim.open({
    role: o.role,
    name,
    myKey: proc.key,
    myId: proc.id,
    peerKey: o.peerKey,
    peerId: o.peerId,
    inboxBytes,
    outboxBytes,
    maxBody: maxBodyBytes,
  });
  let transport: RpalTransport | undefined;
  let abortFn = () => {};
  let settled = false;
  let onWake: () => void = () => {};
  // Our end of the receiver thread's socketpair: Bun adopts an existing fd (its FdSocketOptions),
  // though Bun.connect's overloads do not list that shape — hence the cast below.
  const jsFd = shim.sym.rms_session_take_js_fd(session);
  const wakeSocket = Bun.connect({
    fd: jsFd,
    socket: {
      data() {
        if (transport) transport.onWake();
        else onWake();
      },
      close() {
        onWake();
      },
    },
  } as unknown as Parameters<typeof Bun.connect>[0]);
  const ready = new Promise<RpalTransport>((resolve, reject) => {
    const timer = setTimeout(() => fail(new Error(`rpal session setup did not finish within ${o.timeoutMs ?? SETUP_TIMEOUT_MS} ms`)), o.timeoutMs ?? SETUP_TIMEOUT_MS);
    const fail = (e: Error) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      shim.sym.rms_session_close(session);
      void wakeSocket.then((s) => s.end()).catch(() => {});
      setImmediate(() => shim.sym.rms_session_free(session));
      reject(e);
    };
    abortFn = () => fail(new Error("rpal session setup aborted"));
    onWake = () => {
      if (settled) return;
      const st = shim.sym.rms_session_state(session);
      if (st === SessionState.FAILED || st === SessionState.CLOSED) {
        fail(new Error(shim.error(session)));
        return;
      }
      if (st !== SessionState.PEER_READY) return;
      try {
        proc.ensureSender();
        const rpalfd = proc.fdmap(o.peerId, shim.sym.rms_session_data_fd(session));
        const t = new RpalTransport({
          proc,
          shim,
          session,
          peerId: o.peerId,
          rpalfd,
          inboxBytes,
          outboxBytes,
          maxBodyBytes,
          peerMaxBodyBytes: o.peerMaxBodyBytes ?? maxFrameBody(DEFAULT_SETTINGS.maxMessageBytes),
        });
        settled = true;
        clearTimeout(timer);
        transport = t;
        void wakeSocket.then((s) => t.attachWake(s as never));
        resolve(t);
      } catch (e) {
        fail(e as Error);
      }
    };
    wakeSocket.catch((e) => fail(new Error(`cannot watch the rpal receiver's wake socket: ${(e as Error).message}`)));
  });
  return { ready, abort: () => abortFn() };
}
