// App-role process for the RPC-over-rpal tests against the librpal TEST DOUBLE. It runs in its own
// process because the double is enabled through the environment (MESH_LIBRPAL +
// MESH_RPAL_ALLOW_TEST_DOUBLE), which must never leak into the test runner's other files.
// Connects with transport rpal to test/fixtures/rpc-peer.ts, runs each check and prints
// "PASS <name>" or "FAIL <name>: <why>", then "DONE".
//   bun test/rpal-double-app.fixture.ts SOCKET
import { connect } from "../runtime/sdk/app.ts";
import { RpcError, Status } from "../runtime/rpc/status.ts";

const socketPath = process.argv[2]!;
const enc = new TextEncoder();
const dec = new TextDecoder();
const u32 = (n: number) => {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n, true);
  return b;
};
function check(cond: unknown, what: string): void {
  if (!cond) throw new Error(what);
}
async function status(p: Promise<unknown>): Promise<RpcError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof RpcError) return e;
    throw e;
  }
  throw new Error("the call succeeded; a failure status was expected");
}

const app = await connect({ socketPath, transport: "rpal", reconnect: false });
const checks: [string, () => Promise<void>][] = [
  ["transport", async () => check(app.transport === "rpal", `transport is ${app.transport}`)],
  [
    "unary 2000 calls 0 B..1 MiB",
    async () => {
      const N = 2000;
      let next = 0;
      let ok = 0;
      const worker = async () => {
        while (next < N) {
          const i = next++;
          const size = i === 0 ? 0 : i === 1 ? 1024 * 1024 : i % 100 === 0 ? (i * 7919) % (1024 * 1024) : (i * 31) % 4096;
          const payload = new Uint8Array(size);
          for (let j = 0; j < size; j += 997) payload[j] = (i + j) & 0xff;
          if (size > 0) payload[size - 1] = i & 0xff;
          const { response } = await app.unary("/test.Echo/Unary", payload);
          check(Buffer.compare(Buffer.from(response), Buffer.from(payload)) === 0, `reply ${i} (${size} B) differs`);
          ok++;
        }
      };
      await Promise.all(Array.from({ length: 16 }, worker));
      check(ok === N, `${ok} of ${N} replies`);
    },
  ],
  [
    "server stream 1000 in order",
    async () => {
      const call = app.currentChannel!.serverStream("/test.Echo/Stream", u32(1000));
      let expected = 0;
      for await (const m of call) {
        check(new DataView(m.buffer, m.byteOffset).getUint32(0, true) === expected, `message ${expected} out of order`);
        expected++;
      }
      check(expected === 1000, `${expected} messages`);
    },
  ],
  [
    "deadline exceeded",
    async () => {
      const e = await status(app.unary("/test.Echo/Slow", new Uint8Array(0), { timeoutMs: 100 }));
      check(e.code === Status.DEADLINE_EXCEEDED, `status ${e.code}`);
    },
  ],
  [
    "handler error keeps the connection",
    async () => {
      const e = await status(app.unary("/test.Echo/Throw", enc.encode("kaput")));
      check(e.code === Status.UNKNOWN && e.details === "boom: kaput", `status ${e.code} ${e.details}`);
      const { response } = await app.unary("/test.Echo/Unary", enc.encode("still here"));
      check(dec.decode(response) === "still here", "echo after error");
    },
  ],
  [
    "4 MiB message at the limit, and over it RESOURCE_EXHAUSTED",
    async () => {
      const max = app.currentChannel!.peerSettings.maxMessageBytes;
      const { response } = await app.unary("/test.Echo/Big", u32(max));
      check(response.byteLength === max, `got ${response.byteLength}`);
      const e = await status(app.unary("/test.Echo/Unary", new Uint8Array(max + 1)));
      check(e.code === Status.RESOURCE_EXHAUSTED, `status ${e.code}`);
    },
  ],
];
for (const [name, fn] of checks) {
  try {
    await fn();
    console.log(`PASS ${name}`);
  } catch (e) {
    console.log(`FAIL ${name}: ${(e as Error).message}`);
  }
}
const stats = (app.currentChannel as unknown as { transport?: { stats?: unknown } })?.transport?.stats;
if (stats) console.log(`STATS ${JSON.stringify(stats)}`);
await app.close(100).catch(() => undefined);
console.log("DONE");
process.exit(0);
