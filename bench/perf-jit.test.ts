import { describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  categorySplit,
  JitDumpError,
  JitSymbols,
  NO_JS,
  parseJitDump,
  parsePerfScriptStream,
  type Sample,
  render,
  summarize,
  type JitEntry,
} from "./perf-jit.ts";

type Rec = { name: string; addr: number; size: number; ts?: number } | { id: number; payload: number };

// A jitdump as JSC writes it: 40-byte header, then records of id, total_size, timestamp, body.
function jitdump(records: Rec[], pid = 4242): Uint8Array {
  const enc = new TextEncoder();
  const parts: Uint8Array[] = [];
  const header = new DataView(new ArrayBuffer(40));
  header.setUint32(0, 0x4a695444, true);
  header.setUint32(4, 1, true);
  header.setUint32(8, 40, true);
  header.setUint32(12, 62, true);
  header.setUint32(20, pid, true);
  parts.push(new Uint8Array(header.buffer));
  records.forEach((r, i) => {
    if ("id" in r) {
      const v = new DataView(new ArrayBuffer(16 + r.payload));
      v.setUint32(0, r.id, true);
      v.setUint32(4, 16 + r.payload, true);
      parts.push(new Uint8Array(v.buffer));
      return;
    }
    const name = enc.encode(r.name);
    const size = 56 + name.length + 1 + r.size;
    const bytes = new Uint8Array(size);
    const v = new DataView(bytes.buffer);
    v.setUint32(0, 0, true);
    v.setUint32(4, size, true);
    v.setBigUint64(8, BigInt(r.ts ?? i + 1), true);
    v.setUint32(16, pid, true);
    v.setUint32(20, pid, true);
    v.setBigUint64(24, BigInt(r.addr), true);
    v.setBigUint64(32, BigInt(r.addr), true);
    v.setBigUint64(40, BigInt(r.size), true);
    v.setBigUint64(48, BigInt(i), true);
    bytes.set(name, 56);
    parts.push(bytes);
  });
  const out = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

const DFG = 0x7f0000001000;
const BASELINE = 0x7f0000002000;
const FOO = 0x7f0000003000;
const IC = 0x7f0000004000;
const RECORDS: Rec[] = [
  { name: "JSC-DFG: handleOutbound#DMANJJ", addr: DFG, size: 0x100 },
  { id: 2, payload: 24 }, // JIT_CODE_MOVE-sized: skipped by its total_size
  { name: "JSC-Baseline: handleOutbound#Xy12Ab", addr: BASELINE, size: 0x100 },
  { name: "JSC-Baseline: foo#Ab12Cd", addr: FOO, size: 0x80 },
  { name: "JSC-InlineCache: get_by_val_slow", addr: IC, size: 0x40 },
];

const hex = (n: number) => n.toString(16);
const jit = (a: number) => `\t    ${hex(a)} [unknown] (/tmp/perf-100.map)`;
const bun = (off: string) => `\t         ${off} [unknown] (/usr/lib/node_modules/bun/bin/bun.exe)`;
const k = (sym: string) => `\t ffffffff813a4413 ${sym} ([kernel.kallsyms])`;
const libc = `\t 2724a __libc_start_call_main (/usr/lib/x86_64-linux-gnu/libc.so.6)`;

// Eight samples, so each is 12.50 % of the total.
const PERF_SCRIPT = [
  // 1. DFG code of handleOutbound, called from itself (counted once in the inclusive list)
  "bun.exe 100 ",
  jit(DFG + 0x10),
  jit(DFG + 0x80),
  bun("1bfcce6"),
  libc,
  "",
  // 2. Baseline code of the same function, called by foo
  "bun.exe 100 ",
  jit(BASELINE + 0x20),
  jit(FOO + 0x30),
  bun("1bfcce6"),
  "",
  // 3. runtime under handleOutbound; the return address is the last byte past its code
  "bun.exe 100",
  bun("1bfcce6"),
  bun("1c00000"),
  jit(DFG + 0x100),
  libc,
  "",
  // 4. runtime with no JS on the stack
  "bun.exe 100 ",
  bun("2000000"),
  libc,
  "",
  // 5. kernel in sendto, called from JS
  "bun.exe 100 ",
  k("tcp_sendmsg"),
  k("__sys_sendto"),
  k("__x64_sys_sendto"),
  k("do_syscall_64"),
  "\t          12e0a5 __send (/usr/lib/x86_64-linux-gnu/libc.so.6)",
  bun("1bfcce6"),
  jit(DFG + 0x40),
  "",
  // 6. page fault
  "bun.exe 100 ",
  k("clear_page_erms"),
  k("handle_mm_fault"),
  k("exc_page_fault"),
  k("asm_exc_page_fault"),
  bun("2000000"),
  "",
  // 7. an inline-cache stub under foo: JIT time, charged to foo
  "bun.exe 100 ",
  jit(IC + 0x8),
  jit(FOO + 0x10),
  "",
  // 8. another thread, whose comm has spaces
  "Bun Pool 0 102 ",
  k("finish_task_switch.isra.0"),
  libc,
  "",
].join("\n");

describe("parseJitDump", () => {
  test("reads code loads and skips records of other ids", () => {
    const bytes = jitdump([RECORDS[0]!, RECORDS[1]!, RECORDS[2]!]);
    const entries = parseJitDump(bytes);
    expect(entries.map((e) => [e.name, e.addr, e.size, e.pid])).toEqual([
      ["JSC-DFG: handleOutbound#DMANJJ", DFG, 0x100, 4242],
      ["JSC-Baseline: handleOutbound#Xy12Ab", BASELINE, 0x100, 4242],
    ]);
  });

  test("a dump cut inside a record yields the entries before the cut and says so", () => {
    const bytes = jitdump(RECORDS);
    const full = parseJitDump(bytes);
    expect(full).toHaveLength(4);
    const lastStart = bytes.length - (56 + "JSC-InlineCache: get_by_val_slow".length + 1 + 0x40);
    for (const cut of [lastStart + 3, lastStart + 20, lastStart + 60, bytes.length - 1]) {
      const problems: string[] = [];
      const entries = parseJitDump(bytes.subarray(0, cut), (m) => problems.push(m));
      expect(entries.map((e) => e.name)).toEqual(full.slice(0, 3).map((e) => e.name));
      expect(problems).toHaveLength(1);
      expect(problems[0]).toContain(`record`);
    }
    // cut exactly between records: nothing wrong, nothing to say
    const problems: string[] = [];
    expect(parseJitDump(bytes.subarray(0, lastStart), (m) => problems.push(m))).toHaveLength(3);
    expect(problems).toEqual([]);
  });

  test("corrupt sizes stop parsing without reading out of bounds", () => {
    const bytes = jitdump(RECORDS).slice();
    const v = new DataView(bytes.buffer);
    const second = 40 + 56 + "JSC-DFG: handleOutbound#DMANJJ".length + 1 + 0x100;
    for (const bad of [8, 0xffffffff]) {
      v.setUint32(second + 4, bad, true);
      const problems: string[] = [];
      expect(parseJitDump(bytes, (m) => problems.push(m)).map((e) => e.name)).toEqual(["JSC-DFG: handleOutbound#DMANJJ"]);
      expect(problems).toHaveLength(1);
    }
    // a code size larger than the record, and a name with no NUL inside the record
    const one = jitdump([RECORDS[0]!]).slice();
    new DataView(one.buffer).setUint32(40 + 40, 0x10000, true);
    expect(parseJitDump(one)).toEqual([]);
    const noNul = jitdump([{ name: "JSC-DFG: x#AAAAAA", addr: DFG, size: 0 }]).slice();
    noNul[noNul.length - 1] = 0x41;
    expect(parseJitDump(noNul)).toEqual([]);
  });

  test("an unusable header is a JitDumpError, not a crash", () => {
    expect(() => parseJitDump(new Uint8Array(10))).toThrow(JitDumpError);
    expect(() => parseJitDump(new Uint8Array(64))).toThrow(/not a jitdump/);
  });
});

describe("JitSymbols", () => {
  const e = (name: string, addr: number, size: number, timestamp: number): JitEntry => ({ name, addr, size, timestamp, pid: 1 });

  test("binary search over sorted ranges, end exclusive", () => {
    const s = new JitSymbols([e("JSC-DFG: b#BBBBBB", 0x2000, 0x10, 1), e("JSC-DFG: a#AAAAAA", 0x1000, 0x10, 2)]);
    expect(s.lookup(0x1000)?.fn).toBe("a");
    expect(s.lookup(0x100f)?.fn).toBe("a");
    expect(s.lookup(0x1010)).toBeUndefined();
    expect(s.lookup(0x2008)?.fn).toBe("b");
    expect(s.lookup(0xfff)).toBeUndefined();
    expect(s.lookup(0x3000)).toBeUndefined();
  });

  test("a later load over reused memory owns the overlap", () => {
    const s = new JitSymbols([e("JSC-DFG: new#BBBBBB", 0x5080, 0x100, 2), e("JSC-DFG: old#AAAAAA", 0x5000, 0x100, 1)]);
    expect(s.lookup(0x5040)?.fn).toBe("old");
    expect(s.lookup(0x50a0)?.fn).toBe("new");
    expect(s.lookup(0x5170)?.fn).toBe("new");
    expect(s.lookup(0x5180)).toBeUndefined();
    expect(s.reused).toBe(1);
  });

  test("stubs have no JS function; nameless functions keep their hash", () => {
    const s = new JitSymbols([e("JSC-Thunk: CallTrampoline", 0x10, 8, 1), e("JSC-FTL: #Q1w2E3", 0x20, 8, 1)]);
    expect(s.lookup(0x10)?.fn).toBeUndefined();
    expect(s.lookup(0x20)?.fn).toBe("(anonymous)#Q1w2E3");
  });
});

/** `text` as the CLI reads stdin, in small chunks so that lines are split across them. */
function chunked(text: string, size = 7): ReadableStream<Uint8Array> {
  const bytes = new TextEncoder().encode(text);
  let at = 0;
  return new ReadableStream({
    pull(c) {
      if (at >= bytes.length) return c.close();
      c.enqueue(bytes.slice(at, (at += size)));
    },
  });
}

async function samplesOf(text: string): Promise<Sample[]> {
  const out: Sample[] = [];
  for await (const s of parsePerfScriptStream(chunked(text))) out.push(s);
  return out;
}

describe("summarize", () => {
  const symbols = new JitSymbols(parseJitDump(jitdump(RECORDS)));

  test("perf script blocks: comm with spaces, tid last, leaf first", async () => {
    const samples = await samplesOf(PERF_SCRIPT);
    expect(samples).toHaveLength(8);
    expect(samples[7]).toMatchObject({ comm: "Bun Pool 0", tid: 102 });
    expect(samples[0]!.frames[0]).toEqual({ addr: DFG + 0x10, sym: "[unknown]", dso: "/tmp/perf-100.map" });
    expect(samples[0]!.frames[3]).toEqual({ addr: 0x2724a, sym: "__libc_start_call_main", dso: "/usr/lib/x86_64-linux-gnu/libc.so.6" });
  });

  test("category split, syscalls, self per function with tiers merged, inclusive once per sample", async () => {
    const sum = await summarize(parsePerfScriptStream(chunked(PERF_SCRIPT)), symbols);
    expect(sum.total).toBe(8);
    expect(sum.mainComm).toBe("bun.exe");
    const pct = (rows: Iterable<[string, number]>) => [...rows].map(([label, n]) => [label, ((100 * n) / sum.total).toFixed(2)]);
    expect(pct(categorySplit(sum))).toEqual([
      ["kernel", "25.00"],
      ["JIT-compiled JS", "37.50"],
      ["runtime called from JS", "12.50"],
      ["runtime, no JS on the stack (event loop, GC, timers)", "12.50"],
      ["thread Bun Pool 0", "12.50"],
    ]);
    const main = sum.threads.get("bun.exe")!;
    expect(Object.fromEntries(main.syscalls)).toEqual({ sendto: 1, "page fault": 1 });
    // samples 1-3 in two tiers of handleOutbound, 7 in an IC stub under foo
    expect(Object.fromEntries(main.self)).toEqual({ handleOutbound: 3, foo: 1, [NO_JS]: 1 });
    expect(Object.fromEntries(sum.inclusive)).toEqual({ handleOutbound: 4, foo: 2 });
    expect(main.unresolvedLeaf).toBe(0);

    const text = render(sum, 40);
    expect(text).toMatch(/^ {3}25\.00% {2}2 {2}kernel$/m);
    expect(text).toMatch(/^ {3}37\.50% {2}3 {2}JIT-compiled JS$/m);
    expect(text).toMatch(/^ {3}12\.50% {2}1 {2}sendto$/m);
    expect(text).toMatch(/^ {3}37\.50% {2}3 {2}handleOutbound$/m);
    expect(text).toMatch(/^ {3}50\.00% {2}4 {2}handleOutbound$/m);
    expect(text).not.toContain("#");
  });

  test("--top cuts the list and sums the rest", async () => {
    const text = render(await summarize(parsePerfScriptStream(chunked(PERF_SCRIPT)), symbols), 1);
    expect(text).toMatch(/^ {3}25\.00% {2}2 {2}\(2 more functions\)$/m); // foo + (runtime, no JS) in the self list
  });
});

describe("CLI", () => {
  const script = join(import.meta.dir, "perf-jit.ts");
  const run = async (args: string[], stdin: string) => {
    const p = Bun.spawn(["bun", script, ...args], { stdin: new TextEncoder().encode(stdin), stdout: "pipe", stderr: "pipe" });
    const [stdout, stderr, exitCode] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
    return { stdout, stderr, exitCode };
  };

  test("a directory with no dumps exits 2 and says how to make them", async () => {
    const dir = mkdtempSync(join(tmpdir(), "perf-jit-"));
    try {
      const r = await run([dir], PERF_SCRIPT);
      expect(r.exitCode).toBe(2);
      expect(r.stdout).toBe("");
      expect(r.stderr.trim()).toBe(
        `perf-jit: no jit-*.dump files in ${dir}: start the Bun process with BUN_JSC_useJITDump=1 BUN_JSC_jitDumpDirectory=${dir}`,
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("dump directory plus piped perf script prints the report; empty input exits 2", async () => {
    const dir = mkdtempSync(join(tmpdir(), "perf-jit-"));
    try {
      writeFileSync(join(dir, "jit-4242-4242.dump"), jitdump(RECORDS));
      const r = await run([dir, "--top", "5"], PERF_SCRIPT);
      expect(r.stderr).toBe("");
      expect(r.exitCode).toBe(0);
      expect(r.stdout).toContain("8 samples; main thread: bun.exe");
      expect(r.stdout).toMatch(/^ {3}37\.50% {2}3 {2}handleOutbound$/m);

      const empty = await run([dir], "");
      expect(empty.exitCode).toBe(2);
      expect(empty.stderr).toContain("no input on stdin");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
