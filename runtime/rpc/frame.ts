// The frame every transport carries. A fixed 16-byte little-endian header that a DataView reads in
// a few nanoseconds, followed by `bodyLength` bytes of body:
//
//   offset 0  u32 bodyLength   bytes after the header
//   offset 4  u8  kind         FrameKind
//   offset 5  u8  flags        FrameFlag bits
//   offset 6  u16 reserved     must be 0 (room for a future version)
//   offset 8  u32 callId       0 for connection-level frames
//   offset 12 u32 aux          kind-specific: status code (END), window bytes (WINDOW), last call id (GOAWAY),
//                              head length (CALL with WITH_MESSAGE)
//
// Bodies: CALL carries a CallHead protobuf, END an EndStatus protobuf, HELLO a Hello protobuf
// (proto/mesh/v1/rpc.proto); MESSAGE carries the opaque payload. Nobody on the path decodes a payload.

export const FRAME_HEADER_BYTES = 16;

export const FrameKind = {
  HELLO: 1,
  CALL: 2,
  MESSAGE: 3,
  END: 4,
  CANCEL: 5,
  PING: 6,
  PONG: 7,
  GOAWAY: 8,
  WINDOW: 9,
  /** shm/rpal: "I published records while you were parked". Header only. */
  DOORBELL: 10,
} as const;
export type FrameKind = (typeof FrameKind)[keyof typeof FrameKind];
const MAX_KIND = 10;

export const FrameFlag = {
  /** MESSAGE/CALL: the sender will send no more messages on this call (half-close). */
  END_STREAM: 1,
  /** MESSAGE from the server: the body is response headers (a Metadata protobuf), not a payload. */
  HEADERS: 2,
  /** MESSAGE: the frame carries no message, only its flags (a bare half-close). */
  NO_MESSAGE: 4,
  /**
   * CALL: the body is the call head (its length in `aux`) followed by the first request message.
   * END: the body is the one response message of a call that ends OK with no details or trailers.
   * Saves a frame (a ring record, a header parse, a dispatch) per direction of a small unary call.
   */
  WITH_MESSAGE: 8,
} as const;

export const FrameKindName: Record<number, string> = Object.fromEntries(
  Object.entries(FrameKind).map(([k, v]) => [v, k]),
);

export interface FrameHeader {
  bodyLength: number;
  kind: FrameKind;
  flags: number;
  callId: number;
  aux: number;
}

/** Writes a header at `offset`. No allocation: the hot path for every transport. */
export function writeFrameHeader(
  view: DataView,
  offset: number,
  bodyLength: number,
  kind: FrameKind,
  flags: number,
  callId: number,
  aux: number,
): void {
  view.setUint32(offset, bodyLength, true);
  view.setUint8(offset + 4, kind);
  view.setUint8(offset + 5, flags);
  view.setUint16(offset + 6, 0, true);
  view.setUint32(offset + 8, callId, true);
  view.setUint32(offset + 12, aux >>> 0, true);
}

export class FrameError extends Error {
  override name = "FrameError";
}

/**
 * Reads and validates a header at `offset` into `out` (reused by the caller: no allocation).
 * Throws FrameError naming what is wrong; callers treat that as a broken or hostile peer and close.
 */
export function readFrameHeader(view: DataView, offset: number, maxBody: number, out: FrameHeader): FrameHeader {
  const bodyLength = view.getUint32(offset, true);
  const kind = view.getUint8(offset + 4);
  const reserved = view.getUint16(offset + 6, true);
  if (kind === 0 || kind > MAX_KIND) {
    throw new FrameError(`unknown frame kind ${kind} (peer speaks another protocol or sent garbage)`);
  }
  if (reserved !== 0) throw new FrameError(`reserved header bits set (0x${reserved.toString(16)}): not an rpal-mesh frame`);
  if (bodyLength > maxBody) {
    throw new FrameError(
      `frame body of ${bodyLength} bytes exceeds the limit of ${maxBody} bytes (absurd length prefix or a peer ignoring max_message_bytes)`,
    );
  }
  out.bodyLength = bodyLength;
  out.kind = kind as FrameKind;
  out.flags = view.getUint8(offset + 5);
  out.callId = view.getUint32(offset + 8, true);
  out.aux = view.getUint32(offset + 12, true);
  return out;
}

export function newFrameHeader(): FrameHeader {
  return { bodyLength: 0, kind: FrameKind.PING, flags: 0, callId: 0, aux: 0 };
}

/** Bodies of control frames (CALL heads, END statuses) are small; this bounds what we accept for them. */
export const MAX_CONTROL_BODY = 64 * 1024;

/** The largest body a receiver will accept for a frame given its max message size. */
export function maxFrameBody(maxMessageBytes: number): number {
  return Math.max(maxMessageBytes, MAX_CONTROL_BODY);
}
