// The RPC floor: the app's and the sidecar's RpcChannel in ONE process, over the bench-only in-memory
// pair (memory-transport.ts), serving the bench's own handler. rpc-client.ts runs its usual jobs on
// `client` (transport "floor"), so the floor rows run the very code the uds/shm rows run per call
// (RpcChannel.unary, the call head codec, the channel's frame dispatch, the echo handler's
// takeRequest/respond) minus the IPC.
//
// The channels get the options the SDK gives them (runtime/sdk: connect() for the app, acceptApps()
// for the sidecar); only the HELLO negotiation over the socket is left out, whose outcome with the
// bench's settings is DEFAULT_SETTINGS on both sides, the channel's default.
import { RpcChannel } from "../../runtime/rpc/channel.ts";
import type { ServerHandler } from "../../runtime/rpc/types.ts";
import { asTransport, type FloorMemoryEnd, floorMemoryPair } from "./memory-transport.ts";

export interface RpcFloor {
  /** The app side: calls go out here. */
  client: RpcChannel;
  /** The sidecar side: serves `handler`. */
  server: RpcChannel;
  ends: { app: FloorMemoryEnd; sidecar: FloorMemoryEnd };
  close(): Promise<void>;
}

export function openRpcFloor(handler: ServerHandler): RpcFloor {
  const [app, sidecar] = floorMemoryPair();
  // As acceptApps: started only after the session's handler is set.
  const server = new RpcChannel(asTransport(sidecar), { initiator: false, peerName: "app bench", deferStart: true });
  server.setHandler(handler);
  server.start();
  // As connect(): the app side is the initiator (odd call ids).
  const client = new RpcChannel(asTransport(app), { initiator: true, peerName: "sidecar" });
  return {
    client,
    server,
    ends: { app, sidecar },
    async close() {
      client.close();
      await Promise.all([client.closed, server.closed]);
    },
  };
}
