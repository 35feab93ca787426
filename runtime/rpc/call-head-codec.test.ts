// The hand-written CallHead codec must be byte-compatible with protobufjs's reading of rpc.proto, and
// must turn any hostile bytes into an error, never a crash, a hang or an out-of-bounds read.
import { describe, expect, test } from "bun:test";
import protobuf from "protobufjs";
import { join } from "node:path";
import { decodeCallHeadFast, encodeCallHeadTransient, type CallHeadFields } from "./call-head-codec.ts";

const CallHead = protobuf.loadSync(join(import.meta.dir, "../../proto/mesh/v1/rpc.proto")).lookupType("mesh.v1.CallHead");

const samples: CallHeadFields[] = [
  { method: "/hello.Greeter/SayHello", metadata: {}, timeoutUs: 0, serverStreaming: false, clientStreaming: false },
  { method: "/p.S/M", metadata: { traceparent: "00-abc-def-01", "x-ü": "wert ✓" }, timeoutUs: 2_999_999, serverStreaming: true, clientStreaming: true },
  { method: "/p.S/Big", metadata: { "x-key-bin": new Uint8Array([0, 255, 7]), big: "v".repeat(3000) }, timeoutUs: 2 ** 52 + 1, serverStreaming: false, clientStreaming: true },
];

describe("call head codec", () => {
  test("what we encode, protobufjs decodes to the same fields", () => {
    for (const s of samples) {
      const m = CallHead.toObject(CallHead.decode(encodeCallHeadTransient(s)), { longs: Number, defaults: true }) as Record<string, any>;
      expect(m.method).toBe(s.method);
      expect(m.timeoutUs).toBe(s.timeoutUs);
      expect(m.serverStreaming).toBe(s.serverStreaming);
      expect(m.clientStreaming).toBe(s.clientStreaming);
      expect(m.metadata.length).toBe(Object.keys(s.metadata).length);
    }
  });

  test("what protobufjs encodes, we decode to the same fields (and unknown fields are skipped)", () => {
    for (const s of samples) {
      const bytes = CallHead.encode({
        method: s.method,
        metadata: Object.entries(s.metadata).map(([key, v]) => (typeof v === "string" ? { key, value: v } : { key, binaryValue: v })),
        timeoutUs: s.timeoutUs,
        serverStreaming: s.serverStreaming,
        clientStreaming: s.clientStreaming,
      }).finish();
      const withUnknown = new Uint8Array([...bytes, 0x48, 0x05, 0x52, 0x01, 0x41]); // field 9 varint, field 10 bytes
      const d = decodeCallHeadFast(withUnknown);
      expect(d.method).toBe(s.method);
      expect(d.timeoutUs).toBe(s.timeoutUs);
      expect(d.serverStreaming).toBe(s.serverStreaming);
      expect(d.metadata).toEqual(s.metadata);
    }
  });

  test("the transient buffer is reused: the caller must hand it over before encoding again", () => {
    const a = encodeCallHeadTransient(samples[0]!);
    const copy = a.slice();
    encodeCallHeadTransient(samples[1]!);
    expect(Buffer.compare(Buffer.from(a.subarray(0, 4)), Buffer.from(copy.subarray(0, 4)))).not.toBe(0);
  });

  test("truncations and random bytes fail with a message, never crash", () => {
    const good = encodeCallHeadTransient(samples[1]!).slice();
    for (let cut = 1; cut < good.byteLength; cut++) {
      try {
        decodeCallHeadFast(good.subarray(0, cut));
      } catch (e) {
        expect((e as Error).message).toMatch(/malformed call head/);
      }
    }
    let seed = 42;
    const rnd = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) >>> 16) & 0xff;
    for (let i = 0; i < 20_000; i++) {
      const junk = Uint8Array.from({ length: 1 + (i % 64) }, rnd);
      try {
        decodeCallHeadFast(junk);
      } catch (e) {
        expect((e as Error).message).toMatch(/malformed call head/);
      }
    }
  });
});

// Headers and EndStatus went the same way (hand-written, protobufjs-compatible): checked here against
// protobufjs in both directions, and against hostile bytes.
import { decodeEndStatus, decodeHeaders, encodeEndStatus, encodeHeaders, WireError } from "./wire.ts";

const proto = protobuf.loadSync(join(import.meta.dir, "../../proto/mesh/v1/rpc.proto"));
const EndStatusPb = proto.lookupType("mesh.v1.EndStatus");
const HeadersPb = proto.lookupType("mesh.v1.Headers");

const mdSamples: Record<string, string | Uint8Array>[] = [
  {},
  { "x-echo-header": "from-app" },
  { "x-ü": "wert ✓", "x-key-bin": new Uint8Array([0, 255, 7]), empty: "", "empty-bin": new Uint8Array(0), big: "v".repeat(3000) },
];

function entriesOf(md: Record<string, string | Uint8Array>) {
  return Object.entries(md).map(([key, v]) => (typeof v === "string" ? { key, value: v } : { key, binaryValue: v }));
}

function pbMetadata(list: { key: string; value?: string; binaryValue?: Uint8Array }[]) {
  const md: Record<string, string | Uint8Array> = {};
  // (protobufjs gives an empty bytes field as a plain [], the old decoder passed that on; ours is a Uint8Array.)
  for (const e of list) md[e.key.toLowerCase()] = e.key.toLowerCase().endsWith("-bin") ? new Uint8Array(e.binaryValue ?? []) : (e.value ?? "");
  return md;
}

describe("headers and end status codec", () => {
  test("what we encode, protobufjs decodes to the same; what protobufjs encodes, we decode to the same", () => {
    for (const md of mdSamples) {
      const h = HeadersPb.decode(encodeHeaders(md)) as unknown as { metadata: { key: string; value?: string; binaryValue?: Uint8Array }[] };
      expect(pbMetadata(h.metadata)).toEqual(md);
      expect(decodeHeaders(HeadersPb.encode({ metadata: entriesOf(md) }).finish())).toEqual(md);
      for (const [code, message] of [[0, ""], [13, "boom ✓"], [4, ""], [0xffffffff, "max"], [0, "ok with text"], [2, "\ufeffkept BOM"]] as const) {
        const bytes = encodeEndStatus(code, message, md);
        if (code === 0 && !message && Object.keys(md).length === 0) expect(bytes.byteLength).toBe(0);
        const s = EndStatusPb.toObject(EndStatusPb.decode(bytes), { defaults: true }) as { code: number; message: string; trailers: never[] };
        expect({ code: s.code, message: s.message, trailers: pbMetadata(s.trailers) }).toEqual({ code, message, trailers: md });
        const theirs = EndStatusPb.encode({ code, message, trailers: entriesOf(md) }).finish();
        expect(decodeEndStatus(theirs)).toEqual({ code, message, trailers: md });
      }
    }
    // Upper-case keys are lower-cased; a later duplicate wins; unknown fields are skipped; uint32 keeps the low 32 bits.
    const odd = EndStatusPb.encode({ code: 5, message: "m", trailers: [{ key: "X-A", value: "1" }, { key: "x-a", value: "2" }] }).finish();
    expect(decodeEndStatus(new Uint8Array([...odd, 0x48, 0x05, 0x52, 0x01, 0x41]))).toEqual({ code: 5, message: "m", trailers: { "x-a": "2" } });
    expect(decodeEndStatus(new Uint8Array([0x08, 0xff, 0xff, 0xff, 0xff, 0x1f])).code).toBe(0xffffffff);
    expect(decodeEndStatus(new Uint8Array([0x08, 0x85, 0x80, 0x80, 0x80, 0x10])).code).toBe(5);
  });

  test("hostile bytes: a WireError or a result, never a crash; invalid UTF-8 is an error", () => {
    const good = [encodeHeaders(mdSamples[2]!), encodeEndStatus(13, "boom", mdSamples[2]!)];
    let x = 11;
    const rnd = () => ((x = (x * 1103515245 + 12345) % 2147483648) / 2147483648);
    const inputs: Uint8Array[] = [];
    for (const g of good) {
      for (let cut = 1; cut < g.byteLength; cut += Math.max(1, Math.floor(g.byteLength / 200))) inputs.push(g.subarray(0, cut));
      for (let i = 0; i < 300; i++) {
        const b = g.slice(0, 64);
        b[Math.floor(rnd() * b.byteLength)] = Math.floor(rnd() * 256);
        inputs.push(b);
      }
    }
    for (let i = 0; i < 500; i++) inputs.push(Uint8Array.from({ length: 1 + Math.floor(rnd() * 40) }, () => Math.floor(rnd() * 256)));
    for (const b of inputs) {
      for (const f of [decodeHeaders, decodeEndStatus]) {
        try {
          f(b);
        } catch (e) {
          expect(e).toBeInstanceOf(WireError);
        }
      }
    }
    expect(() => decodeHeaders(new Uint8Array([0x0a, 0x05, 0x0a, 0x01, 0xff, 0x12, 0x00]))).toThrow(/malformed headers: invalid UTF-8/);
    expect(() => decodeEndStatus(new Uint8Array([0x12, 0x02, 0xc3, 0x28]))).toThrow(/malformed end status: invalid UTF-8/);
    expect(() => decodeEndStatus(new Uint8Array([0x1a, 0x09, 0x0a]))).toThrow(WireError);
  });
});

describe("metadata strings", () => {
  // ASCII is read in place (latin1 of the bytes, no view); anything else goes through the UTF-8 decoder.
  const values = ["", "plain", "\u0000\u007f", "é", "日本語", "ascii then é", "é then ascii", "\ufeffBOM", "x".repeat(300) + "ü"];

  test("headers, trailers and call-head metadata decode to the strings encoded, ASCII or not", () => {
    for (const v of values) {
      const md = { "x-k": v, [`x-${v.length}`]: "a" };
      expect(decodeHeaders(encodeHeaders(md))).toEqual(md);
      expect(decodeEndStatus(encodeEndStatus(3, v, md))).toEqual({ code: 3, message: v, trailers: md });
      const head = { method: "/a.B/C", metadata: md, timeoutUs: 0, serverStreaming: false, clientStreaming: false };
      expect(decodeCallHeadFast(encodeCallHeadTransient(head)).metadata).toEqual(md);
    }
  });

  test("short ASCII strings seen before come back from the cache only when every byte matches", () => {
    // 5,000 distinct keys and values of every short length share the cache's 256 slots: many collide, and
    // strings of one length and hash slot differ in a byte; each must decode to exactly what was sent.
    let x = 11;
    const rnd = () => (x = (x * 1103515245 + 12345) % 2147483648);
    for (let i = 0; i < 5000; i++) {
      const len = 1 + (rnd() % 64);
      let v = "";
      for (let j = 0; j < len; j++) v += String.fromCharCode(33 + (rnd() % 94));
      const md = { [`k${i % 97}`]: v, "x-same": "always", "x-len": v.slice(0, len - 1) + (i % 2 ? "a" : "b") };
      const head = { method: "/a.B/C", metadata: md, timeoutUs: 0, serverStreaming: false, clientStreaming: false };
      expect(decodeCallHeadFast(encodeCallHeadTransient(head)).metadata).toEqual(md);
      expect(decodeHeaders(encodeHeaders(md))).toEqual(md);
    }
  });

  test("a byte over 0x7f after ASCII ones is still checked as UTF-8 (strict for headers)", () => {
    // Entry { key "ab\x80" }: ASCII, then a lone continuation byte.
    expect(() => decodeHeaders(new Uint8Array([0x0a, 0x05, 0x0a, 0x03, 0x61, 0x62, 0x80]))).toThrow(/malformed headers: invalid UTF-8/);
    // The call head's decoder is not strict: the bad byte becomes U+FFFD, as TextDecoder makes it.
    const head = new Uint8Array([0x12, 0x09, 0x0a, 0x01, 0x6b, 0x12, 0x04, 0x61, 0x62, 0xc3, 0x28]);
    expect(decodeCallHeadFast(head).metadata).toEqual({ k: new TextDecoder().decode(new Uint8Array([0x61, 0x62, 0xc3, 0x28])) });
  });
});
