// The benchmark's baseline: the same Echo.Unary served straight over gRPC (grpc-js), no sidecars.
// Prints {"event":"direct-ready","address":...} once listening. Also runs under Node.js, bundled by
// bench-nginx.ts (which sets ECHO_PROTO_PATH, since the bundle lives elsewhere): so nothing Bun-only here.
import * as grpc from "@grpc/grpc-js";
import { loadSync } from "@grpc/proto-loader";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const ECHO_PROTO = process.env.ECHO_PROTO_PATH ?? join(dirname(fileURLToPath(import.meta.url)), "echo.proto");
const pkg = grpc.loadPackageDefinition(loadSync(ECHO_PROTO)) as unknown as { meshtest: { Echo: { service: grpc.ServiceDefinition } } };
const server = new grpc.Server();
server.addService(pkg.meshtest.Echo.service, {
  Unary: (call: grpc.ServerUnaryCall<any, any>, cb: grpc.sendUnaryData<any>) => cb(null, { text: call.request.text, app: "direct", padding: call.request.padding }),
});
const port = await new Promise<number>((resolve, reject) =>
  server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))),
);
console.log(JSON.stringify({ event: "direct-ready", address: `127.0.0.1:${port}` }));
process.on("SIGTERM", () => server.tryShutdown(() => process.exit(0)));
