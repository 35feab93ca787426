// The librpal v2 API (rpal.h, see shared RPAL.md), bound once through bun:ffi. Only this file names
// librpal's symbols for JS; the receiver shim (receiver-shim.c) resolves the ones its thread needs.
// status_t is 0/-1; int-returning calls that can fail return a negative librpal error code.
import { dlopen, FFIType, ptr } from "bun:ffi";
import { refuseUnallowedTestDouble } from "./double-guard.ts";
import { RpalError } from "./errors.ts";

export const LIBRPAL_SYMBOLS = {
  rpal_init: { args: [FFIType.i32, FFIType.i32, FFIType.ptr], returns: FFIType.i32 },
  rpal_exit: { args: [], returns: FFIType.void },
  rpal_receiver_init: { args: [], returns: FFIType.i32 },
  rpal_receiver_exit: { args: [], returns: FFIType.void },
  rpal_sender_init: { args: [FFIType.ptr], returns: FFIType.i32 },
  rpal_sender_exit: { args: [], returns: FFIType.i32 },
  rpal_get_service_key: { args: [FFIType.ptr], returns: FFIType.i32 },
  rpal_get_service_id: { args: [], returns: FFIType.i32 },
  rpal_request_service: { args: [FFIType.u64], returns: FFIType.i32 },
  rpal_get_request_service_id: { args: [FFIType.u64], returns: FFIType.i32 },
  rpal_release_service: { args: [FFIType.u64], returns: FFIType.i32 },
  rpal_clean_service_start: { args: [FFIType.ptr], returns: FFIType.i32 },
  rpal_clean_service_end: { args: [FFIType.ptr], returns: FFIType.void },
  rpal_uds_fdmap: { args: [FFIType.u64, FFIType.ptr], returns: FFIType.i32 },
  rpal_get_peer_rid: { args: [FFIType.u64], returns: FFIType.i32 },
  rpal_epoll_ctl: { args: [FFIType.i32, FFIType.i32, FFIType.i32, FFIType.ptr], returns: FFIType.i32 },
  rpal_epoll_wait: { args: [FFIType.i32, FFIType.ptr, FFIType.i32, FFIType.i32], returns: FFIType.i32 },
  rpal_epoll_wait_user: { args: [FFIType.i32, FFIType.ptr, FFIType.i32, FFIType.i32], returns: FFIType.i32 },
  rpal_write_ptrs: { args: [FFIType.i32, FFIType.u64, FFIType.ptr, FFIType.i32], returns: FFIType.i32 },
  rpal_read_ptrs: { args: [FFIType.i32, FFIType.ptr, FFIType.i32], returns: FFIType.i32 },
  // rpal_read_access_safety is variadic and takes a C callback: only the receiver shim calls it.
} as const;

export const EPOLLRPALIN = 0x00020000;
export const EPOLLRPALOUT = 0x00040000;
/** rpal_write_ptrs takes 1..32 words (librpal's per-socket queue holds 32). */
export const RPAL_MAX_WORDS = 32;

function open(path: string) {
  return dlopen(path, LIBRPAL_SYMBOLS);
}
export type Librpal = ReturnType<typeof open>["symbols"];

const loaded = new Map<string, Librpal>();

/** Loads librpal from `path` (once per path). Throws if a symbol of the v2 API is missing. */
export function loadLibrpal(path: string): Librpal {
  let lib = loaded.get(path);
  if (!lib) {
    lib = open(path).symbols;
    loaded.set(path, lib);
  }
  return lib;
}

export interface RpalProcess {
  readonly lib: Librpal;
  readonly path: string;
  /** This process's service key (what peers request) and id (what rpal_write_ptrs names). */
  readonly key: bigint;
  readonly id: number;
  /** Registers the calling (JS) thread as an RPAL sender, once. */
  ensureSender(): void;
  /** Maps our end of a connected Unix socket to the peer's end (rpal_uds_fdmap): an opaque 64-bit handle. */
  fdmap(peerId: number, fd: number): bigint;
}

let proc: RpalProcess | undefined;

/**
 * rpal_exit for this process: the service is released (and the double's files removed). For test
 * runners, whose process may not emit "exit"; a later rpalProcess() initialises afresh.
 */
export function exitRpalProcess(): void {
  if (!proc) return;
  proc.lib.rpal_exit();
  proc = undefined;
}

/**
 * rpal_init for this process (once: librpal keeps one service per process) and the service's key/id.
 * A second call with another library path is refused: one process cannot load two librpals.
 */
export function rpalProcess(path: string): RpalProcess {
  if (proc) {
    if (proc.path !== path) throw new Error(`librpal already initialised from ${proc.path}; cannot also use ${path}`);
    return proc;
  }
  refuseUnallowedTestDouble(path);
  const lib = loadLibrpal(path);
  const err = new Int32Array(1);
  const fd = lib.rpal_init(1, 0, ptr(err));
  if (fd < 0) throw new RpalError("rpal_init", err[0] || undefined, `librpal ${path}`);
  const keyBuf = new BigUint64Array(1);
  if (lib.rpal_get_service_key(ptr(keyBuf)) !== 0) throw new RpalError("rpal_get_service_key", undefined);
  const id = lib.rpal_get_service_id();
  if (id < 0) throw new RpalError("rpal_get_service_id", -id);
  // Bun's process.exit skips C atexit handlers: release the service (and the double's files) ourselves.
  process.once("exit", () => lib.rpal_exit());
  let sender = false;
  const out = new BigUint64Array(1);
  proc = {
    lib,
    path,
    key: keyBuf[0]!,
    id,
    ensureSender() {
      if (sender) return;
      const e = new Int32Array(1);
      if (lib.rpal_sender_init(ptr(e)) !== 0) throw new RpalError("rpal_sender_init", e[0] || undefined);
      sender = true;
    },
    fdmap(peerId: number, fd: number): bigint {
      const sidFd = (BigInt(peerId) << 32n) | BigInt(fd);
      if (lib.rpal_uds_fdmap(sidFd, ptr(out)) !== 0) {
        throw new RpalError("rpal_uds_fdmap", undefined, `peer service ${peerId}, socket fd ${fd}: is the peer's receiver registered?`);
      }
      // Kept as the BigInt librpal gave us (it packs fd, receiver id and a stamp): passing the same
      // object to every rpal_write_ptrs costs no allocation.
      return out[0]!;
    },
  };
  return proc;
}
