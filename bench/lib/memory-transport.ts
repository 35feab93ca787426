// BENCH FLOOR ONLY — not a product transport: it lives under bench/, `mesh` never offers it, and it
// connects two ends in the same process. The RPC floor rows run the real RpcChannel client and
// server over it (bench/clients/rpc-client.ts with transport "floor") to measure what the RPC layer
// costs with no IPC at all: the part of every transport's per-call CPU that no transport can remove.
//
// To be a lower bound of any real transport, it does only what the Transport contract requires:
// - `send` copies the body before it returns (the contract: callers reuse that memory at once; the
//   channel encodes every call head into one transient buffer). One copy into a per-direction arena,
//   the frame's header fields into a word array beside it: no frame header encoding, no syscall.
// - the receiver gets views into that arena, valid only during onFrame (the FrameSink contract), so
//   there is no second copy; the arena is reused once the batch has been delivered.
// - delivery is asynchronous and batched, as a real transport's is: everything sent before the batch
//   is delivered goes in one batch. The batch is delivered in ONE MICROTASK, not a `setImmediate`:
//   every real transport pays at least a microtask per batch (shm polls in chained microtasks; uds
//   flushes in a setImmediate and receives in a socket callback), and a setImmediate costs an
//   event-loop turn (an epoll_pwait2 syscall each: 100,000 setImmediate turns made 99,999 of them under
//   strace), which is IPC-side cost the floor must leave out. Pipelined, the 64 calls started in one
//   microtask round still go out as one batch of 64, as they do on uds and shm.
import { FRAME_HEADER_BYTES, type FrameKind, maxFrameBody } from "../../runtime/rpc/frame.ts";
import { DEFAULT_SETTINGS } from "../../runtime/rpc/types.ts";
import type { FrameSink, Transport, TransportStats } from "../../runtime/transport/types.ts";

/** Words per queued frame: kind, flags, callId, aux, body length. */
const META = 5;
const EMPTY = new Uint8Array(0);
/** Below this many queued bytes a sender that saw more is told it may write again (as uds does). */
const LOW_WATER_BYTES = 4 * 1024 * 1024;

/** The frames queued in one direction, in send order: header words and body bytes. */
class Batch {
  meta = new Uint32Array(META * 256);
  bytes = new Uint8Array(64 * 1024);
  frames = 0;
  byteLength = 0;

  push(kind: number, flags: number, callId: number, aux: number, body: Uint8Array | undefined): void {
    const len = body === undefined ? 0 : body.byteLength;
    let w = this.frames * META;
    if (w + META > this.meta.length) {
      const grown = new Uint32Array(this.meta.length * 2);
      grown.set(this.meta);
      this.meta = grown;
    }
    if (len > 0) {
      if (this.byteLength + len > this.bytes.byteLength) {
        const grown = new Uint8Array(Math.max(this.bytes.byteLength * 2, this.byteLength + len));
        grown.set(this.bytes.subarray(0, this.byteLength));
        this.bytes = grown;
      }
      this.bytes.set(body!, this.byteLength);
      this.byteLength += len;
    }
    const m = this.meta;
    m[w++] = kind;
    m[w++] = flags;
    m[w++] = callId;
    m[w++] = aux;
    m[w] = len;
    this.frames++;
  }

  /** The bytes these frames would take on a wire (header included), as the other transports count. */
  get wireBytes(): number {
    return this.byteLength + this.frames * FRAME_HEADER_BYTES;
  }

  reset(): void {
    this.frames = 0;
    this.byteLength = 0;
  }
}

/**
 * One end of an in-process pair (floorMemoryPair). Implements Transport except `name`, which the
 * Transport type keeps to the product transports (uds, shm, rpal); see asTransport().
 */
export class FloorMemoryEnd implements Omit<Transport, "name"> {
  readonly name = "floor-memory";
  readonly stats: TransportStats = { framesSent: 0, framesReceived: 0, bytesSent: 0, bytesReceived: 0 };
  /** Largest frame body the peer accepts, as the channel's settings make it for the other transports. */
  readonly maxBodyBytes = maxFrameBody(DEFAULT_SETTINGS.maxMessageBytes);
  closeError: Error | undefined;

  private peer!: FloorMemoryEnd;
  private sink: FrameSink | undefined;
  /** Frames sent and not yet delivered; `spare` is the batch being (or last) delivered, reused. */
  private out = new Batch();
  private spare = new Batch();
  private scheduled = false;
  private isClosed = false;

  /** @internal floorMemoryPair() wires the two ends. */
  static pair(): [FloorMemoryEnd, FloorMemoryEnd] {
    const a = new FloorMemoryEnd();
    const b = new FloorMemoryEnd();
    a.peer = b;
    b.peer = a;
    return [a, b];
  }

  get bufferedBytes(): number {
    return this.out.wireBytes;
  }

  get closed(): boolean {
    return this.isClosed;
  }

  start(sink: FrameSink): void {
    if (this.sink) throw new Error("FloorMemoryEnd.start called twice");
    this.sink = sink;
    // Frames the peer sent before this end started (the peer may speak first), as uds delivers them.
    if (this.peer.out.frames > 0) this.peer.deliver();
    if (this.isClosed) sink.onClose(this.closeError);
  }

  send(kind: FrameKind, flags: number, callId: number, aux: number, body?: Uint8Array): void {
    if (this.isClosed) throw new Error(`floor memory transport is closed${this.closeError ? `: ${this.closeError.message}` : ""}`);
    const len = body === undefined ? 0 : body.byteLength;
    if (len > this.peer.maxBodyBytes) throw new RangeError(`frame body of ${len} bytes exceeds the ${this.peer.maxBodyBytes} bytes the peer accepts`);
    this.out.push(kind, flags, callId, aux, body);
    this.stats.framesSent++;
    this.stats.bytesSent += FRAME_HEADER_BYTES + len;
    if (!this.scheduled) {
      this.scheduled = true;
      queueMicrotask(this.deliver);
    }
  }

  /** Delivers every frame queued so far to the peer's sink, in order (one batch). */
  private readonly deliver = (): void => {
    this.scheduled = false;
    const peer = this.peer;
    const sink = peer.sink;
    if (sink === undefined) return; // delivered when the peer starts
    const batch = this.out;
    if (batch.frames === 0) return;
    if (peer.isClosed) {
      batch.reset(); // nobody to read them: a closed socket drops them too
      return;
    }
    const wasHigh = batch.wireBytes >= LOW_WATER_BYTES;
    // Frames sent while this batch is delivered (the peer's handlers answering, say) go to the other
    // arena and a batch of their own, so the views handed out here stay valid during their onFrame.
    this.out = this.spare;
    this.spare = batch;
    const m = batch.meta;
    const bytes = batch.bytes;
    const frames = batch.frames;
    const wire = batch.wireBytes;
    let off = 0;
    let i = 0;
    try {
      for (let w = 0; i < frames && !peer.isClosed; i++, w += META) {
        const len = m[w + 4]!;
        sink.onFrame(m[w]! as FrameKind, m[w + 1]!, m[w + 2]!, m[w + 3]!, len === 0 ? EMPTY : bytes.subarray(off, off + len));
        off += len;
      }
    } catch (e) {
      // A sink that throws is a bug in the layer above: end the session loudly, as uds does.
      const err = new Error(`floor memory transport: ${(e as Error).message}`, { cause: e });
      peer.markClosed(err);
      this.markClosed(err);
    } finally {
      batch.reset();
    }
    peer.stats.framesReceived += i;
    peer.stats.bytesReceived += i === frames ? wire : off + i * FRAME_HEADER_BYTES;
    if (wasHigh && !this.isClosed && this.bufferedBytes < LOW_WATER_BYTES) this.sink?.onWritable?.();
  };

  /** Closes this end now (its sink hears it at once); the peer gets what was sent, then the end. */
  close(reason?: string): void {
    if (this.isClosed) return;
    if (reason && !this.closeError) this.closeError = new Error(reason);
    // As uds flushes and then ends its socket: the frames already sent reach the peer first.
    queueMicrotask(() => {
      this.deliver();
      this.peer.markClosed(undefined);
    });
    this.markClosed(this.closeError);
  }

  private markClosed(error: Error | undefined): void {
    if (this.isClosed) return;
    this.isClosed = true;
    if (error && !this.closeError) this.closeError = error;
    this.sink?.onClose(error);
  }
}

/** Two connected ends: what one sends, the other's sink receives. Bench floor rows only. */
export function floorMemoryPair(): [FloorMemoryEnd, FloorMemoryEnd] {
  return FloorMemoryEnd.pair();
}

/**
 * The end as a Transport for RpcChannel. The cast is only about `name`: TransportName lists the product
 * transports, and the channel never reads it.
 */
export function asTransport(end: FloorMemoryEnd): Transport {
  return end as unknown as Transport;
}
