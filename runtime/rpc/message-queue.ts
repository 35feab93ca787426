// An async queue of messages for one direction of one call. The producer (the channel, on frames
// from the peer) pushes; the consumer (handler or caller) iterates. `onConsumed` reports the bytes the
// consumer took, so the channel can grant the peer more flow-control window only as fast as the
// consumer really reads: a slow consumer stops a fast sender instead of growing memory.

/** Told how many bytes the consumer took (the call object itself: no closure per call). */
export interface ConsumptionListener {
  onConsumed(bytes: number): void;
}

export class MessageQueue implements AsyncIterable<Uint8Array> {
  private items: Uint8Array[] = [];
  private head = 0;
  private done = false;
  private error: Error | undefined;
  private waiter: ((r: IteratorResult<Uint8Array>) => void) | undefined;
  private failWaiter: ((e: Error) => void) | undefined;

  constructor(private readonly listener: ConsumptionListener) {}

  get length(): number {
    return this.items.length - this.head;
  }

  get finished(): boolean {
    return this.done;
  }

  push(message: Uint8Array): void {
    if (this.done) return;
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = this.failWaiter = undefined;
      this.listener.onConsumed(message.byteLength);
      w({ value: message, done: false });
      return;
    }
    this.items.push(message);
  }

  /** No more messages; with `error`, iteration throws it after the queued messages are drained. */
  end(error?: Error): void {
    if (this.done) return;
    this.done = true;
    this.error = error;
    if (this.waiter && this.length === 0) {
      const w = this.waiter;
      const f = this.failWaiter!;
      this.waiter = this.failWaiter = undefined;
      if (error) f(error);
      else w({ value: undefined, done: true });
    }
  }

  /** The next queued message, or undefined if none is queued (never waits). */
  take(): Uint8Array | undefined {
    if (this.length === 0) return undefined;
    const value = this.items[this.head]!;
    this.items[this.head++] = undefined as unknown as Uint8Array;
    if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    this.listener.onConsumed(value.byteLength);
    return value;
  }

  next(): Promise<IteratorResult<Uint8Array>> {
    if (this.length > 0) return Promise.resolve({ value: this.take()!, done: false });
    if (this.done) {
      return this.error ? Promise.reject(this.error) : Promise.resolve({ value: undefined, done: true });
    }
    if (this.waiter) return Promise.reject(new Error("MessageQueue: concurrent next() calls"));
    return new Promise((resolve, reject) => {
      this.waiter = resolve;
      this.failWaiter = reject;
    });
  }

  [Symbol.asyncIterator](): AsyncIterator<Uint8Array> {
    return { next: () => this.next() };
  }
}
