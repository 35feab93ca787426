// A stand-in for a remote sidecar in outbound tests: a grpc-js server for meshtest.Echo whose behaviour
// each test sets, recording what every call carried (metadata, deadline).
import * as grpc from "@grpc/grpc-js";
import { loadSync } from "@grpc/proto-loader";
import { ECHO_PROTO } from "./harness.ts";

export interface SeenCall {
  method: string;
  request: any;
  metadata: Record<string, string>;
  /** Absolute deadline (ms) the call carried, or undefined. */
  deadline: number | undefined;
}

export type UnaryBehaviour = (req: any, n: number, call: grpc.ServerUnaryCall<any, any>, cb: grpc.sendUnaryData<any>) => void;

export class FakeUpstream {
  readonly server = new grpc.Server();
  readonly seen: SeenCall[] = [];
  port = 0;
  /** Answers Unary calls; `n` counts Unary calls from 1. */
  unary: UnaryBehaviour = (req, _n, call, cb) => cb(null, { text: req.text, app: this.name, metadata: this.md(call.metadata) });
  private held: (() => void)[] = [];

  constructor(readonly name: string) {
    const def = loadSync(ECHO_PROTO);
    const pkg = grpc.loadPackageDefinition(def) as unknown as { meshtest: { Echo: { service: grpc.ServiceDefinition } } };
    this.server.addService(pkg.meshtest.Echo.service, {
      Unary: (call: grpc.ServerUnaryCall<any, any>, cb: grpc.sendUnaryData<any>) => {
        this.record("Unary", call);
        this.unary(call.request, this.seen.filter((s) => s.method === "Unary").length, call, cb);
      },
      Bidi: (call: grpc.ServerDuplexStream<any, any>) => {
        this.record("Bidi", call as unknown as { request: any; metadata: grpc.Metadata; getDeadline(): grpc.Deadline });
        call.on("data", (req: any) => call.write({ text: `bidi:${req.text}`, app: this.name }));
        call.on("end", () => call.end());
      },
      ClientStream: (call: grpc.ServerReadableStream<any, any>, cb: grpc.sendUnaryData<any>) => {
        this.record("ClientStream", call as unknown as { request: any; metadata: grpc.Metadata; getDeadline(): grpc.Deadline });
        const texts: string[] = [];
        call.on("data", (req: any) => texts.push(req.text));
        call.on("end", () => cb(null, { text: texts.join("+"), app: this.name }));
      },
      ServerStream: (call: grpc.ServerWritableStream<any, any>) => {
        this.record("ServerStream", call);
        for (let i = 0; i < (call.request.count ?? 1); i++) call.write({ text: `${call.request.text}#${i}`, app: this.name });
        call.end();
      },
    });
  }

  md(m: grpc.Metadata): Record<string, string> {
    const out: Record<string, string> = {};
    for (const [k, v] of Object.entries(m.getMap())) if (typeof v === "string") out[k] = v;
    return out;
  }

  private record(method: string, call: { request: any; metadata: grpc.Metadata; getDeadline(): grpc.Deadline }): void {
    const d = call.getDeadline();
    const ms = d instanceof Date ? d.getTime() : d;
    this.seen.push({ method, request: call.request, metadata: this.md(call.metadata), deadline: Number.isFinite(ms) ? ms : undefined });
  }

  /** A behaviour that never answers until release() (or the call is cancelled). */
  hang(): UnaryBehaviour {
    return (_req, _n, call, cb) => {
      let done = false;
      const finish = () => {
        if (!done) {
          done = true;
          cb(null, { text: "released", app: this.name });
        }
      };
      call.on("cancelled", () => (done = true));
      this.held.push(finish);
    };
  }

  get heldCount(): number {
    return this.held.length;
  }

  release(): void {
    for (const f of this.held.splice(0)) f();
  }

  async start(): Promise<this> {
    this.port = await new Promise<number>((resolve, reject) =>
      this.server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))),
    );
    return this;
  }

  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  stop(): void {
    this.release();
    this.server.forceShutdown();
  }
}

export function fail(code: grpc.status, details = "failing on purpose"): grpc.ServiceError {
  return Object.assign(new Error(details), { code, details, metadata: new grpc.Metadata() }) as grpc.ServiceError;
}
