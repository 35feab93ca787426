// `grpc-status-details-bin` (the rich error model: a serialized google.rpc.Status) travels end to end
// like any binary trailer: app B fails with it → sidecar B → sidecar A → app A, which passes the error
// on → sidecar A → a @grpc/grpc-js client, which sees the same bytes in error.metadata. Real sidecar
// processes on loopback; this test process is both apps (one SDK connection to each sidecar).
import { afterAll, beforeAll, expect, setDefaultTimeout, test } from "bun:test";
import * as grpc from "@grpc/grpc-js";
import { join } from "node:path";
import { connect, type MeshConnection, RpcError, Status } from "../../../runtime/sdk/index.ts";
import { TestResources } from "../../../test/helpers.ts";
import { callUnary, echoClient, ECHO_PROTO, type RunningSidecar, startSidecar, writeMeshYaml } from "../testdata/harness.ts";

setDefaultTimeout(60_000);

// A google.rpc.Status as bytes (code 9, message "rich", one Any) — opaque to the mesh, so any bytes
// would do; these include 0x00 and 0xff so base64 round trips are checked too.
const DETAILS = new Uint8Array([0x08, 0x09, 0x12, 0x04, 0x72, 0x69, 0x63, 0x68, 0x1a, 0x06, 0x0a, 0x02, 0x00, 0xff, 0x12, 0x00]);

const res = new TestResources();
let a: RunningSidecar;
let b: RunningSidecar;
let appA: MeshConnection;
let appB: MeshConnection;
/** What app A saw of B's error (trailers), for the check of the middle hop. */
let seenByA: Record<string, string | Uint8Array> | undefined;

function pods(bAddress: string) {
  return [
    { name: "b", sidecar: { inbound: { host: "127.0.0.1", port: 0 } } },
    {
      name: "a",
      sidecar: {
        inbound: { host: "127.0.0.1", port: 0 },
        upstreams: [{ service: "meshtest.Echo", endpoints: [bAddress], retries: { max_attempts: 1 } }],
      },
    },
  ];
}

beforeAll(async () => {
  const dir = res.scratchDir("status-details-");
  const config = writeMeshYaml(dir, pods("127.0.0.1:1"));
  b = await startSidecar(res, config, "b", join(dir, "b", "app.sock"));
  appB = await connect({ socketPath: b.socket, reconnect: false });
  appB.serve(ECHO_PROTO, "meshtest.Echo", {
    async Unary() {
      throw new RpcError(Status.FAILED_PRECONDITION, "rich error from b", { "grpc-status-details-bin": DETAILS, "x-other-bin": DETAILS });
    },
    async *ServerStream() {},
  });
  writeMeshYaml(dir, pods(b.ready.inbound!));
  a = await startSidecar(res, config, "a", join(dir, "a", "app.sock"));
  appA = await connect({ socketPath: a.socket, reconnect: false });
  const toB = appA.client(ECHO_PROTO, "meshtest.Echo");
  appA.serve(ECHO_PROTO, "meshtest.Echo", {
    async Unary(req: object) {
      try {
        return await toB.Unary!(req);
      } catch (e) {
        if (!(e instanceof RpcError)) throw e;
        seenByA = e.trailers;
        throw new RpcError(e.code, e.details, e.trailers); // passed on as it came
      }
    },
    async *ServerStream() {},
  });
});

afterAll(async () => {
  await appA?.close(100).catch(() => undefined);
  await appB?.close(100).catch(() => undefined);
  await res.cleanup();
});

test("grpc-status-details-bin: app B → sidecar B → sidecar A → app A → sidecar A → grpc-js client, bytes intact", async () => {
  const client = echoClient(a.ready.inbound!);
  try {
    const r = await callUnary(client, "Unary", { text: "x" }, new grpc.Metadata(), { deadline: Date.now() + 20_000 });
    expect(r.err?.code).toBe(grpc.status.FAILED_PRECONDITION);
    expect(r.err?.details).toBe("rich error from b");
    // The middle hop: app A got it from sidecar A's outbound call.
    expect(Buffer.from(seenByA?.["grpc-status-details-bin"] as Uint8Array)).toEqual(Buffer.from(DETAILS));
    // The end: grpc-js hands it to the client in the error's metadata (and grpc-js's own status parsing
    // leaves it there for libraries such as @grpc/grpc-js's richer-error helpers).
    const got = r.err!.metadata.get("grpc-status-details-bin");
    expect(got.length).toBe(1);
    expect(Buffer.from(got[0] as Buffer)).toEqual(Buffer.from(DETAILS));
    expect(Buffer.from(r.err!.metadata.get("x-other-bin")[0] as Buffer)).toEqual(Buffer.from(DETAILS));
  } finally {
    client.close();
  }
});
