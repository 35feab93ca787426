import { describe, expect, test } from "bun:test";
import { decodeCallHead, decodeEndStatus, decodeHello, encodeCallHead, encodeEndStatus, encodeHello, WireError } from "./wire.ts";

describe("control messages", () => {
  test("call head round-trips method, text and binary metadata, timeout and shape", () => {
    const bytes = encodeCallHead({
      method: "/hello.Greeter/SayHello",
      metadata: { "x-a": "1", "x-b-bin": new Uint8Array([9, 8]) },
      timeoutUs: 1_500_000,
      serverStreaming: true,
      clientStreaming: false,
    });
    const h = decodeCallHead(bytes);
    expect(h.method).toBe("/hello.Greeter/SayHello");
    expect(h.metadata["x-a"]).toBe("1");
    expect(Array.from(h.metadata["x-b-bin"] as Uint8Array)).toEqual([9, 8]);
    expect(h.timeoutUs).toBe(1_500_000);
    expect(h.serverStreaming).toBe(true);
  });

  test("an OK status without details encodes to zero bytes (the common case costs nothing)", () => {
    expect(encodeEndStatus(0, "").byteLength).toBe(0);
    expect(decodeEndStatus(encodeEndStatus(13, "boom")).message).toBe("boom");
  });

  test("hostile bytes give a WireError naming the message, not a crash", () => {
    const junk = new Uint8Array([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 1, 2]);
    expect(() => decodeCallHead(junk)).toThrow(WireError);
    expect(() => decodeCallHead(junk)).toThrow(/malformed call head/);
    expect(() => decodeHello(junk)).toThrow(/HELLO/);
  });

  test("HELLO keeps a 64-bit RPAL service key exact and rejects a malformed one", () => {
    const key = 0xfedcba9876543210n;
    const hello = decodeHello(
      encodeHello({ version: 1, role: "app", transports: ["rpal", "uds"], maxMessageBytes: 1, initialWindowBytes: 2, maxConcurrentCalls: 3, rpal: { serviceKey: key, serviceId: 7 } }),
    );
    expect(hello.rpal?.serviceKey).toBe(key);
    expect(hello.transports).toEqual(["rpal", "uds"]);
    expect(() => decodeHello(encodeHello({ version: 1, role: "nobody" as "app", transports: [], maxMessageBytes: 0, initialWindowBytes: 0, maxConcurrentCalls: 0 }))).toThrow(/unknown role/);
  });
});
