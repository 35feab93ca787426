// H2Stream.writeMessage: a gRPC message written straight into the connection's output when it fits in
// one DATA frame and both windows, else framed and queued like write(). Either way the peer must see the
// same bytes (the 5-byte prefix, then the message), END_STREAM on the last DATA frame, and flow control
// kept: a message split across frames, a 0-byte message, a message at the frame size, windows running
// out in the middle of a message, and messages queued behind a blocked one stay in order.
import { describe, expect, test } from "bun:test";
import { frameMessage, MessageDecoder } from "../wire.ts";
import { H2Session, type H2Stream, MAX_FRAME, PREFACE } from "./session.ts";
import { type Frame, SETTINGS, windowUpdate } from "./test-frames.ts";

/** A client session on a socket that records what it writes; the test plays the server. */
function client(peerSettings: [number, number][]) {
  const out: Buffer[] = [];
  const session = new H2Session({ write: (d, off = 0, len = d.length - off) => (out.push(Buffer.from(d.subarray(off, off + len))), len), end: () => {} }, { server: false });
  session.onData(SETTINGS(peerSettings));
  session.flush();
  let seen = 0;
  /** Frames written since the last look (the preface skipped). */
  const frames = (): Frame[] => {
    session.flush();
    let all = Buffer.concat(out.splice(0));
    if (seen === 0 && all.subarray(0, PREFACE.length).equals(PREFACE)) all = all.subarray(PREFACE.length);
    seen++;
    const r: Frame[] = [];
    for (let i = 0; i + 9 <= all.length; ) {
      const len = all.readUIntBE(i, 3);
      r.push({ type: all[i + 3]!, flags: all[i + 4]!, stream: all.readUInt32BE(i + 5) & 0x7fffffff, payload: all.subarray(i + 9, i + 9 + len) });
      i += 9 + len;
    }
    return r;
  };
  frames();
  const open = (): H2Stream => session.request([[":method", "POST"], [":path", "/t.S/M"]], false);
  return { session, frames, open };
}

const data = (fs: Frame[], stream: number) => fs.filter((f) => f.type === 0 && f.stream === stream);
const body = (fs: Frame[]) => Buffer.concat(fs.map((f) => f.payload));
const bytes = (n: number) => Buffer.from(Array.from({ length: n }, (_, i) => (i * 7 + 3) & 0xff));

/** The messages a receiver decodes from these DATA payloads. */
function decode(payload: Buffer): Buffer[] {
  const got: Buffer[] = [];
  new MessageDecoder(1 << 24).push(payload, { onDecoded: (m) => got.push(Buffer.from(m)) });
  return got;
}

describe("H2Stream.writeMessage", () => {
  test("a 0-byte message: one DATA frame of just the prefix, with END_STREAM", () => {
    const c = client([]);
    const s = c.open();
    expect(s.writeMessage(new Uint8Array(0), true)).toBe(true);
    const d = data(c.frames(), s.id);
    expect(d.length).toBe(1);
    expect(d[0]!.payload.equals(frameMessage(new Uint8Array(0)))).toBe(true);
    expect(d[0]!.flags & 1).toBe(1);
    expect(s.localEnded).toBe(true);
  });

  test("a message filling a frame exactly goes as one frame; one byte more is split across two", () => {
    for (const [n, frames] of [
      [MAX_FRAME - 5, 1],
      [MAX_FRAME - 4, 2],
    ] as const) {
      const c = client([]);
      const s = c.open();
      const m = bytes(n);
      s.writeMessage(m, true);
      const d = data(c.frames(), s.id);
      expect(d.length).toBe(frames);
      expect(d.every((f) => f.payload.length <= MAX_FRAME)).toBe(true);
      expect(d.map((f) => f.flags & 1)).toEqual([...Array(frames - 1).fill(0), 1]);
      expect(body(d).equals(frameMessage(m))).toBe(true);
    }
  });

  test("the stream window runs out mid-message: the rest and the next messages wait, in order, for WINDOW_UPDATE", () => {
    const c = client([[0x4, 100]]); // SETTINGS_INITIAL_WINDOW_SIZE 100
    const s = c.open();
    const a = bytes(300);
    const b = bytes(10);
    expect(s.writeMessage(a)).toBe(false); // queued: only 100 bytes may go
    expect(s.writeMessage(b, true)).toBe(false);
    let d = data(c.frames(), s.id);
    expect(body(d).length).toBe(100);
    const sent = [body(d)];
    c.session.onData(windowUpdate(s.id, 100));
    d = data(c.frames(), s.id);
    expect(body(d).length).toBe(100);
    sent.push(body(d));
    c.session.onData(windowUpdate(s.id, 1000));
    d = data(c.frames(), s.id);
    sent.push(body(d));
    expect(d.at(-1)!.flags & 1).toBe(1);
    const all = Buffer.concat(sent);
    expect(all.length).toBe(305 + 15);
    expect(decode(all)).toEqual([a, b]);
    // The window is kept: 1000 + 200 granted, 320 used.
    expect(s.sendWindow).toBe(1200 - 320);
  });

  test("the connection window runs out mid-message (large frames allowed): the rest goes on WINDOW_UPDATE of the connection", () => {
    const c = client([
      [0x4, 1 << 20],
      [0x5, 1 << 20], // SETTINGS_MAX_FRAME_SIZE 1 MiB: the connection window (65,535) is the limit
    ]);
    const s1 = c.open();
    const s2 = c.open();
    const a = bytes(40_000);
    const b = bytes(40_000);
    expect(s1.writeMessage(a, true)).toBe(true); // one frame, straight into the output
    expect(s2.writeMessage(b, true)).toBe(false); // 25,530 bytes of window left
    let fs = c.frames();
    expect(data(fs, s1.id).length).toBe(1);
    expect(body(data(fs, s2.id)).length).toBe(65_535 - 40_005);
    const first = body(data(fs, s2.id));
    c.session.onData(windowUpdate(0, 100_000));
    fs = c.frames();
    const d2 = data(fs, s2.id);
    expect(d2.at(-1)!.flags & 1).toBe(1);
    expect(decode(Buffer.concat([first, body(d2)]))).toEqual([b]);
  });

  test("after END_STREAM, or on a reset stream, nothing more is written", () => {
    const c = client([]);
    const s = c.open();
    s.writeMessage(bytes(3), true);
    expect(s.writeMessage(bytes(3))).toBe(false);
    const r = c.open();
    r.reset(8);
    expect(r.writeMessage(bytes(3))).toBe(false);
    const fs = c.frames();
    expect(data(fs, s.id).length).toBe(1);
    expect(data(fs, r.id).length).toBe(0);
  });
});

describe("HEADERS from the encoder's scratch buffer (copied by offsets)", () => {
  test("small and large header lists (scratch grown, CONTINUATION frames) go out byte for byte, in order", async () => {
    const { HpackDecoder } = await import("./hpack.ts");
    const c = client([]);
    const lists: [string, string][][] = [
      [[":path", "/t.S/A"], ["x-small", "1"]],
      [[":path", "/t.S/B"], ["x-big", "b".repeat(40_000)]], // > 4 KiB scratch and > one 16 KiB frame
      [[":path", "/t.S/C"], ["x-after", "2"]],
    ];
    const streams = lists.map((l) => c.session.request([[":method", "POST"], ...l], false));
    const fs = c.frames();
    const dec = new HpackDecoder(4096, 1 << 20);
    for (let i = 0; i < lists.length; i++) {
      const mine = fs.filter((f) => f.stream === streams[i]!.id && (f.type === 1 || f.type === 9));
      expect(mine[0]!.type).toBe(1);
      expect(mine.at(-1)!.flags & 4).toBe(4); // END_HEADERS on the last
      expect(mine.length).toBe(i === 1 ? 3 : 1);
      const got = dec.decode(Buffer.concat(mine.map((f) => f.payload))).headers as Record<string, string>;
      expect(got).toEqual(Object.fromEntries([[":method", "POST"], ...lists[i]!]));
    }
  });
});
