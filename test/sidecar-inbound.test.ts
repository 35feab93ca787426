// Inbound end to end: a grpc-js client → the sidecar process (h2c) → the echo app process (SDK over the
// pod's Unix socket) and back. Status, metadata, deadline, headers and trailers must survive; bad
// requests from the network get the right status and the sidecar keeps serving; SIGTERM drains.
import { afterAll, beforeAll, describe, expect, test, setDefaultTimeout } from "bun:test";
import * as grpc from "@grpc/grpc-js";
import http2 from "node:http2";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import protobuf from "protobufjs";
import { TestResources, waitFor } from "./helpers.ts";
import { callUnary, ECHO_PROTO, echoClient, metric, type RunningSidecar, scrape, startEchoApp, startSidecar, writeMeshYaml } from "../mesh/sidecar/testdata/harness.ts";

// Real processes on a shared 2-vCPU machine: room for start-up (the waits inside have their own deadlines).
setDefaultTimeout(60_000);

const res = new TestResources();
let sc: RunningSidecar;
let client: ReturnType<typeof echoClient>;

beforeAll(async () => {
  const dir = res.scratchDir("sidecar-inbound-");
  const config = writeMeshYaml(dir, [{ name: "echo", sidecar: { inbound: { host: "127.0.0.1", port: 0 }, admin: { port: 0 }, drain_seconds: 5 } }]);
  sc = await startSidecar(res, config, "echo", join(dir, "run", "app.sock"));
  client = echoClient(sc.ready.inbound!);
}, 60_000);

afterAll(async () => {
  client?.close();
  await res.cleanup();
});

describe("sidecar inbound", () => {
  test("before the app connects: UNAVAILABLE naming the cause, and /readyz says not ready", async () => {
    const r = await callUnary(client, "Unary", { text: "early" });
    expect(r.err?.code).toBe(grpc.status.UNAVAILABLE);
    expect(r.err?.details).toContain("no app is connected");
    const ready = await fetch(`${sc.admin}/readyz`);
    expect(ready.status).toBe(503);
    expect(await (await fetch(`${sc.admin}/healthz`)).text()).toBe("ok\n");
  });

  test("the app connects: /readyz and /status report it with its transport", async () => {
    await startEchoApp(res, sc.socket);
    await waitFor(async () => (await fetch(`${sc.admin}/readyz`)).status === 200, { what: "/readyz 200" });
    const status = (await (await fetch(`${sc.admin}/status`)).json()) as { pod: string; ready: boolean; sessions: { transport: string }[]; transport: string };
    expect(status.pod).toBe("echo");
    expect(status.ready).toBe(true);
    expect(status.sessions.length).toBe(1);
    expect(["uds", "shm", "rpal"]).toContain(status.transport);
  });

  test("unary: payload, metadata, deadline, headers and trailers preserved; traceparent continued", async () => {
    const md = new grpc.Metadata();
    md.set("x-user", "ada");
    md.set("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    const r = await callUnary(client, "Unary", { text: "hello" }, md, { deadline: Date.now() + 5000 });
    expect(r.err).toBeNull();
    expect(r.reply.text).toBe("hello");
    expect(r.reply.metadata["x-user"]).toBe("ada");
    const tp = r.reply.metadata.traceparent as string;
    expect(tp).toMatch(/^00-4bf92f3577b34da6a3ce929d0e0e4736-[0-9a-f]{16}-01$/);
    expect(tp).not.toContain("00f067aa0ba902b7");
    const left = Number(r.reply.deadlineLeftMs);
    expect(left).toBeGreaterThan(0);
    expect(left).toBeLessThanOrEqual(5000);
    expect(r.headers?.get("x-echo-header")).toEqual(["from-app"]);
    expect(r.trailers?.get("x-echo-trailer")).toEqual(["bye"]);
  });

  test("a call without traceparent gets a fresh one; without deadline the app sees none", async () => {
    const r = await callUnary(client, "Unary", { text: "x" });
    expect(r.reply.metadata.traceparent).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
    expect(Number(r.reply.deadlineLeftMs)).toBe(-1);
  });

  test("the app's error status, details and trailers reach the client", async () => {
    const r = await callUnary(client, "Unary", { text: "boom", failCode: grpc.status.FAILED_PRECONDITION });
    expect(r.err?.code).toBe(grpc.status.FAILED_PRECONDITION);
    expect(r.err?.details).toBe("failed on purpose: boom");
    expect(r.trailers?.get("x-fail-trailer")).toEqual(["yes"]);
  });

  test("a deadline shorter than the app's work ends in DEADLINE_EXCEEDED", async () => {
    const r = await callUnary(client, "Unary", { text: "slow", delayMs: 2000 }, new grpc.Metadata(), { deadline: Date.now() + 100 });
    expect(r.err?.code).toBe(grpc.status.DEADLINE_EXCEEDED);
  });

  test("server streaming, client streaming and bidi pass every message through", async () => {
    const stream = client.ServerStream({ text: "s", count: 3 });
    const got: string[] = [];
    for await (const m of stream) got.push(m.text);
    expect(got).toEqual(["s#0", "s#1", "s#2"]);

    const failing = client.ServerStream({ text: "f", count: 2, failCode: grpc.status.ABORTED });
    const partial: string[] = [];
    const err = await (async () => {
      try {
        for await (const m of failing) partial.push(m.text);
      } catch (e) {
        return e as grpc.ServiceError;
      }
    })();
    expect(partial).toEqual(["f#0", "f#1"]);
    expect(err?.code).toBe(grpc.status.ABORTED);

    const cs = await new Promise<any>((resolve, reject) => {
      const call = client.ClientStream((e: Error | null, r: unknown) => (e ? reject(e) : resolve(r)));
      for (const t of ["a", "b", "c"]) call.write({ text: t });
      call.end();
    });
    expect(cs.text).toBe("a,b,c");

    // An app that ends a single-response call OK without a response: INTERNAL, not an empty reply.
    const noReply = await new Promise<grpc.ServiceError | null>((resolve) => {
      const call = client.ClientStream((e: grpc.ServiceError | null) => resolve(e));
      call.write({ text: "no-reply" });
      call.end();
    });
    expect(noReply?.code).toBe(grpc.status.INTERNAL);
    expect(noReply?.details).toContain("without sending a response message");

    const bidi = client.Bidi();
    const echoes: string[] = [];
    const done = (async () => {
      for await (const m of bidi) echoes.push(m.text);
    })();
    for (const t of ["1", "2"]) bidi.write({ text: t });
    bidi.end();
    await done;
    expect(echoes).toEqual(["echo:1", "echo:2"]);
  });

  test("unknown method: UNIMPLEMENTED, and the sidecar keeps serving", async () => {
    const r = await new Promise<grpc.ServiceError | null>((resolve) => {
      client.makeUnaryRequest("/meshtest.Nope/Missing", (b: Buffer) => b, (b: Buffer) => b, Buffer.alloc(0), (e) => resolve(e));
    });
    expect(r?.code).toBe(grpc.status.UNIMPLEMENTED);
    expect((await callUnary(client, "Unary", { text: "still" })).reply.text).toBe("still");
  });

  test("malformed HTTP/2 requests each get the right status on their own stream; the connection and the sidecar keep serving", async () => {
    // One connection for every hostile request: a protocol error must end its stream, never the connection.
    const session = http2.connect(`http://${sc.ready.inbound}`);
    const send = (headers: http2.OutgoingHttpHeaders, body: Buffer) =>
      new Promise<{ status: number; code: number; message: string }>((resolve) => {
        const out = { headers: {} as http2.IncomingHttpHeaders, trailers: {} as http2.IncomingHttpHeaders };
        const req = session.request({ ":method": "POST", "content-type": "application/grpc", te: "trailers", ...headers } as http2.OutgoingHttpHeaders);
        req.on("response", (h) => (out.headers = h));
        req.on("trailers", (t) => (out.trailers = t));
        req.on("data", () => {});
        req.on("close", () => {
          const t = { ...out.headers, ...out.trailers };
          resolve({ status: Number(out.headers[":status"]), code: Number(t["grpc-status"]), message: String(t["grpc-message"] ?? "") });
        });
        req.end(body);
      });
    const unary = { ":path": "/meshtest.Echo/Unary" };
    const msg = (payload: number[], flag = 0) => Buffer.from([flag, 0, 0, 0, payload.length, ...payload]);
    try {
      expect((await send({ ...unary, "content-type": "text/plain" }, Buffer.from("hello"))).status).toBe(415);
      expect((await send({ ...unary, ":method": "GET" }, Buffer.alloc(0))).status).toBe(405);

      // Length prefix says 100 bytes, 2 follow, then the stream ends: a truncated message (protocol error).
      expect((await send(unary, Buffer.from([0, 0, 0, 0, 100, 1, 2]))).code).toBe(grpc.status.INTERNAL);
      // Half a prefix.
      expect((await send(unary, Buffer.from([0, 0, 0]))).code).toBe(grpc.status.INTERNAL);
      // A flag byte that is neither 0 nor 1.
      expect((await send(unary, msg([1], 7))).code).toBe(grpc.status.INTERNAL);
      // No message at all for a unary method, and two: request cardinality violations.
      expect((await send(unary, Buffer.alloc(0))).code).toBe(grpc.status.UNIMPLEMENTED);
      expect((await send(unary, Buffer.concat([msg([]), msg([])]))).code).toBe(grpc.status.UNIMPLEMENTED);
      // An absurd length prefix (2 GiB): refused from the prefix alone, nothing buffered.
      const huge = await send(unary, Buffer.from([0, 0x7f, 0xff, 0xff, 0xff]));
      expect(huge.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
      expect(huge.message).toContain("larger than max");
      // Compressed flag with no grpc-encoding, or identity: INTERNAL; a compression we do not read: UNIMPLEMENTED.
      expect((await send(unary, msg([1], 1))).code).toBe(grpc.status.INTERNAL);
      expect((await send({ ...unary, "grpc-encoding": "identity" }, msg([1], 1))).code).toBe(grpc.status.INTERNAL);
      expect((await send({ ...unary, "grpc-encoding": "br" }, msg([1], 1))).code).toBe(grpc.status.UNIMPLEMENTED);
      // gzip that is not gzip.
      expect((await send({ ...unary, "grpc-encoding": "gzip" }, msg([1, 2, 3], 1))).code).toBe(grpc.status.INTERNAL);
      // A malformed grpc-timeout, and a -bin header that is not base64.
      expect((await send({ ...unary, "grpc-timeout": "soon" }, msg([]))).code).toBe(grpc.status.INTERNAL);
      expect((await send({ ...unary, "grpc-timeout": "123456789S" }, msg([]))).code).toBe(grpc.status.INTERNAL);
      expect((await send({ ...unary, "x-trace-bin": "not base64!" }, msg([]))).code).toBe(grpc.status.INTERNAL);
      // An unknown method.
      expect((await send({ ":path": "/meshtest.Echo/Nope" }, msg([]))).code).toBe(grpc.status.UNIMPLEMENTED);

      // Undecodable payload bytes are the app's business (the sidecar never decodes): the app answers.
      expect((await send(unary, msg([0xff, 0xff, 0xff]))).code).toBe(grpc.status.INVALID_ARGUMENT);
      // A gzip-compressed request is decompressed before it reaches the app.
      const Req = protobuf.loadSync(ECHO_PROTO).lookupType("meshtest.EchoRequest");
      const gz = gzipSync(Req.encode(Req.fromObject({ text: "zipped" })).finish());
      const zipped = await send({ ...unary, "grpc-encoding": "gzip" }, Buffer.concat([Buffer.from([1, 0, 0, 0, gz.length]), gz]));
      expect(zipped.code).toBe(grpc.status.OK);
    } finally {
      session.close();
    }
    expect((await callUnary(client, "Unary", { text: "alive" })).reply.text).toBe("alive");
  });

  test("a connection that is not HTTP/2 ends in GOAWAY PROTOCOL_ERROR, counted in /metrics and logged once; other clients go on", async () => {
    const count = async () => metric(await scrape(sc.admin), "mesh_inbound_connection_errors_total", { code: "PROTOCOL_ERROR" });
    const before = await count();
    const [host, port] = sc.ready.inbound!.split(":");
    let closed = false;
    const sock = await Bun.connect({ hostname: host!, port: Number(port), socket: { data() {}, close() { closed = true; } } });
    try {
      sock.write("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
      await waitFor(() => closed, { what: "the sidecar to close the HTTP/1.1 connection" });
    } finally {
      sock.end();
    }
    await waitFor(async () => (await count()) === before + 1, { what: "mesh_inbound_connection_errors_total{code=PROTOCOL_ERROR} to grow by one" });
    await waitFor(() => /ended a client connection with GOAWAY PROTOCOL_ERROR/.test(sc.proc.output()), { what: "the sidecar's log line" });
    expect((await callUnary(client, "Unary", { text: "after" })).reply.text).toBe("after");
  });

  test("a grpc-js client that compresses its requests (gzip) is served", async () => {
    const gz = echoClient(sc.ready.inbound!, grpc.credentials.createInsecure(), { "grpc.default_compression_algorithm": 2, "grpc.use_local_subchannel_pool": 1 });
    try {
      const r = await callUnary(gz, "Unary", { text: "compressed ".repeat(50) });
      expect(r.err).toBeNull();
      expect(r.reply.text).toBe("compressed ".repeat(50));
    } finally {
      gz.close();
    }
  });

  test("a client that resets its stream cancels the app's call", async () => {
    // The app would take 5 s; the client gives up once the call is in flight (grpc-js sends RST_STREAM CANCEL).
    const call = client.Unary({ text: "slow", delayMs: 5000 }, () => {});
    await waitFor(async () => metric(await scrape(sc.admin), "mesh_requests_in_flight") === 1, { what: "the call to reach the app" });
    call.cancel();
    // The app's call is cancelled (it stops waiting) and the sidecar records CANCELLED long before 5 s.
    await waitFor(async () => metric(await scrape(sc.admin), "mesh_requests_total", { direction: "inbound", method: "/meshtest.Echo/Unary", code: "CANCELLED" }) === 1, {
      what: "the cancelled call to be counted as CANCELLED",
      timeoutMs: 4000,
    });
    expect(metric(await scrape(sc.admin), "mesh_requests_in_flight")).toBe(0);
  });

  test("/metrics counts inbound calls by method and code, with latency histograms and process figures", async () => {
    const text = await scrape(sc.admin);
    expect(metric(text, "mesh_requests_total", { direction: "inbound", method: "/meshtest.Echo/Unary", code: "OK" })).toBeGreaterThanOrEqual(4);
    expect(metric(text, "mesh_requests_total", { direction: "inbound", method: "/meshtest.Echo/Unary", code: "FAILED_PRECONDITION" })).toBe(1);
    expect(metric(text, "mesh_request_duration_seconds_count", { direction: "inbound", method: "/meshtest.Echo/Unary" })).toBeGreaterThanOrEqual(5);
    expect(metric(text, "mesh_app_sessions")).toBe(1);
    expect(metric(text, "mesh_transport_stat", { stat: "framesReceived" })).toBeGreaterThan(0);
    expect(metric(text, "mesh_transport_stat", { stat: "bytesSent" })).toBeGreaterThan(0);
    expect(metric(text, "mesh_process_cpu_seconds_total")).toBeGreaterThan(0);
    expect(metric(text, "mesh_process_resident_memory_bytes")).toBeGreaterThan(1_000_000);
    const cfg = (await (await fetch(`${sc.admin}/config`)).json()) as { name: string; sidecar: { inbound: { port: number } } };
    expect(cfg.name).toBe("echo");
  });

  test("SIGTERM drains: the call in flight finishes, new calls are refused, exit code 0", async () => {
    const slow = callUnary(client, "Unary", { text: "in-flight", delayMs: 800 }, new grpc.Metadata(), { deadline: Date.now() + 10_000 });
    await waitFor(async () => metric(await scrape(sc.admin), "mesh_requests_in_flight") >= 1, { what: "a call in flight" });
    sc.proc.proc.kill("SIGTERM");
    await waitFor(async () => (await fetch(`${sc.admin}/readyz`)).status === 503, { what: "/readyz to report draining" });
    const late = await callUnary(client, "Unary", { text: "late" });
    expect(late.err?.code).toBe(grpc.status.UNAVAILABLE);
    const r = await slow;
    expect(r.err).toBeNull();
    expect(r.reply.text).toBe("in-flight");
    expect(await sc.proc.proc.exited).toBe(0);
  }, 60_000);
});
