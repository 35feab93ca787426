// Shared pieces of the sidecar's end-to-end tests: write a mesh.yaml, start sidecar and app processes,
// make grpc-js clients for meshtest.Echo, and read /metrics.
import * as grpc from "@grpc/grpc-js";
import { loadSync } from "@grpc/proto-loader";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Spawned, TestResources } from "../../../test/helpers.ts";
import type { ReadyInfo } from "../sidecar.ts";

export const ECHO_PROTO = join(import.meta.dir, "echo.proto");
export const SIDECAR_MAIN = join(import.meta.dir, "..", "main.ts");
export const ECHO_APP = join(import.meta.dir, "echo-app.ts");

/** Writes mesh.yaml (JSON is YAML) with the given pods; app commands are placeholders the tests don't run. */
export function writeMeshYaml(dir: string, pods: { name: string; sidecar: Record<string, unknown> }[]): string {
  const path = join(dir, "mesh.yaml");
  const doc = { version: 1, pods: pods.map((p) => ({ name: p.name, app: { command: "bun", args: [ECHO_APP] }, sidecar: { protos: [ECHO_PROTO], ...p.sidecar } })) };
  writeFileSync(path, JSON.stringify(doc, null, 2));
  return path;
}

export interface RunningSidecar {
  proc: Spawned;
  ready: ReadyInfo;
  admin: string;
  socket: string;
}

export async function startSidecar(
  res: TestResources,
  configPath: string,
  pod: string,
  socket: string,
  env: Record<string, string> = {},
  extraArgs: string[] = [],
  bunFlags: string[] = [],
  /** The program: main.ts, or a bundle of it (mesh/sidecar/bundle.ts). */
  entry = SIDECAR_MAIN,
): Promise<RunningSidecar> {
  const proc = res.spawnBun([...bunFlags, entry, "--config", configPath, "--pod", pod, "--app-socket", socket, ...extraArgs], { env });
  const line = await proc.waitForLine(/"event":"ready"/);
  const ready = JSON.parse(line) as ReadyInfo;
  return { proc, ready, admin: `http://${ready.admin}`, socket };
}

export async function startEchoApp(res: TestResources, socket: string, env: Record<string, string> = {}): Promise<Spawned> {
  const app = res.spawnBun([ECHO_APP], { env: { MESH_SOCKET: socket, ...env } });
  await app.waitForLine(/"event":"app-ready"/);
  return app;
}

type Method = (...args: any[]) => any;
export type EchoClient = grpc.Client & { Unary: Method; ServerStream: Method; ClientStream: Method; Bidi: Method };

export function echoClient(address: string, credentials = grpc.credentials.createInsecure(), options: grpc.ChannelOptions = {}): EchoClient {
  const def = loadSync(ECHO_PROTO);
  const pkg = grpc.loadPackageDefinition(def) as unknown as { meshtest: { Echo: grpc.ServiceClientConstructor } };
  return new pkg.meshtest.Echo(address, credentials, options) as unknown as EchoClient;
}

export interface UnaryOutcome {
  err: grpc.ServiceError | null;
  reply: any;
  headers: grpc.Metadata | undefined;
  trailers: grpc.Metadata | undefined;
}

/** A unary call that resolves with everything the client saw. */
export function callUnary(client: EchoClient, method: "Unary", req: object, md = new grpc.Metadata(), opts: grpc.CallOptions = {}): Promise<UnaryOutcome> {
  return new Promise((resolve) => {
    const out: UnaryOutcome = { err: null, reply: undefined, headers: undefined, trailers: undefined };
    const call = client[method](req, md, opts, (err: grpc.ServiceError | null, reply: unknown) => {
      out.err = err;
      out.reply = reply;
    });
    call.on("metadata", (h: grpc.Metadata) => (out.headers = h));
    call.on("status", (s: grpc.StatusObject) => {
      out.trailers = s.metadata;
      resolve(out);
    });
  });
}

export async function scrape(admin: string): Promise<string> {
  const r = await fetch(`${admin}/metrics`);
  if (!r.ok) throw new Error(`/metrics answered ${r.status}`);
  return await r.text();
}

/** The value of one Prometheus sample whose labels include `labels` (0 if absent). */
export function metric(text: string, name: string, labels: Record<string, string> = {}): number {
  let sum = 0;
  let found = false;
  for (const line of text.split("\n")) {
    if (!line.startsWith(name + "{") && !line.startsWith(name + " ")) continue;
    const m = /^([^{ ]+)(\{(.*)\})? (.+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = Object.fromEntries([...(m[3] ?? "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((x) => [x[1], x[2]]));
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) {
      sum += Number(m[4]);
      found = true;
    }
  }
  return found ? sum : 0;
}
