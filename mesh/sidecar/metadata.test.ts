// Metadata between grpc-js and the runtime: per-hop headers dropped, binary values kept as bytes,
// values grpc-js would refuse dropped instead of failing the call.
import { describe, expect, test } from "bun:test";
import * as grpc from "@grpc/grpc-js";
import { fromGrpcMetadata, toGrpcMetadata } from "./metadata.ts";

describe("metadata mapping", () => {
  test("from grpc-js: hop headers dropped, repeated values joined, -bin kept as bytes", () => {
    const md = new grpc.Metadata();
    md.set("x-user", "ada");
    md.add("x-tag", "a");
    md.add("x-tag", "b");
    md.set("x-blob-bin", Buffer.from([1, 2, 3]));
    md.set("grpc-timeout", "1S");
    md.set("user-agent", "grpc-node-js/1.14");
    md.set("content-type", "application/grpc");
    const out = fromGrpcMetadata(md);
    expect(out["x-user"]).toBe("ada");
    expect(out["x-tag"]).toBe("a, b");
    expect([...(out["x-blob-bin"] as Uint8Array)]).toEqual([1, 2, 3]);
    expect(Object.keys(out).sort()).toEqual(["x-blob-bin", "x-tag", "x-user"]);
  });

  test("to grpc-js: extra keys set, invalid keys and values dropped without throwing", () => {
    const md = toGrpcMetadata(
      { "x-user": "ada", "x-blob-bin": new Uint8Array([9]), "Bad Key": "v", "x-newline": "a\nb", te: "trailers", ":path": "/x" },
      { traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01" },
    );
    expect(md.get("x-user")).toEqual(["ada"]);
    expect([...(md.get("x-blob-bin")[0] as Buffer)]).toEqual([9]);
    expect(md.get("traceparent")).toEqual(["00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"]);
    expect(Object.keys(md.getMap()).sort()).toEqual(["traceparent", "x-blob-bin", "x-user"]);
  });
});
