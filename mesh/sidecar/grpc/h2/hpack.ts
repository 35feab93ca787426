// HPACK (RFC 7541) for the sidecar's own HTTP/2: a decoder with the dynamic table and Huffman strings
// (grpc-js and grpc-go clients use both), bounded by the header list size we announce, and an encoder
// per connection (HpackEncoder) that writes static-table names and exact matches, plain literals, and
// adds fields that repeat across calls to the peer's dynamic table while it has room. Errors throw
// HpackError: the connection must end with COMPRESSION_ERROR, since the decoder's table is then out of
// step with the peer's.
import { HUFFMAN_CODES, STATIC_TABLE } from "./tables.ts";
import { latin1, SeenStrings } from "../../../../runtime/rpc/latin1.ts";

export class HpackError extends Error {
  override name = "HpackError";
}

// ---- Huffman decoding: a 4-bit-at-a-time state machine built once from the code table.
// A state is an internal node of the code tree; TABLE[state * 16 + nibble] packs the next state
// (bits 0-7), the symbol emitted (bits 8-16), EMIT (bit 17) and FAIL (bit 18: EOS inside a string).
const EMIT = 1 << 17;
const FAIL = 1 << 18;
const HUFF_TABLE = new Int32Array(256 * 16);
/** Per state: true when the bits since the last symbol are all 1s and fewer than 8 (valid padding). */
const HUFF_ACCEPT = new Uint8Array(256);
(() => {
  // Tree: node 0 is the root; children[n*2+bit] = node id (internal >= 0) or -(sym+1) for a leaf.
  const children: number[] = [0, 0];
  let nodes = 1;
  const depth = [0];
  const ones = [1];
  for (let sym = 0; sym < 257; sym++) {
    const [bits, code] = HUFFMAN_CODES[sym]!;
    let n = 0;
    for (let b = bits - 1; b >= 0; b--) {
      const bit = (code >>> b) & 1;
      if (b === 0) {
        children[n * 2 + bit] = -(sym + 1);
        break;
      }
      let next = children[n * 2 + bit]!;
      if (next === 0) {
        next = nodes++;
        children[n * 2 + bit] = next;
        children.push(0, 0);
        depth[next] = depth[n]! + 1;
        ones[next] = ones[n]! & bit;
      }
      n = next;
    }
  }
  for (let s = 0; s < nodes; s++) {
    HUFF_ACCEPT[s] = s === 0 || (ones[s] === 1 && depth[s]! < 8) ? 1 : 0;
    for (let nib = 0; nib < 16; nib++) {
      let n = s;
      let out = 0;
      for (let b = 3; b >= 0; b--) {
        const c = children[n * 2 + ((nib >>> b) & 1)]!;
        if (c < 0) {
          const sym = -c - 1;
          if (sym === 256) {
            out = FAIL;
            break;
          }
          out = EMIT | (sym << 8);
          n = 0;
        } else {
          n = c;
        }
      }
      HUFF_TABLE[s * 16 + nib] = out & FAIL ? FAIL : out | n;
    }
  }
})();

/** Decodes a Huffman string of buf[start, end) to a latin1 string. */
export function huffmanDecode(buf: Uint8Array, start: number, end: number): string {
  let state = 0;
  let out = "";
  const codes: number[] = [];
  for (let i = start; i < end; i++) {
    const byte = buf[i]!;
    let e = HUFF_TABLE[state * 16 + (byte >>> 4)]!;
    if (e & FAIL) throw new HpackError("Huffman string contains EOS");
    if (e & EMIT) codes.push((e >>> 8) & 0x1ff);
    state = e & 0xff;
    e = HUFF_TABLE[state * 16 + (byte & 15)]!;
    if (e & FAIL) throw new HpackError("Huffman string contains EOS");
    if (e & EMIT) codes.push((e >>> 8) & 0x1ff);
    state = e & 0xff;
    if (codes.length >= 4096) {
      out += String.fromCharCode.apply(null, codes);
      codes.length = 0;
    }
  }
  if (!HUFF_ACCEPT[state]) throw new HpackError("Huffman string has invalid padding");
  return codes.length ? out + String.fromCharCode.apply(null, codes) : out;
}

/** Huffman-encodes a latin1 string (used by tests and for symmetry; the encoder sends plain literals). */
export function huffmanEncode(s: string): Buffer {
  const out: number[] = [];
  let acc = 0;
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const [bits, code] = HUFFMAN_CODES[s.charCodeAt(i) & 0xff]!;
    for (let b = bits - 1; b >= 0; b--) {
      acc = (acc << 1) | ((code >>> b) & 1);
      if (++n === 8) {
        out.push(acc & 0xff);
        acc = 0;
        n = 0;
      }
    }
  }
  if (n > 0) out.push(((acc << (8 - n)) | ((1 << (8 - n)) - 1)) & 0xff);
  return Buffer.from(out);
}

export type HeaderValue = string | string[];
export type HeaderMap = Record<string, HeaderValue>;

const STATIC_LEN = STATIC_TABLE.length; // 61
/** Slots (a power of 2) and the longest literal of a decoder's cache of plain literal strings. */
const SEEN_SLOTS = 128;
const SEEN_MAX_LEN = 64;

export interface DecodeResult {
  headers: HeaderMap;
  /** The header list exceeded the limit: the headers are incomplete and the stream must be refused. */
  tooLarge: boolean;
  /** A header field was malformed (upper-case name, pseudo-header after a regular one, ...). */
  malformed: string | undefined;
}

export class HpackDecoder {
  // The dynamic table as a ring of [name, value]; newest at `head - 1`.
  private names: string[] = [];
  private values: string[] = [];
  private size = 0;
  private maxSize: number;

  /**
   * `maxTableSize`: SETTINGS_HEADER_TABLE_SIZE we announce (the peer may not exceed it);
   * `maxHeaderListSize`: SETTINGS_MAX_HEADER_LIST_SIZE we announce (name + value + 32 per field).
   */
  constructor(
    private readonly maxTableSize: number,
    private readonly maxHeaderListSize: number,
  ) {
    this.maxSize = maxTableSize;
  }

  private evict(limit: number): void {
    while (this.size > limit && this.names.length > 0) {
      const name = this.names.pop()!;
      const value = this.values.pop()!;
      this.size -= name.length + value.length + 32;
    }
  }

  private add(name: string, value: string): void {
    const s = name.length + value.length + 32;
    if (s > this.maxSize) {
      this.names.length = 0;
      this.values.length = 0;
      this.size = 0;
      return;
    }
    this.evict(this.maxSize - s);
    this.names.unshift(name);
    this.values.unshift(value);
    this.size += s;
  }

  private buf: Uint8Array = EMPTY;
  private pos = 0;
  private end = 0;

  private readInt(prefixBits: number): number {
    const buf = this.buf;
    const mask = (1 << prefixBits) - 1;
    let v = buf[this.pos++]! & mask;
    if (v < mask) return v;
    let shift = 0;
    for (;;) {
      if (this.pos >= this.end) throw new HpackError("truncated integer");
      const b = buf[this.pos++]!;
      v += (b & 0x7f) * 2 ** shift;
      shift += 7;
      if (v > 0x7fffffff) throw new HpackError("integer overflow");
      if ((b & 0x80) === 0) return v;
    }
  }

  private readString(): string {
    if (this.pos >= this.end) throw new HpackError("truncated string");
    const huff = (this.buf[this.pos]! & 0x80) !== 0;
    const len = this.readInt(7);
    const start = this.pos;
    if (start + len > this.end) throw new HpackError("truncated string");
    this.pos = start + len;
    return huff ? huffmanDecode(this.buf, start, start + len) : this.literal(start, start + len);
  }

  /**
   * Plain literals decoded before, by a hash of their bytes: the same names and values (content-type,
   * te, user-agent, the path, grpc-status, ...) come as literals on every call from encoders that do
   * not index them; a hit returns the string decoded last time instead of making a new one.
   */
  private readonly seen = new SeenStrings(SEEN_SLOTS);

  /** The latin1 string of buf[start, end), from `seen` when the same bytes were decoded before. */
  private literal(start: number, end: number): string {
    const buf = this.buf;
    const n = end - start;
    if (n > SEEN_MAX_LEN) return latin1(buf, start, end);
    let h = n;
    for (let i = start; i < end; i++) h = (Math.imul(h, 31) + buf[i]!) | 0;
    return this.seen.get(buf, start, end, h);
  }

  private entryName(index: number): string {
    if (index === 0) throw new HpackError("index 0");
    if (index <= STATIC_LEN) return STATIC_TABLE[index - 1]![0];
    const d = index - STATIC_LEN - 1;
    if (d >= this.names.length) throw new HpackError(`index ${index} beyond the tables`);
    return this.names[d]!;
  }

  private entryValue(index: number): string {
    return index <= STATIC_LEN ? STATIC_TABLE[index - 1]![1] : this.values[index - STATIC_LEN - 1]!;
  }

  /** Decodes one complete header block, block[start, end). Throws HpackError on a compression error. */
  decode(block: Uint8Array, start = 0, end = block.length): DecodeResult {
    const headers: HeaderMap = Object.create(null); // a field named "__proto__" or "constructor" is just a field
    let listSize = 0;
    let tooLarge = false;
    let malformed: string | undefined;
    let regularSeen = false;
    let first = true;
    this.buf = block;
    this.pos = start;
    this.end = end;
    try {
      while (this.pos < this.end) {
        const b = block[this.pos]!;
        let name: string;
        let value: string;
        if (b & 0x80) {
          const idx = this.readInt(7);
          name = this.entryName(idx);
          value = this.entryValue(idx);
        } else if (b & 0x40) {
          const idx = this.readInt(6);
          name = idx ? this.entryName(idx) : this.readString();
          value = this.readString();
          this.add(name, value);
        } else if (b & 0x20) {
          if (!first) throw new HpackError("dynamic table size update after the first field");
          const n = this.readInt(5);
          if (n > this.maxTableSize) throw new HpackError(`dynamic table size ${n} over the ${this.maxTableSize} announced`);
          this.maxSize = n;
          this.evict(n);
          continue; // several updates may lead the block
        } else {
          // literal without indexing (0000) or never indexed (0001)
          const idx = this.readInt(4);
          name = idx ? this.entryName(idx) : this.readString();
          value = this.readString();
        }
        first = false;
        listSize += name.length + value.length + 32;
        if (listSize > this.maxHeaderListSize) tooLarge = true;
        if (tooLarge) continue;
        if (name.charCodeAt(0) === 0x3a) {
          if (regularSeen) malformed ??= `pseudo-header ${name} after regular headers`;
        } else {
          regularSeen = true;
          if (name !== name.toLowerCase()) malformed ??= `upper-case header name ${JSON.stringify(name)}`;
        }
        const prev = headers[name];
        if (prev === undefined) headers[name] = value;
        else if (typeof prev === "string") headers[name] = [prev, value];
        else prev.push(value);
      }
    } finally {
      this.buf = EMPTY;
    }
    return { headers, tooLarge, malformed };
  }
}

const EMPTY = new Uint8Array(0);


// ---- Encoding
/** name → value → static index, for the fields the static table has exactly. */
const EXACT = new Map<string, Map<string, number>>();
const NAMES = new Map<string, number>();
for (let i = STATIC_TABLE.length - 1; i >= 0; i--) {
  const [n, v] = STATIC_TABLE[i]!;
  let byValue = EXACT.get(n);
  if (byValue === undefined) EXACT.set(n, (byValue = new Map()));
  byValue.set(v, i + 1);
  NAMES.set(n, i + 1);
}

/** Header fields to send, in order: [name, value] pairs, names lower case, pseudo-headers first. */
export type HeaderList = (readonly [string, string])[];

// The encoder writes into one scratch buffer (the caller copies the block into frames at once).
let scratch = Buffer.allocUnsafe(4096);
let slen = 0;

function room(n: number): void {
  if (slen + n <= scratch.length) return;
  const bigger = Buffer.allocUnsafe(Math.max(scratch.length * 2, slen + n));
  scratch.copy(bigger, 0, 0, slen);
  scratch = bigger;
}

function writeInt(prefixBits: number, first: number, v: number): void {
  room(6);
  const mask = (1 << prefixBits) - 1;
  if (v < mask) {
    scratch[slen++] = first | v;
    return;
  }
  scratch[slen++] = first | mask;
  v -= mask;
  while (v >= 128) {
    scratch[slen++] = (v & 0x7f) | 0x80;
    v = Math.floor(v / 128);
  }
  scratch[slen++] = v;
}

function writeString(s: string): void {
  writeInt(7, 0, s.length);
  room(s.length);
  // Up to 128 characters (a traceparent is 55) by hand: a Buffer#write per call runs cold at 1,000
  // calls/s and cost ~1 % of a sidecar's CPU (perf), far more than this loop.
  if (s.length <= 128) {
    for (let i = 0; i < s.length; i++) scratch[slen++] = s.charCodeAt(i) & 0xff;
  } else {
    slen += scratch.write(s, slen, "latin1");
  }
}

// Encoded fields seen before (most calls repeat the same few): name → value → bytes. Fields whose
// values differ per call are not kept.
const UNCACHED = new Set(["traceparent", "tracestate", "grpc-timeout", "grpc-message", "grpc-trace-bin", "grpc-tags-bin"]);
/**
 * Credentials: written as "never indexed" literals (RFC 7541 6.2.3, 7.1.3), so no table on either side
 * keeps them and no intermediary re-encodes them into one: a peer that can add headers to a shared
 * connection must not learn a token by watching how well its own guesses compress. Nor are their bytes
 * kept in this process's cache of encoded fields.
 */
const SENSITIVE = new Set(["authorization", "proxy-authorization", "cookie", "set-cookie"]);
const fieldCache = new Map<string, Map<string, Uint8Array>>();
let cached = 0;

/** A field that may repeat across calls: worth caching its bytes, or an entry in the peer's table. */
function cacheable(name: string, value: string): boolean {
  return value.length <= 64 && !UNCACHED.has(name) && !SENSITIVE.has(name);
}

/** The last pair made for each name (see field); at most 1024 names are kept. */
const lastPair = new Map<string, readonly [string, string]>();

/**
 * The [name, value] pair of one field for a HeaderList: the one made last time while the name keeps its
 * value (most calls send the same fields), so a list costs one array, not one per field. Pairs are
 * shared: never modify one.
 */
export function field(name: string, value: string): readonly [string, string] {
  const last = lastPair.get(name);
  if (last !== undefined && last[1] === value) return last;
  const pair = [name, value] as const;
  if (cacheable(name, value) && (last !== undefined || lastPair.size < 1024)) lastPair.set(name, pair);
  return pair;
}

/** Writes one field without touching any dynamic table. */
function encodeField(name: string, value: string): void {
  let byValue = fieldCache.get(name);
  const hit = byValue?.get(value);
  if (hit) {
    room(hit.length);
    scratch.set(hit, slen);
    slen += hit.length;
    return;
  }
  const start = slen;
  const ni = NAMES.get(name);
  const exact = EXACT.get(name)?.get(value);
  if (exact !== undefined) {
    writeInt(7, 0x80, exact);
  } else {
    // 0x10: literal never indexed; 0x00: literal without indexing (both with a 4-bit name index).
    const never = SENSITIVE.has(name) ? 0x10 : 0;
    if (ni !== undefined) writeInt(4, never, ni);
    else {
      room(1);
      scratch[slen++] = never;
      writeString(name);
    }
    writeString(value);
  }
  if (cached < 2048 && cacheable(name, value)) {
    if (!byValue) fieldCache.set(name, (byValue = new Map()));
    byValue.set(value, Uint8Array.prototype.slice.call(scratch, start, slen));
    cached++;
  }
}

/**
 * Encodes a header list without touching any dynamic table (literal without indexing). The result is a
 * view of a shared scratch buffer, valid until the next call: copy it out (into frames) at once.
 */
export function encodeHeaders(list: HeaderList): Buffer {
  slen = 0;
  for (let i = 0; i < list.length; i++) {
    const f = list[i]!;
    encodeField(f[0], f[1]);
  }
  return scratch.subarray(0, slen);
}

/** The buffer HpackEncoder.encode wrote into (it may be replaced by a bigger one on the next call). */
export function headerBlockScratch(): Buffer {
  return scratch;
}

/** The most of the peer's dynamic table an encoder uses, however much the peer allows. */
const ENCODER_TABLE_MAX = 4096;

/** Fields sent once and not yet indexed that an encoder remembers (see HpackEncoder.field). */
const SEEN_ONCE_MAX = 512;

/**
 * The encoder of one connection. A field that may repeat across calls (cacheable) is added to the
 * peer's dynamic table the second time this connection sends it, and is one index byte after that: the
 * peer decodes no literal, we copy no cached bytes. Waiting for the second time keeps values that
 * differ per call (a request id, say) out of the table, which would otherwise fill with them within a
 * few dozen calls and leave the fields that do repeat as literals for the rest of the connection.
 * Fields are only added while they fit, so the table never evicts on its own and needs no per-call
 * bookkeeping; the only eviction is the peer lowering its SETTINGS_HEADER_TABLE_SIZE, which we signal
 * with size updates at the start of the next block (RFC 7541 4.2). Credentials (SENSITIVE) are never
 * indexed.
 */
export class HpackEncoder {
  /** The table size the peer's decoder has: 4096 until its SETTINGS lower it (RFC 7540 6.5.2). */
  private limit = ENCODER_TABLE_MAX;
  /** The lowest limit since the last block, when it changed since then: the size update(s) still to send. */
  private lowestUnsent = -1;
  private size = 0;
  /** Entries added so far; the newest has HPACK index 62, and an entry's index grows with each added after it. */
  private added = 0;
  /** The live entries, oldest first. */
  private readonly entries: (readonly [string, string])[] = [];
  /** name → value → the number the entry was added as. */
  private readonly numbers = new Map<string, Map<string, number>>();
  /** Cacheable fields sent once and not indexed yet: name → values; cleared when it holds SEEN_ONCE_MAX. */
  private readonly seenOnce = new Map<string, Set<string>>();
  private seenOnceCount = 0;

  /** The peer's SETTINGS_HEADER_TABLE_SIZE. */
  setPeerTableSize(v: number): void {
    const limit = Math.min(v, ENCODER_TABLE_MAX);
    if (limit === this.limit) return;
    this.limit = limit;
    this.lowestUnsent = this.lowestUnsent < 0 ? limit : Math.min(this.lowestUnsent, limit);
    while (this.size > limit) {
      const [name, value] = this.entries.shift()!;
      this.size -= name.length + value.length + 32;
      const byValue = this.numbers.get(name)!;
      byValue.delete(value);
      if (byValue.size === 0) this.numbers.delete(name);
    }
  }

  /**
   * Encodes a header list; the block is left in headerBlockScratch()[0, returned length), valid until
   * the next encode on any connection (the session copies it into its output buffer at once). The
   * peer's table follows ours only if every block encoded is sent, in the order encoded.
   */
  encode(list: HeaderList): number {
    slen = 0;
    if (this.lowestUnsent >= 0) {
      // The smallest size the table had since the last block first, then the current one (RFC 7541 4.2).
      if (this.lowestUnsent < this.limit) writeInt(5, 0x20, this.lowestUnsent);
      writeInt(5, 0x20, this.limit);
      this.lowestUnsent = -1;
    }
    for (let i = 0; i < list.length; i++) {
      const f = list[i]!;
      this.field(f[0], f[1]);
    }
    return slen;
  }

  private field(name: string, value: string): void {
    const n = this.numbers.get(name)?.get(value);
    if (n !== undefined) {
      writeInt(7, 0x80, STATIC_LEN + this.added - n + 1);
      return;
    }
    const exact = EXACT.get(name)?.get(value);
    if (exact !== undefined) {
      writeInt(7, 0x80, exact);
      return;
    }
    const entrySize = name.length + value.length + 32;
    if (this.size + entrySize > this.limit || !cacheable(name, value) || this.firstSighting(name, value)) return encodeField(name, value);
    // Literal with incremental indexing, with the static table's name when it has one.
    const ni = NAMES.get(name);
    if (ni !== undefined) writeInt(6, 0x40, ni);
    else {
      room(1);
      scratch[slen++] = 0x40;
      writeString(name);
    }
    writeString(value);
    this.size += entrySize;
    this.entries.push([name, value]);
    let byName = this.numbers.get(name);
    if (byName === undefined) this.numbers.set(name, (byName = new Map()));
    byName.set(value, ++this.added);
    if (this.seenOnce.get(name)?.delete(value)) this.seenOnceCount--;
  }

  /** True the first time (since the last clear) this connection sends the field: remembers it. */
  private firstSighting(name: string, value: string): boolean {
    let values = this.seenOnce.get(name);
    if (values?.has(value)) return false;
    if (this.seenOnceCount >= SEEN_ONCE_MAX) {
      // Mostly values that differ per call: start over rather than grow or track ages.
      this.seenOnce.clear();
      this.seenOnceCount = 0;
      values = undefined;
    }
    if (values === undefined) this.seenOnce.set(name, (values = new Set()));
    values.add(value);
    this.seenOnceCount++;
    return true;
  }
}

