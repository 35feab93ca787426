// The uds transport: frames on a Unix stream socket. Always available; also the control channel of
// every session (HELLO, doorbells) when shm or rpal carry the data.
//
// Send side: frames are appended to one outgoing buffer and flushed once per event-loop turn
// (setImmediate, after every handler the turn started has queued its frames), so a burst of
// pipelined calls costs one write(2), not one per frame. Receive side: a chunk of ordinary size is
// copied into one long-lived buffer and parsed there. Parsing Bun's chunk in place looks cheaper but
// is not: the first `.buffer` of each fresh Buffer makes JSC materialise an ArrayBuffer for it, and
// Buffer#subarray goes through the species constructor; together that was ~4 µs of a 20 µs round
// trip (bun --cpu-prof). Only a chunk larger than COPY_LIMIT, when no partial frame is waiting, is
// parsed in place, where that fixed cost is noise next to the bytes.
import type { Socket, TCPSocketListener, UnixSocketListener } from "bun";
import { chmodSync, existsSync, lstatSync, mkdirSync, statSync, unlinkSync } from "node:fs";
import { dirname } from "node:path";
import {
  FRAME_HEADER_BYTES,
  FrameError,
  type FrameKind,
  maxFrameBody,
  newFrameHeader,
  readFrameHeader,
  writeFrameHeader,
} from "../rpc/frame.ts";
import { DEFAULT_SETTINGS } from "../rpc/types.ts";
import { canConnect } from "./probe.ts";
import type { FrameSink, Transport, TransportStats } from "./types.ts";

const INITIAL_BUFFER = 64 * 1024;
/** Chunks up to this size are copied into the receive buffer before parsing (see above). */
const COPY_LIMIT = 64 * 1024;
/** Above this many buffered outgoing bytes the channel stops producing until `onWritable`. */
export const HIGH_WATER_BYTES = 8 * 1024 * 1024;
const EMPTY = new Uint8Array(0);

export class UdsTransport implements Transport {
  readonly name = "uds" as const;
  readonly stats: TransportStats = { framesSent: 0, framesReceived: 0, bytesSent: 0, bytesReceived: 0 };
  /** Largest frame body accepted from the peer; set from the local max message size. */
  maxBodyBytes = maxFrameBody(DEFAULT_SETTINGS.maxMessageBytes);
  /** Why the transport closed, when it closed because of an error. */
  closeError: Error | undefined;

  private sink: FrameSink | undefined;
  private out = new Uint8Array(INITIAL_BUFFER);
  private outView = new DataView(this.out.buffer);
  private outLen = 0;
  private flushScheduled = false;
  private waitingForDrain = false;
  private inBuf = new Uint8Array(INITIAL_BUFFER);
  private inView = new DataView(this.inBuf.buffer);
  private inLen = 0;
  private readonly header = newFrameHeader();
  private isClosed = false;
  /** Frames that arrived before start(): the peer may speak first. */
  private early: Uint8Array[] = [];

  constructor(private readonly socket: Socket<UdsTransport | undefined>) {}

  get bufferedBytes(): number {
    return this.outLen;
  }

  get closed(): boolean {
    return this.isClosed;
  }

  /** A description of the peer for logs. */
  get peer(): string {
    return "unix";
  }

  start(sink: FrameSink): void {
    if (this.sink) throw new Error("UdsTransport.start called twice");
    this.sink = sink;
    const early = this.early;
    this.early = [];
    for (const chunk of early) this.onData(chunk);
    if (this.isClosed) sink.onClose(this.closeError);
  }

  send(kind: FrameKind, flags: number, callId: number, aux: number, body?: Uint8Array): void {
    if (this.isClosed) throw new Error("uds transport is closed");
    const bodyLength = body ? body.byteLength : 0;
    const need = FRAME_HEADER_BYTES + bodyLength;
    this.reserve(need);
    writeFrameHeader(this.outView, this.outLen, bodyLength, kind, flags, callId, aux);
    if (body && bodyLength > 0) this.out.set(body, this.outLen + FRAME_HEADER_BYTES);
    this.outLen += need;
    this.stats.framesSent++;
    this.stats.bytesSent += need;
    if (!this.flushScheduled && !this.waitingForDrain) {
      this.flushScheduled = true;
      setImmediate(this.flush);
    }
  }

  close(reason?: string): void {
    if (this.isClosed) return;
    if (reason && !this.closeError) this.closeError = new Error(reason);
    this.flush();
    this.socket.end();
    this.markClosed();
  }

  private reserve(extra: number): void {
    if (this.outLen + extra <= this.out.byteLength) return;
    let size = this.out.byteLength * 2;
    while (size < this.outLen + extra) size *= 2;
    const grown = new Uint8Array(size);
    grown.set(this.out.subarray(0, this.outLen));
    this.out = grown;
    this.outView = new DataView(grown.buffer);
  }

  /** Writes what is buffered now (see Transport.flushNow). */
  flushNow(): void {
    this.flush();
  }

  private readonly flush = (): void => {
    this.flushScheduled = false;
    if (this.outLen === 0 || this.isClosed) return;
    // Offset and length instead of a subarray view: one less object per write.
    const written = this.socket.write(this.out, 0, this.outLen);
    if (written < 0) return; // closed under us: the close handler reports it
    if (written === this.outLen) {
      this.outLen = 0;
      if (this.out.byteLength > 4 * INITIAL_BUFFER * 16) {
        // a large message passed through: give the memory back
        this.out = new Uint8Array(INITIAL_BUFFER);
        this.outView = new DataView(this.out.buffer);
      }
      return;
    }
    this.out.copyWithin(0, written, this.outLen);
    this.outLen -= written;
    this.waitingForDrain = true;
  };

  /** Bun's `drain` handler: the socket can take more bytes. */
  onDrain(): void {
    this.waitingForDrain = false;
    this.flush();
    if (this.outLen < HIGH_WATER_BYTES / 2) this.sink?.onWritable?.();
  }

  /** Bun's `data` handler. */
  onData(chunk: Uint8Array): void {
    if (this.isClosed) return;
    if (!this.sink) {
      this.early.push(chunk.slice());
      return;
    }
    this.stats.bytesReceived += chunk.byteLength;
    try {
      if (this.inLen === 0 && chunk.byteLength > COPY_LIMIT) {
        const used = this.parse(chunk, new DataView(chunk.buffer, chunk.byteOffset, chunk.byteLength), chunk.byteLength);
        if (used < chunk.byteLength) this.keep(chunk.subarray(used));
      } else {
        this.keep(chunk);
        const used = this.parse(this.inBuf, this.inView, this.inLen);
        if (used === this.inLen) this.inLen = 0;
        else if (used > 0) {
          this.inBuf.copyWithin(0, used, this.inLen);
          this.inLen -= used;
        }
        if (this.inLen === 0 && this.inBuf.byteLength > 16 * INITIAL_BUFFER) {
          // a large message passed through: give the memory back
          this.inBuf = new Uint8Array(INITIAL_BUFFER);
          this.inView = new DataView(this.inBuf.buffer);
        }
      }
    } catch (e) {
      const err = e instanceof FrameError ? e : new Error(`uds transport: ${(e as Error).message}`, { cause: e });
      this.closeError = err;
      this.socket.end();
      this.markClosed();
    }
  }

  /** Bun's `close`/`error` handlers. */
  onSocketClosed(error?: Error): void {
    if (error && !this.closeError) this.closeError = error;
    this.markClosed();
  }

  /** Delivers every whole frame in buf[0, to) (`view` covers `buf`); returns how many bytes were consumed. */
  private parse(buf: Uint8Array, view: DataView, to: number): number {
    let pos = 0;
    const h = this.header;
    while (to - pos >= FRAME_HEADER_BYTES && !this.isClosed) {
      readFrameHeader(view, pos, this.maxBodyBytes, h);
      const end = pos + FRAME_HEADER_BYTES + h.bodyLength;
      if (end > to) break;
      this.stats.framesReceived++;
      // No view for an empty body (doorbells, most END and WINDOW frames): subarray is not free.
      this.sink!.onFrame(h.kind, h.flags, h.callId, h.aux, h.bodyLength === 0 ? EMPTY : buf.subarray(pos + FRAME_HEADER_BYTES, end));
      pos = end;
    }
    return pos;
  }

  private keep(bytes: Uint8Array): void {
    const need = this.inLen + bytes.byteLength;
    if (need > this.inBuf.byteLength) {
      const grown = new Uint8Array(Math.max(need, this.inBuf.byteLength * 2, INITIAL_BUFFER));
      grown.set(this.inBuf.subarray(0, this.inLen));
      this.inBuf = grown;
      this.inView = new DataView(grown.buffer);
    }
    this.inBuf.set(bytes, this.inLen);
    this.inLen = need;
  }

  private markClosed(): void {
    if (this.isClosed) return;
    this.isClosed = true;
    this.sink?.onClose(this.closeError);
  }
}

const handlers = {
  open(socket: Socket<UdsTransport | undefined>) {
    socket.data = new UdsTransport(socket);
  },
  data(socket: Socket<UdsTransport | undefined>, chunk: Buffer) {
    socket.data?.onData(chunk);
  },
  drain(socket: Socket<UdsTransport | undefined>) {
    socket.data?.onDrain();
  },
  close(socket: Socket<UdsTransport | undefined>, error?: Error) {
    socket.data?.onSocketClosed(error);
  },
  error(socket: Socket<UdsTransport | undefined>, error: Error) {
    socket.data?.onSocketClosed(error);
  },
};

/**
 * Makes `path`'s directory owner-only (0700, created if missing) and removes a stale socket file left by
 * a dead process. Refuses to steal a socket a live process still listens on.
 */
export async function prepareSocketPath(path: string): Promise<void> {
  const dir = dirname(path);
  if (!existsSync(dir)) mkdirSync(dir, { recursive: true, mode: 0o700 });
  const st = statSync(dir);
  if (typeof process.getuid === "function" && st.uid === process.getuid() && (st.mode & 0o077) !== 0) {
    // Only the owner may reach the socket: nobody else may connect to the app's sidecar.
    chmodSync(dir, 0o700);
  }
  if (!existsSync(path)) return;
  const lst = lstatSync(path);
  if (!lst.isSocket()) {
    throw new Error(`${path} exists and is not a socket: remove it or choose another socket path`);
  }
  if (await canConnect({ unix: path })) throw new Error(`${path} is in use by a live process: stop it or choose another socket path`);
  unlinkSync(path);
}

export interface UnixListener {
  readonly path: string;
  /**
   * Stops accepting and removes the socket file. With `closeActive` (the default) open connections
   * are closed too; a draining sidecar passes false so calls in flight can finish.
   */
  stop(closeActive?: boolean): void;
}

/** Listens on a Unix socket; each accepted connection becomes a UdsTransport handed to `onConnection`. */
export async function listenUnix(path: string, onConnection: (t: UdsTransport) => void): Promise<UnixListener> {
  await prepareSocketPath(path);
  const listener: UnixSocketListener<UdsTransport | undefined> | TCPSocketListener<UdsTransport | undefined> = Bun.listen<
    UdsTransport | undefined
  >({
    unix: path,
    socket: {
      ...handlers,
      open(socket) {
        handlers.open(socket);
        onConnection(socket.data!);
      },
    },
  });
  chmodSync(path, 0o600);
  return {
    path,
    stop(closeActive = true) {
      listener.stop(closeActive);
      try {
        unlinkSync(path);
      } catch {
        // already gone
      }
    },
  };
}

/** Connects to a Unix socket. Rejects with a message naming the path and the likely fix. */
export async function connectUnix(path: string): Promise<UdsTransport> {
  try {
    const socket = await Bun.connect<UdsTransport | undefined>({ unix: path, socket: handlers });
    return socket.data!;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? (e as Error).message;
    throw new Error(`cannot connect to ${path} (${code}): is the sidecar running and MESH_SOCKET right?`, { cause: e });
  }
}

export interface UdsPair {
  /** The end that connected, and the end the listener accepted. */
  dialled: UdsTransport;
  accepted: UdsTransport;
  listener: UnixListener;
}

/**
 * Two connected UdsTransports in this process, over a socket at `path` (for tests and tools that own
 * both ends). The caller closes both ends and stops the listener.
 */
export async function connectedUdsPair(path: string): Promise<UdsPair> {
  let onAccepted: (t: UdsTransport) => void = () => {};
  const accepted = new Promise<UdsTransport>((resolve) => (onAccepted = resolve));
  const listener = await listenUnix(path, (t) => onAccepted(t));
  try {
    const dialled = await connectUnix(path);
    return { dialled, accepted: await accepted, listener };
  } catch (e) {
    listener.stop();
    throw e;
  }
}
