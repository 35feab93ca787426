// perf-jit: where does a Bun process's CPU go, with JavaScriptCore's JIT code named.
//
// Made for finding where a sidecar's CPU goes at 1,000 rps. There the JS profile is flat (no
// function above ~1.6 % self), about 40 % is the kernel, and much of the rest is Bun's native runtime
// called from JS: at that rate the code stays cold, and one native call per request (a
// Buffer#toString, a Buffer#write) cost 1-1.5 % of the process each until it was rewritten in JS.
// A plain `perf report` shows JIT code as raw addresses in anonymous memory and bun.exe (stripped)
// as [unknown], so none of that is visible. This script names the JIT frames from JSC's jitdump
// files, classifies the rest (kernel by syscall, runtime under JS, runtime with no JS on the stack,
// other threads), and charges each runtime sample to the JS function that called it.
//
// Recipe:
//   mkdir -p /tmp/pj
//   BUN_JSC_useJITDump=1 BUN_JSC_jitDumpDirectory=/tmp/pj bun <the sidecar> &   # writes jit-*.dump
//   perf record -k 1 -e cpu-clock -F 4000 -g -p <pid> -o f.data -- sleep 20
//   perf script -i f.data -F comm,tid,ip,sym,dso | bun bench/perf-jit.ts /tmp/pj [--top 40]
// Use a fresh dump directory per process: code addresses of different processes collide.
//
// Why not `perf inject --jit`: perf only takes a dump named jit-<pid>.dump, and JSC's names carry
// two numbers (jit-24597-24595.dump), so inject ignores them and the profile stays unnamed. Reading
// the dump here is a few dozen lines and leaves perf.data as it was recorded.
//
// Limits: bun.exe has no symbol table, so native frames are classified, never named. JS that still
// runs in the LLInt (JSC's interpreter) executes inside bun.exe, so cold JS counts as runtime.
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";

export const USAGE =
  "usage: perf script -i f.data -F comm,tid,ip,sym,dso | bun bench/perf-jit.ts <jitdump-dir> [--top 40]";
const RECORD_HINT = "start the Bun process with BUN_JSC_useJITDump=1 BUN_JSC_jitDumpDirectory=<dir>";
const PIPE_HINT = "pipe `perf script -i f.data -F comm,tid,ip,sym,dso` into this script";

// ---------------------------------------------------------------------------------------------
// jitdump

export interface JitEntry {
  name: string;
  addr: number;
  size: number;
  /** Load time (the dump's clock); orders loads that reuse an address range. */
  timestamp: number;
  pid: number;
}

/** A dump whose file header cannot be read; records that do not fit only end parsing early. */
export class JitDumpError extends Error {}

const JITDUMP_MAGIC = 0x4a695444; // "JiTD"
const FILE_HEADER_SIZE = 40;
const RECORD_HEADER_SIZE = 16;
const JIT_CODE_LOAD = 0;
const CODE_LOAD_NAME_OFFSET = RECORD_HEADER_SIZE + 40; // pid, tid, vma, code_addr, code_size, code_index

// Two u32 halves instead of getBigUint64: user-space code addresses are below 2^47, so a double
// holds them exactly, and avoiding BigInt keeps lookups on plain numbers.
function u64(view: DataView, off: number): number {
  return view.getUint32(off, true) + view.getUint32(off + 4, true) * 2 ** 32;
}

const utf8 = new TextDecoder();

/**
 * JIT_CODE_LOAD entries of one jitdump file. A record that does not fit (a file still being written
 * or cut short) ends parsing: the entries before it are returned and onProblem says where it stopped.
 * Throws JitDumpError only when the file header itself is unusable.
 */
export function parseJitDump(bytes: Uint8Array, onProblem: (msg: string) => void = () => {}): JitEntry[] {
  if (bytes.length < FILE_HEADER_SIZE) {
    throw new JitDumpError(`file header needs ${FILE_HEADER_SIZE} bytes, the file has ${bytes.length}`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const magic = view.getUint32(0, true);
  if (magic !== JITDUMP_MAGIC) {
    throw new JitDumpError(
      magic === 0x4454694a
        ? "big-endian jitdump; only little-endian dumps are read"
        : `not a jitdump (magic 0x${magic.toString(16).padStart(8, "0")}, expected 0x${JITDUMP_MAGIC.toString(16)})`,
    );
  }
  const headerSize = view.getUint32(8, true);
  if (headerSize < FILE_HEADER_SIZE || headerSize > bytes.length) {
    throw new JitDumpError(`file header claims ${headerSize} bytes (file has ${bytes.length})`);
  }
  const pid = view.getUint32(20, true);

  const entries: JitEntry[] = [];
  let off = headerSize;
  while (off < bytes.length) {
    const left = bytes.length - off;
    if (left < RECORD_HEADER_SIZE) {
      onProblem(`record header at byte ${off} cut short (${left} of ${RECORD_HEADER_SIZE} bytes)`);
      break;
    }
    const id = view.getUint32(off, true);
    const size = view.getUint32(off + 4, true);
    if (size === 0) break;
    if (size < RECORD_HEADER_SIZE) {
      onProblem(`record at byte ${off} claims ${size} bytes, less than its own header`);
      break;
    }
    if (size > left) {
      onProblem(`record at byte ${off} needs ${size} bytes, ${left} left (file cut short or still being written)`);
      break;
    }
    if (id === JIT_CODE_LOAD) {
      const end = off + size;
      const nameStart = off + CODE_LOAD_NAME_OFFSET;
      const nul = nameStart < end ? bytes.indexOf(0, nameStart) : -1;
      if (nul < 0 || nul >= end) {
        onProblem(`code load at byte ${off} has no NUL-terminated name within its ${size} bytes`);
        break;
      }
      const codeSize = u64(view, off + 40);
      if (codeSize > end - (nul + 1)) {
        onProblem(`code load at byte ${off} claims ${codeSize} code bytes, its record holds ${end - (nul + 1)}`);
        break;
      }
      entries.push({
        name: utf8.decode(bytes.subarray(nameStart, nul)),
        addr: u64(view, off + 32),
        size: codeSize,
        timestamp: u64(view, off + 8),
        pid,
      });
    }
    off += size;
  }
  return entries;
}

/**
 * The JS function a JIT name belongs to, or undefined for stubs (thunks, inline caches). The tier
 * prefix and the #hash go so that Baseline, DFG and FTL code of one function count together; a
 * nameless function keeps its hash, or every callback would pool into one "(anonymous)".
 */
export function jsFunctionName(jitName: string): string | undefined {
  const m = /^(?:JSC-[^:]*: )?(.*)#([A-Za-z0-9]{6})$/.exec(jitName);
  if (!m) return undefined;
  return m[1] ? m[1] : `(anonymous)#${m[2]}`;
}

export interface JitHit {
  entry: JitEntry;
  /** Set for JS functions; undefined for stubs. */
  fn: string | undefined;
}

/**
 * Address -> JIT entry. JSC frees code and reuses its memory, so ranges can overlap; the later load
 * owns the overlap, since in a profile of a warmed-up process the latest code is the code running.
 */
export class JitSymbols {
  readonly loads: number;
  /** Loads that took over some of an earlier load's range. */
  readonly reused: number;
  private readonly starts: Float64Array;
  private readonly ends: Float64Array;
  private readonly hits: JitHit[];

  constructor(entries: readonly JitEntry[]) {
    const live = entries.filter((e) => e.size > 0);
    this.loads = entries.length;
    const bounds = new Float64Array(live.length * 2);
    live.forEach((e, i) => {
      bounds[2 * i] = e.addr;
      bounds[2 * i + 1] = e.addr + e.size;
    });
    bounds.sort();
    let n = 0;
    for (let i = 0; i < bounds.length; i++) if (i === 0 || bounds[i] !== bounds[n - 1]) bounds[n++] = bounds[i]!;
    const edges = bounds.subarray(0, n);
    const segmentOwner = new Int32Array(Math.max(0, n - 1)).fill(-1);

    // Paint elementary segments oldest first so each later load overwrites what it covers.
    const order = live.map((_, i) => i).sort((a, b) => live[a]!.timestamp - live[b]!.timestamp || a - b);
    let reused = 0;
    for (const i of order) {
      const e = live[i]!;
      let took = false;
      for (let s = lowerBound(edges, e.addr); s < n - 1 && edges[s]! < e.addr + e.size; s++) {
        if (segmentOwner[s] !== -1) took = true;
        segmentOwner[s] = i;
      }
      if (took) reused++;
    }
    this.reused = reused;

    const starts: number[] = [];
    const ends: number[] = [];
    const owners: number[] = [];
    for (let s = 0; s < n - 1; s++) {
      const o = segmentOwner[s]!;
      if (o === -1) continue;
      if (owners.length > 0 && owners[owners.length - 1] === o && ends[ends.length - 1] === edges[s]) {
        ends[ends.length - 1] = edges[s + 1]!;
      } else {
        starts.push(edges[s]!);
        ends.push(edges[s + 1]!);
        owners.push(o);
      }
    }
    this.starts = Float64Array.from(starts);
    this.ends = Float64Array.from(ends);
    // One JitHit per entry, shared by its runs, so the name regex runs once per load, not per frame.
    const hitOf = new Map<number, JitHit>();
    this.hits = owners.map((o) => {
      let h = hitOf.get(o);
      if (!h) hitOf.set(o, (h = { entry: live[o]!, fn: jsFunctionName(live[o]!.name) }));
      return h;
    });
  }

  lookup(addr: number): JitHit | undefined {
    let lo = 0;
    let hi = this.starts.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      if (this.starts[mid]! <= addr) lo = mid + 1;
      else hi = mid - 1;
    }
    return hi >= 0 && addr < this.ends[hi]! ? this.hits[hi] : undefined;
  }
}

function lowerBound(a: Float64Array, x: number): number {
  let lo = 0;
  let hi = a.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (a[mid]! < x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

// ---------------------------------------------------------------------------------------------
// perf script

export interface Frame {
  addr: number;
  sym: string;
  dso: string;
}

export interface Sample {
  comm: string;
  tid: number;
  /** Leaf first. */
  frames: Frame[];
}

/** Line-at-a-time parser of `perf script -F comm,tid,ip,sym,dso`, shared by the text and stream readers. */
export class PerfScriptParser {
  /** Indented lines that did not start with a hex address. */
  badLines = 0;
  lines = 0;
  private current: Sample | undefined;

  /** Feeds one line (no newline); returns the sample it completed, if any. */
  line(line: string): Sample | undefined {
    this.lines++;
    if (line.length === 0 || line.trim().length === 0) return this.flush();
    const c = line.charCodeAt(0);
    if (c !== 9 && c !== 32) {
      const done = this.flush();
      this.current = parseHeader(line);
      return done;
    }
    const frame = parseFrame(line);
    if (!frame || !this.current) this.badLines++;
    else this.current.frames.push(frame);
    return undefined;
  }

  end(): Sample | undefined {
    return this.flush();
  }

  private flush(): Sample | undefined {
    const s = this.current;
    this.current = undefined;
    return s;
  }
}

function parseHeader(line: string): Sample {
  // comm can hold spaces ("Bun Pool 0"); the tid is the last token, or pid/tid when -F has both.
  const m = /^(.*?)\s+(?:\d+\/)?(\d+)\s*$/.exec(line);
  return m ? { comm: m[1]!, tid: Number(m[2]), frames: [] } : { comm: line.trim(), tid: -1, frames: [] };
}

function parseFrame(line: string): Frame | undefined {
  const t = line.trim();
  const sp = t.indexOf(" ");
  const hex = sp < 0 ? t : t.slice(0, sp);
  if (!/^[0-9a-fA-F]+$/.test(hex)) return undefined;
  const addr = parseInt(hex, 16);
  if (sp < 0) return { addr, sym: "", dso: "" };
  const rest = t.slice(sp + 1);
  if (!rest.endsWith(")")) return { addr, sym: rest, dso: "" };
  if (rest.startsWith("(")) return { addr, sym: "", dso: rest.slice(1, -1) };
  // The last " (" starts the dso: C++ symbols can contain parentheses, paths rarely contain " (".
  const p = rest.lastIndexOf(" (");
  return p < 0 ? { addr, sym: rest, dso: "" } : { addr, sym: rest.slice(0, p), dso: rest.slice(p + 2, -1) };
}

/** Streams samples so a ~50 MB perf script dump is never held whole, nor split into one array of lines. */
export async function* parsePerfScriptStream(
  stream: ReadableStream<Uint8Array>,
  parser = new PerfScriptParser(),
): AsyncGenerator<Sample> {
  const decoder = new TextDecoder();
  let carry = "";
  for await (const chunk of stream) {
    const text = carry + decoder.decode(chunk, { stream: true });
    let start = 0;
    for (let nl = text.indexOf("\n"); nl >= 0; nl = text.indexOf("\n", start)) {
      const s = parser.line(text.slice(start, nl));
      if (s) yield s;
      start = nl + 1;
    }
    carry = text.slice(start);
  }
  carry += decoder.decode();
  if (carry.length > 0) {
    const s = parser.line(carry);
    if (s) yield s;
  }
  const last = parser.end();
  if (last) yield last;
}

// ---------------------------------------------------------------------------------------------
// summary

export const NO_JS = "(runtime, no JS)";
const KERNEL_START = 0xffff800000000000;

export interface ThreadStats {
  comm: string;
  samples: number;
  kernel: number;
  jit: number;
  runtimeFromJs: number;
  runtimeNoJs: number;
  /** Kernel-leaf samples by syscall name, "page fault" or "other". */
  syscalls: Map<string, number>;
  /** Non-kernel samples by the leaf-most JS function (stubs in brackets, NO_JS when no JIT frame). */
  self: Map<string, number>;
  /** Leaf in anonymous memory that no jitdump entry covers. */
  unresolvedLeaf: number;
}

export interface Summary {
  total: number;
  /** The comm with the most samples. */
  mainComm: string;
  threads: Map<string, ThreadStats>;
  /** JS function -> samples with it anywhere on the stack, every thread, kernel leaves included. */
  inclusive: Map<string, number>;
  noStack: number;
  anonFrames: number;
  anonResolved: number;
}

function isKernel(f: Frame): boolean {
  return f.addr >= KERNEL_START || f.dso.startsWith("[kernel");
}

// Only frames perf could not place in a file are looked up: bun.exe and library frames are printed
// as file offsets, which could land in a JIT range by accident.
function mayBeJit(dso: string): boolean {
  return (
    dso === "" ||
    dso === "[unknown]" ||
    dso.startsWith("//anon") ||
    dso.startsWith("[anon") ||
    dso.startsWith("/memfd:") ||
    (dso.endsWith(".map") && dso.includes("/perf-")) // anonymous executable memory, named after the perf map perf looked for
  );
}

const SYSCALL = /^__(?:x64|ia32|arm64)_sys_(.+)$/;

function bump(m: Map<string, number>, k: string): void {
  m.set(k, (m.get(k) ?? 0) + 1);
}

export class Summarizer {
  private readonly threads = new Map<string, ThreadStats>();
  private readonly inclusive = new Map<string, number>();
  private total = 0;
  private noStack = 0;
  private anonFrames = 0;
  private anonResolved = 0;
  private readonly seen = new Set<string>();

  constructor(private readonly symbols: JitSymbols) {}

  add(s: Sample): void {
    this.total++;
    let st = this.threads.get(s.comm);
    if (!st) {
      st = {
        comm: s.comm,
        samples: 0,
        kernel: 0,
        jit: 0,
        runtimeFromJs: 0,
        runtimeNoJs: 0,
        syscalls: new Map(),
        self: new Map(),
        unresolvedLeaf: 0,
      };
      this.threads.set(s.comm, st);
    }
    st.samples++;
    if (s.frames.length === 0) this.noStack++;

    const leafKernel = s.frames.length > 0 && isKernel(s.frames[0]!);
    let leafJit = false;
    let anyJit = false;
    let selfFn: string | undefined;
    let firstStub: string | undefined;
    let syscall: string | undefined;
    let pageFault = false;
    this.seen.clear();

    for (let i = 0; i < s.frames.length; i++) {
      const f = s.frames[i]!;
      if (isKernel(f)) {
        if (leafKernel && syscall === undefined) {
          const m = SYSCALL.exec(f.sym);
          if (m) syscall = m[1]!;
          else if (f.sym === "asm_exc_page_fault") pageFault = true;
        }
        continue;
      }
      if (!mayBeJit(f.dso)) continue;
      this.anonFrames++;
      // Callers' addresses are return addresses, one past the call; a call that ends its code blob
      // would otherwise resolve to whatever follows it.
      const hit = this.symbols.lookup(i === 0 ? f.addr : f.addr - 1);
      if (!hit) {
        if (i === 0) st.unresolvedLeaf++;
        continue;
      }
      this.anonResolved++;
      anyJit = true;
      if (i === 0) leafJit = true;
      if (hit.fn !== undefined) {
        selfFn ??= hit.fn;
        if (!this.seen.has(hit.fn)) {
          this.seen.add(hit.fn);
          bump(this.inclusive, hit.fn);
        }
      } else {
        firstStub ??= `[${hit.entry.name}]`;
      }
    }

    if (leafKernel) {
      st.kernel++;
      bump(st.syscalls, syscall ?? (pageFault ? "page fault" : "other"));
      return;
    }
    if (leafJit) st.jit++;
    else if (anyJit) st.runtimeFromJs++;
    else st.runtimeNoJs++;
    bump(st.self, selfFn ?? firstStub ?? NO_JS);
  }

  result(): Summary {
    let mainComm = "";
    let most = -1;
    for (const st of this.threads.values()) {
      if (st.samples > most) {
        most = st.samples;
        mainComm = st.comm;
      }
    }
    return {
      total: this.total,
      mainComm,
      threads: this.threads,
      inclusive: this.inclusive,
      noStack: this.noStack,
      anonFrames: this.anonFrames,
      anonResolved: this.anonResolved,
    };
  }
}

export async function summarize(samples: AsyncIterable<Sample>, symbols: JitSymbols): Promise<Summary> {
  const s = new Summarizer(symbols);
  for await (const sample of samples) s.add(sample);
  return s.result();
}

// ---------------------------------------------------------------------------------------------
// report

export function percent(n: number, total: number): string {
  return `${total > 0 ? ((100 * n) / total).toFixed(2) : "0.00"}%`;
}

export const CATEGORY = {
  kernel: "kernel",
  jit: "JIT-compiled JS",
  runtimeFromJs: "runtime called from JS",
  runtimeNoJs: "runtime, no JS on the stack (event loop, GC, timers)",
} as const;

/** The split as label -> samples, main thread's categories first, then one line per other comm. */
export function categorySplit(sum: Summary): Array<[string, number]> {
  const main = sum.threads.get(sum.mainComm);
  const rows: Array<[string, number]> = main
    ? [
        [CATEGORY.kernel, main.kernel],
        [CATEGORY.jit, main.jit],
        [CATEGORY.runtimeFromJs, main.runtimeFromJs],
        [CATEGORY.runtimeNoJs, main.runtimeNoJs],
      ]
    : [];
  const others = [...sum.threads.values()].filter((t) => t.comm !== sum.mainComm).sort((a, b) => b.samples - a.samples);
  for (const t of others) rows.push([`thread ${t.comm}`, t.samples]);
  return rows;
}

function sorted(m: Map<string, number>): Array<[string, number]> {
  return [...m].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1));
}

export function render(sum: Summary, top = 40): string {
  const w = String(sum.total).length;
  const row = (n: number, label: string) => `  ${percent(n, sum.total).padStart(7)}  ${String(n).padStart(w)}  ${label}`;
  const table = (rows: Array<[string, number]>, limit: number, what: string): string[] => {
    const out = rows.slice(0, limit).map(([k, n]) => row(n, k));
    const rest = rows.slice(limit);
    if (rest.length > 0) {
      const n = rest.reduce((a, [, c]) => a + c, 0);
      out.push(row(n, `(${rest.length} more ${what})`));
    }
    if (out.length === 0) out.push("  (none)");
    return out;
  };
  const main = sum.threads.get(sum.mainComm);
  const lines: string[] = [];
  lines.push(`${sum.total} samples; main thread: ${sum.mainComm} (${main?.samples ?? 0} samples, the comm with the most)`);
  lines.push("Percentages are of all samples.");
  lines.push("");
  lines.push("Where the samples went (main thread by category, then other threads)");
  lines.push(...table(categorySplit(sum), Infinity, ""));
  lines.push("");
  lines.push(`Kernel samples by syscall (main thread, ${main?.kernel ?? 0} samples)`);
  lines.push(...table(sorted(main?.syscalls ?? new Map()), top, "syscalls"));
  lines.push("");
  lines.push("Per JS function, self including the runtime it calls (main thread, kernel samples excluded)");
  lines.push(...table(sorted(main?.self ?? new Map()), top, "functions"));
  lines.push("");
  lines.push("Inclusive, JS functions (once per sample wherever on the stack; every thread, kernel included)");
  lines.push(...table(sorted(sum.inclusive), top, "functions"));
  lines.push("");
  lines.push("[name] is JIT stub code (thunk, inline cache) with no JS function above it. JS still in the");
  lines.push("interpreter (LLInt) runs inside bun.exe, so it counts as runtime, not as a JS function.");
  return lines.join("\n");
}

// ---------------------------------------------------------------------------------------------
// CLI

class UsageError extends Error {
  constructor(
    message: string,
    readonly usage = false,
  ) {
    super(message);
  }
}

function parseArgs(argv: string[]): { dir: string; top: number } | "help" {
  let dir: string | undefined;
  let top = 40;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "-h" || a === "--help") return "help";
    if (a === "--top" || a.startsWith("--top=")) {
      const v = a === "--top" ? argv[++i] : a.slice("--top=".length);
      const n = Number(v);
      if (v === undefined || !Number.isInteger(n) || n < 1) throw new UsageError(`--top needs a positive integer, got '${v ?? ""}'`, true);
      top = n;
    } else if (a.startsWith("-")) {
      throw new UsageError(`unknown option '${a}'`, true);
    } else if (dir === undefined) {
      dir = a;
    } else {
      throw new UsageError(`one jitdump directory expected, got '${dir}' and '${a}'`, true);
    }
  }
  if (dir === undefined) throw new UsageError("missing <jitdump-dir>", true);
  return { dir, top };
}

function loadSymbols(dir: string, warn: (msg: string) => void): { symbols: JitSymbols; files: number; pids: number[] } {
  let isDir = false;
  try {
    isDir = statSync(dir).isDirectory();
  } catch {
    throw new UsageError(`jitdump directory ${dir} does not exist: ${RECORD_HINT.replace("<dir>", dir)}`);
  }
  if (!isDir) throw new UsageError(`${dir} is not a directory: pass the directory given as BUN_JSC_jitDumpDirectory`);
  const names = readdirSync(dir)
    .filter((n) => /^jit-.*\.dump$/.test(n))
    .sort();
  if (names.length === 0) throw new UsageError(`no jit-*.dump files in ${dir}: ${RECORD_HINT.replace("<dir>", dir)}`);
  const entries: JitEntry[] = [];
  const pids = new Set<number>();
  for (const n of names) {
    const path = join(dir, n);
    const bytes = readFileSync(path);
    let parsed: JitEntry[];
    try {
      parsed = parseJitDump(bytes, (msg) => warn(`${path}: ${msg}; using the entries before it`));
    } catch (e) {
      if (e instanceof JitDumpError) {
        throw new UsageError(`cannot read ${path}: ${e.message}; remove it or use a fresh dump directory`);
      }
      throw e;
    }
    pids.add(bytes.readUInt32LE(20)); // the header's pid: a valid header was checked above
    for (const e of parsed) entries.push(e);
  }
  return { symbols: new JitSymbols(entries), files: names.length, pids: [...pids].sort((a, b) => a - b) };
}

export async function main(argv: string[]): Promise<number> {
  const warn = (msg: string) => console.error(`perf-jit: ${msg}`);
  try {
    const args = parseArgs(argv);
    if (args === "help") {
      console.log(USAGE);
      return 0;
    }
    const { symbols, files, pids } = loadSymbols(args.dir, warn);
    if (pids.length > 1) {
      warn(`${args.dir} holds dumps of ${pids.length} processes (${pids.join(", ")}); their code addresses can collide, use one directory per process`);
    }
    if (process.stdin.isTTY) throw new UsageError(`stdin is a terminal: ${PIPE_HINT}`);

    const parser = new PerfScriptParser();
    const sum = await summarize(parsePerfScriptStream(Bun.stdin.stream(), parser), symbols);
    if (parser.lines === 0) throw new UsageError(`no input on stdin: ${PIPE_HINT}`);
    if (sum.total === 0) throw new UsageError(`no samples in the input (${parser.lines} lines): ${PIPE_HINT}`);
    if (sum.noStack === sum.total) {
      throw new UsageError(
        `no call stacks in the input (${sum.total} sample headers, no indented frame lines): record with \`perf record -g\` and ${PIPE_HINT}`,
      );
    }
    if (parser.badLines > 0) warn(`${parser.badLines} indented lines were not frames and were skipped`);
    if (sum.anonFrames > 0 && sum.anonResolved < sum.anonFrames / 2) {
      warn(
        `only ${sum.anonResolved} of ${sum.anonFrames} frames in anonymous memory matched the jitdump; ` +
          `were the dumps in ${args.dir} written by the profiled process?`,
      );
    }

    const main = sum.threads.get(sum.mainComm);
    const reused = symbols.reused > 0 ? `; ${symbols.reused} reused an earlier load's address range (the later load names it)` : "";
    console.log(`jitdump: ${symbols.loads} code loads from ${files} file${files === 1 ? "" : "s"} in ${args.dir}${reused}`);
    if (main && main.unresolvedLeaf > 0) {
      console.log(
        `${main.unresolvedLeaf} main-thread samples (${percent(main.unresolvedLeaf, sum.total)}) had a leaf in anonymous memory no dump entry covers; counted as runtime`,
      );
    }
    console.log(render(sum, args.top));
    return 0;
  } catch (e) {
    if (e instanceof UsageError) {
      // One line, so a wrapper script can show it as is.
      warn(e.usage ? `${e.message}; ${USAGE}` : e.message);
      return 2;
    }
    throw e;
  }
}

if (import.meta.main) process.exit(await main(Bun.argv.slice(2)));
