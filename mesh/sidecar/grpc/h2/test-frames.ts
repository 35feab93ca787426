// Test support for the HTTP/2 tests: raw frames built by hand, so a test can send what our own
// session would never write (bad settings, zero window updates, frames on the wrong stream).
export interface Frame {
  type: number;
  flags: number;
  stream: number;
  payload: Buffer;
}

/** One frame: the 9-byte header (length, type, flags, stream) and the payload. */
export function frame(type: number, flags: number, stream: number, payload: Buffer | number[] = []): Buffer {
  const p = Buffer.from(payload);
  const h = Buffer.alloc(9);
  h.writeUIntBE(p.length, 0, 3);
  h[3] = type;
  h[4] = flags;
  h.writeUInt32BE(stream, 5);
  return Buffer.concat([h, p]);
}

export const u32 = (v: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(v >>> 0, 0);
  return b;
};

/** A SETTINGS frame with these (id, value) pairs. */
export const SETTINGS = (pairs: [number, number][] = []): Buffer =>
  frame(4, 0, 0, Buffer.concat(pairs.map(([id, v]) => Buffer.concat([Buffer.from([id >> 8, id & 0xff]), u32(v)]))));

export const windowUpdate = (stream: number, increment: number): Buffer => frame(8, 0, stream, u32(increment));
