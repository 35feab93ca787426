// The few libc calls the shm transport needs, bound once through bun:ffi. Every wrapper turns a -1
// return into a NativeError that names the call, its arguments and errno's text, so a failure in
// the field says what went wrong (EPERM on /proc/<pid>/fd, ENOMEM on mmap, ...) instead of "-1".
import { dlopen, FFIType, read, toArrayBuffer, type Pointer } from "bun:ffi";

const SYMBOLS = {
  memfd_create: { args: [FFIType.cstring, FFIType.u32], returns: FFIType.i32 },
  ftruncate: { args: [FFIType.i32, FFIType.i64], returns: FFIType.i32 },
  fchmod: { args: [FFIType.i32, FFIType.u32], returns: FFIType.i32 },
  // fcntl is variadic; on x86-64 and aarch64 passing the third argument as a plain int is the ABI.
  fcntl: { args: [FFIType.i32, FFIType.i32, FFIType.i32], returns: FFIType.i32 },
  open: { args: [FFIType.cstring, FFIType.i32, FFIType.u32], returns: FFIType.i32 },
  close: { args: [FFIType.i32], returns: FFIType.i32 },
  // mmap returns MAP_FAILED ((void*)-1) on error, which does not survive as a JS number: take it as i64.
  mmap: { args: [FFIType.ptr, FFIType.u64, FFIType.i32, FFIType.i32, FFIType.i32, FFIType.i64], returns: FFIType.i64 },
  munmap: { args: [FFIType.ptr, FFIType.u64], returns: FFIType.i32 },
  lseek: { args: [FFIType.i32, FFIType.i64, FFIType.i32], returns: FFIType.i64 },
  getpid: { args: [], returns: FFIType.i32 },
  sched_getcpu: { args: [], returns: FFIType.i32 },
  __errno_location: { args: [], returns: FFIType.ptr },
  strerror: { args: [FFIType.i32], returns: FFIType.cstring },
} as const;

interface Libc {
  symbols: {
    memfd_create(name: Buffer, flags: number): number;
    ftruncate(fd: number, len: number | bigint): number;
    fchmod(fd: number, mode: number): number;
    fcntl(fd: number, cmd: number, arg: number): number;
    open(path: Buffer, flags: number, mode: number): number;
    close(fd: number): number;
    mmap(addr: Pointer | null, len: number, prot: number, flags: number, fd: number, off: number): bigint;
    munmap(addr: Pointer, len: number): number;
    lseek(fd: number, off: number, whence: number): bigint;
    getpid(): number;
    sched_getcpu(): number;
    __errno_location(): Pointer;
    strerror(errno: number): { toString(): string };
  };
}

// Opened on first use, so merely importing the runtime works where glibc is absent (musl, macOS):
// callers ask libcUnavailableReason() first.
let opened: Libc | undefined;
let openError: string | undefined;

function open(): Libc | undefined {
  if (opened || openError) return opened;
  try {
    opened = dlopen("libc.so.6", SYMBOLS as never) as unknown as Libc;
  } catch (e) {
    openError = `cannot load libc.so.6 through bun:ffi (${(e as Error).message}): shared memory needs glibc on Linux`;
  }
  return opened;
}

/** Why the libc calls cannot be made here, or undefined if they can. */
export function libcUnavailableReason(): string | undefined {
  open();
  return openError;
}

const lib = {
  get symbols(): Libc["symbols"] {
    const l = open();
    if (!l) throw new Error(openError);
    return l.symbols;
  },
};

export const O_RDWR = 0o2;
export const O_CLOEXEC = 0o2000000;
export const PROT_READ = 1;
export const PROT_WRITE = 2;
export const MAP_SHARED = 0x01;
export const MAP_PRIVATE = 0x02;
export const MAP_FIXED = 0x10;
export const MAP_ANONYMOUS = 0x20;
export const MFD_CLOEXEC = 1;
export const MFD_ALLOW_SEALING = 2;
export const F_ADD_SEALS = 1033;
export const F_GET_SEALS = 1034;
export const F_SEAL_SEAL = 1;
export const F_SEAL_SHRINK = 2;
export const F_SEAL_GROW = 4;
const SEEK_END = 2;
export const ENOENT = 2;
export const EACCES = 13;
export const EPERM = 1;

/** A libc call failed; `errno` is the raw code, the message names the call and the cause. */
export class NativeError extends Error {
  override name = "NativeError";
  constructor(
    readonly call: string,
    readonly errno: number,
  ) {
    super(`${call} failed: ${errnoText(errno)} (errno ${errno})`);
  }
}

function errno(): number {
  return read.i32(lib.symbols.__errno_location(), 0);
}

export function errnoText(code: number): string {
  return lib.symbols.strerror(code).toString();
}

function cstr(s: string): Buffer {
  return Buffer.from(`${s}\0`, "utf8");
}

function check(ret: number, call: string): number {
  if (ret === -1) throw new NativeError(call, errno());
  return ret;
}

export function memfdCreate(name: string, flags: number): number {
  return check(lib.symbols.memfd_create(cstr(name), flags), `memfd_create(${JSON.stringify(name)})`);
}

export function ftruncate(fd: number, bytes: number): void {
  check(lib.symbols.ftruncate(fd, bytes), `ftruncate(fd ${fd}, ${bytes})`);
}

export function fchmod(fd: number, mode: number): void {
  check(lib.symbols.fchmod(fd, mode), `fchmod(fd ${fd}, 0${mode.toString(8)})`);
}

export function addSeals(fd: number, seals: number): void {
  check(lib.symbols.fcntl(fd, F_ADD_SEALS, seals), `fcntl(fd ${fd}, F_ADD_SEALS, ${seals})`);
}

export function getSeals(fd: number): number {
  return check(lib.symbols.fcntl(fd, F_GET_SEALS, 0), `fcntl(fd ${fd}, F_GET_SEALS)`);
}

export function openFile(path: string, flags: number, mode = 0): number {
  return check(lib.symbols.open(cstr(path), flags | O_CLOEXEC, mode), `open(${JSON.stringify(path)})`);
}

export function closeFd(fd: number): void {
  check(lib.symbols.close(fd), `close(fd ${fd})`);
}

/** The file's size in bytes (lseek to the end: no struct stat layout to get wrong through FFI). */
export function fileSize(fd: number): number {
  const r = lib.symbols.lseek(fd, 0, SEEK_END);
  if (r < 0n) throw new NativeError(`lseek(fd ${fd}, SEEK_END)`, errno());
  return Number(r);
}

/** Maps `bytes` of `fd` shared, read-write. Returns the address. */
export function mmapShared(fd: number, bytes: number): number {
  const r = lib.symbols.mmap(null, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (r === -1n || r === 0n) throw new NativeError(`mmap(fd ${fd}, ${bytes} bytes, MAP_SHARED)`, errno());
  return Number(r);
}

/**
 * Replaces the pages at `addr` with private zero pages, in place. The shared segment is released
 * (so a dead or hostile peer's memory is no longer reachable) while any JS view that somebody still
 * holds keeps reading valid (zeroed) memory instead of faulting: unmapping under a live view
 * segfaults Bun, so the range itself is only munmapped once its ArrayBuffer is collected.
 */
export function detachMapping(addr: number, bytes: number): void {
  const r = lib.symbols.mmap(
    addr as Pointer,
    bytes,
    PROT_READ | PROT_WRITE,
    MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS,
    -1,
    0,
  );
  if (r === -1n) throw new NativeError(`mmap(MAP_FIXED|MAP_ANONYMOUS over 0x${addr.toString(16)}, ${bytes})`, errno());
}

export function munmap(addr: number, bytes: number): void {
  check(lib.symbols.munmap(addr as Pointer, bytes), `munmap(0x${addr.toString(16)}, ${bytes})`);
}

/** An ArrayBuffer over mapped memory. It does not own the memory: see detachMapping. */
export function arrayBufferAt(addr: number, bytes: number): ArrayBuffer {
  return toArrayBuffer(addr as Pointer, 0, bytes);
}

export function getpid(): number {
  return lib.symbols.getpid();
}

/** The CPU this thread runs on now (vDSO: no syscall on x86-64). -1 if unknown. */
export function currentCpu(): number {
  return lib.symbols.sched_getcpu();
}
