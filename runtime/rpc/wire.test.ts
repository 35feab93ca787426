import { describe, expect, test } from "bun:test";
import { join } from "node:path";
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

  test("HELLO round-trips every field, and each way it can be wrong is a WireError naming HELLO", () => {
    const hello = {
      version: 2, role: "sidecar" as const, transports: ["shm"], maxMessageBytes: 4 << 20, initialWindowBytes: 1 << 20, maxConcurrentCalls: 100,
      shmOffer: { ringBytes: 1 << 16 }, shmSetup: { segmentPath: "/proc/1/fd/9", ringBytes: 1 << 16, segmentBytes: 2 ** 41 + 1, spinUs: 0xffffffff, nonce: new Uint8Array([0, 255, 7]) },
      rpal: { serviceKey: 2n ** 64n - 1n, serviceId: -3 }, error: "refused", appName: "frontend-ü", forced: true,
    };
    expect(decodeHello(encodeHello(hello))).toEqual(hello);
    const bad: [Uint8Array, RegExp][] = [
      [new Uint8Array([0x12, 0x05, 0x61]), /^malformed HELLO \(3 bytes\): role claims 5 bytes, 1 remain$/],
      [new Uint8Array([0x12, 0x02, 0xc3, 0x28]), /^malformed HELLO \(4 bytes\): role is not valid UTF-8$/],
      [new Uint8Array([0x12, 0x03, 0x61, 0x70, 0x70, 0x4a, 0x03, 0x0a, 0x01, 0x78]), /^HELLO carries a malformed RPAL service key "x"$/],
      [new Uint8Array([]), /^HELLO with unknown role ""$/],
    ];
    for (const [b, re] of bad) {
      let err: unknown;
      try {
        decodeHello(b);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(WireError);
      expect((err as Error).message).toMatch(re);
    }
  });

  test("the runtime's session code loads no protobufjs (it costs a sidecar ~6 MB RSS)", () => {
    const script = `await import(${JSON.stringify(join(import.meta.dir, "../transport/negotiate.ts"))});
      console.log(JSON.stringify(Object.keys(require.cache).filter((k) => k.includes("protobufjs"))));`;
    const r = Bun.spawnSync([process.execPath, "-e", script], { stderr: "pipe" });
    expect(r.stderr.toString()).toBe("");
    expect(JSON.parse(r.stdout.toString())).toEqual([]);
    // the check itself sees protobufjs when it is loaded
    const control = Bun.spawnSync([process.execPath, "-e", 'await import("protobufjs"); console.log(Object.keys(require.cache).filter((k) => k.includes("protobufjs")).length)'], { cwd: import.meta.dir });
    expect(Number(control.stdout.toString())).toBeGreaterThan(0);
  });
});
