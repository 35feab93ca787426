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
