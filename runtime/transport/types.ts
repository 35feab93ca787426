// The one interface every transport (uds, shm, rpal) implements. The RPC layer above never knows
// which one it runs on: it hands over frames and receives frames.
import type { FrameKind } from "../rpc/frame.ts";

export type TransportName = "uds" | "shm" | "rpal";
export type TransportChoice = TransportName | "auto";
export const TRANSPORT_NAMES: readonly TransportName[] = ["uds", "shm", "rpal"];

/** Receives frames from a transport. */
export interface FrameSink {
  /**
   * One whole frame. `body` is a view that is valid only during this call (it may point into a socket
   * buffer or a shared-memory ring): copy it (`body.slice()`) to keep it.
   */
  onFrame(kind: FrameKind, flags: number, callId: number, aux: number, body: Uint8Array): void;
  /** The transport is closed, for good. `error` is set when it closed because something went wrong. */
  onClose(error?: Error): void;
  /** Called when buffered outgoing bytes drop back under the low-water mark. */
  onWritable?(): void;
}

export interface TransportStats {
  framesSent: number;
  framesReceived: number;
  bytesSent: number;
  bytesReceived: number;
  /** Doorbells rung / wake-ups (shm, rpal); syscalls the transport made on its data path when known. */
  doorbellsSent?: number;
  doorbellsReceived?: number;
}

export interface Transport {
  readonly name: TransportName;
  /** Starts delivering frames to `sink`. Called once. */
  start(sink: FrameSink): void;
  /**
   * shm/rpal: a frame that arrived on the session's uds control connection after negotiation
   * (doorbells, frames the transport chose to send that way). `body` is valid only during the call.
   */
  onControlFrame?(kind: FrameKind, flags: number, callId: number, aux: number, body: Uint8Array): void;
  /**
   * Queues one frame. Never drops and never throws for a full buffer: the bytes are buffered and
   * `bufferedBytes` grows; callers apply backpressure by watching `bufferedBytes`/`onWritable`.
   * Throws only if the transport is closed or the body exceeds what the peer accepts.
   * `body` is copied (or written out) before send returns: callers may reuse its memory at once.
   */
  send(kind: FrameKind, flags: number, callId: number, aux: number, body?: Uint8Array): void;
  /**
   * Hands what `send` buffered to the kernel now instead of at the end of this event-loop turn. For
   * frames that wake a sleeping peer (doorbells): a process that is busy (spinning on a ring, say)
   * must not sit on the very write the peer is waiting for. Transports without a buffer omit it.
   */
  flushNow?(): void;
  /** Outgoing bytes accepted by `send` that have not reached the peer yet. */
  readonly bufferedBytes: number;
  readonly closed: boolean;
  readonly stats: TransportStats;
  /** Closes now; pending outgoing bytes may be lost. `reason` is logged by whoever owns the transport. */
  close(reason?: string): void;
}

/** A transport that was forced but cannot be set up here: the message names the precondition and the fix. */
export class TransportUnavailableError extends Error {
  override name = "TransportUnavailableError";
  constructor(
    readonly transport: TransportName,
    readonly reason: string,
  ) {
    super(`transport ${transport} cannot be used here: ${reason}`);
  }
}
