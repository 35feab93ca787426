// The greeter app: serves hello.Greeter through its sidecar. It knows nothing about gRPC, ports or
// transports — `mesh up` hands it MESH_SOCKET and the SDK does the rest (and reconnects by itself
// if the sidecar restarts).
import { join } from "node:path";
import { connect } from "../../runtime/sdk/index.ts";

const PROTO = join(import.meta.dir, "hello.proto");
// Bounds what a caller can make us do: a reply echoes the name, a stream has at most this many messages.
const MAX_NAME = 256;
const MAX_STREAM = 100;

const cleanName = (name: unknown) => (typeof name === "string" && name ? name.slice(0, MAX_NAME) : "world");

// One readable line instead of a stack trace when the sidecar is not there (mesh up restarts us).
const mesh = await connect().catch((e: Error) => {
  console.error(`greeter: cannot connect to the sidecar: ${e.message}`);
  process.exit(1);
});
mesh.serve(PROTO, "hello.Greeter", {
  SayHello: ({ name }: { name?: string }) => ({ message: `Hello, ${cleanName(name)}!` }),
  async *SayHelloStream({ name, count }: { name?: string; count?: number }) {
    const n = Math.min(count || 3, MAX_STREAM);
    for (let i = 1; i <= n; i++) yield { message: `Hello #${i}, ${cleanName(name)}!` };
  },
});
console.error(`greeter: serving hello.Greeter (pid ${process.pid}, transport ${mesh.transport ?? "connecting"})`);

// SIGTERM from `mesh up`: finish the calls in flight, then leave.
process.once("SIGTERM", async () => {
  await mesh.close(2000);
  process.exit(0);
});
