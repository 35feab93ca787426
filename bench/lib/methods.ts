// The methods the bench server answers. Payloads are raw bytes: the bench measures the RPC layer and
// the transport, not a protobuf codec.
export const ECHO = "/bench.Bench/Echo";
/** Like Echo, and the server records rdtsc(now) − the TSC the client put in the first 8 bytes. */
export const ONE_WAY = "/bench.Bench/OneWay";
/** Returns the server's one-way cycle statistics as JSON and resets them. */
export const ONE_WAY_STATS = "/bench.Bench/OneWayStats";
/** Transport-level one-way rows (echo-messages.ts): the `aux` of a timed frame, and of a statistics request. */
export const MESSAGE_SAMPLE = 0;
export const MESSAGE_STATS = 1;
