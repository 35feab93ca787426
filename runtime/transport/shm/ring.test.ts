import { describe, expect, test } from "bun:test";
import { FrameKind, maxFrameBody } from "../../rpc/frame.ts";
import { CorruptSegmentError, RECORD_HEADER_BYTES, REWIND_INDEX, RING_CONTROL_BYTES, RingReader, RingWriter, type RingSink } from "./ring.ts";

const CAP = 4096;

function makeRing(capacity = CAP, maxBody = maxFrameBody(4 * 1024 * 1024)) {
  const buffer = new ArrayBuffer(RING_CONTROL_BYTES + capacity);
  const writer = new RingWriter(buffer, 0, RING_CONTROL_BYTES, capacity);
  const reader = new RingReader(buffer, 0, RING_CONTROL_BYTES, capacity, maxBody);
  const ctrl = new Int32Array(buffer, 0, RING_CONTROL_BYTES / 4);
  const data = new DataView(buffer, RING_CONTROL_BYTES, capacity);
  return { buffer, writer, reader, ctrl, data };
}

interface Got {
  kind: number;
  flags: number;
  callId: number;
  aux: number;
  body: Uint8Array;
}

function collector(): RingSink & { got: Got[] } {
  const got: Got[] = [];
  return {
    got,
    onFrame(kind, flags, callId, aux, body) {
      got.push({ kind, flags, callId, aux, body: body.slice() });
    },
  };
}

function pattern(n: number, seed: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed) & 0xff;
  return b;
}

/** Writes frames, reading whenever the ring is full, until all are through. */
function pump(writer: RingWriter, reader: RingReader, sink: RingSink, frames: Uint8Array[]): void {
  for (let i = 0; i < frames.length; i++) {
    let spins = 0;
    while (!writer.writeFrame(FrameKind.MESSAGE, i & 3, i + 1, i * 7, frames[i]!)) {
      if (reader.poll(sink, 1 << 30) === 0 && ++spins > 2) throw new Error(`no progress writing frame ${i}`);
    }
  }
  while (reader.poll(sink, 1 << 30) > 0);
}

describe("shm ring", () => {
  test("a writer that finds the ring empty past REWIND_INDEX starts over at index 0; a full lap when it is not", () => {
    const cap = 64 * 1024;
    const { writer, reader, buffer } = makeRing(cap);
    const sink = collector();
    const data = new Uint8Array(buffer, RING_CONTROL_BYTES, cap);
    // One frame at a time, read at once (a closed loop): 2,000 frames of ~100 B, three laps' worth.
    for (let i = 0; i < 2000; i++) {
      expect(writer.writeFrame(FrameKind.MESSAGE, 0, i + 1, 0, pattern(76, i))).toBe(true);
      expect(reader.poll(sink, 1 << 30)).toBe(1);
    }
    expect(sink.got.map((g) => g.callId)).toEqual(Array.from({ length: 2000 }, (_, i) => i + 1));
    sink.got.forEach((g, i) => expect(g.body).toEqual(pattern(76, i)));
    // Nothing was ever written past the first REWIND_INDEX bytes and one more check's worth.
    expect(data.subarray(2 * REWIND_INDEX).every((b) => b === 0)).toBe(true);
    // A reader that falls behind: the ring is never empty when the writer looks, so it laps the ring.
    const behind = makeRing(cap);
    const frames = Array.from({ length: 2000 }, (_, i) => pattern(76, i));
    const sink2 = collector();
    pump(behind.writer, behind.reader, sink2, frames);
    expect(sink2.got.map((g) => g.callId)).toEqual(Array.from({ length: 2000 }, (_, i) => i + 1));
    expect(new Uint8Array(behind.buffer, RING_CONTROL_BYTES + cap - 4096, 4096).some((b) => b !== 0)).toBe(true);
  });

  test("frames come out in order with their header fields and bodies", () => {
    const { writer, reader } = makeRing();
    const sink = collector();
    const frames = [0, 1, 7, 8, 9, 100].map((n, i) => pattern(n, i));
    pump(writer, reader, sink, frames);
    expect(sink.got.map((g) => g.callId)).toEqual([1, 2, 3, 4, 5, 6]);
    sink.got.forEach((g, i) => {
      expect(g.kind).toBe(FrameKind.MESSAGE);
      expect(g.flags).toBe(i & 3);
      expect(g.aux).toBe(i * 7);
      expect(g.body).toEqual(frames[i]!);
    });
  });

  test("wrap-around at every record size near the ring's end", () => {
    // For each body size, first fill the ring up to every 8-byte offset near its end, then write the
    // record that must wrap (or exactly fit), so every position of the wrap marker is exercised.
    for (let bodySize = 0; bodySize <= 64; bodySize++) {
      for (let gap = 8; gap <= 128; gap += 8) {
        // Start both positions `gap` bytes before the ring's end (a fresh pair reads them from the block).
        const { buffer, ctrl } = makeRing();
        ctrl[0] = CAP - gap;
        ctrl[16] = CAP - gap;
        const writer = new RingWriter(buffer, 0, RING_CONTROL_BYTES, CAP);
        const reader = new RingReader(buffer, 0, RING_CONTROL_BYTES, CAP, 1 << 20);
        const sink = collector();
        const frames = [pattern(bodySize, gap), pattern(bodySize + 1, gap + 1), pattern(3, 9)];
        pump(writer, reader, sink, frames);
        expect(sink.got.length).toBe(3);
        sink.got.forEach((g, i) => expect(g.body).toEqual(frames[i]!));
      }
    }
  });

  test("positions wrap past 2^32 without losing frames", () => {
    const { buffer, ctrl } = makeRing();
    const start = 0xffffffff - 1024 + 1; // 8-aligned, 1 KiB before the u32 wrap
    ctrl[0] = start | 0;
    ctrl[16] = start | 0;
    const writer = new RingWriter(buffer, 0, RING_CONTROL_BYTES, CAP);
    const reader = new RingReader(buffer, 0, RING_CONTROL_BYTES, CAP, 1 << 20);
    const sink = collector();
    const frames = Array.from({ length: 200 }, (_, i) => pattern(i % 50, i));
    pump(writer, reader, sink, frames);
    expect(sink.got.length).toBe(200);
    expect(sink.got.map((g) => g.body)).toEqual(frames);
  });

  test("a message larger than the ring is chunked and reassembled", () => {
    const { writer, reader } = makeRing();
    const sink = collector();
    const big = pattern(CAP * 5 + 13, 3);
    const frames = [pattern(5, 1), big, pattern(0, 0), pattern(CAP / 4, 2)];
    pump(writer, reader, sink, frames);
    expect(sink.got.length).toBe(4);
    expect(sink.got[1]!.body.length).toBe(big.length);
    sink.got.forEach((g, i) => expect(g.body).toEqual(frames[i]!));
  });

  test("a full ring refuses the write and keeps chunk progress", () => {
    const { writer, reader } = makeRing();
    const sink = collector();
    const big = pattern(CAP * 2, 5);
    expect(writer.writeFrame(FrameKind.MESSAGE, 0, 9, 0, big)).toBe(false);
    expect(writer.midFrame).toBe(true);
    reader.poll(sink, 1 << 30);
    expect(sink.got.length).toBe(0); // nothing delivered before the last chunk
    while (!writer.writeFrame(FrameKind.MESSAGE, 0, 9, 0, big)) reader.poll(sink, 1 << 30);
    reader.poll(sink, 1 << 30);
    expect(sink.got.length).toBe(1);
    expect(sink.got[0]!.body).toEqual(big);
  });

  test("parked consumer is reported once; waiting producer is reported once", () => {
    const { writer, reader } = makeRing();
    reader.park();
    expect(reader.hasData()).toBe(false);
    writer.writeFrame(FrameKind.PING, 0, 0, 0, new Uint8Array(0));
    expect(writer.takeParkedConsumer()).toBe(true);
    expect(writer.takeParkedConsumer()).toBe(false);
    while (writer.writeFrame(FrameKind.MESSAGE, 0, 1, 0, new Uint8Array(500)));
    expect(writer.announceWaiting(600)).toBe(true);
    reader.poll(collector(), 1 << 30);
    expect(reader.takeWaitingProducer()).toBe(true);
    expect(reader.takeWaitingProducer()).toBe(false);
  });

  describe("corrupt shared memory is detected, never read out of bounds", () => {
    function corrupt(mutate: (r: ReturnType<typeof makeRing>) => void): Error {
      const r = makeRing();
      r.writer.writeFrame(FrameKind.MESSAGE, 0, 1, 0, pattern(40, 1));
      r.writer.writeFrame(FrameKind.MESSAGE, 0, 2, 0, pattern(40, 2));
      mutate(r);
      try {
        for (let i = 0; i < 10; i++) r.reader.poll(collector(), 1 << 30);
      } catch (e) {
        return e as Error;
      }
      throw new Error("no error raised");
    }
    const cases: Record<string, (r: ReturnType<typeof makeRing>) => void> = {
      "producer position beyond capacity": (r) => (r.ctrl[0] = CAP * 3),
      "producer position not 8-aligned": (r) => (r.ctrl[0] = 13),
      "producer position behind the consumer": (r) => (r.ctrl[0] = -8),
      "record length past the published position": (r) => r.data.setUint32(0, 200, true),
      "record length past the ring's end": (r) => r.data.setUint32(0, 0x7ffffff0, true),
      "unknown record type": (r) => r.data.setUint32(4, 77, true),
      "frame body length disagrees with its record": (r) => r.data.setUint32(8, 39, true),
      "unknown frame kind": (r) => r.data.setUint8(12, 200),
      "continuation without a first chunk": (r) => r.data.setUint32(4, 3, true),
      "wrap marker with too little published": (r) => r.data.setUint32(0, 0xffffffff, true),
      "record too short for a frame header": (r) => r.data.setUint32(0, 4, true),
    };
    for (const [name, mutate] of Object.entries(cases)) {
      test(name, () => {
        const e = corrupt(mutate);
        expect(e).toBeInstanceOf(CorruptSegmentError);
        expect(e.message).toStartWith("shm segment corrupt: ");
      });
    }

    test("consumer position out of range is detected by the producer", () => {
      const r = makeRing();
      while (r.writer.writeFrame(FrameKind.MESSAGE, 0, 1, 0, new Uint8Array(500)));
      r.ctrl[16] = 0x12345678;
      expect(() => r.writer.writeFrame(FrameKind.MESSAGE, 0, 1, 0, new Uint8Array(500))).toThrow(CorruptSegmentError);
    });

    test("random bytes over the whole ring never escape as anything but CorruptSegmentError", () => {
      for (let seed = 1; seed <= 300; seed++) {
        const r = makeRing();
        r.writer.writeFrame(FrameKind.MESSAGE, 0, 1, 0, pattern(40, 1));
        const all = new Uint8Array(r.buffer);
        let x = seed;
        for (let i = 0; i < all.length; i++) {
          x = (x * 1103515245 + 12345) >>> 0;
          if ((x & 0xf) === 0 || i < 64) all[i] = x >>> 24;
        }
        try {
          for (let i = 0; i < 20; i++) r.reader.poll(collector(), 64);
        } catch (e) {
          expect(e).toBeInstanceOf(CorruptSegmentError);
        }
      }
    });
  });
});
