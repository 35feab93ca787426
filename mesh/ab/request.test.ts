import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import protobuf from "protobufjs";
import { encodePayloadRequest, findUnaryMethod } from "./request.ts";

const HELLO = join(import.meta.dir, "../../examples/hello/hello.proto");

describe("request", () => {
  test("picks hello.Greeter/SayHello (the first unary method) and fills name with the payload", () => {
    const m = findUnaryMethod([HELLO]);
    expect(m.path).toBe("/hello.Greeter/SayHello");
    for (const n of [0, 32, 1024]) {
      const bytes = encodePayloadRequest(m, n);
      const decoded = m.requestType.toObject(m.requestType.decode(bytes)) as { name?: string };
      expect(decoded.name ?? "").toBe("x".repeat(n));
    }
  });

  test("a streaming method is refused, naming the unary ones", () => {
    expect(() => findUnaryMethod([HELLO], "/hello.Greeter/SayHelloStream")).toThrow(/not a unary method.*\/hello\.Greeter\/SayHello/);
  });

  test("a request type without a string/bytes field is refused with the way out", () => {
    const root = protobuf.parse('syntax="proto3"; package p; message N { int32 a = 1; } service S { rpc M(N) returns (N); }').root;
    const type = root.lookupType("p.N");
    expect(() => encodePayloadRequest({ path: "/p.S/M", requestType: type }, 8)).toThrow(/no string or bytes field.*--method/);
  });

  test("no protos, or an unreadable one, is a clear error", () => {
    expect(() => findUnaryMethod([])).toThrow(/lists no protos/);
    expect(() => findUnaryMethod(["/nonexistent/x.proto"])).toThrow(/cannot load \/nonexistent\/x\.proto/);
  });
});
