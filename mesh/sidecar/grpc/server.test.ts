// The gRPC server layer on its own, in process: real grpc-js clients for the well-behaved calls, raw
// node:http2 requests for the hostile ones. Every hostile request gets its status on its own stream and
// the same connection goes on serving.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import * as grpc from "@grpc/grpc-js";
import http2 from "node:http2";
import { Status } from "../../../runtime/rpc/status.ts";
import type { CallShape } from "../../../runtime/rpc/types.ts";
import { waitFor } from "../../../test/helpers.ts";
import { GrpcServer, type GrpcServerCall } from "./server.ts";

const SHAPES: Record<string, CallShape> = {
  "/t.S/Unary": { clientStreaming: false, serverStreaming: false },
  "/t.S/Hang": { clientStreaming: false, serverStreaming: false },
  "/t.S/Big": { clientStreaming: false, serverStreaming: false },
  "/t.S/Stream": { clientStreaming: false, serverStreaming: true },
  "/t.S/Bidi": { clientStreaming: true, serverStreaming: true },
};

const seen: GrpcServerCall[] = [];
const cancelled: string[] = [];
const hanging: GrpcServerCall[] = [];
const MAX = 64 * 1024;

function handle(call: GrpcServerCall): void {
  seen.push(call);
  call.onCancel = (reason) => cancelled.push(`${call.path}: ${reason}`);
  switch (call.path) {
    case "/t.S/Unary": {
      const text = call.request!.toString();
      if (text.startsWith("fail:")) return call.end(Status.FAILED_PRECONDITION, `failed: ${text.slice(5)} — ünïcode 100%`, { "x-why": "because" });
      call.sendHeaders({ "x-h": "1", "x-h-bin": new Uint8Array([1, 2]) });
      call.write(Buffer.from(`echo:${text}`));
      return call.end(Status.OK, "", { "x-t": "2" });
    }
    case "/t.S/Hang":
      hanging.push(call);
      return;
    case "/t.S/Big":
      // A response over the size limit, sent with the status (unary) or written on its own.
      if (call.request!.toString() === "write") return void call.write(Buffer.alloc(MAX + 1));
      return call.end(Status.OK, "", undefined, Buffer.alloc(MAX + 1));
    case "/t.S/Stream":
      for (let i = 0; i < 3; i++) call.write(Buffer.from(`${call.request!.toString()}#${i}`));
      return call.end(Status.OK, "");
    case "/t.S/Bidi":
      void (async () => {
        for await (const m of call.messages()) call.write(Buffer.from(`bidi:${m.toString()}`));
        call.end(Status.OK, "");
      })().catch(() => {});
  }
}

const server = new GrpcServer({ maxMessageBytes: MAX, maxConcurrentStreams: 7, lookup: (p) => SHAPES[p], onCall: handle });
let address = "";
let client: grpc.Client;
const id = (b: Buffer) => b;

beforeAll(async () => {
  address = `127.0.0.1:${await server.listen("127.0.0.1", 0)}`;
  client = new grpc.Client(address, grpc.credentials.createInsecure());
});

afterAll(() => {
  client?.close();
  server.forceStop();
});

interface Outcome {
  err: grpc.ServiceError | null;
  value: Buffer | undefined;
  headers?: grpc.Metadata;
  status?: grpc.StatusObject;
}

function unary(path: string, body: string, md = new grpc.Metadata(), opts: grpc.CallOptions = {}): Promise<Outcome> {
  return new Promise((resolve) => {
    const out: Outcome = { err: null, value: undefined };
    const call = client.makeUnaryRequest(path, id, id, Buffer.from(body), md, opts, (err, value) => {
      out.err = err;
      out.value = value;
    });
    call.on("metadata", (h) => (out.headers = h));
    call.on("status", (s) => {
      out.status = s;
      resolve(out);
    });
  });
}

/** A raw HTTP/2 request on `session`; resolves with the HTTP status and the gRPC status (headers or trailers). */
function raw(session: http2.ClientHttp2Session, headers: http2.OutgoingHttpHeaders, body?: Buffer, keepOpen = false) {
  return new Promise<{ status: number; code: number; message: string; data: Buffer }>((resolve) => {
    const out = { headers: {} as http2.IncomingHttpHeaders, trailers: {} as http2.IncomingHttpHeaders, data: [] as Buffer[] };
    const req = session.request({ ":method": "POST", ":path": "/t.S/Unary", "content-type": "application/grpc", te: "trailers", ...headers });
    req.on("response", (h) => (out.headers = h));
    req.on("trailers", (t) => (out.trailers = t));
    req.on("data", (d: Buffer) => out.data.push(d));
    req.on("error", () => {});
    req.on("close", () => {
      const t = { ...out.headers, ...out.trailers };
      resolve({ status: Number(out.headers[":status"]), code: Number(t["grpc-status"]), message: decodeURIComponent(String(t["grpc-message"] ?? "")), data: Buffer.concat(out.data) });
    });
    if (keepOpen) {
      if (body) req.write(body);
    } else {
      req.end(body);
    }
  });
}

const msg = (payload: Buffer | number[], flag = 0) => {
  const p = Buffer.from(payload);
  const b = Buffer.alloc(5 + p.length);
  b[0] = flag;
  b.writeUInt32BE(p.length, 1);
  p.copy(b, 5);
  return b;
};

describe("GrpcServer with a grpc-js client", () => {
  test("unary: request bytes, metadata (text and -bin) in; headers, message, trailers out", async () => {
    const md = new grpc.Metadata();
    md.set("x-user", "ada");
    md.set("x-id-bin", Buffer.from([7, 7, 7]));
    const r = await unary("/t.S/Unary", "hello", md);
    expect(r.err).toBeNull();
    expect(r.value!.toString()).toBe("echo:hello");
    expect(r.headers!.get("x-h")).toEqual(["1"]);
    expect([...(r.headers!.get("x-h-bin")[0] as Buffer)]).toEqual([1, 2]);
    expect(r.status!.metadata.get("x-t")).toEqual(["2"]);
    const call = seen[seen.length - 1]!;
    expect(call.metadata["x-user"]).toBe("ada");
    expect([...(call.metadata["x-id-bin"] as Uint8Array)]).toEqual([7, 7, 7]);
    expect(Object.keys(call.metadata).some((k) => k.startsWith(":") || k === "content-type" || k === "te")).toBe(false);
  });

  test("an error status with non-ASCII details and trailers goes out trailers-only and reads back exactly", async () => {
    const r = await unary("/t.S/Unary", "fail:boom");
    expect(r.err?.code).toBe(Status.FAILED_PRECONDITION);
    expect(r.err?.details).toBe("failed: boom — ünïcode 100%");
    expect(r.status!.metadata.get("x-why")).toEqual(["because"]);
  });

  test("the deadline arrives as an absolute time; at the deadline the client resets and the handler is told", async () => {
    const before = Date.now();
    const r = await unary("/t.S/Hang", "x", new grpc.Metadata(), { deadline: Date.now() + 300 });
    expect(r.err?.code).toBe(Status.DEADLINE_EXCEEDED);
    const call = hanging[hanging.length - 1]!;
    expect(call.deadline! - before).toBeGreaterThan(200);
    expect(call.deadline! - before).toBeLessThan(1300);
    await waitFor(() => cancelled.some((c) => c.startsWith("/t.S/Hang")), { what: "the handler to hear of the reset" });
  });

  test("server streaming and bidi", async () => {
    const s = client.makeServerStreamRequest("/t.S/Stream", id, id, Buffer.from("s"));
    const got: string[] = [];
    for await (const m of s as AsyncIterable<Buffer>) got.push(m.toString());
    expect(got).toEqual(["s#0", "s#1", "s#2"]);

    const b = client.makeBidiStreamRequest("/t.S/Bidi", id, id);
    const echoes: string[] = [];
    const done = (async () => {
      for await (const m of b as AsyncIterable<Buffer>) echoes.push(m.toString());
    })();
    for (const t of ["a", "b", "c"]) b.write(Buffer.from(t));
    b.end();
    await done;
    expect(echoes).toEqual(["bidi:a", "bidi:b", "bidi:c"]);
  });

  test("a response over the size limit ends the call RESOURCE_EXHAUSTED instead of going out", async () => {
    for (const how of ["end", "write"]) {
      const r = await unary("/t.S/Big", how);
      expect(r.err?.code).toBe(Status.RESOURCE_EXHAUSTED);
      expect(seen[seen.length - 1]!.endedCode).toBe(Status.RESOURCE_EXHAUSTED);
    }
  });

  test("an unknown method is UNIMPLEMENTED", async () => {
    expect((await unary("/t.S/Nope", "x")).err?.code).toBe(Status.UNIMPLEMENTED);
  });
});

describe("GrpcServer against hostile requests", () => {
  test("each gets its status on its own stream; the same connection keeps serving", async () => {
    const session = http2.connect(`http://${address}`);
    session.on("error", () => {});
    try {
      const settings = await new Promise<http2.Settings>((r) => session.once("remoteSettings", r));
      expect(settings.maxConcurrentStreams).toBe(7);

      expect((await raw(session, { "content-type": "application/json" }, msg([1]))).status).toBe(415);
      expect((await raw(session, { "content-type": "application/grpcx" }, msg([1]))).status).toBe(415);
      expect((await raw(session, { ":method": "PUT" }, msg([1]))).status).toBe(405);
      const cases: [string, http2.OutgoingHttpHeaders, Buffer, number][] = [
        ["absurd length prefix", {}, Buffer.from([0, 0xff, 0xff, 0xff, 0xff, 1, 2]), Status.RESOURCE_EXHAUSTED],
        ["one byte over the limit", {}, Buffer.concat([Buffer.from([0, 0, 1, 0, 1]), Buffer.alloc(100)]), Status.RESOURCE_EXHAUSTED],
        ["truncated message", {}, Buffer.from([0, 0, 0, 0, 50, 1, 2, 3]), Status.INTERNAL],
        ["truncated prefix", {}, Buffer.from([0, 0]), Status.INTERNAL],
        ["bad flag byte", {}, msg([1], 9), Status.INTERNAL],
        ["no message (unary)", {}, Buffer.alloc(0), Status.UNIMPLEMENTED],
        ["two messages (unary)", {}, Buffer.concat([msg([1]), msg([2])]), Status.UNIMPLEMENTED],
        ["compressed without grpc-encoding", {}, msg([1], 1), Status.INTERNAL],
        ["compressed with identity", { "grpc-encoding": "identity" }, msg([1], 1), Status.INTERNAL],
        ["compressed with an unknown encoding", { "grpc-encoding": "lz4" }, msg([1], 1), Status.UNIMPLEMENTED],
        ["gzip that is not gzip", { "grpc-encoding": "gzip" }, msg([1, 2, 3], 1), Status.INTERNAL],
        ["grpc-timeout without unit", { "grpc-timeout": "100" }, msg([1]), Status.INTERNAL],
        ["grpc-timeout of 9 digits", { "grpc-timeout": "123456789m" }, msg([1]), Status.INTERNAL],
        ["grpc-timeout negative", { "grpc-timeout": "-1S" }, msg([1]), Status.INTERNAL],
        ["-bin value not base64", { "x-data-bin": "!!!!" }, msg([1]), Status.INTERNAL],
        ["unknown method", { ":path": "/t.S/Missing" }, msg([1]), Status.UNIMPLEMENTED],
        ["no path", { ":path": "/" }, msg([1]), Status.UNIMPLEMENTED],
      ];
      for (const [what, headers, body, code] of cases) {
        const r = await raw(session, headers, body);
        expect({ what, status: r.status, code: r.code }).toEqual({ what, status: 200, code });
        expect(r.message.length).toBeGreaterThan(0);
      }
      // The connection survived all of that.
      const ok = await raw(session, {}, msg(Buffer.from("fine")));
      expect(ok.code).toBe(Status.OK);
      expect(ok.data.subarray(5).toString()).toBe("echo:fine");
      expect(session.destroyed).toBe(false);
    } finally {
      session.close();
    }
  });

  test("a unary request that never arrives ends DEADLINE_EXCEEDED at its grpc-timeout", async () => {
    const session = http2.connect(`http://${address}`);
    session.on("error", () => {});
    try {
      const started = Date.now();
      const r = await raw(session, { "grpc-timeout": "150m" }, msg([1, 2]).subarray(0, 3), true);
      expect(r.code).toBe(Status.DEADLINE_EXCEEDED);
      expect(Date.now() - started).toBeGreaterThanOrEqual(140);
    } finally {
      session.close();
    }
  });
});

describe("GrpcServer drain", () => {
  test("GOAWAY: the call in flight finishes, new calls on the connection are refused, drain resolves once it is over", async () => {
    const s2 = new GrpcServer({ maxMessageBytes: MAX, maxConcurrentStreams: 100, lookup: (p) => SHAPES[p], onCall: handle });
    const addr = `127.0.0.1:${await s2.listen("127.0.0.1", 0)}`;
    const session = http2.connect(`http://${addr}`);
    session.on("error", () => {});
    const goaway = new Promise<void>((r) => session.once("goaway", () => r()));
    const before = hanging.length;
    const inFlight = raw(session, { ":path": "/t.S/Hang" }, msg([1]));
    await waitFor(() => hanging.length > before, { what: "the call to reach the handler" });
    const held = hanging[hanging.length - 1]!;
    let drained = false;
    const drain = s2.drain().then(() => (drained = true));
    await goaway;
    expect(() => session.request({ ":path": "/t.S/Unary" })).toThrow();
    expect(drained).toBe(false);
    held.write(Buffer.from("late"));
    held.end(Status.OK, "");
    const r = await inFlight;
    expect(r.code).toBe(Status.OK);
    await drain;
    expect(drained).toBe(true);
    session.destroy();
  });
});
