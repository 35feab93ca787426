// A small app for the sidecar's end-to-end tests: serves meshtest.Echo through the SDK over
// MESH_SOCKET. Replies say what the app saw (metadata, deadline) so tests can check the sidecar
// preserved them; fail_code/delay_ms/count make it fail, wait or stream on request.
import { join } from "node:path";
import protobuf from "protobufjs";
import { connect, RpcError, Status, type CallContext } from "../../../runtime/sdk/index.ts";
import type { ServerCall } from "../../../runtime/rpc/types.ts";

const PROTO = join(import.meta.dir, "echo.proto");
const root = protobuf.loadSync(PROTO);
const Req = root.lookupType("meshtest.EchoRequest");
const Reply = root.lookupType("meshtest.EchoReply");
const app = process.env.ECHO_APP_NAME ?? "echo";

interface EchoRequest {
  text?: string;
  failCode?: number;
  count?: number;
  delayMs?: number;
  padding?: Uint8Array;
}

function reply(text: string, md: Record<string, unknown>, deadline: number | undefined, padding?: Uint8Array) {
  const metadata: Record<string, string> = {};
  for (const [k, v] of Object.entries(md)) if (typeof v === "string") metadata[k] = v;
  return { text, metadata, deadlineLeftMs: deadline === undefined ? -1 : deadline - Date.now(), app, padding };
}

async function pause(ms: number, signal: AbortSignal): Promise<void> {
  if (!ms) return;
  await new Promise<void>((resolve) => {
    const t = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(t);
      resolve();
    });
  });
}

const mesh = await connect({ appName: app });
mesh.serve(PROTO, "meshtest.Echo", {
  async Unary(req: EchoRequest, ctx: CallContext) {
    await pause(req.delayMs ?? 0, ctx.signal);
    ctx.sendHeaders({ "x-echo-header": "from-app" });
    ctx.setTrailers({ "x-echo-trailer": "bye" });
    if (req.failCode) throw new RpcError(req.failCode, `failed on purpose: ${req.text ?? ""}`, { "x-fail-trailer": "yes" });
    return reply(req.text ?? "", ctx.metadata, ctx.deadline, req.padding);
  },
  async *ServerStream(req: EchoRequest, ctx: CallContext) {
    for (let i = 0; i < (req.count ?? 1); i++) yield reply(`${req.text ?? ""}#${i}`, ctx.metadata, ctx.deadline);
    if (req.failCode) throw new RpcError(req.failCode, "stream failed on purpose");
  },
});

// Request-streaming methods through the raw ServerCall: the SDK's typed serve covers unary and server streaming.
async function clientStream(call: ServerCall): Promise<void> {
  const texts: string[] = [];
  for await (const m of call) texts.push(String((Req.toObject(Req.decode(m)) as EchoRequest).text ?? ""));
  if (texts.includes("no-reply")) return call.end(Status.OK); // a broken app: OK without a response
  await call.write(Reply.encode(Reply.fromObject(reply(texts.join(","), call.metadata, call.deadline))).finish());
  call.end(Status.OK);
}
async function bidi(call: ServerCall): Promise<void> {
  for await (const m of call) {
    const r = Req.toObject(Req.decode(m)) as EchoRequest;
    await call.write(Reply.encode(Reply.fromObject(reply(`echo:${r.text ?? ""}`, call.metadata, call.deadline))).finish());
  }
  call.end(Status.OK);
}
mesh.handle("/meshtest.Echo/ClientStream", clientStream);
mesh.handle("/meshtest.Echo/Bidi", bidi);

console.log(JSON.stringify({ event: "app-ready", transport: mesh.transport }));
process.on("SIGTERM", () => {
  void mesh.close(1000).then(() => process.exit(0));
});
