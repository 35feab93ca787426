// The gRPC client layer on its own, in process: against a grpc-js server for the well-behaved calls,
// and against raw node:http2 servers that answer the way broken or hostile servers do.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import * as grpc from "@grpc/grpc-js";
import http2 from "node:http2";
import { type Metadata, Status } from "../../../runtime/rpc/status.ts";
import { waitFor } from "../../../test/helpers.ts";
import { baseRequestHeaders, GrpcClient } from "./client.ts";
import { toHeaders } from "./metadata.ts";

const id = (b: Buffer) => b;
const method = (path: string, requestStream: boolean, responseStream: boolean) => ({
  path,
  requestStream,
  responseStream,
  requestSerialize: id,
  requestDeserialize: id,
  responseSerialize: id,
  responseDeserialize: id,
});

let server: grpc.Server;
let port = 0;
let lastMetadata: grpc.Metadata | undefined;
let lastDeadline: number | undefined;
const cancelledOnServer: string[] = [];

function startGrpcServer(p = 0): Promise<number> {
  server = new grpc.Server();
  server.addService(
    {
      Unary: method("/t.S/Unary", false, false),
      Stream: method("/t.S/Stream", false, true),
      Bidi: method("/t.S/Bidi", true, true),
    } as unknown as grpc.ServiceDefinition,
    {
      Unary: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
        lastMetadata = call.metadata;
        const d = call.getDeadline();
        lastDeadline = d instanceof Date ? d.getTime() : Number.isFinite(d) ? (d as number) : undefined;
        const text = call.request.toString();
        if (text === "hang") {
          call.on("cancelled", () => cancelledOnServer.push("hang"));
          return;
        }
        if (text.startsWith("fail")) {
          const md = new grpc.Metadata();
          md.set("x-why", "because");
          return cb({ code: Status.ABORTED, details: "nope: ünïcode 50% off", metadata: md });
        }
        const h = new grpc.Metadata();
        h.set("x-h", "1");
        call.sendMetadata(h);
        const t = new grpc.Metadata();
        t.set("x-t-bin", Buffer.from([9, 9]));
        cb(null, Buffer.from(`echo:${text}`), t);
      },
      Stream: (call: grpc.ServerWritableStream<Buffer, Buffer>) => {
        for (let i = 0; i < 3; i++) call.write(Buffer.from(`${call.request.toString()}#${i}`));
        call.end();
      },
      Bidi: (call: grpc.ServerDuplexStream<Buffer, Buffer>) => {
        call.on("data", (m: Buffer) => call.write(Buffer.from(`bidi:${m.toString()}`)));
        call.on("end", () => call.end());
      },
    },
  );
  return new Promise((resolve, reject) =>
    server.bindAsync(`127.0.0.1:${p}`, grpc.ServerCredentials.createInsecure(), (e, bound) => (e ? reject(e) : resolve(bound))),
  );
}

beforeAll(async () => {
  port = await startGrpcServer();
});

afterAll(() => server?.forceShutdown());

interface Result {
  code: number;
  details: string;
  trailers: Metadata;
  headers: Metadata | undefined;
  messages: string[];
  ms: number;
}

function call(client: GrpcClient, path: string, request: string | undefined, opts: { md?: Metadata; deadline?: number; writes?: string[]; cancelAfterMs?: number } = {}): Promise<Result> {
  const started = Date.now();
  return new Promise((resolve) => {
    const out: Result = { code: -1, details: "", trailers: {}, headers: undefined, messages: [], ms: 0 };
    const c = client.start(
      toHeaders(opts.md, baseRequestHeaders(path)),
      opts.deadline,
      {
        onHeaders: (md) => (out.headers = md),
        onMessage: (m) => out.messages.push(m.toString()),
        onStatus: (code, details, trailers) => resolve(Object.assign(out, { code, details, trailers, ms: Date.now() - started })),
      },
      request === undefined ? undefined : Buffer.from(request),
    );
    if (opts.writes) {
      for (const w of opts.writes) c.write(Buffer.from(w));
      c.end();
    }
    if (opts.cancelAfterMs !== undefined) setTimeout(() => c.cancel(), opts.cancelAfterMs);
  });
}

describe("GrpcClient against a grpc-js server", () => {
  test("unary: metadata and deadline go up; headers, message and -bin trailers come back", async () => {
    const client = new GrpcClient({ address: `127.0.0.1:${port}`, maxMessageBytes: 1 << 20 });
    try {
      const deadline = Date.now() + 5000;
      const r = await call(client, "/t.S/Unary", "hi", { md: { "x-user": "ada", "x-id-bin": new Uint8Array([1, 2]) }, deadline });
      expect(r.code).toBe(Status.OK);
      expect(r.messages).toEqual(["echo:hi"]);
      expect(r.headers!["x-h"]).toBe("1");
      expect([...(r.trailers["x-t-bin"] as Uint8Array)]).toEqual([9, 9]);
      expect(lastMetadata!.get("x-user")).toEqual(["ada"]);
      expect([...(lastMetadata!.get("x-id-bin")[0] as Buffer)]).toEqual([1, 2]);
      expect(Math.abs(lastDeadline! - deadline)).toBeLessThan(250);
    } finally {
      client.close();
    }
  });

  test("an error status: code, percent-decoded details, trailers", async () => {
    const client = new GrpcClient({ address: `127.0.0.1:${port}`, maxMessageBytes: 1 << 20 });
    try {
      const r = await call(client, "/t.S/Unary", "fail");
      expect(r.code).toBe(Status.ABORTED);
      expect(r.details).toBe("nope: ünïcode 50% off");
      expect(r.trailers["x-why"]).toBe("because");
    } finally {
      client.close();
    }
  });

  test("server streaming and bidi", async () => {
    const client = new GrpcClient({ address: `127.0.0.1:${port}`, maxMessageBytes: 1 << 20 });
    try {
      expect((await call(client, "/t.S/Stream", "s")).messages).toEqual(["s#0", "s#1", "s#2"]);
      const b = await call(client, "/t.S/Bidi", undefined, { writes: ["a", "b"] });
      expect(b.code).toBe(Status.OK);
      expect(b.messages).toEqual(["bidi:a", "bidi:b"]);
    } finally {
      client.close();
    }
  });

  test("the deadline is kept locally: DEADLINE_EXCEEDED on time, and the server sees the call cancelled", async () => {
    const client = new GrpcClient({ address: `127.0.0.1:${port}`, maxMessageBytes: 1 << 20 });
    try {
      const before = cancelledOnServer.length;
      const r = await call(client, "/t.S/Unary", "hang", { deadline: Date.now() + 200 });
      expect(r.code).toBe(Status.DEADLINE_EXCEEDED);
      expect(r.ms).toBeGreaterThanOrEqual(190);
      expect(r.ms).toBeLessThan(1500);
      await waitFor(() => cancelledOnServer.length > before, { what: "the server to see the call cancelled" });
      // A deadline already passed never leaves the process.
      expect((await call(client, "/t.S/Unary", "x", { deadline: Date.now() - 1 })).code).toBe(Status.DEADLINE_EXCEEDED);
    } finally {
      client.close();
    }
  });

  test("cancel: CANCELLED here, cancelled there", async () => {
    const client = new GrpcClient({ address: `127.0.0.1:${port}`, maxMessageBytes: 1 << 20 });
    try {
      const before = cancelledOnServer.length;
      const r = await call(client, "/t.S/Unary", "hang", { cancelAfterMs: 50 });
      expect(r.code).toBe(Status.CANCELLED);
      await waitFor(() => cancelledOnServer.length > before, { what: "the server to see the call cancelled" });
    } finally {
      client.close();
    }
  });

  test("a message over the limit is refused before it is sent", async () => {
    const client = new GrpcClient({ address: `127.0.0.1:${port}`, maxMessageBytes: 10 });
    try {
      expect((await call(client, "/t.S/Unary", "x".repeat(11))).code).toBe(Status.RESOURCE_EXHAUSTED);
    } finally {
      client.close();
    }
  });

  test("the server goes away and comes back on the same port: UNAVAILABLE meanwhile, then a new connection", async () => {
    const client = new GrpcClient({ address: `127.0.0.1:${port}`, maxMessageBytes: 1 << 20 });
    try {
      expect((await call(client, "/t.S/Unary", "one")).code).toBe(Status.OK);
      await new Promise<void>((r) => server.tryShutdown(() => r()));
      const down = await call(client, "/t.S/Unary", "two");
      expect(down.code).toBe(Status.UNAVAILABLE);
      await startGrpcServer(port);
      const back = await waitFor(async () => {
        const r = await call(client, "/t.S/Unary", "three");
        return r.code === Status.OK ? r : undefined;
      }, { what: "calls to work again after the server came back" });
      expect(back.messages).toEqual(["echo:three"]);
    } finally {
      client.close();
    }
  });

  test("nobody listening: UNAVAILABLE naming the address", async () => {
    const client = new GrpcClient({ address: "127.0.0.1:1", maxMessageBytes: 1 << 20 });
    try {
      const r = await call(client, "/t.S/Unary", "x");
      expect(r.code).toBe(Status.UNAVAILABLE);
      expect(r.details).toContain("127.0.0.1:1");
    } finally {
      client.close();
    }
  });
});

describe("GrpcClient against broken servers", () => {
  type Answer = (stream: http2.ServerHttp2Stream) => void;
  let answer: Answer = () => {};
  let atOnce = false;
  const raw = http2.createServer();
  raw.on("stream", (stream: http2.ServerHttp2Stream) => {
    stream.on("error", () => {});
    if (atOnce) return answer(stream);
    stream.resume();
    stream.on("end", () => answer(stream));
  });
  let client: GrpcClient;

  beforeAll(async () => {
    const p = await new Promise<number>((r) => raw.listen(0, "127.0.0.1", () => r((raw.address() as { port: number }).port)));
    client = new GrpcClient({ address: `127.0.0.1:${p}`, maxMessageBytes: 1024 });
  });

  afterAll(() => {
    client?.close();
    raw.close();
  });

  const prefix = (len: number, flag = 0) => {
    const b = Buffer.alloc(5);
    b[0] = flag;
    b.writeUInt32BE(len, 1);
    return b;
  };
  const grpcOk = (body: Buffer, trailers: http2.OutgoingHttpHeaders = { "grpc-status": "0" }): Answer => (s) => {
    s.respond({ ":status": 200, "content-type": "application/grpc" }, { waitForTrailers: true });
    s.once("wantTrailers", () => s.sendTrailers(trailers));
    s.end(body);
  };

  const cases: [string, () => Answer, number][] = [
    ["HTTP 503 without grpc-status", () => (s) => s.respond({ ":status": 503 }, { endStream: true }), Status.UNAVAILABLE],
    ["HTTP 404 without grpc-status", () => (s) => s.respond({ ":status": 404 }, { endStream: true }), Status.UNIMPLEMENTED],
    // A reset after the request was sent whole: Bun's client reports no RST code then, only a stream
    // that ended without a status.
    ["RST_STREAM after the request", () => (s) => s.close(http2.constants.NGHTTP2_REFUSED_STREAM), Status.INTERNAL],
    ["an absurd response length prefix", () => grpcOk(Buffer.concat([prefix(0x7fffffff), Buffer.alloc(10)])), Status.RESOURCE_EXHAUSTED],
    ["a truncated response message, then OK", () => grpcOk(Buffer.concat([prefix(100), Buffer.alloc(10)])), Status.INTERNAL],
    ["a bad flag byte", () => grpcOk(Buffer.concat([prefix(1, 5), Buffer.alloc(1)])), Status.INTERNAL],
    ["a compressed response without grpc-encoding", () => grpcOk(Buffer.concat([prefix(1, 1), Buffer.alloc(1)])), Status.INTERNAL],
    ["no trailers at all", () => (s) => {
      s.respond({ ":status": 200, "content-type": "application/grpc" });
      s.end(Buffer.concat([prefix(1), Buffer.alloc(1)]));
    }, Status.INTERNAL],
    ["a grpc-status that is not a number", () => grpcOk(Buffer.alloc(0), { "grpc-status": "ok" }), Status.UNKNOWN],
    ["trailers with a -bin value that is not base64", () => grpcOk(Buffer.alloc(0), { "grpc-status": "0", "x-bad-bin": "!!" }), Status.INTERNAL],
  ];
  test("RST_STREAM while the client is still sending: the code's status (REFUSED_STREAM → UNAVAILABLE, retryable)", async () => {
    atOnce = true;
    try {
      for (const [rst, code] of [
        [http2.constants.NGHTTP2_REFUSED_STREAM, Status.UNAVAILABLE],
        [http2.constants.NGHTTP2_ENHANCE_YOUR_CALM, Status.RESOURCE_EXHAUSTED],
        [http2.constants.NGHTTP2_PROTOCOL_ERROR, Status.INTERNAL],
      ] as const) {
        answer = (s) => s.close(rst);
        const r = await new Promise<number>((resolve) => {
          const c = client.start(baseRequestHeaders("/t.S/Bidi"), undefined, { onHeaders() {}, onMessage() {}, onStatus: (code) => resolve(code) });
          c.write(Buffer.from("still sending"));
        });
        expect(r).toBe(code);
      }
    } finally {
      atOnce = false;
    }
  });

  for (const [what, make, code] of cases) {
    test(`${what} → ${Object.entries(Status).find(([, v]) => v === code)![0]}; the client keeps working`, async () => {
      answer = make();
      const r = await call(client, "/t.S/Unary", "x");
      expect(r.code).toBe(code);
      answer = grpcOk(Buffer.concat([prefix(2), Buffer.from("ok")]));
      const again = await call(client, "/t.S/Unary", "x");
      expect(again.code).toBe(Status.OK);
      expect(again.messages).toEqual(["ok"]);
    });
  }
});
