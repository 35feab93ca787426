// Strings made straight from bytes: Latin-1 (ASCII is the same in Latin-1 and UTF-8), with no view
// made, and a cache of short strings decoded before. Both wire decoders that make the same few header
// and metadata strings on every call use them: HPACK literals (mesh/sidecar/grpc/h2/hpack.ts) and the
// call-head codec's ASCII strings (call-head-codec.ts).

// Buffer's latin1Slice makes the string in one native step, on any Uint8Array (~30 ns for a 20- or
// 55-byte value; a String.fromCharCode per byte took 165 / 456 ns, a Buffer view + toString ~100).
const latin1Slice = (Buffer.prototype as unknown as { latin1Slice?: (this: Uint8Array, start: number, end: number) => string }).latin1Slice;

/** The Latin-1 string of buf[start, end). */
export function latin1(buf: Uint8Array, start: number, end: number): string {
  if (latin1Slice) return latin1Slice.call(buf, start, end);
  if (end - start < 64) {
    let s = "";
    for (let i = start; i < end; i++) s += String.fromCharCode(buf[i]!);
    return s;
  }
  return Buffer.from(buf.buffer, buf.byteOffset + start, end - start).toString("latin1");
}

/**
 * Short strings decoded before, one per slot, found by a hash of their bytes the caller takes (in a
 * loop it runs over the bytes anyway) and checked byte for byte on a hit. The same names and values
 * come on every call; a hit returns the string made last time instead of a new one, and at 1,000
 * calls/s, where each call runs cache-cold, also saves a call into the runtime (perf).
 */
export class SeenStrings {
  private readonly strings: (string | undefined)[];
  private readonly mask: number;

  /** `slots`: a power of 2. */
  constructor(slots: number) {
    this.strings = new Array<string | undefined>(slots).fill(undefined);
    this.mask = slots - 1;
  }

  /** The Latin-1 string of buf[start, end), whose bytes hashed to `hash`. */
  get(buf: Uint8Array, start: number, end: number, hash: number): string {
    const n = end - start;
    const slot = hash & this.mask;
    const s = this.strings[slot];
    if (s !== undefined && s.length === n) {
      let i = 0;
      while (i < n && s.charCodeAt(i) === buf[start + i]) i++;
      if (i === n) return s;
    }
    const fresh = latin1(buf, start, end);
    this.strings[slot] = fresh;
    return fresh;
  }
}
