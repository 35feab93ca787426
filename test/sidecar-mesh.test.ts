// Two sidecars with mTLS between them: this test process is the frontend app (SDK), its sidecar calls the
// backend sidecar over gRPC+mTLS, which hands the call to the echo app process. Certificates come from
// `mesh certs`; a client without a valid certificate is refused; rotated certificates are picked up
// without a restart.
import { afterAll, beforeAll, describe, expect, test, setDefaultTimeout } from "bun:test";
import * as grpc from "@grpc/grpc-js";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { certsMain } from "../mesh/sidecar/certs.ts";
import { connect, type MeshConnection } from "../runtime/sdk/index.ts";
import { TestResources, waitFor } from "./helpers.ts";
import { callUnary, echoClient, ECHO_PROTO, metric, type RunningSidecar, scrape, startEchoApp, startSidecar, writeMeshYaml } from "../mesh/sidecar/testdata/harness.ts";

// Real processes on a shared 2-vCPU machine: room for start-up (the waits inside have their own deadlines).
setDefaultTimeout(60_000);

const res = new TestResources();
let dir: string;
let certs: string;
let back: RunningSidecar;
let front: RunningSidecar;
let app: MeshConnection;
const ENV = { MESH_CERT_REFRESH_MS: "100" };

function tls(pod: string) {
  return { ca: join(certs, "ca.pem"), cert: join(certs, `${pod}.pem`), key: join(certs, `${pod}-key.pem`) };
}

function pods(backAddress: string) {
  return [
    { name: "back", sidecar: { inbound: { host: "127.0.0.1", port: 0 }, tls: tls("back") } },
    {
      name: "front",
      sidecar: {
        tls: tls("front"),
        upstreams: [{ service: "meshtest.Echo", endpoints: [backAddress], retries: { max_attempts: 1 } }],
      },
    },
  ];
}

/** A grpc-js client using the PEM files as they are now (read once: later rotation does not change it). */
function clientWith(files: { ca?: string; cert?: string; key?: string }) {
  const creds = grpc.credentials.createSsl(
    files.ca ? readFileSync(files.ca) : null,
    files.key ? readFileSync(files.key) : null,
    files.cert ? readFileSync(files.cert) : null,
  );
  // A private subchannel pool so every client makes its own TLS handshake.
  return echoClient(back.ready.inbound!, creds, { "grpc.ssl_target_name_override": "localhost", "grpc.use_local_subchannel_pool": 1 });
}

async function quietly<T>(f: () => Promise<T>): Promise<T> {
  const write = process.stdout.write;
  process.stdout.write = (() => true) as typeof process.stdout.write;
  try {
    return await f();
  } finally {
    process.stdout.write = write;
  }
}

beforeAll(async () => {
  dir = res.scratchDir("sidecar-mesh-");
  certs = join(dir, "certs");
  expect(await quietly(() => certsMain(["--dir", certs, "back", "front", "tester"]))).toBe(0);
  const config = writeMeshYaml(dir, pods("127.0.0.1:1"));
  back = await startSidecar(res, config, "back", join(dir, "back", "app.sock"), ENV);
  await startEchoApp(res, back.socket, { ECHO_APP_NAME: "echo-back" });
  writeMeshYaml(dir, pods(back.ready.inbound!));
  front = await startSidecar(res, config, "front", join(dir, "front", "app.sock"), ENV);
  app = await connect({ socketPath: front.socket, reconnect: false });
}, 60_000);

afterAll(async () => {
  await app?.close(100).catch(() => undefined);
  await res.cleanup();
});

describe("two sidecars with mTLS", () => {
  test("app → front sidecar → mTLS → back sidecar → echo app, with metadata and one trace id across hops", async () => {
    const echo = app.client(ECHO_PROTO, "meshtest.Echo");
    const traceId = "0af7651916cd43dd8448eb211c80319c";
    const appSpan = "b7ad6b7169203331";
    const reply = await echo.Unary!({ text: "through" }, { metadata: { "x-user": "ada", traceparent: `00-${traceId}-${appSpan}-01` }, timeoutMs: 5000 });
    expect(reply.text).toBe("through");
    expect(reply.app).toBe("echo-back");
    expect(reply.metadata["x-user"]).toBe("ada");
    const [, seenTrace, seenSpan] = /^00-([0-9a-f]{32})-([0-9a-f]{16})-01$/.exec(reply.metadata.traceparent)!;
    expect(seenTrace).toBe(traceId);
    expect(seenSpan).not.toBe(appSpan);
    expect(Number(reply.deadlineLeftMs)).toBeGreaterThan(0);
    expect(Number(reply.deadlineLeftMs)).toBeLessThanOrEqual(5000);
    expect(metric(await scrape(front.admin), "mesh_requests_total", { direction: "outbound", code: "OK" })).toBe(1);
    expect(metric(await scrape(back.admin), "mesh_requests_total", { direction: "inbound", code: "OK" })).toBe(1);
  });

  test("a client with a certificate from the mesh CA is served; without one, or from another CA, it is refused", async () => {
    const ok = clientWith(tls("tester"));
    expect((await callUnary(ok, "Unary", { text: "mtls" })).reply?.text).toBe("mtls");
    ok.close();

    const noCert = clientWith({ ca: tls("tester").ca });
    const r1 = await callUnary(noCert, "Unary", { text: "x" });
    expect(r1.err?.code).toBe(grpc.status.UNAVAILABLE);
    noCert.close();

    const other = join(dir, "other-ca");
    expect(await quietly(() => certsMain(["--dir", other, "tester"]))).toBe(0);
    const foreign = clientWith({ ca: tls("tester").ca, cert: join(other, "tester.pem"), key: join(other, "tester-key.pem") });
    const r2 = await callUnary(foreign, "Unary", { text: "x" });
    expect(r2.err?.code).toBe(grpc.status.UNAVAILABLE);
    foreign.close();

    const plain = echoClient(back.ready.inbound!, grpc.credentials.createInsecure(), { "grpc.use_local_subchannel_pool": 1 });
    const r3 = await callUnary(plain, "Unary", { text: "x" }, new grpc.Metadata(), { deadline: Date.now() + 2000 });
    expect(r3.err).not.toBeNull();
    plain.close();

    // The refusals did not hurt the sidecar.
    const again = clientWith(tls("tester"));
    expect((await callUnary(again, "Unary", { text: "still" })).reply?.text).toBe("still");
    again.close();
  });

  test("rotation: certificates from a new CA are picked up without a restart; the old ones stop working", async () => {
    const oldFiles = { ca: readFileSync(tls("tester").ca), cert: readFileSync(tls("tester").cert), key: readFileSync(tls("tester").key) };
    expect(await quietly(() => certsMain(["--dir", certs, "--new-ca", "back", "front", "tester"]))).toBe(0);
    const withOld = () =>
      echoClient(back.ready.inbound!, grpc.credentials.createSsl(oldFiles.ca, oldFiles.key, oldFiles.cert), {
        "grpc.ssl_target_name_override": "localhost",
        "grpc.use_local_subchannel_pool": 1,
      });
    await waitFor(
      async () => {
        const c = withOld();
        const r = await callUnary(c, "Unary", { text: "old" }, new grpc.Metadata(), { deadline: Date.now() + 2000 });
        c.close();
        return r.err?.code === grpc.status.UNAVAILABLE;
      },
      { what: "the back sidecar to refuse certificates of the old CA", timeoutMs: 10_000 },
    );
    // The sidecar re-reads CA, certificate and key each refresh; a refresh that lands between `mesh certs`
    // writing them sees a mix, and the next one settles: wait for the new set to be served.
    await waitFor(
      async () => {
        const fresh = clientWith(tls("tester"));
        const r = await callUnary(fresh, "Unary", { text: "new" }, new grpc.Metadata(), { deadline: Date.now() + 2000 });
        fresh.close();
        return r.reply?.text === "new";
      },
      { what: "a client with the new CA's certificate to be served", timeoutMs: 10_000 },
    );
    // Sidecar to sidecar still works (the front picked up the new CA and certificate too).
    const echo = app.client(ECHO_PROTO, "meshtest.Echo");
    const after = await waitFor(() => echo.Unary!({ text: "after rotation" }, { timeoutMs: 2000 }).catch(() => undefined), {
      what: "front → back to work with the rotated certificates",
      timeoutMs: 10_000,
    });
    expect(after.text).toBe("after rotation");
    // The rotated server still asks for a client certificate: without one, still refused.
    const noCert = clientWith({ ca: tls("tester").ca });
    const refused = await callUnary(noCert, "Unary", { text: "x" }, new grpc.Metadata(), { deadline: Date.now() + 2000 });
    noCert.close();
    expect(refused.err?.code).toBe(grpc.status.UNAVAILABLE);
    expect(back.proc.proc.exitCode).toBeNull();
    expect(front.proc.proc.exitCode).toBeNull();
  }, 60_000);
});
