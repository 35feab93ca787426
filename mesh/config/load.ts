// Loads mesh.yaml: YAML syntax → schema (schema.ts) → cross-field checks → relative paths resolved
// against the file's directory. Every failure is a ConfigError whose message is one line a user can
// act on: "<file>:<line>: <field path>: <what is wrong>, got <value> — <how to fix it>".
import { readFileSync, statSync } from "node:fs";
import { dirname, isAbsolute, relative, resolve } from "node:path";
import { LineCounter, parseDocument, isMap, isPair, isScalar, type Document, type Node } from "yaml";
import type { z } from "zod";
import { MeshConfigSchema, type MeshConfig, type PodConfig } from "./schema.ts";

/** mesh.yaml files are small; refusing big ones keeps a wrong path (a log file, a binary) from hanging us. */
const MAX_CONFIG_BYTES = 1024 * 1024;

export class ConfigError extends Error {
  override name = "ConfigError";
  constructor(
    message: string,
    readonly file: string,
    readonly line?: number,
    readonly field?: string,
  ) {
    super(message);
  }
}

type PathSeg = string | number;

/** `pods[0].sidecar.inbound.port` */
export function formatPath(path: readonly PathSeg[]): string {
  let s = "";
  for (const seg of path) s += typeof seg === "number" ? `[${seg}]` : s ? `.${seg}` : seg;
  return s || "(top level)";
}

function displayName(file: string): string {
  const rel = relative(process.cwd(), file);
  return rel && !rel.startsWith("..") && !isAbsolute(rel) ? rel : file;
}

/** Renders a value the way a user would recognise it from their file, kept short. */
function show(value: unknown): string {
  if (value === undefined) return "nothing";
  if (value === null) return "null (empty)";
  if (Array.isArray(value)) return "a list";
  if (typeof value === "object") return "a map";
  const s = JSON.stringify(value);
  return s.length > 60 ? `${s.slice(0, 57)}…` : s;
}

function valueAt(data: unknown, path: readonly PathSeg[]): unknown {
  let v: unknown = data;
  for (const seg of path) {
    if (v === null || typeof v !== "object") return undefined;
    v = (v as Record<string | number, unknown>)[seg];
  }
  return v;
}

class Locator {
  constructor(
    private doc: Document,
    private lines: LineCounter,
  ) {}

  private lineOf(offset: number | undefined): number | undefined {
    return offset === undefined ? undefined : this.lines.linePos(offset).line;
  }

  /** Line of the node at `path`, or of its nearest ancestor that exists (for a missing field). */
  line(path: readonly PathSeg[]): number | undefined {
    for (let n = path.length; n >= 0; n--) {
      const node = n === 0 ? this.doc.contents : (this.doc.getIn(path.slice(0, n), true) as Node | undefined);
      if (node && typeof node === "object" && "range" in node && node.range) {
        // A missing field is reported at its parent map's line; for the document root that is line 1.
        return this.lineOf(node.range[0]);
      }
    }
    return undefined;
  }

  /** Line of the key `key` inside the map at `path` (for unknown fields). */
  keyLine(path: readonly PathSeg[], key: string): number | undefined {
    const map = path.length === 0 ? this.doc.contents : this.doc.getIn(path, true);
    if (isMap(map)) {
      for (const item of map.items) {
        if (isPair(item) && isScalar(item.key) && String(item.key.value) === key && item.key.range) {
          return this.lineOf(item.key.range[0]);
        }
      }
    }
    return this.line(path);
  }
}

/** The keys a strict object in the schema allows at `path`, for "did you mean" hints. */
function allowedKeys(path: readonly PathSeg[]): string[] {
  // Zod 4 keeps the schema tree in `def`; wrappers (optional, default, pipe…) are unwrapped on the way.
  type Def = { type: string; shape?: Record<string, { def: Def }>; innerType?: { def: Def }; element?: { def: Def }; in?: { def: Def } };
  const unwrap = (d: Def): Def => {
    for (;;) {
      const next = d.innerType ?? d.in;
      if (!next || d.type === "object" || d.type === "array") return d;
      d = next.def;
    }
  };
  let def = unwrap((MeshConfigSchema as unknown as { def: Def }).def);
  for (const seg of path) {
    if (def.type === "array" && typeof seg === "number" && def.element) def = unwrap(def.element.def);
    else if (def.type === "object" && typeof seg === "string" && def.shape?.[seg]) def = unwrap(def.shape[seg].def);
    else return [];
  }
  return def.type === "object" && def.shape ? Object.keys(def.shape) : [];
}

function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const cur = row[j]!;
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = cur;
    }
  }
  return row[b.length]!;
}

function unknownKeyFix(key: string, allowed: string[]): string {
  const close = allowed
    .map((k) => ({ k, d: editDistance(key.toLowerCase(), k) }))
    .filter(({ d }) => d <= Math.max(2, Math.floor(key.length / 3)))
    .sort((x, y) => x.d - y.d)[0];
  if (close) return `did you mean ${close.k}?`;
  return allowed.length ? `remove it; allowed here: ${allowed.join(", ")}` : "remove it";
}

function issueToError(issue: z.core.$ZodIssue, data: unknown, where: Locator, file: string): ConfigError {
  const name = displayName(file);
  const path = issue.path.filter((p): p is PathSeg => typeof p === "string" || typeof p === "number");
  if (issue.code === "unrecognized_keys") {
    const key = issue.keys[0] ?? "?";
    const line = where.keyLine(path, key);
    const field = formatPath([...path, key]);
    return new ConfigError(
      `${name}:${line ?? "?"}: ${field}: unknown field — ${unknownKeyFix(key, allowedKeys(path))}`,
      file,
      line,
      field,
    );
  }
  const value = valueAt(data, path);
  const line = where.line(path);
  const field = formatPath(path);
  const [expected, fix] = splitMessage(issue.message);
  // A required field that is absent: say "missing" rather than "expected …, got nothing".
  const what =
    value === undefined && issue.code === "invalid_type"
      ? "missing"
      : issue.code === "custom" && typeof value === "object"
        ? expected // a rule about the whole map: its value says nothing useful
        : `${expected}, got ${show(value)}`;
  return new ConfigError(`${name}:${line ?? "?"}: ${field}: ${what}${fix ? ` — ${fix}` : ""}`, file, line, field);
}

function splitMessage(message: string): [string, string | undefined] {
  const i = message.indexOf(" — ");
  return i < 0 ? [message, undefined] : [message.slice(0, i), message.slice(i + 3)];
}

/** Checks that span pods: names and ports must be unique across the whole file. */
function crossChecks(config: MeshConfig, where: Locator, file: string): void {
  const name = displayName(file);
  const fail = (path: PathSeg[], msg: string): never => {
    const line = where.line(path);
    throw new ConfigError(`${name}:${line ?? "?"}: ${formatPath(path)}: ${msg}`, file, line, formatPath(path));
  };
  const podByName = new Map<string, number>();
  config.pods.forEach((pod, i) => {
    const first = podByName.get(pod.name);
    if (first !== undefined) fail(["pods", i, "name"], `duplicate pod name "${pod.name}" (also pods[${first}]) — give every pod its own name`);
    podByName.set(pod.name, i);
  });
  // Two listeners on one port cannot both bind, whatever the host; port 0 means "any free one".
  const portUse = new Map<number, string>();
  config.pods.forEach((pod, i) => {
    for (const kind of ["inbound", "admin"] as const) {
      const listen = pod.sidecar[kind];
      if (!listen || listen.port === 0) continue;
      const path: PathSeg[] = ["pods", i, "sidecar", kind, "port"];
      const other = portUse.get(listen.port);
      if (other) fail(path, `port ${listen.port} is already used by ${other} — pick another port`);
      portUse.set(listen.port, formatPath(path));
    }
  });
}

function resolvePaths(config: MeshConfig, dir: string): void {
  const abs = (p: string) => resolve(dir, p);
  for (const pod of config.pods as PodConfig[]) {
    pod.app.cwd = abs(pod.app.cwd);
    pod.sidecar.protos = pod.sidecar.protos.map(abs);
    const tls = pod.sidecar.tls;
    if (tls) {
      tls.ca = abs(tls.ca);
      tls.cert = abs(tls.cert);
      tls.key = abs(tls.key);
    }
  }
}

/** Parses mesh.yaml text. `file` is used in messages and to resolve relative paths. */
export function parseConfig(text: string, file: string): MeshConfig {
  const absFile = resolve(file);
  const name = displayName(absFile);
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: true });
  const syntax = doc.errors[0];
  if (syntax) {
    const line = lines.linePos(syntax.pos[0]).line;
    const msg = syntax.message.split("\n")[0];
    throw new ConfigError(`${name}:${line ?? "?"}: YAML syntax error: ${msg} — fix the YAML at that line`, absFile, line);
  }
  let data: unknown;
  try {
    data = doc.toJS({ maxAliasCount: 100 });
  } catch (e) {
    // yaml refuses alias expansion beyond maxAliasCount (a "billion laughs" file); say so plainly.
    throw new ConfigError(`${name}: cannot expand the YAML: ${(e as Error).message} — write the values out instead of nesting aliases`, absFile);
  }
  if (data === null || data === undefined) {
    throw new ConfigError(`${name}:1: the file is empty — start it with "version: 1" and a pods: list`, absFile, 1);
  }
  const where = new Locator(doc, lines);
  const parsed = MeshConfigSchema.safeParse(data);
  if (!parsed.success) {
    // Report the issue that comes first in the file, so fixing errors top to bottom works.
    const errors = parsed.error.issues.map((issue) => issueToError(issue, data, where, absFile));
    errors.sort((a, b) => (a.line ?? 1e9) - (b.line ?? 1e9));
    throw errors[0]!;
  }
  const config = parsed.data;
  crossChecks(config, where, absFile);
  resolvePaths(config, dirname(absFile));
  return config;
}

/** Reads and validates a mesh.yaml; throws ConfigError with file, line, field and fix. */
export function loadConfig(path: string): MeshConfig {
  const abs = resolve(path);
  let text: string;
  try {
    const st = statSync(abs);
    if (!st.isFile()) throw new ConfigError(`${displayName(abs)}: not a regular file — pass the path of a mesh.yaml`, abs);
    if (st.size > MAX_CONFIG_BYTES) {
      throw new ConfigError(`${displayName(abs)}: ${st.size} bytes is too big for a mesh.yaml (limit 1 MiB) — check the path`, abs);
    }
    text = readFileSync(abs, "utf8");
  } catch (e) {
    if (e instanceof ConfigError) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    const why = code === "ENOENT" ? "no such file" : code === "EACCES" ? "permission denied" : String((e as Error).message);
    throw new ConfigError(`${displayName(abs)}: cannot read mesh.yaml: ${why} — check the path`, abs);
  }
  return parseConfig(text, abs);
}

/** The pod named `name`, or a ConfigError listing the pods that exist. */
export function findPod(config: MeshConfig, name: string, file = "mesh.yaml"): PodConfig {
  const pod = config.pods.find((p) => p.name === name);
  if (!pod) {
    throw new ConfigError(
      `${displayName(file)}: no pod named "${name}" — pods in this file: ${config.pods.map((p) => p.name).join(", ")}`,
      file,
    );
  }
  return pod;
}

/**
 * "<file>:<line>: <field>" for a field of an already loaded file, so checks done after loading
 * (ports in use, commands not found) point at the same place a schema error would.
 */
export function fieldLocation(file: string, path: readonly PathSeg[]): string {
  let line: number | undefined;
  try {
    const lines = new LineCounter();
    const doc = parseDocument(readFileSync(file, "utf8"), { lineCounter: lines });
    line = new Locator(doc, lines).line(path);
  } catch {
    // The file changed or vanished since it was loaded: fall back to no line number.
  }
  return `${displayName(file)}:${line ?? "?"}: ${formatPath(path)}`;
}
