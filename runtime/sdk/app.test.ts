// The SDK end to end inside one process (the multi-process cases live in test/): typed clients and
// services from a .proto, reconnection after the sidecar restarts, forced transports refused loudly.
import { afterEach, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { TestResources, waitFor } from "../../test/helpers.ts";
import { RpcError, Status } from "../rpc/status.ts";
import type { UnixListener } from "../transport/uds.ts";
import { connect, type MeshConnection } from "./app.ts";
import { acceptApps, type AppSession } from "./sidecar.ts";

const PROTO = join(import.meta.dir, "../../test/fixtures/echo.proto");
const res = new TestResources();
const open: { close(): unknown }[] = [];
afterEach(async () => {
  for (const o of open.splice(0)) await o.close();
  await res.cleanup();
});

async function sidecar(socketPath: string, sessions: AppSession[], transport: "uds" | "auto" = "auto"): Promise<UnixListener> {
  const l = await acceptApps({ socketPath, transport, onSession: (s) => sessions.push(s) });
  open.push({ close: () => l.stop() });
  return l;
}

async function app(socketPath: string): Promise<MeshConnection> {
  const c = await connect({ socketPath, transport: "uds" });
  open.push({ close: () => c.close(50) });
  return c;
}

describe("sdk", () => {
  test("typed unary and server-streaming calls in both directions; 64-bit ints survive", async () => {
    const path = join(res.scratchDir(), "s.sock");
    const sessions: AppSession[] = [];
    await sidecar(path, sessions);
    const a = await app(path);
    a.serve(PROTO, "test.v1.Echo", {
      Say: async (req: { text: string; big: string }, ctx) => {
        ctx.setTrailers({ "x-served-by": "app" });
        return { text: `echo ${req.text} ${ctx.metadata["x-who"] ?? ""}`.trim(), big: req.big };
      },
      async *count(req: { count: number }) {
        for (let i = 0; i < req.count; i++) yield { index: i };
      },
    });
    await waitFor(() => sessions.length === 1, { what: "the session" });
    // The sidecar side calls the app's service with raw bytes, as the sidecar's inbound does.
    const sc = sessions[0]!.channel;
    const { loadService } = await import("./proto.ts");
    const svc = loadService(PROTO, "test.v1.Echo");
    const say = svc.methods.find((m) => m.name === "Say")!;
    const r = await sc.unary(say.path, say.encodeRequest({ text: "hi", big: "9007199254740993" }), { metadata: { "x-who": "ada" } });
    const reply = say.decodeResponse(r.response);
    expect(reply.text).toBe("echo hi ada");
    expect(reply.big).toBe("9007199254740993");
    expect(r.trailers["x-served-by"]).toBe("app");
    const cnt = svc.methods.find((m) => m.name === "Count")!;
    const seen: number[] = [];
    for await (const m of sc.serverStream(cnt.path, cnt.encodeRequest({ count: 5 }))) seen.push(cnt.decodeResponse(m).index as number);
    expect(seen).toEqual([0, 1, 2, 3, 4]);
    // And the app calls a service the sidecar answers (its outbound direction).
    sc.setHandler(async (call) => {
      if (call.method !== say.path) return call.end(Status.UNIMPLEMENTED, `sidecar has no route for ${call.method}`);
      for await (const m of call) await call.write(say.encodeResponse({ text: `from sidecar: ${say.decodeRequest(m).text}` }));
    });
    const client = a.client(PROTO, "test.v1.Echo");
    expect((await client.say!({ text: "out" })).text).toBe("from sidecar: out");
    const missing = await client.Missing!({}).catch((e: unknown) => e);
    expect(missing).toBeInstanceOf(RpcError);
    expect((missing as RpcError).code).toBe(Status.UNIMPLEMENTED);
  });

  test("a method the app does not implement is UNIMPLEMENTED, naming it", async () => {
    const path = join(res.scratchDir(), "s.sock");
    const sessions: AppSession[] = [];
    await sidecar(path, sessions);
    const a = await app(path);
    a.serve(PROTO, "test.v1.Echo", { Say: () => ({}) });
    await waitFor(() => sessions.length === 1, { what: "the session" });
    const err = await sessions[0]!.channel.unary("/test.v1.Echo/Missing", new Uint8Array(0)).catch((e) => e);
    expect(err.code).toBe(Status.UNIMPLEMENTED);
    expect(err.details).toContain("/test.v1.Echo/Missing");
  });

  test("the session survives a sidecar restart: calls in flight fail UNAVAILABLE, new calls succeed, services are served again", async () => {
    const path = join(res.scratchDir(), "s.sock");
    const sessions: AppSession[] = [];
    const first = await sidecar(path, sessions);
    const a = await app(path);
    a.serve(PROTO, "test.v1.Echo", { Say: (req: { text: string }) => ({ text: req.text }) });
    await waitFor(() => sessions.length === 1, { what: "the first session" });
    sessions[0]!.channel.setHandler(() => new Promise(() => {})); // the app's outbound call hangs
    const inFlight = a.unary("/test.v1.Echo/Say", new Uint8Array(0));
    await waitFor(() => a.currentChannel?.stats.activeClientCalls === 1, { what: "a call in flight" });
    sessions[0]!.close("sidecar going away");
    first.stop();
    expect((await inFlight.catch((e) => e)).code).toBe(Status.UNAVAILABLE);
    await sidecar(path, sessions);
    await waitFor(() => sessions.length === 2, { what: "the app to reconnect", timeoutMs: 5000 });
    const { loadService } = await import("./proto.ts");
    const say = loadService(PROTO, "test.v1.Echo").methods[0]!;
    const r = await sessions[1]!.channel.unary(say.path, say.encodeRequest({ text: "again" }));
    expect(say.decodeResponse(r.response).text).toBe("again");
  });

  test("connect() names a missing MESH_SOCKET and an unreachable sidecar", async () => {
    const saved = process.env.MESH_SOCKET;
    delete process.env.MESH_SOCKET;
    try {
      await expect(connect()).rejects.toThrow(/MESH_SOCKET/);
    } finally {
      if (saved !== undefined) process.env.MESH_SOCKET = saved;
    }
    await expect(connect({ socketPath: join(res.scratchDir(), "none.sock") })).rejects.toThrow(/cannot connect/);
    await expect(connect({ socketPath: "/tmp/x.sock", transport: "bogus" as "uds" })).rejects.toThrow();
  });

  test("a transport the sidecar is not configured for is refused with the reason, no silent fallback", async () => {
    const path = join(res.scratchDir(), "s.sock");
    await sidecar(path, [], "uds");
    const err = await connect({ socketPath: path, transport: "shm" }).catch((e) => e);
    expect(String(err.message)).toMatch(/shm/);
  });
});
