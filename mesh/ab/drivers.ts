// How the load generator makes one call. gRPC: a standard grpc-js client at a sidecar's inbound (the
// same bytes every call, replies never decoded). HTTP: a GET on an app's own HTTP port (examples/hello's
// frontend), which takes the full path frontend app → its sidecar → greeter sidecar → greeter app and so
// crosses the app↔sidecar hop in both directions.
import * as grpc from "@grpc/grpc-js";
import { readFileSync } from "node:fs";

export interface CallDriver {
  ready(timeoutMs: number): Promise<void>;
  /** Starts one call without waiting for it; `done` gets null on success or the failure's name. */
  call(deadlineMs: number, done: (failure: string | null) => void): void;
  close(): void;
}

export interface GrpcTarget {
  kind: "grpc";
  /** host:port of a sidecar's gRPC inbound. */
  target: string;
  /** /pkg.Service/Method */
  method: string;
  requestBase64: string;
  connections: number;
  tls?: { ca: string; cert: string; key: string; serverName?: string };
}

export interface HttpTarget {
  kind: "http";
  url: string;
}

function statusName(code: number): string {
  return (grpc.status as unknown as Record<number, string>)[code] ?? `CODE_${code}`;
}

export function grpcDriver(t: GrpcTarget): CallDriver {
  const request = Buffer.from(t.requestBase64, "base64");
  const serialize = (): Buffer => request;
  const deserialize = (b: Buffer): Buffer => b;
  const creds = t.tls
    ? grpc.credentials.createSsl(readFileSync(t.tls.ca), readFileSync(t.tls.key), readFileSync(t.tls.cert))
    : grpc.credentials.createInsecure();
  const clients: grpc.Client[] = [];
  for (let i = 0; i < t.connections; i++) {
    // A local subchannel pool gives every client its own HTTP/2 connection, like separate callers.
    const options: grpc.ChannelOptions = { "grpc.use_local_subchannel_pool": 1, "grpc.max_receive_message_length": -1 };
    if (t.tls?.serverName) options["grpc.ssl_target_name_override"] = t.tls.serverName;
    clients.push(new grpc.Client(t.target, creds, options));
  }
  const metadata = new grpc.Metadata();
  let next = 0;
  return {
    ready: (timeoutMs) =>
      Promise.all(
        clients.map(
          (c) =>
            new Promise<void>((resolve, reject) =>
              c.waitForReady(Date.now() + timeoutMs, (err) =>
                err ? reject(new Error(`gRPC connection to ${t.target} did not become ready: ${err.message}`)) : resolve(),
              ),
            ),
        ),
      ).then(() => undefined),
    call(deadlineMs, done) {
      const client = clients[next]!;
      next = next + 1 === clients.length ? 0 : next + 1;
      client.makeUnaryRequest(t.method, serialize, deserialize, request, metadata, { deadline: deadlineMs }, (err) =>
        done(err ? statusName(err.code ?? grpc.status.UNKNOWN) : null),
      );
    },
    close() {
      for (const c of clients) c.close();
    },
  };
}

export function httpDriver(t: HttpTarget): CallDriver {
  const url = t.url;
  const call = (deadlineMs: number, done: (failure: string | null) => void): void => {
    fetch(url, { signal: AbortSignal.timeout(Math.max(1, deadlineMs - Date.now())) }).then(
      async (res) => {
        await res.arrayBuffer(); // read the body so the connection goes back to the pool
        done(res.ok ? null : `HTTP_${res.status}`);
      },
      (e: Error) => done(e.name === "TimeoutError" ? "DEADLINE_EXCEEDED" : "CONNECTION_FAILED"),
    );
  };
  return {
    async ready(timeoutMs) {
      const deadline = Date.now() + timeoutMs;
      let last = "";
      while (Date.now() < deadline) {
        const r = await new Promise<string | null>((resolve) => call(Date.now() + 1000, resolve));
        if (r === null) return;
        last = r;
        await Bun.sleep(50);
      }
      throw new Error(`HTTP GET ${url} did not succeed within ${timeoutMs} ms (last: ${last})`);
    },
    call,
    close() {},
  };
}
