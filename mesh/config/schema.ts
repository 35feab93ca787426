// The mesh.yaml schema. Keys are snake_case and the parsed object mirrors the YAML exactly, with
// defaults filled in, so what a user reads in the file is what the code reads.
//
// Every constraint carries its own message in the form "<what was expected> — <how to fix it>": the
// loader (load.ts) adds the file, line, field path and the offending value around it. Objects are
// strict because a misspelt key silently ignored is the worst config bug there is.
import { z } from "zod";
import { Status } from "../../runtime/rpc/status.ts";

/** Joins what was expected with how to fix it; the loader splits on " — " to insert ", got <value>". */
export function expectFix(expected: string, fix: string): string {
  return `${expected} — ${fix}`;
}

function intIn(min: number, max: number, fix: string, what = "a whole number") {
  const msg = expectFix(`expected ${what} from ${min} to ${max}`, fix);
  return z.number({ error: msg }).int({ error: msg }).min(min, { error: msg }).max(max, { error: msg });
}

function text(expected: string, fix: string) {
  const msg = expectFix(expected, fix);
  return z.string({ error: msg }).min(1, { error: msg });
}

function oneOf<const T extends readonly [string, ...string[]]>(values: T, what: string) {
  const list = values.join(", ");
  return z.enum(values, { error: expectFix(`expected one of ${list}`, `set ${what} to one of ${list}`) });
}

const port = () => intIn(0, 65535, "set it to a free TCP port (0 = pick a free one)", "a number");
const host = () =>
  text("expected a host name or IP address", "use e.g. 127.0.0.1 (loopback) or 0.0.0.0 (all interfaces)").default(
    "127.0.0.1",
  );

/** "host:port" or "[v6]:port", as written in upstream endpoints and dns. */
export const HOST_PORT_RE = /^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$/;
function hostPort(fix: string) {
  const msg = expectFix('expected "host:port" with a port from 1 to 65535', fix);
  return z
    .string({ error: msg })
    .regex(HOST_PORT_RE, { error: msg })
    .refine((s) => {
      const p = Number(s.slice(s.lastIndexOf(":") + 1));
      return p >= 1 && p <= 65535;
    }, { error: msg });
}

export const TRANSPORT_CHOICES = ["auto", "uds", "shm", "rpal"] as const;
export const LB_POLICIES = ["round_robin", "p2c_least_request"] as const;
const STATUS_NAMES = Object.keys(Status).filter((n) => n !== "OK") as [string, ...string[]];

const AppSchema = z.strictObject({
  command: text("expected the program to run", "set command to the executable, e.g. command: bun"),
  args: z
    .array(z.string({ error: expectFix("expected a string", "quote each argument") }), {
      error: expectFix("expected a list of strings", "write args: [file.ts, --flag]"),
    })
    .default([]),
  // Numbers and booleans are accepted and turned into strings because `PORT: 8080` is what people write.
  env: z
    .record(
      z.string(),
      z
        .union([z.string(), z.number(), z.boolean()], {
          error: expectFix("expected a string, number or boolean", "quote the value"),
        })
        .transform(String),
      { error: expectFix("expected a map of NAME: value", "write env: { KEY: value }") },
    )
    .default({}),
  cwd: text("expected a directory", "give a path relative to mesh.yaml, e.g. cwd: .").default("."),
});

const ShmSchema = z.strictObject({
  ring_bytes: intIn(4096, 1 << 30, "use a power of two such as 1048576", "a number")
    .refine((n) => (n & (n - 1)) === 0, {
      error: expectFix("expected a power of two", "use a power of two such as 65536, 1048576 or 4194304"),
    })
    .default(262144), // runtime/transport/shm/provider.ts DEFAULT_RING_BYTES: 256 KiB per direction
  spin: z
    .union([z.enum(["off", "auto"]), z.number().int().min(0).max(1_000_000)], {
      error: expectFix("expected off, auto or microseconds from 0 to 1000000", "write spin: auto"),
    })
    .default("auto"),
});

const InboundSchema = z.strictObject({ host: host(), port: port() });
const AdminSchema = z.strictObject({ host: host(), port: port().default(0) });

const TlsSchema = z.strictObject({
  ca: text("expected a path to a PEM file", "run `bun run mesh certs` and point ca at certs/ca.pem"),
  cert: text("expected a path to a PEM file", "run `bun run mesh certs` and point cert at certs/<pod>.pem"),
  key: text("expected a path to a PEM file", "run `bun run mesh certs` and point key at certs/<pod>-key.pem"),
});

const RetriesSchema = z
  .strictObject({
    max_attempts: intIn(1, 10, "use 1 (no retries) to 10; 3 is common").default(3),
    retry_on: z
      .array(oneOf(STATUS_NAMES, "each entry"), {
        error: expectFix("expected a list of gRPC status names", "write retry_on: [UNAVAILABLE]"),
      })
      .default(["UNAVAILABLE"]),
    base_backoff_ms: intIn(1, 60_000, "use milliseconds, e.g. 25").default(25),
    max_backoff_ms: intIn(1, 600_000, "use milliseconds, e.g. 250").default(250),
    budget_percent: intIn(0, 100, "use a percentage of requests, e.g. 20").default(20),
    min_retries_per_second: intIn(0, 100_000, "use e.g. 10").default(10),
  })
  .refine((r) => r.max_backoff_ms >= r.base_backoff_ms, {
    error: expectFix("max_backoff_ms must be at least base_backoff_ms", "raise max_backoff_ms or lower base_backoff_ms"),
    path: ["max_backoff_ms"],
  });

const CircuitBreakerSchema = z.strictObject({
  max_concurrent: intIn(1, 1_000_000, "use e.g. 1024").default(1024),
  max_pending: intIn(0, 1_000_000, "use e.g. 1024").default(1024),
});

const OutlierSchema = z.strictObject({
  consecutive_failures: intIn(1, 1000, "use e.g. 5").default(5),
  base_ejection_ms: intIn(1, 3_600_000, "use milliseconds, e.g. 30000").default(30000),
  max_ejection_percent: intIn(0, 100, "use a percentage, e.g. 50").default(50),
});

const SERVICE_RE = /^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$/;

const UpstreamSchema = z
  .strictObject({
    service: z
      .string({ error: expectFix("expected a proto service name", "write the full name, e.g. service: hello.Greeter") })
      .regex(SERVICE_RE, {
        error: expectFix("expected a proto service name like package.Service", "write e.g. service: hello.Greeter"),
      }),
    endpoints: z
      .array(hostPort("list the sidecars serving it, e.g. endpoints: [127.0.0.1:50051]"), {
        error: expectFix("expected a list of host:port", "write endpoints: [127.0.0.1:50051]"),
      })
      .min(1, { error: expectFix("expected at least one endpoint", "add one, e.g. endpoints: [127.0.0.1:50051]") })
      .optional(),
    dns: hostPort("write dns: name.namespace.svc.cluster.local:50051").optional(),
    lb: oneOf(LB_POLICIES, "lb").default("round_robin"),
    timeout_ms: intIn(1, 3_600_000, "use milliseconds, e.g. 5000").default(5000),
    retries: RetriesSchema.prefault({}),
    circuit_breaker: CircuitBreakerSchema.prefault({}),
    outlier_detection: OutlierSchema.prefault({}),
  })
  .superRefine((u, ctx) => {
    const n = (u.endpoints ? 1 : 0) + (u.dns ? 1 : 0);
    if (n !== 1) {
      ctx.addIssue({
        code: "custom",
        path: n === 0 ? [] : ["dns"],
        message: expectFix(
          n === 0 ? "expected endpoints or dns" : "expected endpoints or dns, not both",
          n === 0 ? "add endpoints: [host:port] (static) or dns: name:port" : "remove one of them",
        ),
      });
    }
  });

const SidecarSchema = z.strictObject({
  transport: oneOf(TRANSPORT_CHOICES, "transport").default("auto"),
  shm: ShmSchema.prefault({}),
  inbound: InboundSchema.optional(),
  admin: AdminSchema.prefault({}),
  protos: z
    .array(text("expected a path to a .proto file", "give it relative to mesh.yaml"), {
      error: expectFix("expected a list of .proto paths", "write protos: [hello.proto]"),
    })
    .default([]),
  max_message_bytes: intIn(1024, 256 * 1024 * 1024, "use bytes, e.g. 4194304 (4 MiB)", "a number").default(4194304),
  drain_seconds: z
    .number({ error: expectFix("expected seconds from 0 to 300", "write e.g. drain_seconds: 5") })
    .min(0, { error: expectFix("expected seconds from 0 to 300", "write e.g. drain_seconds: 5") })
    .max(300, { error: expectFix("expected seconds from 0 to 300", "write e.g. drain_seconds: 5") })
    .default(5),
  tls: TlsSchema.optional(),
  upstreams: z
    .array(UpstreamSchema, { error: expectFix("expected a list of upstreams", "write upstreams: [{ service: …, endpoints: […] }]") })
    .default([]),
});

export const POD_NAME_RE = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

const PodSchema = z.strictObject({
  name: z
    .string({ error: expectFix("expected a pod name", "add name: my-pod (lowercase letters, digits and -)") })
    .regex(POD_NAME_RE, {
      error: expectFix("expected lowercase letters, digits and - (at most 63, not starting or ending with -)", "rename it, e.g. greeter"),
    }),
  app: AppSchema,
  sidecar: SidecarSchema.prefault({}),
});

export const MeshConfigSchema = z.strictObject(
  {
  version: z.literal(1, { error: expectFix("expected 1", "write version: 1") }).default(1),
  pods: z
    .array(PodSchema, { error: expectFix("expected a list of pods", "write pods: [ { name: …, app: { command: … } } ]") })
    .min(1, { error: expectFix("expected at least one pod", "add a pod under pods:") }),
  },
  { error: expectFix("expected a map with version: 1 and pods:", "start the file with version: 1 and a pods: list") },
);

export type MeshConfig = z.output<typeof MeshConfigSchema>;
export type PodConfig = MeshConfig["pods"][number];
export type AppConfig = PodConfig["app"];
export type SidecarConfig = PodConfig["sidecar"];
export type ShmConfig = SidecarConfig["shm"];
export type ListenConfig = NonNullable<SidecarConfig["inbound"]>;
export type TlsConfig = NonNullable<SidecarConfig["tls"]>;
export type UpstreamConfig = SidecarConfig["upstreams"][number];
export type RetryConfig = UpstreamConfig["retries"];
export type CircuitBreakerConfig = UpstreamConfig["circuit_breaker"];
export type OutlierDetectionConfig = UpstreamConfig["outlier_detection"];
export type TransportSetting = SidecarConfig["transport"];
export type LbPolicy = UpstreamConfig["lb"];
