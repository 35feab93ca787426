// Parses `mesh ab` command-line flags into a validated plan. Every mistake becomes an AbUsageError
// naming the flag, what was wrong and what would be accepted, so the CLI can print it and exit 2.
import { parseArgs } from "node:util";

export const KNOWN_TRANSPORTS = ["uds", "shm", "rpal"] as const;
export type TransportName = (typeof KNOWN_TRANSPORTS)[number];

export const DEFAULT_CONFIG = "examples/hello/mesh.yaml";

export class AbUsageError extends Error {
  override name = "AbUsageError";
}

export interface AbOptions {
  configPath: string;
  /** undefined = every transport available on this machine (resolved later, it needs detection). */
  transports: TransportName[] | undefined;
  ratesRps: number[];
  durationMs: number;
  warmupMs: number;
  payloadBytes: number[];
  reps: number;
  outDir: string;
  baseline: TransportName;
  quick: boolean;
  /** Count syscalls per process with strace -c (perturbs the figures; off by default). */
  strace: boolean;
  /** Which pod the load enters: its sidecar's gRPC inbound receives the calls. */
  targetPod: string | undefined;
  /** gRPC method to call ("/pkg.Service/Method"); default: the target's first unary method. */
  method: string | undefined;
  /** Drive HTTP GETs at this URL (an app's own port, from mesh.yaml) instead of gRPC at a sidecar. */
  httpGet: string | undefined;
  /** gRPC client connections the load generator spreads calls over. */
  connections: number;
  /** A run whose errors exceed this fraction of its calls counts as failed. */
  maxErrorRate: number;
  timeoutMs: number;
}

export const USAGE = `usage: mesh ab [mesh.yaml] [flags]

Starts the pods once per transport, drives open-loop gRPC (or HTTP) load at fixed rates and reports
vCPU per 1,000 rps, latency percentiles and the saving of each transport against a baseline.

  --transports LIST   transports to compare, e.g. uds,shm,rpal (default: all available here)
  --rates LIST        request rates in requests/s, e.g. 1000,5000,20000 (default 1000,5000,20000)
  --duration D        measured time per run, e.g. 20s, 1500ms, 1m (default 20s)
  --warmup D          load before each measured window, not counted (default 2s; --quick 1s)
  --payload LIST      request payload sizes in bytes, e.g. 32,1024 (default 32,1024)
  --reps N            repetitions of every transport x rate x payload (default 3)
  --out DIR           where report.json, report.md and report.html go (default ab-report)
  --baseline T        transport the savings are measured against (default uds)
  --target POD        pod whose sidecar's gRPC inbound receives the load (default: the first pod with
                      an inbound, e.g. examples/hello's greeter)
  --method PATH       gRPC method to call, e.g. /hello.Greeter/SayHello (default: the target pod's first
                      unary method); its first string/bytes field carries the payload
  --http-get URL      drive HTTP GETs instead, at an app port from mesh.yaml, {payload} marking where the
                      payload goes: 'http://127.0.0.1:8080/hello?name={payload}' takes examples/hello's
                      full path (frontend app -> sidecar -> greeter sidecar -> greeter app)
  --connections N     gRPC client connections of the load generator (default 4)
  --max-error-rate F  fraction of failed calls above which a run fails (default 0.01)
  --timeout D         deadline of each call (default 5s)
  --strace            count syscalls per process with strace -c (perturbs CPU figures)
  --quick             smoke run: 2 transports, one rate, a few seconds, under a minute
  -h, --help          this text
`;

const DURATION_RE = /^(\d+(?:\.\d+)?)(ms|s|m)?$/;

/** "20s" | "1500ms" | "1m" | "3" (seconds) → milliseconds. */
export function parseDuration(flag: string, text: string): number {
  const m = DURATION_RE.exec(text.trim());
  if (!m) throw new AbUsageError(`${flag} ${JSON.stringify(text)} is not a duration: write e.g. 20s, 1500ms or 1m`);
  const value = Number(m[1]);
  const unit = m[2] ?? "s";
  const ms = unit === "ms" ? value : unit === "s" ? value * 1000 : value * 60_000;
  if (!Number.isFinite(ms) || ms <= 0) throw new AbUsageError(`${flag} must be longer than 0, got ${JSON.stringify(text)}`);
  if (ms > 3_600_000) throw new AbUsageError(`${flag} ${JSON.stringify(text)} is longer than 1h: split the measurement`);
  return Math.round(ms);
}

function parsePositiveInt(flag: string, text: string, max: number): number {
  if (!/^\d+$/.test(text.trim())) throw new AbUsageError(`${flag} expects a whole number, got ${JSON.stringify(text)}`);
  const n = Number(text);
  if (n < 1 || n > max) throw new AbUsageError(`${flag} must be between 1 and ${max}, got ${n}`);
  return n;
}

function parseIntList(flag: string, text: string, min: number, max: number): number[] {
  const parts = text.split(",").map((s) => s.trim());
  if (parts.length === 0 || parts.some((p) => p === "")) {
    throw new AbUsageError(`${flag} expects a comma-separated list of numbers, got ${JSON.stringify(text)}`);
  }
  const values = parts.map((p) => {
    if (!/^\d+$/.test(p)) throw new AbUsageError(`${flag}: ${JSON.stringify(p)} is not a whole number (list: ${text})`);
    const n = Number(p);
    if (n < min || n > max) throw new AbUsageError(`${flag}: ${n} is outside ${min}..${max}`);
    return n;
  });
  if (new Set(values).size !== values.length) throw new AbUsageError(`${flag} lists a value twice: ${text}`);
  return values;
}

function parseTransport(flag: string, text: string): TransportName {
  const t = text.trim();
  if (!(KNOWN_TRANSPORTS as readonly string[]).includes(t)) {
    throw new AbUsageError(`${flag}: unknown transport ${JSON.stringify(t)}; choose from ${KNOWN_TRANSPORTS.join(", ")}`);
  }
  return t as TransportName;
}

export type ParseResult = { kind: "help" } | { kind: "run"; options: AbOptions };

export function parseAbFlags(argv: string[]): ParseResult {
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      strict: true,
      options: {
        transports: { type: "string" },
        rates: { type: "string" },
        duration: { type: "string" },
        warmup: { type: "string" },
        payload: { type: "string" },
        reps: { type: "string" },
        out: { type: "string" },
        baseline: { type: "string" },
        target: { type: "string" },
        method: { type: "string" },
        "http-get": { type: "string" },
        connections: { type: "string" },
        "max-error-rate": { type: "string" },
        timeout: { type: "string" },
        strace: { type: "boolean" },
        quick: { type: "boolean" },
        help: { type: "boolean", short: "h" },
      },
    });
  } catch (e) {
    // parseArgs' messages already name the flag ("Unknown option '--rate'"); add the way out.
    throw new AbUsageError(`${(e as Error).message.replace(/\.?\s*$/, "")}. Run "mesh ab --help" for the flags.`);
  }
  const v = parsed.values as Record<string, string | boolean | undefined>;
  if (v.help) return { kind: "help" };
  if (parsed.positionals.length > 1) {
    throw new AbUsageError(`expected at most one mesh.yaml, got ${parsed.positionals.length}: ${parsed.positionals.join(" ")}`);
  }
  const str = (k: string): string | undefined => v[k] as string | undefined;
  const quick = v.quick === true;

  let transports: TransportName[] | undefined;
  if (str("transports") !== undefined) {
    const list = str("transports")!.split(",").map((s) => s.trim());
    if (list.some((s) => s === "")) throw new AbUsageError(`--transports has an empty entry: ${JSON.stringify(str("transports"))}`);
    transports = list.map((t) => parseTransport("--transports", t));
    if (new Set(transports).size !== transports.length) throw new AbUsageError(`--transports lists a transport twice: ${str("transports")}`);
  }
  const baseline = str("baseline") !== undefined ? parseTransport("--baseline", str("baseline")!) : "uds";
  if (transports && !transports.includes(baseline)) {
    throw new AbUsageError(`--baseline ${baseline} is not among --transports ${transports.join(",")}: add it or pick another baseline`);
  }

  const maxErrorText = str("max-error-rate");
  let maxErrorRate = 0.01;
  if (maxErrorText !== undefined) {
    maxErrorRate = Number(maxErrorText);
    if (!/^\d*\.?\d+$/.test(maxErrorText) || !(maxErrorRate >= 0 && maxErrorRate <= 1)) {
      throw new AbUsageError(`--max-error-rate expects a fraction between 0 and 1, got ${JSON.stringify(maxErrorText)}`);
    }
  }

  const options: AbOptions = {
    configPath: parsed.positionals[0] ?? DEFAULT_CONFIG,
    transports,
    ratesRps: str("rates") !== undefined ? parseIntList("--rates", str("rates")!, 1, 1_000_000) : quick ? [200] : [1000, 5000, 20000],
    durationMs: str("duration") !== undefined ? parseDuration("--duration", str("duration")!) : quick ? 3000 : 20_000,
    warmupMs: str("warmup") !== undefined ? parseDuration("--warmup", str("warmup")!) : quick ? 1000 : 2000,
    payloadBytes: str("payload") !== undefined ? parseIntList("--payload", str("payload")!, 0, 4 * 1024 * 1024 - 16) : quick ? [32] : [32, 1024],
    reps: str("reps") !== undefined ? parsePositiveInt("--reps", str("reps")!, 100) : quick ? 2 : 3,
    outDir: str("out") ?? "ab-report",
    baseline,
    quick,
    strace: v.strace === true,
    targetPod: str("target"),
    method: str("method"),
    httpGet: str("http-get"),
    connections: str("connections") !== undefined ? parsePositiveInt("--connections", str("connections")!, 64) : 4,
    maxErrorRate,
    timeoutMs: str("timeout") !== undefined ? parseDuration("--timeout", str("timeout")!) : 5000,
  };
  if (options.targetPod !== undefined && !/^[a-z0-9-]+$/.test(options.targetPod)) {
    throw new AbUsageError(`--target ${JSON.stringify(options.targetPod)} is not a pod name (lowercase letters, digits, '-')`);
  }
  if (options.method !== undefined && !/^\/[A-Za-z_][\w.]*\/\w+$/.test(options.method)) {
    throw new AbUsageError(`--method ${JSON.stringify(options.method)} is not a gRPC method path: write /package.Service/Method`);
  }
  if (options.httpGet !== undefined) {
    if (options.method !== undefined || options.targetPod !== undefined) {
      throw new AbUsageError("--http-get drives HTTP at an app; it cannot be combined with --method or --target (those pick a gRPC target)");
    }
    let url: URL;
    try {
      url = new URL(options.httpGet.replace("{payload}", "P"));
    } catch {
      throw new AbUsageError(`--http-get ${JSON.stringify(options.httpGet)} is not a URL: write e.g. 'http://127.0.0.1:8080/hello?name={payload}'`);
    }
    if (url.protocol !== "http:" || !url.port) {
      throw new AbUsageError(`--http-get must be an http:// URL with an explicit port from mesh.yaml, got ${JSON.stringify(options.httpGet)}`);
    }
    if (!options.httpGet.includes("{payload}")) {
      throw new AbUsageError(`--http-get needs {payload} where the payload goes, e.g. 'http://127.0.0.1:8080/hello?name={payload}'`);
    }
  }
  if (quick && transports && transports.length > 2) {
    // --quick promises under a minute; more transports would break that promise silently.
    throw new AbUsageError(`--quick compares 2 transports; got ${transports.length} (${transports.join(",")}): drop --quick or list two`);
  }
  return { kind: "run", options };
}
