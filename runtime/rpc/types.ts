// The RPC layer's public shapes. The channel (channel.ts) implements them over any Transport; the SDK
// and the sidecar build on them. Payloads are opaque bytes here: typed encoding lives in the SDK.
import type { Metadata } from "./status.ts";

export interface CallOptions {
  metadata?: Metadata;
  /** Relative timeout in milliseconds. Propagated to the server, enforced on both sides. */
  timeoutMs?: number;
  /** Absolute deadline (Date.now() milliseconds). The earlier of this and timeoutMs wins. */
  deadline?: number;
  /** Aborting cancels the call: a CANCEL frame goes to the server, the client sees CANCELLED. */
  signal?: AbortSignal;
}

export interface CallShape {
  serverStreaming: boolean;
  clientStreaming: boolean;
}

export interface FinalStatus {
  code: number;
  details: string;
  trailers: Metadata;
}

export interface UnaryResult {
  response: Uint8Array;
  headers: Metadata;
  trailers: Metadata;
}

/** Callbacks for a call watched without promises (ClientCall.observe). */
export interface ClientCallObserver {
  /** Response headers as they arrive ({} when the call ends without any). */
  headers?(metadata: Metadata): void;
  /**
   * The call is over. `response` is the last response message not yet read (a unary call's one
   * response) when the status is OK, else undefined.
   */
  end(status: FinalStatus, response: Uint8Array | undefined): void;
  /**
   * True: end()'s `response` may be a view of the transport's receive buffer (a shared-memory ring,
   * a socket buffer), valid only until end() returns, so the channel need not copy the message out of
   * it. Set it only when end() uses the bytes synchronously (the sidecar writes them straight into its
   * HTTP/2 output) and keeps no reference. Copy it (`response.slice()`) to keep it.
   */
  transientResponse?: boolean;
}

/** The client's view of one call. */
export interface ClientCall extends AsyncIterable<Uint8Array> {
  readonly callId: number;
  readonly method: string;
  /** Sends one request message; resolves once flow control lets the caller send the next. */
  write(message: Uint8Array): Promise<void>;
  /** Sends the last request message and half-closes, in one frame. */
  writeLast(message: Uint8Array): Promise<void>;
  /** Half-close: no more request messages. */
  end(): void;
  cancel(reason?: string): void;
  /**
   * Watches a call whose responses are not read otherwise (a unary call, typically) with callbacks
   * instead of the headers/status promises and iteration: for a proxy, one call object and no promise.
   * One observer per call; `end` is called at once if the call is already over.
   */
  observe?(observer: ClientCallObserver): void;
  /** Response headers; resolves with {} if the call ends without any. */
  readonly headers: Promise<Metadata>;
  /** Always resolves, never rejects, once the call is over. */
  readonly status: Promise<FinalStatus>;
  /** Iterating yields response messages and throws RpcError if the call ends with a non-OK status. */
}

/** The server's (handler's) view of one call. */
export interface ServerCall extends AsyncIterable<Uint8Array> {
  readonly callId: number;
  readonly method: string;
  readonly metadata: Metadata;
  /** Absolute deadline in Date.now() milliseconds, if the client set one. */
  readonly deadline: number | undefined;
  /** Aborted when the client cancels, the deadline passes or the connection is lost. */
  readonly signal: AbortSignal;
  /**
   * Why the call was aborted (the reason `signal` carries), once it was; undefined before. Reading it
   * does not make the signal (an AbortController per call costs a proxy at 1,000s of calls/s).
   */
  readonly abortReason?: unknown;
  /**
   * One optional listener called once when the call is aborted, like an "abort" listener on `signal`
   * but without making it: for a proxy that has one thing to cancel per call. Set it to undefined when
   * no longer interested. Not called if the call was aborted before it was set.
   */
  onAbort?: ((reason: unknown) => void) | undefined;
  readonly shape: CallShape;
  sendHeaders(metadata: Metadata): void;
  /** Sends one response message; resolves once flow control lets the handler send the next. */
  write(message: Uint8Array): Promise<void>;
  /** Ends the call with a status (default OK). Later calls are ignored. */
  end(code?: number, details?: string, trailers?: Metadata): void;
  /**
   * The next request message if one has arrived, without waiting (undefined if none has yet);
   * iteration goes on after it. A unary call's request usually arrives with the call itself.
   */
  takeRequest(): Uint8Array | undefined;
  /**
   * True once no request message is left to read: the client half-closed (or the call ended) and
   * every request was taken. Lets a handler that took its one request skip iterating for the end.
   */
  readonly requestsDone?: boolean;
  /**
   * A unary call's answer in one step: sends `message` and ends the call OK (with `trailers`). For a
   * unary call this is write() + end() without a promise; the message is sent before respond returns.
   * A message over the client's limit ends the call RESOURCE_EXHAUSTED instead.
   */
  respond(message: Uint8Array, trailers?: Metadata): void;
  readonly ended: boolean;
  /**
   * The status code the call was ended with by end(), respond() or the channel (a deadline, a message
   * over the limit); undefined while it runs and when the client cancelled it or the connection went.
   */
  readonly endCode?: number;
  /** Iterating yields request messages until the client half-closes. */
}

/**
 * Handles every incoming call on a channel. If it throws or rejects, the call ends with UNKNOWN (or the
 * RpcError's code) and the error's message; if it returns without ending the call, the call ends OK.
 */
export type ServerHandler = (call: ServerCall) => void | Promise<void>;

/** Settings each side announces in HELLO; the channel obeys the peer's. */
export interface ChannelSettings {
  maxMessageBytes: number;
  initialWindowBytes: number;
  maxConcurrentCalls: number;
}

export const DEFAULT_SETTINGS: ChannelSettings = {
  maxMessageBytes: 4 * 1024 * 1024,
  initialWindowBytes: 1024 * 1024,
  maxConcurrentCalls: 1024,
};
