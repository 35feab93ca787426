// The hand-written HELLO codec against protobufjs, the reference (imported here only): the same bytes
// for every HELLO, each decoding the other's, and a peer's hostile bytes giving a HelloError.
import { describe, expect, test } from "bun:test";
import protobuf from "protobufjs";
import { join } from "node:path";
import { decodeHelloFields, encodeHelloFields, HelloError, MAX_FIELD_BYTES, MAX_TRANSPORTS } from "./hello-codec.ts";
import type { HelloMsg } from "./wire.ts";

const root = protobuf.loadSync(join(import.meta.dir, "../../proto/mesh/v1/rpc.proto"));
const HelloType = root.lookupType("mesh.v1.Hello");

/** What wire.ts's encodeHello did before the hand codec. */
function pbEncode(h: HelloMsg): Uint8Array {
  return HelloType.encode({
    ...h,
    rpal: h.rpal ? { serviceKey: h.rpal.serviceKey.toString(), serviceId: h.rpal.serviceId } : undefined,
  }).finish();
}

/** What wire.ts's decodeHello did before the hand codec (protobufjs, then the same checks). */
function pbDecode(bytes: Uint8Array): HelloMsg {
  const m = HelloType.decode(bytes) as unknown as Record<string, any>;
  const role = m.role === "sidecar" ? "sidecar" : m.role === "app" ? "app" : undefined;
  if (!role) throw new Error(`HELLO with unknown role ${JSON.stringify(m.role)}`);
  const hello: HelloMsg = {
    version: m.version ?? 0,
    role,
    transports: m.transports ?? [],
    maxMessageBytes: m.maxMessageBytes ?? 0,
    initialWindowBytes: m.initialWindowBytes ?? 0,
    maxConcurrentCalls: m.maxConcurrentCalls ?? 0,
  };
  if (m.shmOffer) hello.shmOffer = { ringBytes: m.shmOffer.ringBytes ?? 0 };
  if (m.shmSetup) {
    const sb = m.shmSetup.segmentBytes;
    hello.shmSetup = {
      segmentPath: m.shmSetup.segmentPath ?? "",
      ringBytes: m.shmSetup.ringBytes ?? 0,
      segmentBytes: typeof sb === "object" && sb ? sb.toNumber() : Number(sb ?? 0),
      spinUs: m.shmSetup.spinUs ?? 0,
      nonce: m.shmSetup.nonce ?? new Uint8Array(0),
    };
  }
  if (m.rpal) {
    const key = String(m.rpal.serviceKey ?? "");
    if (!/^\d{1,20}$/.test(key)) throw new Error(`HELLO carries a malformed RPAL service key`);
    hello.rpal = { serviceKey: BigInt(key), serviceId: m.rpal.serviceId ?? 0 };
  }
  if (m.error) hello.error = m.error;
  if (m.appName) hello.appName = m.appName;
  if (m.forced) hello.forced = true;
  return hello;
}

/** Comparable form: the nonce as a plain array (protobufjs may hand back a Buffer). */
function plain(h: HelloMsg): unknown {
  return h.shmSetup ? { ...h, shmSetup: { ...h.shmSetup, nonce: Array.from(h.shmSetup.nonce) } } : { ...h };
}

/** What a HELLO reads back as: zero/empty fields absent, `forced` only when true. */
function expected(h: HelloMsg): unknown {
  const out: HelloMsg = {
    version: h.version >>> 0,
    role: h.role,
    transports: h.transports,
    maxMessageBytes: h.maxMessageBytes >>> 0,
    initialWindowBytes: h.initialWindowBytes >>> 0,
    maxConcurrentCalls: h.maxConcurrentCalls >>> 0,
  };
  if (h.shmOffer) out.shmOffer = { ringBytes: h.shmOffer.ringBytes >>> 0 };
  if (h.shmSetup) out.shmSetup = { ...h.shmSetup, ringBytes: h.shmSetup.ringBytes >>> 0, spinUs: h.shmSetup.spinUs >>> 0 };
  if (h.rpal) out.rpal = { serviceKey: h.rpal.serviceKey, serviceId: h.rpal.serviceId | 0 };
  if (h.error) out.error = h.error;
  if (h.appName) out.appName = h.appName;
  if (h.forced) out.forced = true;
  return plain(out);
}

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");

function base(over: Partial<HelloMsg> = {}): HelloMsg {
  return { version: 2, role: "app", transports: [], maxMessageBytes: 4 << 20, initialWindowBytes: 1 << 20, maxConcurrentCalls: 100, ...over };
}

const U32 = 0xffffffff;
const nonce = new Uint8Array([0x00, 0xff, 0x00, 0xff, 0x80, 0x7f, 0x01, 0xfe, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]);

const TABLE: [string, HelloMsg][] = [
  ["all zero (sidecar)", { version: 0, role: "sidecar", transports: [], maxMessageBytes: 0, initialWindowBytes: 0, maxConcurrentCalls: 0 }],
  ["typical app offer", base({ transports: ["shm", "rpal", "uds"], shmOffer: { ringBytes: 0 }, forced: false, appName: "greeter" })],
  ["max uint32 everywhere", { version: U32, role: "app", transports: ["uds"], maxMessageBytes: U32, initialWindowBytes: U32, maxConcurrentCalls: U32, shmOffer: { ringBytes: U32 } }],
  ["max uint32 as the last field", { version: 0, role: "app", transports: [], maxMessageBytes: 0, initialWindowBytes: 0, maxConcurrentCalls: U32 }],
  ["one-byte and two-byte varint edges", base({ version: 127, maxMessageBytes: 128, initialWindowBytes: 16383, maxConcurrentCalls: 16384 })],
  ["shm setup, segment above 2^32, nonce with 0x00/0xff", base({ role: "sidecar", transports: ["shm"], shmSetup: { segmentPath: "/proc/4242/fd/17", ringBytes: 1 << 20, segmentBytes: 2 ** 40 + 12345, spinUs: U32, nonce } })],
  ["shm setup at 2^53 - 1, empty path and nonce", base({ role: "sidecar", shmSetup: { segmentPath: "", ringBytes: 0, segmentBytes: Number.MAX_SAFE_INTEGER, spinUs: 0, nonce: new Uint8Array(0) } })],
  ["shm setup at exactly 2^32 and 2^32 - 1 ring", base({ shmSetup: { segmentPath: "/dev/shm/x", ringBytes: U32, segmentBytes: 2 ** 32, spinUs: 1, nonce: new Uint8Array([0]) } })],
  ["rpal: 64-bit key, small id", base({ transports: ["rpal"], rpal: { serviceKey: 0xfedcba9876543210n, serviceId: 7 }, forced: true })],
  ["rpal: key 0, id 0", base({ rpal: { serviceKey: 0n, serviceId: 0 } })],
  ["rpal: max u64 key, id -1 (10-byte varint)", base({ rpal: { serviceKey: 2n ** 64n - 1n, serviceId: -1 } })],
  ["rpal: int32 extremes", base({ rpal: { serviceKey: 1n, serviceId: -(2 ** 31) } })],
  ["rpal: int32 max", base({ rpal: { serviceKey: 12345678901234567890n, serviceId: 2 ** 31 - 1 } })],
  ["empty strings are absent", base({ error: "", appName: "", transports: [] })],
  ["sidecar refusal with an error", base({ role: "sidecar", error: "this sidecar is configured for transport shm, the app offered uds" })],
  ["UTF-8 multi-byte app name", base({ appName: "café-日本語-🚀-Ω" })],
  ["app name starting with a BOM", base({ appName: "\ufeffbom" })],
  ["forced false is absent, forced true present", base({ forced: false, transports: ["uds"] })],
  ["many transports, empty and multi-byte among them", base({ transports: Array.from({ length: MAX_TRANSPORTS }, (_, i) => (i === 3 ? "" : i === 5 ? "трансп" : `t${i}`)) })],
  ["every field", {
    version: 2, role: "app", transports: ["shm", "rpal", "uds"], maxMessageBytes: 1, initialWindowBytes: 2, maxConcurrentCalls: 3,
    shmOffer: { ringBytes: 65536 }, shmSetup: { segmentPath: "/p", ringBytes: 4096, segmentBytes: 3 * 2 ** 33, spinUs: 50, nonce },
    rpal: { serviceKey: 99n, serviceId: 12 }, error: "e", appName: "a", forced: true,
  }],
];

describe("HELLO codec against protobufjs", () => {
  for (const [name, h] of TABLE) {
    test(name, () => {
      const ours = encodeHelloFields(h);
      const ref = pbEncode(h);
      expect(hex(ours)).toBe(hex(ref));
      expect(plain(decodeHelloFields(ref))).toEqual(expected(h)); // protobufjs encodes, we decode
      expect(plain(pbDecode(ours))).toEqual(expected(h)); // we encode, protobufjs decodes
    });
  }

  test("the table covers every field of Hello, ShmOffer, ShmSetup and RpalOffer", () => {
    const seen = new Set<string>();
    for (const [, h] of TABLE) {
      const m = HelloType.decode(encodeHelloFields(h)) as unknown as Record<string, any>;
      for (const k of Object.keys(m)) if (m[k] != null && m[k] !== "" && m[k] !== 0 && !(Array.isArray(m[k]) && !m[k].length)) seen.add(k);
      for (const sub of ["shmOffer", "shmSetup", "rpal"]) if (m[sub]) for (const k of Object.keys(m[sub])) seen.add(`${sub}.${k}`);
    }
    const want = HelloType.fieldsArray.map((f) => f.name);
    for (const sub of ["ShmOffer", "ShmSetup", "RpalOffer"]) {
      const t = root.lookupType(`mesh.v1.${sub}`);
      const key = sub === "RpalOffer" ? "rpal" : sub[0]!.toLowerCase() + sub.slice(1);
      for (const f of t.fieldsArray) want.push(`${key}.${f.name}`);
    }
    for (const w of want) expect(seen.has(w) ? w : `missing ${w}`).toBe(w);
  });

  test("random HELLOs (seeded): the same bytes and the same reading both ways", () => {
    const rnd = prng(7);
    const pick = <T>(xs: T[]) => xs[Math.floor(rnd() * xs.length)]!;
    const u32 = () => pick([0, 1, 127, 128, U32, Math.floor(rnd() * 2 ** 32), Math.floor(rnd() * 300)]);
    const s = () => pick(["", "x", "uds", "ü", "🚀🚀", "a".repeat(200), String.fromCharCode(Math.floor(rnd() * 0xd7ff) + 1)]);
    for (let i = 0; i < 500; i++) {
      const h: HelloMsg = {
        version: u32(), role: pick(["app", "sidecar"]), transports: Array.from({ length: Math.floor(rnd() * 5) }, s),
        maxMessageBytes: u32(), initialWindowBytes: u32(), maxConcurrentCalls: u32(),
      };
      if (rnd() < 0.5) h.shmOffer = { ringBytes: u32() };
      if (rnd() < 0.5) {
        const seg = pick([0, 1, 2 ** 32, 2 ** 32 - 1, Number.MAX_SAFE_INTEGER, Math.floor(rnd() * 2 ** 53)]);
        h.shmSetup = { segmentPath: s(), ringBytes: u32(), segmentBytes: seg, spinUs: u32(), nonce: Uint8Array.from({ length: Math.floor(rnd() * 20) }, () => Math.floor(rnd() * 256)) };
      }
      if (rnd() < 0.5) h.rpal = { serviceKey: BigInt.asUintN(64, BigInt(Math.floor(rnd() * 2 ** 53)) * 4099n), serviceId: pick([0, 1, -1, 2 ** 31 - 1, -(2 ** 31), Math.floor(rnd() * 2 ** 32) | 0]) };
      if (rnd() < 0.3) h.error = s();
      if (rnd() < 0.3) h.appName = s();
      if (rnd() < 0.5) h.forced = rnd() < 0.5;
      const ours = encodeHelloFields(h);
      expect(hex(ours)).toBe(hex(pbEncode(h)));
      expect(plain(decodeHelloFields(ours))).toEqual(expected(h));
      expect(plain(pbDecode(ours))).toEqual(expected(h));
    }
  });
});

// ---- a peer's hostile bytes --------------------------------------------------------------------

function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Decodes; returns the HELLO or the HelloError (anything else fails the test). */
function attempt(b: Uint8Array): HelloMsg | HelloError {
  try {
    return decodeHelloFields(b);
  } catch (e) {
    if (!(e instanceof HelloError)) throw new Error(`not a HelloError: ${e}`);
    expect(e.message).toContain("HELLO");
    return e;
  }
}

function errorOf(b: Uint8Array): string {
  const r = attempt(b);
  if (!(r instanceof HelloError)) throw new Error(`decoded, expected an error: ${JSON.stringify(plain(r), (_, v) => (typeof v === "bigint" ? `${v}n` : v))}`);
  return r.message;
}

const bytes = (...xs: (number | number[] | Uint8Array)[]) => Uint8Array.from(xs.flatMap((x) => (typeof x === "number" ? [x] : Array.from(x))));
const utf8 = (s: string) => new TextEncoder().encode(s);
const ROLE_APP = bytes(0x12, 3, utf8("app"));
const FULL = TABLE.find(([n]) => n === "every field")![1];

describe("HELLO from a hostile peer", () => {
  test("random bytes and mutated HELLOs (seeded): a HelloError or a HELLO protobufjs reads the same, never a crash or a hang", () => {
    const rnd = prng(1);
    const valid = encodeHelloFields(FULL);
    let errors = 0;
    let decoded = 0;
    let agreed = 0;
    const started = performance.now();
    for (let i = 0; i < 6000; i++) {
      let b: Uint8Array;
      if (i % 2 === 0) b = Uint8Array.from({ length: Math.floor(rnd() * 80) }, () => Math.floor(rnd() * 256));
      else {
        b = valid.slice();
        for (let k = 1 + Math.floor(rnd() * 3); k > 0; k--) b[Math.floor(rnd() * b.length)] = pick256(rnd);
        if (rnd() < 0.3) b = b.subarray(0, Math.floor(rnd() * b.length));
      }
      const r = attempt(b);
      if (r instanceof HelloError) {
        errors++;
        continue;
      }
      decoded++;
      let ref: HelloMsg | undefined;
      try {
        ref = pbDecode(b);
      } catch {
        continue; // protobufjs fails on a few inputs we read (a 5-byte varint in its last 4 bytes): compare where both read
      }
      expect(plain(r)).toEqual(plain(ref));
      agreed++;
    }
    expect(errors).toBeGreaterThan(1000);
    expect(decoded).toBeGreaterThan(300);
    expect(agreed).toBeGreaterThan(300);
    expect(performance.now() - started).toBeLessThan(5000);
  });

  test("cut at every byte: inside a field is a malformed-HELLO error, at a field boundary a valid prefix", () => {
    const full = encodeHelloFields(FULL);
    // top-level field boundaries (every tag and length here fits one byte)
    const bounds = new Set<number>();
    for (let at = 0; at < full.length; ) {
      bounds.add(at);
      const wt = full[at]! & 7;
      at += 1;
      if (wt === 0) while (full[at++]! & 0x80);
      else at += 1 + full[at]!;
    }
    expect(bounds.size).toBeGreaterThan(12);
    const roleEnd = 2 + 2 + full[3]!; // version (08 02), then role
    for (let k = 0; k < full.length; k++) {
      const r = attempt(full.subarray(0, k));
      if (!bounds.has(k)) {
        expect(r).toBeInstanceOf(HelloError);
        expect((r as Error).message).toMatch(/^malformed HELLO \(\d+ bytes\): /);
      } else if (k < roleEnd) expect((r as Error).message).toContain("unknown role");
      else expect(r).not.toBeInstanceOf(HelloError);
    }
    expect(plain(attempt(full) as HelloMsg)).toEqual(expected(FULL));
  });

  test("overlong varints: 10 bytes decode (as protobufjs), 11 are an error", () => {
    const ten = bytes(0x08, 0x85, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00, ROLE_APP);
    expect((attempt(ten) as HelloMsg).version).toBe(5);
    expect((attempt(ten) as HelloMsg).version).toBe(pbDecode(ten).version);
    expect(errorOf(bytes(0x08, 0x85, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00, ROLE_APP))).toContain("varint longer than 10 bytes");
    expect(errorOf(bytes(ROLE_APP, 0x08, 0x80, 0x80))).toContain("truncated varint");
    // a uint32 field keeps the low 32 bits of a wider varint, as protobufjs reads it
    const wide = bytes(0x08, 0x81, 0x80, 0x80, 0x80, 0x70, ROLE_APP);
    expect((attempt(wide) as HelloMsg).version).toBe(1);
    expect(pbDecode(wide).version).toBe(1);
    // forced is true for any set bit, also above bit 31
    expect((attempt(bytes(ROLE_APP, 0x60, 0x80, 0x80, 0x80, 0x80, 0x10)) as HelloMsg).forced).toBe(true);
    expect((attempt(bytes(ROLE_APP, 0x60, 0x80, 0x00)) as HelloMsg).forced).toBeUndefined();
  });

  test("a length past the end, or past 4 GiB, is an error naming the field", () => {
    expect(errorOf(bytes(0x12, 5, 0x61, 0x70))).toMatch(/malformed HELLO \(4 bytes\): role claims 5 bytes, 2 remain/);
    expect(errorOf(bytes(ROLE_APP, 0x5a, 0x80, 0x80, 0x80, 0x80, 0x10))).toContain("app_name claims 4294967296 bytes");
    expect(errorOf(bytes(ROLE_APP, 0x42, 0x05, 0x0a, 0x01, 0x61, 0x62))).toContain("shm_setup claims 5 bytes, 4 remain");
    // the sub-message's length is in range, a field inside it runs past the sub-message's end
    expect(errorOf(bytes(0x42, 0x03, 0x0a, 0x05, 0x61, ROLE_APP))).toContain("shm_setup.segment_path claims 5 bytes, 1 remain");
    expect(errorOf(bytes(ROLE_APP, 0xa1, 0x06, 1, 2, 3))).toContain("truncated 64-bit field 100");
    expect(errorOf(bytes(ROLE_APP, 0xa5, 0x06, 1, 2, 3))).toContain("truncated 32-bit field 100");
    expect(errorOf(bytes(ROLE_APP, 0xa2, 0x06, 0x7f))).toContain("field 100 claims 127 bytes, 0 remain");
  });

  test("invalid UTF-8 in any string is an error (strings are strict)", () => {
    const bad = [[0xc3, 0x28], [0xff], [0xc0, 0xaf], [0xed, 0xa0, 0x80], [0xe2, 0x82]];
    for (const b of bad) {
      expect(errorOf(bytes(0x12, b.length, b))).toContain("role is not valid UTF-8");
      expect(errorOf(bytes(ROLE_APP, 0x1a, b.length, b))).toContain("transports is not valid UTF-8");
      expect(errorOf(bytes(ROLE_APP, 0x52, b.length, b))).toContain("error is not valid UTF-8");
      expect(errorOf(bytes(ROLE_APP, 0x5a, b.length, b))).toContain("app_name is not valid UTF-8");
      expect(errorOf(bytes(ROLE_APP, 0x42, b.length + 2, 0x0a, b.length, b))).toContain("shm_setup.segment_path is not valid UTF-8");
      expect(errorOf(bytes(ROLE_APP, 0x4a, b.length + 2, 0x0a, b.length, b))).toContain("rpal.service_key is not valid UTF-8");
      expect(() => HelloType.decode(bytes(ROLE_APP, 0x5a, b.length, b))).toThrow(); // protobufjs is strict too
    }
  });

  test("a known field with another wire type is skipped as unknown (as protobufjs does)", () => {
    const cases = [
      bytes(0x0a, 0x01, 0x05, ROLE_APP), // version as LEN
      bytes(0x10, 0x05, ROLE_APP), // role as VARINT
      bytes(ROLE_APP, 0x1d, 1, 2, 3, 4), // transports as FIXED32
      bytes(ROLE_APP, 0x21, 1, 2, 3, 4, 5, 6, 7, 8), // max_message_bytes as FIXED64
      bytes(ROLE_APP, 0x38, 0x01), // shm_offer as VARINT
      bytes(ROLE_APP, 0x42, 0x02, 0x1a, 0x00), // shm_setup.segment_bytes as LEN
      bytes(ROLE_APP, 0x4a, 0x02, 0x08, 0x07), // rpal.service_key as VARINT → the key stays "" → malformed
      bytes(ROLE_APP, 0x62, 0x01, 0x01), // forced as LEN
    ];
    const want = { version: 0, role: "app", transports: [], maxMessageBytes: 0, initialWindowBytes: 0, maxConcurrentCalls: 0 };
    for (const [i, b] of cases.entries()) {
      if (i === 5) expect(plain(attempt(b) as HelloMsg)).toEqual({ ...want, shmSetup: { segmentPath: "", ringBytes: 0, segmentBytes: 0, spinUs: 0, nonce: [] } });
      else if (i === 6) expect(errorOf(b)).toContain('malformed RPAL service key ""');
      else expect(plain(attempt(b) as HelloMsg)).toEqual(want);
      if (i !== 6) expect(plain(attempt(b) as HelloMsg)).toEqual(plain(pbDecode(b)));
    }
  });

  test("unknown fields of wire types 0, 1, 2 and 5 are skipped anywhere; 3, 4, 6, 7 and field 0 are errors", () => {
    const full = encodeHelloFields(FULL);
    const unknown = bytes(0xf8, 0x07, 0xff, 0xff, 0x03, 0xf9, 0x07, 1, 2, 3, 4, 5, 6, 7, 8, 0xfa, 0x07, 3, 9, 9, 9, 0xfd, 0x07, 1, 2, 3, 4);
    const sub = (tag: number, inner: Uint8Array) => bytes(tag, inner.length + unknown.length, inner, unknown);
    // before and after the fields of a full HELLO
    const withUnknowns = bytes(unknown, full, unknown);
    const r = attempt(withUnknowns) as HelloMsg;
    expect(plain(r)).toEqual(expected(FULL));
    expect(plain(r)).toEqual(plain(pbDecode(withUnknowns)));
    // inside each sub-message (after its fields, its length grown to match)
    const inShm = bytes(ROLE_APP, sub(0x42, bytes(0x10, 0x05)), sub(0x4a, bytes(0x0a, 1, 0x37, 0x10, 0x02)), sub(0x3a, bytes(0x08, 0x09)));
    expect(plain(attempt(inShm) as HelloMsg)).toEqual({
      version: 0, role: "app", transports: [], maxMessageBytes: 0, initialWindowBytes: 0, maxConcurrentCalls: 0,
      shmOffer: { ringBytes: 9 }, shmSetup: { segmentPath: "", ringBytes: 5, segmentBytes: 0, spinUs: 0, nonce: [] }, rpal: { serviceKey: 7n, serviceId: 2 },
    });
    expect(plain(attempt(inShm) as HelloMsg)).toEqual(plain(pbDecode(inShm)));
    for (const wt of [3, 4, 6, 7]) {
      expect(errorOf(bytes(ROLE_APP, 0xa0 | wt, 0x06, 0x00))).toContain(`field 100 has wire type ${wt}`);
      expect(errorOf(bytes(ROLE_APP, 0x42, 0x03, 0xa0 | wt, 0x06, 0x00))).toContain(`field 100 has wire type ${wt}`);
    }
    expect(errorOf(bytes(ROLE_APP, 0x00, 0x00))).toContain("field number 0");
    expect(errorOf(bytes(ROLE_APP, 0x02, 0x00))).toContain("field number 0");
  });

  test("caps: 16 transports and 4096-byte strings and nonces pass, one more is an error", () => {
    const tr = (n: number) => bytes(ROLE_APP, ...Array.from({ length: n }, () => [0x1a, 3, ...utf8("uds")]));
    expect((attempt(tr(MAX_TRANSPORTS)) as HelloMsg).transports.length).toBe(MAX_TRANSPORTS);
    expect(errorOf(tr(MAX_TRANSPORTS + 1))).toContain(`more than ${MAX_TRANSPORTS} transports`);
    const name = (n: number) => encodeHelloFields(base({ appName: "n".repeat(n) }));
    expect((attempt(name(MAX_FIELD_BYTES)) as HelloMsg).appName?.length).toBe(MAX_FIELD_BYTES);
    expect(errorOf(name(MAX_FIELD_BYTES + 1))).toContain(`app_name is ${MAX_FIELD_BYTES + 1} bytes, more than ${MAX_FIELD_BYTES}`);
    const nonceOf = (n: number) => encodeHelloFields(base({ shmSetup: { segmentPath: "", ringBytes: 0, segmentBytes: 0, spinUs: 0, nonce: new Uint8Array(n) } }));
    expect((attempt(nonceOf(MAX_FIELD_BYTES)) as HelloMsg).shmSetup?.nonce.length).toBe(MAX_FIELD_BYTES);
    expect(errorOf(nonceOf(MAX_FIELD_BYTES + 1))).toContain("shm_setup.nonce is 4097 bytes");
    // an unknown field may be long: it is skipped, not copied
    expect(attempt(bytes(ROLE_APP, 0xa2, 0x06, 0x90, 0x4e, new Uint8Array(10000)))).not.toBeInstanceOf(HelloError);
  });

  test("segment_bytes: 2^53 - 1 decodes exactly, 2^53 and above are an error", () => {
    const seg = (v: number | bigint) => {
      const vb: number[] = [];
      for (let x = BigInt(v); ; x >>= 7n) {
        if (x < 0x80n) {
          vb.push(Number(x));
          break;
        }
        vb.push(Number(x & 0x7fn) | 0x80);
      }
      return bytes(ROLE_APP, 0x42, vb.length + 1, 0x18, vb);
    };
    expect(pbDecode(seg(2n ** 40n + 1n)).shmSetup?.segmentBytes).toBe(2 ** 40 + 1); // the encoding above is right
    expect((attempt(seg(2 ** 53 - 1)) as HelloMsg).shmSetup?.segmentBytes).toBe(2 ** 53 - 1);
    expect(errorOf(seg(2n ** 53n))).toContain("shm_setup.segment_bytes 9007199254740992 is not below 2^53");
    expect(errorOf(seg(2n ** 64n - 1n))).toContain("18446744073709551615 is not below 2^53");
  });

  test("the checks decodeHello made stay: role, RPAL key, defaults", () => {
    expect(errorOf(bytes())).toContain('HELLO with unknown role ""');
    expect(errorOf(bytes(0x12, 4, utf8("root")))).toContain('HELLO with unknown role "root"');
    for (const key of ["", "12a", "-1", "1".repeat(21), " 1", "1e5", "18446744073709551616"]) {
      expect(errorOf(bytes(ROLE_APP, 0x4a, key.length + 2, 0x0a, key.length, utf8(key)))).toContain("malformed RPAL service key");
    }
    expect(errorOf(bytes(ROLE_APP, 0x4a, 0x00))).toContain('malformed RPAL service key ""'); // rpal sent without a key
    const d = attempt(ROLE_APP) as HelloMsg;
    expect(d).toEqual({ version: 0, role: "app", transports: [], maxMessageBytes: 0, initialWindowBytes: 0, maxConcurrentCalls: 0 });
    expect("shmOffer" in d || "shmSetup" in d || "rpal" in d || "error" in d || "appName" in d || "forced" in d).toBe(false);
    // an empty sub-message is present, with its defaults
    expect((attempt(bytes(ROLE_APP, 0x3a, 0x00)) as HelloMsg).shmOffer).toEqual({ ringBytes: 0 });
  });

  test("a repeated sub-message merges into the earlier one, later scalars win (as protobufjs)", () => {
    const b = bytes(ROLE_APP, 0x42, 0x04, 0x10, 0x05, 0x20, 0x06, 0x42, 0x02, 0x10, 0x07, 0x12, 7, utf8("sidecar"));
    const r = attempt(b) as HelloMsg;
    expect(r.role).toBe("sidecar");
    expect(r.shmSetup).toMatchObject({ ringBytes: 7, spinUs: 6 });
    expect(plain(r)).toEqual(plain(pbDecode(b)));
  });

  test("the decoded nonce is a copy: the frame buffer may be reused", () => {
    const b = encodeHelloFields(base({ shmSetup: { segmentPath: "", ringBytes: 0, segmentBytes: 0, spinUs: 0, nonce } }));
    const r = attempt(b) as HelloMsg;
    b.fill(0);
    expect(Array.from(r.shmSetup!.nonce)).toEqual(Array.from(nonce));
  });
});

function pick256(rnd: () => number): number {
  const r = rnd();
  return r < 0.3 ? 0x80 : r < 0.4 ? 0xff : r < 0.5 ? 0 : Math.floor(rnd() * 256);
}
