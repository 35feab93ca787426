// Metadata ↔ HTTP/2 headers: hop headers dropped both ways, -bin values as base64 (strictly checked on
// the way in), invalid keys and values dropped on the way out instead of failing the call.
import { describe, expect, test } from "bun:test";
import { Status } from "../../../runtime/rpc/status.ts";
import { GrpcError } from "./errors.ts";
import { decodeBase64Strict, fromHeaders, toHeaders } from "./metadata.ts";

describe("fromHeaders", () => {
  test("pseudo-headers and per-hop headers dropped; repeated text values joined; -bin decoded", () => {
    const md = fromHeaders({
      ":path": "/a/b",
      ":authority": "x",
      "content-type": "application/grpc",
      te: "trailers",
      "grpc-timeout": "1S",
      "grpc-encoding": "gzip",
      "user-agent": "grpc-node-js/1.14",
      "x-user": "ada",
      "x-tag": ["a", "b"],
      "x-blob-bin": Buffer.from([1, 2, 3]).toString("base64"),
      "x-raw-bin": "AQID", // unpadded is fine
    });
    expect(md["x-user"]).toBe("ada");
    expect(md["x-tag"]).toBe("a, b");
    expect([...(md["x-blob-bin"] as Uint8Array)]).toEqual([1, 2, 3]);
    expect([...(md["x-raw-bin"] as Uint8Array)]).toEqual([1, 2, 3]);
    expect(Object.keys(md).sort()).toEqual(["x-blob-bin", "x-raw-bin", "x-tag", "x-user"]);
  });

  test("grpc-status-details-bin is metadata (rich error details pass through), grpc-status/grpc-message are not", () => {
    const details = Buffer.from([8, 9, 0, 255]);
    const md = fromHeaders({ "grpc-status": "9", "grpc-message": "x", "grpc-status-details-bin": details.toString("base64") });
    expect(Object.keys(md)).toEqual(["grpc-status-details-bin"]);
    expect(Buffer.from(md["grpc-status-details-bin"] as Uint8Array)).toEqual(details);
    expect(toHeaders(md, {})).toEqual({ "grpc-status-details-bin": details.toString("base64") });
  });

  test("a repeated -bin key keeps its first value (both must be base64)", () => {
    const md = fromHeaders({ "x-b-bin": "AQ==, Ag==" });
    expect([...(md["x-b-bin"] as Uint8Array)]).toEqual([1]);
  });

  test("a -bin value that is not base64 is INTERNAL", () => {
    for (const bad of ["not base64!", "A", "AQIDB", "AQ=a", "AQ===", "@@@@", "AQ==, %%"]) {
      let code: number | undefined;
      try {
        fromHeaders({ "x-bad-bin": bad });
      } catch (e) {
        code = (e as GrpcError).code;
      }
      expect(code).toBe(Status.INTERNAL);
    }
  });
});

describe("decodeBase64Strict", () => {
  test("padded, unpadded, empty; refuses the rest", () => {
    expect([...decodeBase64Strict("AQID")!]).toEqual([1, 2, 3]);
    expect([...decodeBase64Strict("AQ==")!]).toEqual([1]);
    expect([...decodeBase64Strict("AQ")!]).toEqual([1]);
    expect([...decodeBase64Strict("")!]).toEqual([]);
    expect(decodeBase64Strict("AQ=")).toBeUndefined();
    expect(decodeBase64Strict("A")).toBeUndefined();
    expect(decodeBase64Strict("AQ-_")).toBeUndefined(); // base64url is not gRPC's alphabet
  });
});

describe("toHeaders", () => {
  test("keys kept, -bin as base64, reserved and invalid dropped without throwing", () => {
    const out = toHeaders(
      {
        "x-user": "ada",
        "x-blob-bin": new Uint8Array([9, 8]),
        "x-text-bin": "hi",
        "Bad Key": "v",
        "UPPER": "v",
        "x-newline": "a\nb",
        "x-del": "a\x7fb",
        "x-empty": "",
        "x-utf8": "héllo",
        "x-bytes": new Uint8Array([1]),
        te: "trailers",
        "grpc-status": "0",
        ":path": "/x",
      },
      { ":status": 200 },
    );
    expect(out).toEqual({ ":status": 200, "x-user": "ada", "x-empty": "", "x-blob-bin": Buffer.from([9, 8]).toString("base64"), "x-text-bin": Buffer.from("hi").toString("base64") });
  });

  test("round trip through headers", () => {
    const md = { "x-a": "1", "x-b-bin": new Uint8Array([0, 255, 7]) };
    const back = fromHeaders(toHeaders(md, {}) as Record<string, string>);
    expect(back["x-a"]).toBe("1");
    expect([...(back["x-b-bin"] as Uint8Array)]).toEqual([0, 255, 7]);
  });
});
