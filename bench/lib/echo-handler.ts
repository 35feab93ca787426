// The bench server's handler: echoes 32-byte unary calls and, for one-way rows, records the TSC cycles
// from the client's send to the moment the handler receives the request. Served by the bench server
// process (bench/servers/echo-sidecar.ts) and, in-process, by the RPC floor rows (rpc-client.ts with
// transport "floor"), so both measure the very same handler.
import type { ServerCall, ServerHandler } from "../../runtime/rpc/types.ts";
import { ECHO, ONE_WAY, ONE_WAY_STATS } from "./methods.ts";
import { cycleStats } from "./tsc.ts";

const MAX_SAMPLES = 2_000_000;
const NO_MESSAGE = new Uint8Array(0);

/** `tsc`: the TSC read (lib/tsc.ts openTsc), for the one-way samples. */
export function echoHandler(tsc: () => number): ServerHandler {
  const samples = new Float64Array(MAX_SAMPLES);
  let count = 0;
  const tscView = new DataView(new ArrayBuffer(8));

  /** The request: usually it came with the call (takeRequest), else the first message to arrive. */
  async function request(call: ServerCall): Promise<Uint8Array | undefined> {
    const taken = call.takeRequest();
    if (taken !== undefined) return taken;
    const first = await call[Symbol.asyncIterator]().next();
    return first.done ? undefined : first.value;
  }

  return async function handle(call: ServerCall): Promise<void> {
    const first = call.takeRequest() ?? (await request(call));
    if (call.method === ONE_WAY && first !== undefined) {
      const now = tsc();
      const req = first;
      if (req.byteLength >= 8 && count < MAX_SAMPLES) {
        // The request view may be unaligned: copy the 8 bytes out instead of a Float64Array view.
        for (let i = 0; i < 8; i++) tscView.setUint8(i, req[i] ?? 0);
        samples[count++] = now - tscView.getFloat64(0, true);
      }
    }
    if (call.method === ONE_WAY_STATS) {
      const stats = cycleStats(samples, count);
      count = 0;
      await call.write(new TextEncoder().encode(JSON.stringify(stats)));
    } else if (call.method === ECHO || call.method === ONE_WAY) {
      // As the SDK's unary handler answers: the response and the OK status in one step.
      call.respond(first ?? NO_MESSAGE);
    } else {
      call.end(12, `bench server has no method ${call.method}`);
    }
  };
}
