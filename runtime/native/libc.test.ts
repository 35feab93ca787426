import { describe, expect, test } from "bun:test";
import {
  arrayBufferAt,
  closeFd,
  detachMapping,
  ENOENT,
  F_SEAL_GROW,
  F_SEAL_SEAL,
  F_SEAL_SHRINK,
  addSeals,
  fileSize,
  ftruncate,
  getpid,
  getSeals,
  libcUnavailableReason,
  memfdCreate,
  MFD_ALLOW_SEALING,
  MFD_CLOEXEC,
  mmapShared,
  NativeError,
  O_RDWR,
  openFile,
} from "./libc.ts";

describe("libc through bun:ffi", () => {
  test("loads here", () => {
    expect(libcUnavailableReason()).toBeUndefined();
    expect(getpid()).toBe(process.pid);
  });

  test("a failing call throws NativeError naming the call, errno's text and number", () => {
    try {
      openFile("/nonexistent/rpal-mesh", O_RDWR);
      throw new Error("open succeeded");
    } catch (e) {
      expect(e).toBeInstanceOf(NativeError);
      expect((e as NativeError).errno).toBe(ENOENT);
      expect((e as Error).message).toBe('open("/nonexistent/rpal-mesh") failed: No such file or directory (errno 2)');
    }
  });

  test("a sealed memfd cannot be resized; two mappings share bytes; a detached mapping reads zeros", () => {
    const fd = memfdCreate("rpal-mesh-libc-test", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    try {
      ftruncate(fd, 8192);
      addSeals(fd, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
      expect(getSeals(fd) & (F_SEAL_SHRINK | F_SEAL_GROW)).toBe(F_SEAL_SHRINK | F_SEAL_GROW);
      expect(() => ftruncate(fd, 4096)).toThrow(/^ftruncate\(fd \d+, 4096\) failed: Operation not permitted/);
      expect(fileSize(fd)).toBe(8192);
      const a = mmapShared(fd, 8192);
      const b = mmapShared(fd, 8192);
      const va = new Int32Array(arrayBufferAt(a, 8192));
      const vb = new Int32Array(arrayBufferAt(b, 8192));
      Atomics.store(va, 100, 42);
      expect(Atomics.load(vb, 100)).toBe(42);
      detachMapping(a, 8192);
      expect(va[100]).toBe(0); // still readable, no fault: the view outlived the shared pages
      expect(Atomics.load(vb, 100)).toBe(42);
      detachMapping(b, 8192);
    } finally {
      closeFd(fd);
    }
  });
});
