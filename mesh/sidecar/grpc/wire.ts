// gRPC message framing over HTTP/2 DATA frames (PROTOCOL-HTTP2.md, "Length-Prefixed-Message"): a
// 1-byte compressed flag, a 4-byte big-endian length, then the message. The decoder takes DATA chunks as
// they arrive (a message may span chunks; a chunk may hold several messages), hands out messages without
// copying when a chunk holds them whole, and refuses a length over the limit before buffering a byte of
// it, so an absurd prefix costs nothing.
import type * as NodeZlib from "node:zlib";
import { Status } from "../../../runtime/rpc/status.ts";
import { GrpcError } from "./errors.ts";

export const PREFIX_BYTES = 5;

/** One uncompressed message with its prefix, as one buffer (one write, one DATA frame for small ones). */
export function frameMessage(message: Uint8Array): Buffer {
  const n = message.byteLength;
  const out = Buffer.allocUnsafe(PREFIX_BYTES + n);
  out[0] = 0;
  out[1] = n >>> 24;
  out[2] = (n >>> 16) & 0xff;
  out[3] = (n >>> 8) & 0xff;
  out[4] = n & 0xff;
  out.set(message, PREFIX_BYTES);
  return out;
}

/** Takes the decoder's messages: the call object itself (a method, not a closure per chunk). */
export interface MessageSink {
  onDecoded(message: Buffer, compressed: boolean): void;
}

/** The big-endian u32 at b[i]: by hand, as Buffer#readUInt32BE is a call into the runtime. */
function readU32(b: Uint8Array, i: number): number {
  return b[i]! * 0x1000000 + ((b[i + 1]! << 16) | (b[i + 2]! << 8) | b[i + 3]!);
}

export class MessageDecoder {
  /** A prefix split across chunks is gathered here (made on first need: most calls never split one). */
  private head: Buffer | undefined;
  private headFill = 0;
  private body: Buffer | undefined;
  private bodyFill = 0;
  private compressed = false;

  /** `maxBytes`: the largest message accepted (announced length; RESOURCE_EXHAUSTED beyond). */
  constructor(private readonly maxBytes: number) {}

  /** True while a message has begun but not ended: a stream ending now ends with a truncated message. */
  get midMessage(): boolean {
    return this.headFill > 0 || this.body !== undefined;
  }

  /**
   * Feeds one DATA chunk, chunk[start, end); calls `sink.onDecoded` for each complete message, in
   * order. Throws GrpcError (INTERNAL for a bad flag byte, RESOURCE_EXHAUSTED for a length over the
   * limit); after a throw the decoder is unusable and the call must end.
   */
  push(chunk: Buffer, sink: MessageSink, start = 0, end = chunk.length): void {
    const len = end;
    let i = start;
    while (i < len) {
      if (this.body !== undefined) {
        const take = Math.min(this.body.length - this.bodyFill, len - i);
        chunk.copy(this.body, this.bodyFill, i, i + take);
        this.bodyFill += take;
        i += take;
        if (this.bodyFill === this.body.length) {
          const msg = this.body;
          this.body = undefined;
          this.bodyFill = 0;
          sink.onDecoded(msg, this.compressed);
        }
        continue;
      }
      let flag: number;
      let size: number;
      if (this.headFill === 0 && len - i >= PREFIX_BYTES) {
        flag = chunk[i]!;
        size = readU32(chunk, i + 1);
        i += PREFIX_BYTES;
      } else {
        const head = (this.head ??= Buffer.alloc(PREFIX_BYTES));
        const take = Math.min(PREFIX_BYTES - this.headFill, len - i);
        chunk.copy(head, this.headFill, i, i + take);
        this.headFill += take;
        i += take;
        if (this.headFill < PREFIX_BYTES) break;
        this.headFill = 0;
        flag = head[0]!;
        size = head.readUInt32BE(1);
      }
      if (flag > 1) throw new GrpcError(Status.INTERNAL, `invalid gRPC message prefix: compressed flag ${flag} (must be 0 or 1)`);
      if (size > this.maxBytes) {
        throw new GrpcError(Status.RESOURCE_EXHAUSTED, `received message larger than max (${size} vs. ${this.maxBytes})`);
      }
      const compressed = flag === 1;
      if (len - i >= size) {
        // The whole message is in this chunk: hand out a view, no copy.
        const msg = chunk.subarray(i, i + size);
        i += size;
        sink.onDecoded(msg, compressed);
      } else {
        this.body = Buffer.allocUnsafe(size);
        this.bodyFill = 0;
        this.compressed = compressed;
      }
    }
  }
}

/** Encodings whose compressed messages we can read (what grpc-js's server reads too). */
export const ACCEPT_ENCODING = "identity,deflate,gzip";

/**
 * The bytes of a message whose compressed flag is set, under the call's grpc-encoding. Throws
 * GrpcError: INTERNAL when the flag is set without a compression (identity or no grpc-encoding) or the
 * bytes do not decompress, UNIMPLEMENTED for an encoding we do not support, RESOURCE_EXHAUSTED when
 * the result would exceed `maxBytes`.
 */
export function decompress(message: Buffer, encoding: string | undefined, maxBytes: number): Buffer {
  if (encoding === undefined || encoding === "identity") {
    throw new GrpcError(Status.INTERNAL, `compressed flag set on a message but grpc-encoding is ${encoding ?? "absent"}`);
  }
  if (encoding !== "gzip" && encoding !== "deflate") {
    throw new GrpcError(Status.UNIMPLEMENTED, `received message compressed with unsupported encoding "${encoding}"`);
  }
  try {
    const opts = { maxOutputLength: Math.max(1, maxBytes) };
    // node:zlib on first use: most sidecars never see a compressed message (see tls.ts on why).
    const zlib = require("node:zlib") as typeof NodeZlib;
    return encoding === "gzip" ? zlib.gunzipSync(message, opts) : zlib.inflateSync(message, opts);
  } catch (e) {
    if ((e as { code?: string }).code === "ERR_BUFFER_TOO_LARGE" || e instanceof RangeError) {
      throw new GrpcError(Status.RESOURCE_EXHAUSTED, `received message that decompresses to more than ${maxBytes} bytes`);
    }
    throw new GrpcError(Status.INTERNAL, `cannot decompress ${encoding} message: ${(e as Error).message}`);
  }
}
