// The frontend app: HTTP on 127.0.0.1:8080 (FRONTEND_PORT). `GET /hello?name=ada` calls hello.Greeter
// through this pod's own sidecar, which routes it to the greeter pod; `GET /hello/stream?name=ada&count=3`
// does the same with the server-streaming method. gRPC failures become 502 (or 504 for a deadline)
// with the gRPC status in the body and in a grpc-status header.
import { join } from "node:path";
import { connect, RpcError, Status, statusName } from "../../runtime/sdk/index.ts";

const PROTO = join(import.meta.dir, "hello.proto");
const HOST = process.env.FRONTEND_HOST ?? "127.0.0.1";
const PORT = Number(process.env.FRONTEND_PORT ?? 8080);
const TIMEOUT_MS = 3000;

if (!Number.isInteger(PORT) || PORT < 0 || PORT > 65535) {
  console.error(`frontend: FRONTEND_PORT=${process.env.FRONTEND_PORT} is not a port number — set it to e.g. 8080`);
  process.exit(2);
}

// One readable line instead of a stack trace when the sidecar is not there (mesh up restarts us).
const mesh = await connect().catch((e: Error) => {
  console.error(`frontend: cannot connect to the sidecar: ${e.message}`);
  process.exit(1);
});
const greeter = mesh.client(PROTO, "hello.Greeter");
const sayHello = greeter.SayHello!;
const sayHelloStream = greeter.SayHelloStream!;

function grpcFailure(e: unknown): Response {
  if (!(e instanceof RpcError)) throw e;
  const status = e.code === Status.DEADLINE_EXCEEDED ? 504 : 502;
  return new Response(`hello.Greeter failed: ${statusName(e.code)}: ${e.details}\n`, {
    status,
    headers: { "content-type": "text/plain; charset=utf-8", "grpc-status": String(e.code) },
  });
}

const server = Bun.serve({
  hostname: HOST,
  port: PORT,
  async fetch(req) {
    const url = new URL(req.url);
    if (req.method !== "GET") return new Response("only GET\n", { status: 405 });
    const name = url.searchParams.get("name") ?? "world";
    try {
      if (url.pathname === "/hello") {
        const reply = (await sayHello({ name }, { timeoutMs: TIMEOUT_MS })) as { message: string };
        return new Response(`${reply.message}\n`, { headers: { "content-type": "text/plain; charset=utf-8" } });
      }
      if (url.pathname === "/hello/stream") {
        const count = Math.max(1, Math.min(Number(url.searchParams.get("count") ?? 3) || 3, 100));
        const lines: string[] = [];
        for await (const r of sayHelloStream({ name, count }, { timeoutMs: TIMEOUT_MS }) as AsyncIterable<{ message: string }>) {
          lines.push(r.message);
        }
        return new Response(`${lines.join("\n")}\n`, { headers: { "content-type": "text/plain; charset=utf-8" } });
      }
      if (url.pathname === "/healthz") return new Response("ok\n");
    } catch (e) {
      return grpcFailure(e);
    }
    return new Response("not found — try /hello?name=you\n", { status: 404 });
  },
});
console.error(`frontend: http://${server.hostname}:${server.port}/hello?name=you (pid ${process.pid})`);

process.once("SIGTERM", async () => {
  await server.stop();
  await mesh.close(2000);
  process.exit(0);
});
