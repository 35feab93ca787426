// grpc-message percent-encoding, grpc-status parsing, and the status a client reports when none came.
import { describe, expect, test } from "bun:test";
import http2 from "node:http2";
import { Status } from "../../../runtime/rpc/status.ts";
import { decodeGrpcMessage, encodeGrpcMessage, parseGrpcStatus, statusFromHttp, statusFromRst } from "./status.ts";

describe("grpc-message", () => {
  test("printable ASCII passes as is; %, controls and non-ASCII are %XX of their UTF-8 bytes", () => {
    expect(encodeGrpcMessage("plain text: ok (1/2)")).toBe("plain text: ok (1/2)");
    expect(encodeGrpcMessage("100%")).toBe("100%25");
    expect(encodeGrpcMessage("a\nb\tc")).toBe("a%0Ab%09c");
    expect(encodeGrpcMessage("héllo ☃")).toBe("h%C3%A9llo %E2%98%83");
  });

  test("decoding undoes encoding, for anything", () => {
    for (const s of ["", "x", "100% sure", "line\r\nbreak", "ünïcödé ☃ 🚀", "%%%", "%zz"]) expect(decodeGrpcMessage(encodeGrpcMessage(s))).toBe(s);
  });

  test("what grpc-js sends (encodeURI) decodes; a stray % is kept", () => {
    expect(decodeGrpcMessage(encodeURI("failed on purpose: é"))).toBe("failed on purpose: é");
    expect(decodeGrpcMessage("50% off")).toBe("50% off");
    expect(decodeGrpcMessage("end%")).toBe("end%");
    expect(decodeGrpcMessage("%4")).toBe("%4");
  });
});

describe("grpc-status", () => {
  test("decimal codes only", () => {
    expect(parseGrpcStatus("0")).toBe(0);
    expect(parseGrpcStatus("14")).toBe(14);
    for (const bad of [undefined, "", "x", "-1", "1.5", "1000", ["1"] as unknown as string]) expect(parseGrpcStatus(bad)).toBeUndefined();
  });
});

describe("no grpc-status", () => {
  test("HTTP status mapping (http-grpc-status-mapping.md)", () => {
    expect(statusFromHttp(400).code).toBe(Status.INTERNAL);
    expect(statusFromHttp(401).code).toBe(Status.UNAUTHENTICATED);
    expect(statusFromHttp(403).code).toBe(Status.PERMISSION_DENIED);
    expect(statusFromHttp(404).code).toBe(Status.UNIMPLEMENTED);
    for (const s of [429, 502, 503, 504]) expect(statusFromHttp(s).code).toBe(Status.UNAVAILABLE);
    expect(statusFromHttp(500).code).toBe(Status.UNKNOWN);
  });

  test("RST_STREAM codes", () => {
    const c = http2.constants;
    expect(statusFromRst(c.NGHTTP2_REFUSED_STREAM).code).toBe(Status.UNAVAILABLE);
    expect(statusFromRst(c.NGHTTP2_CANCEL).code).toBe(Status.CANCELLED);
    expect(statusFromRst(c.NGHTTP2_ENHANCE_YOUR_CALM).code).toBe(Status.RESOURCE_EXHAUSTED);
    expect(statusFromRst(c.NGHTTP2_INADEQUATE_SECURITY).code).toBe(Status.PERMISSION_DENIED);
    expect(statusFromRst(c.NGHTTP2_PROTOCOL_ERROR).code).toBe(Status.INTERNAL);
  });
});
