// The benchmark's baseline: the same Echo.Unary served straight over gRPC (grpc-js), no sidecars.
// Prints {"event":"direct-ready","address":...} once listening.
import * as grpc from "@grpc/grpc-js";
import { loadSync } from "@grpc/proto-loader";
import { ECHO_PROTO } from "./harness.ts";

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
