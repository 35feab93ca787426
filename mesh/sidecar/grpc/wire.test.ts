// gRPC message framing: messages split across DATA chunks in every possible place, several per chunk,
// and hostile prefixes (absurd lengths, bad flag bytes, truncation) refused with the right status.
import { describe, expect, test } from "bun:test";
import { deflateSync, gzipSync } from "node:zlib";
import { Status } from "../../../runtime/rpc/status.ts";
import { GrpcError } from "./errors.ts";
import { decompress, frameMessage, MessageDecoder } from "./wire.ts";

function decodeAll(chunks: Buffer[], max = 1 << 20): { messages: number[][]; compressed: boolean[]; mid: boolean } {
  const d = new MessageDecoder(max);
  const messages: number[][] = [];
  const compressed: boolean[] = [];
  const sink = { onDecoded: (m: Buffer, z: boolean) => (messages.push([...m]), compressed.push(z)) };
  for (const c of chunks) {
    // As the HTTP/2 session hands a DATA frame over: a range of a larger read, between bytes not its own.
    const read = Buffer.concat([Buffer.from([0xee, 0xee, 0xee]), c, Buffer.from([0xee])]);
    d.push(read, sink, 3, 3 + c.length);
  }
  return { messages, compressed, mid: d.midMessage };
}

function codeOf(f: () => unknown): number | undefined {
  try {
    f();
  } catch (e) {
    if (e instanceof GrpcError) return e.code;
    throw e;
  }
  return undefined;
}

describe("frameMessage", () => {
  test("5-byte prefix: flag 0, big-endian length, then the bytes", () => {
    expect([...frameMessage(new Uint8Array([7, 8, 9]))]).toEqual([0, 0, 0, 0, 3, 7, 8, 9]);
    expect([...frameMessage(new Uint8Array(0))]).toEqual([0, 0, 0, 0, 0]);
    const big = frameMessage(new Uint8Array(0x012345));
    expect([...big.subarray(0, 5)]).toEqual([0, 0, 0x01, 0x23, 0x45]);
  });
});

describe("MessageDecoder", () => {
  const stream = Buffer.concat([frameMessage(new Uint8Array([1, 2, 3])), frameMessage(new Uint8Array(0)), frameMessage(new Uint8Array([4, 5]))]);

  test("several messages in one chunk, including an empty one", () => {
    expect(decodeAll([stream])).toEqual({ messages: [[1, 2, 3], [], [4, 5]], compressed: [false, false, false], mid: false });
  });

  test("split at every byte boundary, and one byte at a time", () => {
    for (let cut = 0; cut <= stream.length; cut++) {
      expect(decodeAll([stream.subarray(0, cut), stream.subarray(cut)]).messages).toEqual([[1, 2, 3], [], [4, 5]]);
    }
    const bytes = [...stream].map((b) => Buffer.from([b]));
    expect(decodeAll(bytes)).toEqual({ messages: [[1, 2, 3], [], [4, 5]], compressed: [false, false, false], mid: false });
  });

  test("a message that ends mid-way (truncated) or half a prefix leaves the decoder mid-message", () => {
    expect(decodeAll([Buffer.from([0, 0, 0, 0, 100, 1, 2])]).mid).toBe(true);
    expect(decodeAll([Buffer.from([0, 0, 0])]).mid).toBe(true);
    expect(decodeAll([]).mid).toBe(false);
  });

  test("the compressed flag is reported", () => {
    expect(decodeAll([Buffer.from([1, 0, 0, 0, 1, 9])]).compressed).toEqual([true]);
  });

  test("an absurd length prefix is refused with RESOURCE_EXHAUSTED from the prefix alone", () => {
    const d = new MessageDecoder(4 * 1024 * 1024);
    expect(codeOf(() => d.push(Buffer.from([0, 0xff, 0xff, 0xff, 0xff]), { onDecoded: () => {} }))).toBe(Status.RESOURCE_EXHAUSTED);
    // Also when the prefix arrives split.
    const d2 = new MessageDecoder(10);
    d2.push(Buffer.from([0, 0, 0]), { onDecoded: () => {} });
    expect(codeOf(() => d2.push(Buffer.from([0, 11]), { onDecoded: () => {} }))).toBe(Status.RESOURCE_EXHAUSTED);
    // Exactly the limit is fine.
    const d3 = new MessageDecoder(3);
    const got: number[][] = [];
    d3.push(Buffer.from([0, 0, 0, 0, 3, 1, 2, 3]), { onDecoded: (m) => got.push([...m]) });
    expect(got).toEqual([[1, 2, 3]]);
  });

  test("a flag byte other than 0 or 1 is a protocol error (INTERNAL)", () => {
    expect(codeOf(() => new MessageDecoder(100).push(Buffer.from([2, 0, 0, 0, 0]), { onDecoded: () => {} }))).toBe(Status.INTERNAL);
    expect(codeOf(() => new MessageDecoder(100).push(Buffer.from([0xff, 0, 0, 0, 0]), { onDecoded: () => {} }))).toBe(Status.INTERNAL);
  });

  test("messages whole in a chunk are views (no copy); messages across chunks are copied out", () => {
    const chunk = frameMessage(new Uint8Array([5, 6]));
    let view: Buffer | undefined;
    new MessageDecoder(100).push(chunk, { onDecoded: (m) => (view = m) });
    expect(view!.buffer).toBe(chunk.buffer);
  });
});

describe("decompress", () => {
  const payload = Buffer.from("hello ".repeat(100));

  test("gzip and deflate", () => {
    expect(decompress(gzipSync(payload), "gzip", 1 << 20).equals(payload)).toBe(true);
    expect(decompress(deflateSync(payload), "deflate", 1 << 20).equals(payload)).toBe(true);
  });

  test("compressed flag with identity or no grpc-encoding: INTERNAL", () => {
    expect(codeOf(() => decompress(payload, undefined, 1 << 20))).toBe(Status.INTERNAL);
    expect(codeOf(() => decompress(payload, "identity", 1 << 20))).toBe(Status.INTERNAL);
  });

  test("an encoding we do not read: UNIMPLEMENTED", () => {
    expect(codeOf(() => decompress(payload, "br", 1 << 20))).toBe(Status.UNIMPLEMENTED);
    expect(codeOf(() => decompress(payload, "snappy", 1 << 20))).toBe(Status.UNIMPLEMENTED);
  });

  test("bytes that are not what they claim: INTERNAL", () => {
    expect(codeOf(() => decompress(Buffer.from([1, 2, 3, 4]), "gzip", 1 << 20))).toBe(Status.INTERNAL);
    expect(codeOf(() => decompress(Buffer.from([1, 2, 3, 4]), "deflate", 1 << 20))).toBe(Status.INTERNAL);
  });

  test("a small message that inflates past the limit (a zip bomb): RESOURCE_EXHAUSTED", () => {
    const bomb = gzipSync(Buffer.alloc(10 * 1024 * 1024));
    expect(bomb.length).toBeLessThan(20 * 1024);
    expect(codeOf(() => decompress(bomb, "gzip", 1024 * 1024))).toBe(Status.RESOURCE_EXHAUSTED);
  });
});
