// The receiver shim (receiver-shim.c): compiled with gcc on first use into the user's cache directory
// (keyed by the source's hash), loaded with bun:ffi, and started once per process against the same
// librpal the JS side uses.
import { CString, dlopen, FFIType, ptr, type Pointer } from "bun:ffi";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { compiledPath, compileShared } from "./compile.ts";

const SHIM_SYMBOLS = {
  rms_init: { args: [FFIType.ptr, FFIType.ptr, FFIType.i32], returns: FFIType.i32 },
  rms_session_open: {
    args: [FFIType.i32, FFIType.ptr, FFIType.u64, FFIType.i32, FFIType.u64, FFIType.i32, FFIType.u32, FFIType.u32, FFIType.u32, FFIType.ptr, FFIType.i32],
    returns: FFIType.i32,
  },
  rms_session_state: { args: [FFIType.i32], returns: FFIType.i32 },
  rms_session_error: { args: [FFIType.i32, FFIType.ptr, FFIType.i32], returns: FFIType.i32 },
  rms_session_inbox: { args: [FFIType.i32], returns: FFIType.ptr },
  rms_session_outbox: { args: [FFIType.i32], returns: FFIType.ptr },
  rms_session_data_fd: { args: [FFIType.i32], returns: FFIType.i32 },
  rms_session_take_js_fd: { args: [FFIType.i32], returns: FFIType.i32 },
  rms_session_frames_in: { args: [FFIType.i32], returns: FFIType.f64 },
  rms_session_stalls: { args: [FFIType.i32], returns: FFIType.f64 },
  rms_session_kick: { args: [FFIType.i32], returns: FFIType.void },
  rms_session_close: { args: [FFIType.i32], returns: FFIType.void },
  rms_session_free: { args: [FFIType.i32], returns: FFIType.i32 },
} as const;

/** Session states, as receiver-shim.c numbers them. */
export const SessionState = {
  FREE: 0,
  SETUP: 1,
  SETUP_DONE: 2,
  READY: 3,
  PEER_READY: 4,
  CLOSING: 5,
  CLOSED: 6,
  FAILED: 7,
} as const;

/** Offsets shared with receiver-shim.c. */
export const OUTBOX_CTRL_BYTES = 128;
export const OUTBOX_RELEASED = 0; // Int32Array index: u32 released position (written by the peer)
export const OUTBOX_WANT_CREDIT = 16; // Int32Array index (byte 64): sender waits for space
export const INBOX_CTRL_BYTES = 256;
export const WORDS_MAGIC_HI = 0x52500000;

export type ShimSymbols = ReturnType<typeof dlopen<typeof SHIM_SYMBOLS>>["symbols"];

export interface Shim {
  readonly sym: ShimSymbols;
  open(o: {
    role: "listen" | "connect";
    name: string;
    myKey: bigint;
    myId: number;
    peerKey: bigint;
    peerId: number;
    inboxBytes: number;
    outboxBytes: number;
    maxBody: number;
  }): number;
  error(session: number): string;
  inbox(session: number): Pointer;
  outbox(session: number): Pointer;
}

const SHIM_SOURCE = join(import.meta.dir, "receiver-shim.c");
const SHIM_LIBS = ["-ldl", "-lpthread"];

/** Can the shim be loaded here: already compiled for this source, or gcc on PATH? No side effects. */
export function shimBuildable(): { ok: boolean; detail: string } {
  const so = compiledPath(SHIM_SOURCE, SHIM_LIBS);
  if (existsSync(so)) return { ok: true, detail: `receiver shim compiled at ${so}` };
  const gcc = Bun.which("gcc");
  if (gcc) return { ok: true, detail: `receiver shim will be compiled on first use with ${gcc}` };
  return { ok: false, detail: "gcc not found and the receiver shim is not compiled yet" };
}

let shim: Shim | undefined;
let shimLib: string | undefined;

function cstr(s: string): Buffer {
  return Buffer.from(`${s}\0`);
}

/** Builds (first time), loads and starts the shim's receiver thread against `librpalPath`. */
export function loadShim(librpalPath: string): Shim {
  if (shim) {
    if (shimLib !== librpalPath) throw new Error(`the rpal receiver already runs against ${shimLib}; cannot switch to ${librpalPath}`);
    return shim;
  }
  const so = compileShared(SHIM_SOURCE, SHIM_LIBS);
  const sym = dlopen(so, SHIM_SYMBOLS).symbols;
  const err = Buffer.alloc(256);
  if (sym.rms_init(ptr(cstr(librpalPath)), ptr(err), err.length) !== 0) {
    throw new Error(`cannot start the rpal receiver thread: ${new CString(ptr(err))}`);
  }
  const errText = (buf: Buffer) => new CString(ptr(buf)).toString();
  const loadedShim: Shim = {
    sym,
    open(o) {
      const e = Buffer.alloc(256);
      const s = sym.rms_session_open(
        o.role === "listen" ? 0 : 1,
        ptr(cstr(o.name)),
        o.myKey,
        o.myId,
        o.peerKey,
        o.peerId,
        o.inboxBytes,
        o.outboxBytes,
        o.maxBody,
        ptr(e),
        e.length,
      );
      if (s < 0) throw new Error(`cannot open an rpal session: ${errText(e)}`);
      return s;
    },
    error(session) {
      const e = Buffer.alloc(256);
      sym.rms_session_error(session, ptr(e), e.length);
      return errText(e) || "unknown error";
    },
    inbox(session) {
      const p = sym.rms_session_inbox(session) as Pointer | null;
      if (!p) throw new Error(`rpal session ${session} has no inbox`);
      return p;
    },
    outbox(session) {
      const p = sym.rms_session_outbox(session) as Pointer | null;
      if (!p) throw new Error(`rpal session ${session} has no outbox`);
      return p;
    },
  };
  shim = loadedShim;
  shimLib = librpalPath;
  return loadedShim;
}
