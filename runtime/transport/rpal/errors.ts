// librpal's error codes (rpal_error_code_t in rpal.h) turned into sentences a user can act on, and the
// error type every rpal failure is reported with. Kernel codes are 0–10, library codes start at 101;
// rpal_write_ptrs and friends return the negated code.

const KERNEL_ERRORS: Record<number, string> = {
  0: "no error",
  1: "bad argument passed to the RPAL kernel interface",
  2: "no such RPAL service (the peer's key is unknown or the peer exited)",
  3: "the service is already mapped",
  4: "the kernel asked to retry",
  5: "the service is in the wrong state for this request (not enabled, or being released)",
  6: "this thread is in the wrong state (not registered as sender/receiver, or already registered)",
  7: "an RPAL limit was reached (at most 254 services per machine, 16 protection keys)",
  8: "the kernel is out of memory for RPAL",
  9: "no RPAL mapping for that address",
  10: "invalid value",
};

// Library codes follow RPAL_ERR_KERNEL_MAX_CODE (100) in declaration order.
const LIBRARY_ERRORS: readonly string[] = [
  "cannot open /proc/rpal (kernel without RPAL, or this executable lacks the RPAL ELF mark)",
  "RPAL is disabled on this machine (/proc/rpal_enabled)",
  "cannot read the RPAL kernel API version and capabilities",
  "the kernel's RPAL API version is not supported by this librpal",
  "the hardware does not support RPAL (needs PKU and FSGSBASE)",
  "cannot get this process's RPAL service key",
  "sender metadata already initialised or not allocatable",
  "cannot enable the RPAL service",
  "cannot map the sender pages from /proc/rpal",
  "librpal was not initialised (rpal_init was not called or failed)",
  "cannot initialise this thread as an RPAL sender (more than 256 senders?)",
  "the kernel refused to register this thread as an RPAL sender",
  "invalid argument",
  "the receiver's ready list is full",
  "the peer's socket mapping is outdated (the peer closed and reused the fd): redo rpal_uds_fdmap",
  "the peer's queue is full",
  "the peer's memory is gone (the peer process died during the call)",
  "cannot notify the receiver",
  "invalid thread (this thread is not an RPAL sender)",
  "invalid service (the peer was not requested or was released)",
];

export const RPAL_ERR_KERNEL_MAX_CODE = 100;
export const RPAL_QUEUE_PUT_FAILED = 116;
export const RPAL_CACHE_FULL = 114;

export function rpalErrorText(code: number): string {
  const c = Math.abs(code);
  if (c <= 10) return KERNEL_ERRORS[c]!;
  if (c > RPAL_ERR_KERNEL_MAX_CODE) {
    const text = LIBRARY_ERRORS[c - RPAL_ERR_KERNEL_MAX_CODE - 1];
    if (text) return text;
  }
  return `unknown librpal error code ${code}`;
}

/** A librpal call failed. `code` is the librpal error code (positive), when the call reported one. */
export class RpalError extends Error {
  override name = "RpalError";
  constructor(
    readonly call: string,
    readonly code: number | undefined,
    detail?: string,
  ) {
    super(
      `${call} failed${code !== undefined ? ` (librpal error ${code}: ${rpalErrorText(code)})` : ""}${detail ? `: ${detail}` : ""}`,
    );
  }
}
