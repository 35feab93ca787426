/* Shared by the C reference programs: TSC reads, TSC calibration, latency statistics, CPU time
 * from getrusage, and one JSON line of output. The reference programs are what the Bun figures are
 * divided by, so they must be measured the same way: 32-byte messages, two processes, the CPU time
 * of both, median and p99 of per-message samples. */
#ifndef RPAL_MESH_BENCH_COMMON_H
#define RPAL_MESH_BENCH_COMMON_H

#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <time.h>
#include <sched.h>
#include <unistd.h>
#include <x86intrin.h>

#define MSG_BYTES 32

static inline uint64_t tsc_now(void) {
  /* lfence keeps rdtsc from being hoisted above the loads/stores it is meant to follow. */
  _mm_lfence();
  uint64_t t = __rdtsc();
  _mm_lfence();
  return t;
}

static inline double mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC_RAW, &ts);
  return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* TSC ticks per second, calibrated against CLOCK_MONOTONIC_RAW over 50 ms (constant_tsc machines). */
static double tsc_hz(void) {
  double t0 = mono_ns();
  uint64_t c0 = tsc_now();
  struct timespec nap = {0, 50 * 1000 * 1000};
  nanosleep(&nap, NULL);
  double t1 = mono_ns();
  uint64_t c1 = tsc_now();
  return (double)(c1 - c0) * 1e9 / (t1 - t0);
}

static void die(const char *what) {
  fprintf(stderr, "bench reference: %s: %s\n", what, strerror(errno));
  exit(1);
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

/* Sorts in place and returns the sample at quantile q (nearest rank). */
static uint64_t quantile(uint64_t *v, long n, double q) {
  long i = (long)(q * (double)n);
  if (i >= n) i = n - 1;
  return v[i];
}

static double tv_us(struct timeval tv) { return (double)tv.tv_sec * 1e6 + (double)tv.tv_usec; }

static double rusage_cpu_us(const struct rusage *r) { return tv_us(r->ru_utime) + tv_us(r->ru_stime); }

static long parse_count(const char *s, const char *name) {
  char *end = NULL;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno != 0 || end == s || *end != '\0' || v < 1 || v > 100000000) {
    fprintf(stderr, "bench reference: %s must be an integer from 1 to 100000000, got '%s'\n", name, s);
    exit(2);
  }
  return v;
}

static void write_all(int fd, const char *buf, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, buf, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      die("write");
    }
    buf += w;
    n -= (size_t)w;
  }
}

/* Returns 0 at end of stream (peer closed), 1 when `n` bytes were read. */
static int read_all(int fd, char *buf, size_t n) {
  while (n > 0) {
    ssize_t r = read(fd, buf, n);
    if (r == 0) return 0;
    if (r < 0) {
      if (errno == EINTR) continue;
      die("read");
    }
    buf += r;
    n -= (size_t)r;
  }
  return 1;
}

/* Placement: BENCH_CPUS="C,S" pins the client to CPU C and the server to CPU S (run.ts sets it; a
 * bare run leaves both to the scheduler). Blocking transports are pinned together and spinning ones
 * apart, because unpinned on 2 vCPUs the figures jump between two modes depending on where the
 * scheduler put the processes. */
static void pin_from_env(int is_server) {
  const char *spec = getenv("BENCH_CPUS");
  if (!spec || !*spec) return;
  int client = -1, server = -1;
  if (sscanf(spec, "%d,%d", &client, &server) != 2 || client < 0 || server < 0 || client >= CPU_SETSIZE ||
      server >= CPU_SETSIZE) {
    fprintf(stderr, "bench reference: BENCH_CPUS must be 'CLIENT_CPU,SERVER_CPU' (e.g. 0,1), got '%s'\n", spec);
    exit(2);
  }
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(is_server ? server : client, &set);
  if (sched_setaffinity(0, sizeof set, &set) < 0) die("sched_setaffinity (BENCH_CPUS names a CPU this machine lacks?)");
}

#endif
