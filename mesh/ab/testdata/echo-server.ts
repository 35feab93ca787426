// Test fixture: a plain grpc-js server (no mesh) that answers /hello.Greeter/SayHello with the request
// bytes, so the load generator can be tested on its own. Prints {"event":"ready","port":N} on stdout.
import * as grpc from "@grpc/grpc-js";

const server = new grpc.Server();
const passthrough = (b: Buffer): Buffer => b;
server.addService(
  {
    SayHello: {
      path: "/hello.Greeter/SayHello",
      requestStream: false,
      responseStream: false,
      requestSerialize: passthrough,
      requestDeserialize: passthrough,
      responseSerialize: passthrough,
      responseDeserialize: passthrough,
    },
  },
  {
    SayHello: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
      // A request whose first byte is 0xff asks for an error, so tests can count failures.
      if (call.request[0] === 0xff) cb({ code: grpc.status.UNAVAILABLE, details: "asked to fail" });
      else cb(null, call.request);
    },
  },
);
server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, port) => {
  if (err) {
    console.error(err.message);
    process.exit(1);
  }
  console.log(JSON.stringify({ event: "ready", port }));
});
process.on("SIGTERM", () => server.tryShutdown(() => process.exit(0)));
