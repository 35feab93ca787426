// Circuit breaker: at most `maxConcurrent` calls in flight to an upstream service; up to `maxPending`
// more wait in line for a slot; anything beyond fails at once with RESOURCE_EXHAUSTED, which retry
// policies leave alone (retrying into an overloaded upstream is what a breaker exists to stop).
import { RpcError, Status } from "../../runtime/rpc/status.ts";

interface Waiter {
  resolve: () => void;
  reject: (e: Error) => void;
  timer: ReturnType<typeof setTimeout> | undefined;
}

export class CircuitBreaker {
  active = 0;
  private readonly queue: Waiter[] = [];
  /** Calls refused because both the concurrency and the pending limit were reached. */
  rejections = 0;

  constructor(
    readonly service: string,
    readonly maxConcurrent: number,
    readonly maxPending: number,
  ) {}

  get pending(): number {
    return this.queue.length;
  }

  /** True while new calls cannot start at once (they queue or are refused). */
  get open(): boolean {
    return this.active >= this.maxConcurrent;
  }

  /**
   * Takes a slot, waiting in line if needed until `deadline` (Date.now() ms). Rejects with RpcError
   * RESOURCE_EXHAUSTED when the line is full, DEADLINE_EXCEEDED when the deadline passes in line.
   * Every successful acquire must be paired with exactly one release().
   */
  /** Takes a slot if one is free now (true); false leaves the caller to acquire() and wait. */
  tryAcquire(): boolean {
    if (this.active < this.maxConcurrent) {
      this.active++;
      return true;
    }
    return false;
  }

  acquire(deadline: number, signal?: AbortSignal): Promise<void> | undefined {
    if (this.active < this.maxConcurrent) {
      this.active++;
      return undefined; // fast path: no promise, no allocation
    }
    if (this.queue.length >= this.maxPending) {
      this.rejections++;
      return Promise.reject(
        new RpcError(
          Status.RESOURCE_EXHAUSTED,
          `circuit breaker open for upstream ${this.service}: ${this.active} calls in flight (circuit_breaker.max_concurrent ${this.maxConcurrent}) and ${this.queue.length} waiting (max_pending ${this.maxPending}); raise the limits or add capacity`,
        ),
      );
    }
    return new Promise<void>((resolve, reject) => {
      // A waiter leaves the line when its deadline passes or its caller gives up, so an abandoned call
      // never holds a pending place.
      const leave = (e: RpcError) => {
        const i = this.queue.indexOf(w);
        if (i < 0) return;
        this.queue.splice(i, 1);
        if (w.timer) clearTimeout(w.timer);
        signal?.removeEventListener("abort", onAbort);
        reject(e);
      };
      const onAbort = () => leave(new RpcError(Status.CANCELLED, `cancelled while waiting for a free slot to upstream ${this.service}`));
      const w: Waiter = {
        resolve: () => {
          signal?.removeEventListener("abort", onAbort);
          resolve();
        },
        reject,
        timer: undefined,
      };
      if (Number.isFinite(deadline)) {
        w.timer = setTimeout(
          () =>
            leave(
              new RpcError(
                Status.DEADLINE_EXCEEDED,
                `deadline passed while waiting for a free slot to upstream ${this.service} (circuit_breaker.max_concurrent ${this.maxConcurrent})`,
              ),
            ),
          Math.max(0, deadline - Date.now()),
        );
      }
      if (signal?.aborted) return reject(new RpcError(Status.CANCELLED, `cancelled before a slot to upstream ${this.service} was free`));
      signal?.addEventListener("abort", onAbort, { once: true });
      this.queue.push(w);
    });
  }

  release(): void {
    const w = this.queue.shift();
    if (w) {
      // The slot passes straight to the next in line: `active` stays the same.
      if (w.timer) clearTimeout(w.timer);
      w.resolve();
      return;
    }
    if (this.active > 0) this.active--;
  }

  /** Fails everything waiting (drain/shutdown). */
  failPending(reason: string): void {
    for (const w of this.queue.splice(0)) {
      if (w.timer) clearTimeout(w.timer);
      w.reject(new RpcError(Status.UNAVAILABLE, reason));
    }
  }
}
