// A hand-written codec for mesh.v1.CallHead, the one control message sent with every call. protobufjs
// spent ~10% of a pipelined client's CPU allocating and slicing its writer buffers for it, and ~7% of
// the server's decoding the method name byte by byte. The bytes are exactly proto3's encoding of
// proto/mesh/v1/rpc.proto (call-head-codec.test.ts checks both directions against protobufjs).
//
//   1 method       string   (LEN)
//   2 metadata     repeated MetadataEntry { 1 key string; 2 value string; 3 binary_value bytes }
//   3 timeout_us   uint64   (VARINT)
//   4 server_streaming bool, 5 client_streaming bool
import type { Metadata } from "./status.ts";
import { latin1, SeenStrings } from "./latin1.ts";

export class CallHeadError extends Error {
  override name = "WireError";
}

export interface CallHeadFields {
  method: string;
  metadata: Metadata;
  timeoutUs: number;
  serverStreaming: boolean;
  clientStreaming: boolean;
}

const encoder = new TextEncoder();
// ignoreBOM: a leading U+FEFF is data (protobufjs keeps it too), not a marker to strip.
const decoder = new TextDecoder("utf-8", { ignoreBOM: true });
let scratch = new Uint8Array(1024);
let pos = 0;

/** Method names are few and sent on every call: their UTF-8 bytes are cached. */
const methodBytes = new Map<string, Uint8Array>();
const METHOD_CACHE_LIMIT = 4096;

function reserve(n: number): void {
  if (pos + n <= scratch.byteLength) return;
  let size = scratch.byteLength * 2;
  while (size < pos + n) size *= 2;
  const grown = new Uint8Array(size);
  grown.set(scratch.subarray(0, pos));
  scratch = grown;
}

function varint(v: number): void {
  reserve(10);
  while (v >= 0x80) {
    scratch[pos++] = (v % 0x80) | 0x80;
    v = Math.floor(v / 0x80);
  }
  scratch[pos++] = v;
}

function bytesField(tag: number, b: Uint8Array): void {
  varint(tag);
  varint(b.byteLength);
  reserve(b.byteLength);
  scratch.set(b, pos);
  pos += b.byteLength;
}

function varintLength(v: number): number {
  let n = 1;
  while (v >= 0x80) {
    v = Math.floor(v / 0x80);
    n++;
  }
  return n;
}

function utf8(s: string): Uint8Array {
  return encoder.encode(s);
}

/**
 * Encodes a call head. The result is a view into a scratch buffer that the next call overwrites:
 * hand it to Transport.send (which copies) before encoding another.
 */
export function encodeCallHeadTransient(h: CallHeadFields): Uint8Array {
  encodeHead(h);
  return scratch.subarray(0, pos);
}

/** True when every UTF-16 unit of `s` is ASCII (then its UTF-8 length is its length). */
function isAscii(s: string): boolean {
  for (let i = 0; i < s.length; i++) if (s.charCodeAt(i) >= 0x80) return false;
  return true;
}

/** Writes ASCII `s` as field `tag` straight into scratch (no encoded copy made). */
function asciiField(tag: number, s: string): void {
  const n = s.length;
  varint(tag);
  varint(n);
  reserve(n);
  for (let i = 0; i < n; i++) scratch[pos + i] = s.charCodeAt(i);
  pos += n;
}

/** Writes each entry of `md` as a MetadataEntry message in field `tag`. */
function entries(tag: number, md: Metadata): void {
  for (const key in md) {
    const value = md[key]!;
    if (typeof value === "string" && isAscii(key) && isAscii(value)) {
      // The common case (keys are ASCII by the gRPC rules; most values too): no Uint8Array per string.
      const inner = 1 + varintLength(key.length) + key.length + 1 + varintLength(value.length) + value.length;
      varint(tag);
      varint(inner);
      asciiField(0x0a, key);
      asciiField(0x12, value);
      continue;
    }
    const k = utf8(key);
    const v = typeof value === "string" ? utf8(value) : value;
    const valueTag = typeof value === "string" ? 0x12 : 0x1a;
    const inner = 1 + varintLength(k.byteLength) + k.byteLength + 1 + varintLength(v.byteLength) + v.byteLength;
    varint(tag);
    varint(inner);
    bytesField(0x0a, k);
    bytesField(valueTag, v);
  }
}

/** Encodes a call head into scratch[0, pos). */
function encodeHead(h: CallHeadFields): void {
  pos = 0;
  let m = methodBytes.get(h.method);
  if (!m) {
    m = utf8(h.method);
    if (methodBytes.size < METHOD_CACHE_LIMIT) methodBytes.set(h.method, m);
  }
  bytesField(0x0a, m);
  entries(0x12, h.metadata);
  if (h.timeoutUs > 0) {
    varint(0x18);
    varint(Math.floor(h.timeoutUs));
  }
  if (h.serverStreaming) {
    varint(0x20);
    varint(1);
  }
  if (h.clientStreaming) {
    varint(0x28);
    varint(1);
  }
}

/**
 * Encodes a call head followed by the call's first request message (a CALL frame that carries its
 * message, see FrameFlag.WITH_MESSAGE). Transient like encodeCallHeadTransient. The head is the
 * first `byteLength - message.byteLength` bytes.
 */
export function encodeCallHeadAndMessageTransient(h: CallHeadFields, message: Uint8Array): Uint8Array {
  encodeHead(h);
  reserve(message.byteLength);
  scratch.set(message, pos);
  pos += message.byteLength;
  return scratch.subarray(0, pos);
}

// ---- decoding (input from a peer: every length is checked) ----------------------------------

interface Cursor {
  buf: Uint8Array;
  at: number;
  end: number;
  /** What is being decoded, for errors ("call head", "headers", "end status"). */
  what: string;
}

function readVarint(c: Cursor): number {
  let result = 0;
  let scale = 1;
  for (let i = 0; i < 10; i++) {
    if (c.at >= c.end) throw new CallHeadError(`malformed ${c.what}: truncated varint`);
    const b = c.buf[c.at++]!;
    result += (b & 0x7f) * scale;
    if (b < 0x80) return result;
    scale *= 0x80;
  }
  throw new CallHeadError(`malformed ${c.what}: varint longer than 10 bytes`);
}

function readSlice(c: Cursor): Uint8Array {
  const len = readVarint(c);
  if (len > c.end - c.at) throw new CallHeadError(`malformed ${c.what}: a field claims ${len} bytes, ${c.end - c.at} remain`);
  const s = c.buf.subarray(c.at, c.at + len);
  c.at += len;
  return s;
}

function skip(c: Cursor, wireType: number): void {
  switch (wireType) {
    case 0:
      readVarint(c);
      return;
    case 1:
      c.at += 8;
      break;
    case 2:
      readSlice(c);
      return;
    case 5:
      c.at += 4;
      break;
    default:
      throw new CallHeadError(`malformed ${c.what}: wire type ${wireType}`);
  }
  if (c.at > c.end) throw new CallHeadError(`malformed ${c.what}: truncated fixed-width field`);
}

/** Decoded method names, keyed by a hash of their bytes and checked byte for byte on a hit. */
const methodCache = new Map<number, { bytes: Uint8Array; text: string }>();

/** The method name in buf[at, at+len): read in place, no view made on a cache hit. */
function methodName(buf: Uint8Array, at: number, len: number): string {
  let h = 0x811c9dc5;
  for (let i = at; i < at + len; i++) h = Math.imul(h ^ buf[i]!, 0x01000193);
  const hit = methodCache.get(h);
  if (hit && hit.bytes.byteLength === len) {
    const hb = hit.bytes;
    let same = true;
    for (let i = 0; i < len; i++) {
      if (hb[i] !== buf[at + i]) {
        same = false;
        break;
      }
    }
    if (same) return hit.text;
  }
  const b = buf.slice(at, at + len);
  const text = decoder.decode(b);
  if (methodCache.size < METHOD_CACHE_LIMIT) methodCache.set(h, { bytes: b, text });
  return text;
}

/** Slots (a power of 2) and longest string of the cache of short ASCII strings read (see readText). */
const TEXT_SLOTS = 256;
const TEXT_MAX_LEN = 64;
const textSeen = new SeenStrings(TEXT_SLOTS);

/**
 * A length-delimited string field: ASCII (metadata keys, and nearly every value) is read in place,
 * with no view made (ASCII is the same in Latin-1 and UTF-8, and always valid); anything else goes
 * through `text`, which decides what invalid UTF-8 does. A short ASCII string read before (the same
 * keys and most values come on every call) is returned from `textSeen`, found by a hash taken in the
 * loop that checks for ASCII anyway: a runtime call per string ran cold at 1,000 calls/s (perf).
 */
function readText(c: Cursor, text: TextDecoder): string {
  const len = readVarint(c);
  if (len > c.end - c.at) throw new CallHeadError(`malformed ${c.what}: a field claims ${len} bytes, ${c.end - c.at} remain`);
  const buf = c.buf;
  const start = c.at;
  const end = start + len;
  c.at = end;
  let i = start;
  let h = len;
  while (i < end && buf[i]! < 0x80) h = (Math.imul(h, 31) + buf[i++]!) | 0;
  if (i === end) return len > TEXT_MAX_LEN ? latin1(buf, start, end) : textSeen.get(buf, start, end, h);
  return text.decode(buf.subarray(start, end));
}

function readEntry(c: Cursor, md: Metadata, text: TextDecoder = decoder): void {
  const len = readVarint(c);
  if (len > c.end - c.at) throw new CallHeadError(`malformed ${c.what}: metadata entry longer than the message`);
  // The entry's fields are read with the same cursor, bounded to the entry (no cursor per entry); a
  // throw ends the whole decode, so the bound needs no restoring then.
  const outerEnd = c.end;
  c.end = c.at + len;
  let key = "";
  let value: string | undefined;
  let binary: Uint8Array | undefined;
  while (c.at < c.end) {
    const tag = readVarint(c);
    const field = Math.floor(tag / 8);
    const wt = tag & 7;
    if (field === 1 && wt === 2) key = readText(c, text);
    else if (field === 2 && wt === 2) value = readText(c, text);
    else if (field === 3 && wt === 2) binary = readSlice(c).slice();
    else skip(c, wt);
  }
  c.end = outerEnd;
  key = key.toLowerCase();
  md[key] = key.endsWith("-bin") ? (binary ?? new Uint8Array(0)) : (value ?? "");
}

/** Decodes the call head in bytes[0, end) (end defaults to the whole view). */
export function decodeCallHeadFast(bytes: Uint8Array, end: number = bytes.byteLength): CallHeadFields {
  if (end > bytes.byteLength) throw new CallHeadError(`malformed call head: ${end} bytes claimed, ${bytes.byteLength} present`);
  const c: Cursor = { buf: bytes, at: 0, end, what: "call head" };
  const head: CallHeadFields = { method: "", metadata: {}, timeoutUs: 0, serverStreaming: false, clientStreaming: false };
  while (c.at < c.end) {
    const tag = readVarint(c);
    const field = Math.floor(tag / 8);
    const wt = tag & 7;
    if (field === 1 && wt === 2) {
      const len = readVarint(c);
      if (len > c.end - c.at) throw new CallHeadError(`malformed call head: a field claims ${len} bytes, ${c.end - c.at} remain`);
      head.method = methodName(c.buf, c.at, len);
      c.at += len;
    }
    else if (field === 2 && wt === 2) readEntry(c, head.metadata);
    else if (field === 3 && wt === 0) head.timeoutUs = readVarint(c);
    else if (field === 4 && wt === 0) head.serverStreaming = readVarint(c) !== 0;
    else if (field === 5 && wt === 0) head.clientStreaming = readVarint(c) !== 0;
    else skip(c, wt);
  }
  return head;
}

// ---- Headers and EndStatus (sent with most calls' responses; same rules) ----------------------
//
//   Headers   { 1 metadata repeated MetadataEntry }
//   EndStatus { 1 code uint32; 2 message string; 3 trailers repeated MetadataEntry }
//
// Strings are decoded strictly (invalid UTF-8 is an error), as protobufjs did for these.

const strictDecoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/** Encodes response headers (a fresh copy: the caller may keep it). */
export function encodeHeadersFast(md: Metadata): Uint8Array {
  return encodeHeadersTransient(md).slice();
}

/**
 * Encodes response headers into the shared scratch buffer: the view is valid only until the next
 * encode (the channel hands it straight to Transport.send, which copies it).
 */
export function encodeHeadersTransient(md: Metadata): Uint8Array {
  pos = 0;
  entries(0x0a, md);
  return scratch.subarray(0, pos);
}

/** Encodes an end status (a fresh copy). */
export function encodeEndStatusFast(code: number, message: string, trailers: Metadata | undefined): Uint8Array {
  return encodeEndStatusTransient(code, message, trailers).slice();
}

/** Encodes an end status into the shared scratch buffer (valid until the next encode, as above). */
export function encodeEndStatusTransient(code: number, message: string, trailers: Metadata | undefined): Uint8Array {
  pos = 0;
  if (code !== 0) {
    varint(0x08);
    varint(code >>> 0);
  }
  if (message) bytesField(0x12, utf8(message));
  if (trailers) entries(0x1a, trailers);
  return scratch.subarray(0, pos);
}

/** A TypeError from the strict decoder as a CallHeadError; others pass through. */
function asCodecError(what: string, e: unknown): Error {
  if (e instanceof CallHeadError) return e;
  return new CallHeadError(`malformed ${what}: invalid UTF-8 in a string (${(e as Error).message})`);
}

export function decodeHeadersFast(bytes: Uint8Array): Metadata {
  const c: Cursor = { buf: bytes, at: 0, end: bytes.byteLength, what: "headers" };
  const md: Metadata = {};
  try {
    while (c.at < c.end) {
      const tag = readVarint(c);
      if (tag === 0x0a) readEntry(c, md, strictDecoder);
      else skip(c, tag & 7);
    }
  } catch (e) {
    throw asCodecError("headers", e);
  }
  return md;
}

/** uint32 of a varint: its low 32 bits (as protobufjs reads uint32). */
function readUint32(c: Cursor): number {
  const start = c.at;
  readVarint(c); // bounds and length checks
  let v = 0;
  for (let i = start, shift = 0; i < c.at && shift < 35; i++, shift += 7) v = (v | ((c.buf[i]! & 0x7f) << shift)) >>> 0;
  return v;
}

export function decodeEndStatusFast(bytes: Uint8Array): { code: number; message: string; trailers: Metadata } {
  const c: Cursor = { buf: bytes, at: 0, end: bytes.byteLength, what: "end status" };
  const out = { code: 0, message: "", trailers: {} as Metadata };
  try {
    while (c.at < c.end) {
      const tag = readVarint(c);
      if (tag === 0x08) out.code = readUint32(c);
      else if (tag === 0x12) out.message = readText(c, strictDecoder);
      else if (tag === 0x1a) readEntry(c, out.trailers, strictDecoder);
      else skip(c, tag & 7);
    }
  } catch (e) {
    throw asCodecError("end status", e);
  }
  return out;
}
