/* Read from Bun through bun:ffi so the Bun one-way rows use the same clock as the C ones: the
 * TSC, with the same fences. Returned as a double: TSC values stay below 2^53 for years of uptime at
 * a few GHz, and a double return avoids the BigInt a u64 would cost on every call. */
#include <stdint.h>
#include <x86intrin.h>

double bench_tsc(void) {
  _mm_lfence();
  uint64_t t = __rdtsc();
  _mm_lfence();
  return (double)t;
}
