import { describe, expect, test } from "bun:test";
import { encodeHeaders, field, type HeaderList, headerBlockScratch, HpackDecoder, HpackEncoder, HpackError, huffmanDecode, huffmanEncode } from "./hpack.ts";

const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ""), "hex");

describe("HPACK", () => {
  test("RFC 7541 C.4: requests with Huffman and the dynamic table", () => {
    const d = new HpackDecoder(4096, 65536);
    expect(d.decode(hex("828684418cf1e3c2e5f23a6ba0ab90f4ff")).headers).toEqual({
      ":method": "GET",
      ":scheme": "http",
      ":path": "/",
      ":authority": "www.example.com",
    } as never);
    expect(d.decode(hex("828684be5886a8eb10649cbf")).headers).toEqual({
      ":method": "GET",
      ":scheme": "http",
      ":path": "/",
      ":authority": "www.example.com",
      "cache-control": "no-cache",
    } as never);
    expect(d.decode(hex("828785bf408825a849e95ba97d7f8925a849e95bb8e8b4bf")).headers).toEqual({
      ":method": "GET",
      ":scheme": "https",
      ":path": "/index.html",
      ":authority": "www.example.com",
      "custom-key": "custom-value",
    } as never);
  });

  test("RFC 7541 C.6: responses with eviction (table size 256)", () => {
    const d = new HpackDecoder(256, 65536);
    const r1 = d.decode(
      hex("488264025885aec3771a4b6196d07abe941054d444a8200595040b8166e082a62d1bff6e919d29ad171863c78f0b97c8e9ae82ae43d3"),
    ).headers;
    expect(r1).toEqual({
      ":status": "302",
      "cache-control": "private",
      date: "Mon, 21 Oct 2013 20:13:21 GMT",
      location: "https://www.example.com",
    } as never);
    const r2 = d.decode(hex("4883640effc1c0bf")).headers;
    expect(r2[":status"]).toBe("307");
    expect(r2.location).toBe("https://www.example.com");
  });

  test("Huffman round trip over every byte value", () => {
    const s = Array.from({ length: 256 }, (_, i) => String.fromCharCode(i)).join("");
    const enc = huffmanEncode(s);
    expect(huffmanDecode(enc, 0, enc.length)).toBe(s);
  });

  test("encoder output decodes to the same list", () => {
    const d = new HpackDecoder(4096, 65536);
    const list: [string, string][] = [
      [":status", "200"],
      ["content-type", "application/grpc"],
      ["grpc-status", "0"],
      ["x-long", "v".repeat(300)],
    ];
    expect(d.decode(encodeHeaders(list)).headers).toEqual(Object.fromEntries(list) as never);
  });

  test("hostile blocks throw HpackError, never anything else", () => {
    const bad = [
      "80", // index 0
      "ff", // truncated integer
      "fe", // index beyond the tables
      "ffffffffffff0f", // integer overflow
      "4085", // truncated string
      "0085ffffffffff00", // Huffman with EOS
      "0081fe0000", // Huffman bad padding (0xfe is not all 1s?) or truncated
      "3fe1ff03", // table size update over the 4096 announced
      "823f00", // table size update after a field
    ];
    for (const b of bad) {
      const d = new HpackDecoder(4096, 65536);
      expect(() => d.decode(hex(b))).toThrow(HpackError);
    }
  });

  test("header list over the limit is flagged, not stored", () => {
    const d = new HpackDecoder(4096, 100);
    const r = d.decode(encodeHeaders([["a", "x".repeat(200)]]));
    expect(r.tooLarge).toBe(true);
    expect(r.headers.a).toBeUndefined();
  });

  test("upper-case names and late pseudo-headers are malformed", () => {
    const d = new HpackDecoder(4096, 65536);
    expect(d.decode(encodeHeaders([["X-Up", "1"]])).malformed).toContain("upper-case");
    expect(d.decode(encodeHeaders([["a", "1"], [":path", "/"]])).malformed).toContain("pseudo-header");
  });

  test("plain literals decode byte for byte as latin1, from a view into a larger buffer, any length", () => {
    const every = String.fromCharCode(...Array.from({ length: 256 }, (_, i) => i));
    const list: [string, string][] = [
      ["x-short", "abc"],
      ["x-every-byte", every],
      ["x-empty", ""],
      ["x-long", "v".repeat(5000)],
    ];
    const block = encodeHeaders(list);
    // The block as the session hands it: a subarray at an offset of the socket's chunk.
    const chunk = Buffer.alloc(block.length + 20, 0xee);
    block.copy(chunk, 11);
    for (const b of [chunk.subarray(11, 11 + block.length), new Uint8Array(chunk.buffer, chunk.byteOffset + 11, block.length)]) {
      expect(new HpackDecoder(4096, 65536).decode(b).headers).toEqual(Object.fromEntries(list) as never);
    }
    // By offsets into the chunk, as the session decodes a HEADERS frame's block.
    expect(new HpackDecoder(4096, 65536).decode(chunk, 11, 11 + block.length).headers).toEqual(Object.fromEntries(list) as never);
  });

  test("a decoder's reused literal strings never stand in for other bytes (same length, same slot, changed in place)", () => {
    const d = new HpackDecoder(4096, 65536);
    // Thousands of distinct values of one length through 128 slots: every slot sees collisions, and
    // each value comes back twice (a hit must be the very bytes, a miss must replace the slot).
    for (let round = 0; round < 2; round++) {
      for (let i = 0; i < 3000; i++) {
        const v = `v-${String(i).padStart(6, "0")}`;
        const list: [string, string][] = [["x-key", v], ["x-same", "constant"], ["x-other", v.split("").reverse().join("")]];
        expect(d.decode(encodeHeaders(list)).headers).toEqual(Object.fromEntries(list) as never);
      }
    }
    // The same block buffer rewritten between decodes (as a socket chunk buffer may be).
    const block = Buffer.from(encodeHeaders([["x-key", "aaaa"]]));
    expect(d.decode(block).headers["x-key"]).toBe("aaaa");
    block.fill(0x62, block.length - 4);
    expect(d.decode(block).headers["x-key"]).toBe("bbbb");
  });

  test("field() shares a pair only while a name keeps its value", () => {
    const a = field("x-field-test", "one");
    expect(field("x-field-test", "one")).toBe(a);
    const b = field("x-field-test", "two");
    expect(b).toEqual(["x-field-test", "two"]);
    expect(a).toEqual(["x-field-test", "one"]);
    // Per-call values are never kept.
    expect(field("grpc-timeout", "5m")).not.toBe(field("grpc-timeout", "5m"));
    const d = new HpackDecoder(4096, 65536);
    for (const v of ["one", "two", "one", "three"]) {
      expect(d.decode(encodeHeaders([field(":status", "200"), field("x-field-test", v)])).headers).toEqual({ ":status": "200", "x-field-test": v } as never);
    }
  });

  describe("per-connection encoder with the dynamic table", () => {
    const block = (e: HpackEncoder, list: HeaderList) => Buffer.from(headerBlockScratch().subarray(0, e.encode(list)));
    const request = (traceparent: string): HeaderList => [
      [":method", "POST"],
      [":scheme", "http"],
      [":path", "/pkg.Svc/Method"],
      [":authority", "10.0.0.1:5000"],
      ["content-type", "application/grpc"],
      ["te", "trailers"],
      ["user-agent", "rpal-mesh-sidecar"],
      ["traceparent", traceparent],
    ];

    test("a repeating field is added on its second use on the connection, then sent as one index byte", () => {
      const e = new HpackEncoder();
      const d = new HpackDecoder(4096, 65536);
      const first = block(e, request("00-b"));
      expect(d.decode(first).headers).toEqual(Object.fromEntries(request("00-b")) as never);
      expect(d.decode(block(e, request("00-x"))).headers).toEqual(Object.fromEntries(request("00-x")) as never);
      const third = block(e, request("00-c"));
      expect(d.decode(third).headers).toEqual(Object.fromEntries(request("00-c")) as never);
      // :method and :scheme are static entries (1 byte each), the five repeating fields one dynamic
      // index each; the traceparent (never cached) stays a literal: name index 0 + string.
      const traceLiteral = 1 + 1 + "traceparent".length + 1 + "00-c".length;
      expect(third.length).toBe(2 + 5 + traceLiteral);
      // The first block was all literals: the same bytes as the table-less encoder writes.
      expect(first.equals(Buffer.from(encodeHeaders(request("00-b"))))).toBe(true);
      // A second connection starts from an empty table: its peer knows none of the first's entries.
      const other = new HpackEncoder();
      expect(new HpackDecoder(4096, 65536).decode(block(other, request("00-d"))).headers).toEqual(Object.fromEntries(request("00-d")) as never);
    });

    test("only adds while the table has room: never evicts on its own", () => {
      const e = new HpackEncoder();
      const d = new HpackDecoder(4096, 65536);
      // 100 distinct repeating fields of 32 + 9 + 40 = 81 bytes: ~50 fit in 4096.
      const list: HeaderList = Array.from({ length: 100 }, (_, i) => [`x-f${String(i).padStart(3, "0")}-ab`, "v".repeat(40)] as const);
      for (let round = 0; round < 4; round++) expect(d.decode(block(e, list)).headers).toEqual(Object.fromEntries(list) as never);
      const b = block(e, list);
      expect(d.decode(b).headers).toEqual(Object.fromEntries(list) as never);
      const fit = Math.floor(4096 / 81);
      expect(b.length).toBe(fit + (100 - fit) * (1 + 1 + 9 + 1 + 40)); // indexes 62..111: one byte each
    });

    test("the peer lowering SETTINGS_HEADER_TABLE_SIZE: size updates lead the next block, oldest entries go first", () => {
      const e = new HpackEncoder();
      const d = new HpackDecoder(4096, 65536);
      const list: HeaderList = [
        ["content-type", "application/grpc"], // 60 bytes in the table
        ["x-a", "1"], // 36
        ["x-b", "2"], // 36
      ];
      d.decode(block(e, list));
      d.decode(block(e, list)); // the second use adds all three
      e.setPeerTableSize(100);
      const b = block(e, list);
      expect([...b.subarray(0, 2)]).toEqual([0x3f, 100 - 31]); // one update: 100
      expect(d.decode(b).headers).toEqual(Object.fromEntries(list) as never);
      // content-type was evicted (oldest) and no longer fits beside x-a and x-b (72 of 100 bytes), which
      // stay indexes: it goes as a literal with the static name (index 31: two bytes).
      expect(b.length).toBe(2 + 2 + 1 + "application/grpc".length + 1 + 1);
      // Several changes between two blocks: the lowest first, then the current (RFC 7541 4.2).
      e.setPeerTableSize(0);
      e.setPeerTableSize(65536); // more than the encoder uses: it goes back to 4096
      const c = block(e, list);
      expect([...c.subarray(0, 4)]).toEqual([0x20, 0x3f, 0xe1, 0x1f]);
      expect(d.decode(c).headers).toEqual(Object.fromEntries(list) as never);
      // The same limit again is no change: nothing to signal.
      e.setPeerTableSize(4096);
      expect(block(e, list)[0]! & 0xe0).not.toBe(0x20);
    });

    test("values that differ per call stay out of the table and leave room for the fields that repeat", () => {
      const e = new HpackEncoder();
      const d = new HpackDecoder(4096, 65536);
      const list = (i: number): HeaderList => [
        [":path", "/pkg.Svc/Method"],
        ["x-request-id", `req-${String(i).padStart(30, "0")}`], // 32 + 12 + 34 = 78 bytes: 52 would fill the table
      ];
      for (let i = 0; i < 2000; i++) expect(d.decode(block(e, list(i))).headers).toEqual(Object.fromEntries(list(i)) as never);
      // Well past 52 calls, and past the 512 remembered sightings: a field first sent now still gets indexed.
      const late: HeaderList = [["x-tenant", "blue"]];
      d.decode(block(e, late));
      d.decode(block(e, late));
      const b = block(e, late);
      expect(b.length).toBe(1);
      expect(d.decode(b).headers).toEqual({ "x-tenant": "blue" } as never);
      expect(block(e, list(1))[0]).toBeGreaterThanOrEqual(0x80 + 62); // :path: one dynamic index byte
    });

    test("credentials are never indexed, by the table or the shared field cache", () => {
      const e = new HpackEncoder();
      const d = new HpackDecoder(4096, 65536);
      const list: HeaderList = [
        ["authorization", "Bearer abc"],
        ["cookie", "s=1"],
        ["x-custom-secret-not-listed", "y"],
      ];
      let b = Buffer.alloc(0);
      for (let i = 0; i < 3; i++) {
        b = block(e, list);
        expect(d.decode(b).headers).toEqual(Object.fromEntries(list) as never);
      }
      // authorization (static name 23) and cookie (32): "never indexed" with the static name, every time.
      expect([b[0], b[1]]).toEqual([0x1f, 23 - 15]);
      expect(b.includes(Buffer.from("Bearer abc"))).toBe(true);
      const cookieAt = 2 + 1 + "Bearer abc".length;
      expect([b[cookieAt], b[cookieAt + 1]]).toEqual([0x1f, 32 - 15]);
      // the unlisted one is indexed by the third block: one byte at the end
      expect(b[b.length - 1]).toBe(0x80 + 62);
      // the table-less encoder writes credentials never-indexed too
      const plain = Buffer.from(encodeHeaders([["authorization", "Bearer abc"]]));
      expect(plain[0]).toBe(0x1f);
      expect(new HpackDecoder(4096, 65536).decode(plain).headers).toEqual({ authorization: "Bearer abc" } as never);
    });

    test("random lists and table sizes decode in step with a strict decoder", () => {
      let x = 7;
      const rnd = (n: number) => (x = (x * 1103515245 + 12345) % 2147483648) % n;
      const pool: [string, string][] = [
        [":method", "POST"],
        [":path", "/a.S/One"],
        [":path", "/a.S/Two"],
        ["content-type", "application/grpc"],
        ["grpc-status", "0"],
        ["grpc-status", "14"],
        ["x-tenant", "blue"],
        ["x-tenant", "green"],
        ["x-long-name-of-some-metadata-key", "v".repeat(60)],
        ["traceparent", "00-t"],
        ["grpc-timeout", "5m"],
      ];
      const sizes = [0, 40, 100, 200, 300, 4096, 65536];
      for (let conn = 0; conn < 20; conn++) {
        const e = new HpackEncoder();
        const d = new HpackDecoder(4096, 65536);
        for (let i = 0; i < 200; i++) {
          if (rnd(10) === 0) {
            const size = sizes[rnd(sizes.length)]!;
            e.setPeerTableSize(size);
          }
          const list: HeaderList = [];
          const names = new Set<string>();
          for (let k = rnd(6); k >= 0; k--) {
            const f = pool[rnd(pool.length)]!;
            if (names.has(f[0])) continue;
            names.add(f[0]);
            list.push(f);
          }
          list.sort((a, b) => Number(b[0].startsWith(":")) - Number(a[0].startsWith(":")));
          expect(d.decode(block(e, list)).headers).toEqual(Object.fromEntries(list) as never);
        }
      }
    });
  });
});
