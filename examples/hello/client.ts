// A plain gRPC client (@grpc/grpc-js, no mesh SDK) calling the greeter pod's sidecar, to show that any
// standard gRPC client can talk to the mesh:  bun examples/hello/client.ts [name] [host:port]
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

const name = process.argv[2] ?? "world";
const target = process.argv[3] ?? "127.0.0.1:50051";
const def = protoLoader.loadSync(join(import.meta.dir, "hello.proto"), { keepCase: true });
const { Greeter } = grpc.loadPackageDefinition(def).hello as unknown as { Greeter: grpc.ServiceClientConstructor };
const client = new Greeter(target, grpc.credentials.createInsecure()) as unknown as grpc.Client & {
  SayHello(req: { name: string }, opts: grpc.CallOptions, cb: (err: grpc.ServiceError | null, reply?: { message: string }) => void): void;
};

client.SayHello({ name }, { deadline: Date.now() + 3000 }, (err, reply) => {
  client.close();
  if (err) {
    console.error(`SayHello failed: ${grpc.status[err.code]}: ${err.details}`);
    process.exit(1);
  }
  console.log(reply!.message);
});
