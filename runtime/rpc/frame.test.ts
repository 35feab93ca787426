import { describe, expect, test } from "bun:test";
import { FRAME_HEADER_BYTES, FrameError, FrameKind, newFrameHeader, readFrameHeader, writeFrameHeader } from "./frame.ts";

describe("frame header", () => {
  test("round-trips every field, little-endian, at any offset", () => {
    const buf = new Uint8Array(64);
    const view = new DataView(buf.buffer);
    writeFrameHeader(view, 8, 1234, FrameKind.END, 3, 0xfffffffe, 14);
    expect(buf[8]).toBe(1234 & 0xff); // little-endian length
    const h = readFrameHeader(view, 8, 1 << 20, newFrameHeader());
    expect(h).toEqual({ bodyLength: 1234, kind: FrameKind.END, flags: 3, callId: 0xfffffffe, aux: 14 });
  });

  test("rejects unknown kinds, reserved bits and lengths over the limit, naming the problem", () => {
    const buf = new Uint8Array(FRAME_HEADER_BYTES);
    const view = new DataView(buf.buffer);
    writeFrameHeader(view, 0, 10, FrameKind.CALL, 0, 1, 0);
    buf[4] = 0;
    expect(() => readFrameHeader(view, 0, 100, newFrameHeader())).toThrow(/unknown frame kind 0/);
    buf[4] = 200;
    expect(() => readFrameHeader(view, 0, 100, newFrameHeader())).toThrow(FrameError);
    writeFrameHeader(view, 0, 10, FrameKind.CALL, 0, 1, 0);
    buf[6] = 1;
    expect(() => readFrameHeader(view, 0, 100, newFrameHeader())).toThrow(/reserved/);
    writeFrameHeader(view, 0, 101, FrameKind.MESSAGE, 0, 1, 0);
    expect(() => readFrameHeader(view, 0, 100, newFrameHeader())).toThrow(/101 bytes exceeds the limit of 100/);
  });
});
