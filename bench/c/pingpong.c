/* C reference: 32-byte ping-pong round trips between two processes, the floor each Bun transport is
 * compared with. Modes:
 *   uds       blocking read/write on a connected AF_UNIX stream socket pair
 *   pipe      blocking read/write on two pipes
 *   shm-spin  a shared mapping with one request and one reply slot; both sides busy-poll (burns two cores)
 * Usage: pingpong MODE ITERATIONS
 * Prints one JSON object: latency quantiles, calls/s and CPU time (getrusage) of BOTH processes. */
#include "common.h"

#include <signal.h>
#include <stdalign.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define WARMUP 2000

/* The echo process's own CPU time over the measured messages only (it also lives through the
 * warm-up and, for shm-spin, may spin while the client is not yet running). */
struct server_report {
  struct rusage at_first_measured;
  struct rusage at_end;
};
static struct server_report *report;

static void server_mark(long received) {
  if (received == WARMUP + 1) getrusage(RUSAGE_SELF, &report->at_first_measured);
}

struct spin_slots {
  alignas(64) uint64_t req_seq;
  char req[MSG_BYTES];
  alignas(64) uint64_t resp_seq;
  char resp[MSG_BYTES];
};

static void fd_echo_server(int in, int out) {
  char buf[MSG_BYTES];
  long received = 0;
  while (read_all(in, buf, MSG_BYTES)) {
    server_mark(++received);
    write_all(out, buf, MSG_BYTES);
  }
  getrusage(RUSAGE_SELF, &report->at_end);
  _exit(0);
}

static void spin_echo_server(struct spin_slots *s) {
  uint64_t seen = 0;
  for (;;) {
    uint64_t seq;
    while ((seq = __atomic_load_n(&s->req_seq, __ATOMIC_ACQUIRE)) == seen) _mm_pause();
    if (seq == UINT64_MAX) {
      getrusage(RUSAGE_SELF, &report->at_end);
      _exit(0);
    }
    server_mark((long)seq);
    memcpy(s->resp, s->req, MSG_BYTES);
    __atomic_store_n(&s->resp_seq, seq, __ATOMIC_RELEASE);
    seen = seq;
  }
}

int main(int argc, char **argv) {
  if (argc != 3 && argc != 4) {
    fprintf(stderr, "usage: %s uds|pipe|shm-spin ITERATIONS [MAX_SECONDS]\n", argv[0]);
    return 2;
  }
  const char *mode = argv[1];
  long n = parse_count(argv[2], "ITERATIONS");
  int is_uds = strcmp(mode, "uds") == 0, is_pipe = strcmp(mode, "pipe") == 0, is_spin = strcmp(mode, "shm-spin") == 0;
  if (!is_uds && !is_pipe && !is_spin) {
    fprintf(stderr, "pingpong: unknown mode '%s' (expected uds, pipe or shm-spin)\n", mode);
    return 2;
  }
  /* The measured loop also stops after MAX_SECONDS (reporting what it did): on a crowded machine a
   * pinned reference can crawl, and the bench must end in bounded time. */
  double max_ns = argc == 4 ? (double)parse_count(argv[3], "MAX_SECONDS") * 1e9 : 1e18;
  double hz = tsc_hz();
  uint64_t *lat = malloc(sizeof(uint64_t) * (size_t)n);
  if (!lat) die("malloc");

  int to_server[2] = {-1, -1}, to_client[2] = {-1, -1};
  struct spin_slots *slots = NULL;
  report = mmap(NULL, sizeof *report, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (report == MAP_FAILED) die("mmap");
  memset(report, 0, sizeof *report);
  if (is_uds) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0) die("socketpair");
    to_server[1] = to_client[0] = sv[0];
    to_server[0] = to_client[1] = sv[1];
  } else if (is_pipe) {
    if (pipe(to_server) < 0 || pipe(to_client) < 0) die("pipe");
  } else {
    slots = mmap(NULL, sizeof *slots, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (slots == MAP_FAILED) die("mmap");
    memset(slots, 0, sizeof *slots);
  }

  pid_t child = fork();
  if (child < 0) die("fork");
  pin_from_env(child == 0);
  if (child == 0) {
    if (is_spin) spin_echo_server(slots);
    if (is_uds) close(to_client[0]);
    else {
      close(to_server[1]);
      close(to_client[0]);
    }
    fd_echo_server(to_server[0], to_client[1]);
  }
  if (is_uds) close(to_server[0]);
  else if (is_pipe) {
    close(to_server[0]);
    close(to_client[1]);
  }

  char msg[MSG_BYTES], reply[MSG_BYTES];
  memset(msg, 'x', sizeof msg);
  struct rusage ru0, ru1;
  double wall0 = 0;
  uint64_t seq = 0;
  long done = 0;
  for (long i = -WARMUP; i < n; i++) {
    if (i > 0 && (i & 1023) == 0 && mono_ns() - wall0 > max_ns) break;
    if (i == 0) {
      getrusage(RUSAGE_SELF, &ru0);
      wall0 = mono_ns();
    }
    uint64_t t0 = tsc_now();
    memcpy(msg, &i, sizeof i);
    if (is_spin) {
      memcpy(slots->req, msg, MSG_BYTES);
      __atomic_store_n(&slots->req_seq, ++seq, __ATOMIC_RELEASE);
      while (__atomic_load_n(&slots->resp_seq, __ATOMIC_ACQUIRE) != seq) _mm_pause();
      memcpy(reply, slots->resp, MSG_BYTES);
    } else {
      write_all(to_server[1], msg, MSG_BYTES);
      if (!read_all(to_client[0], reply, MSG_BYTES)) {
        fprintf(stderr, "pingpong: the echo process closed early\n");
        return 1;
      }
    }
    uint64_t t1 = tsc_now();
    if (memcmp(msg, reply, MSG_BYTES) != 0) {
      fprintf(stderr, "pingpong: reply %ld differs from the request\n", i);
      return 1;
    }
    if (i >= 0) lat[done++] = t1 - t0;
  }
  n = done;
  double wall_ns = mono_ns() - wall0;
  getrusage(RUSAGE_SELF, &ru1);

  if (is_spin) __atomic_store_n(&slots->req_seq, UINT64_MAX, __ATOMIC_RELEASE);
  else close(to_server[1]);
  int status;
  if (waitpid(child, &status, 0) < 0) die("waitpid");
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    fprintf(stderr, "pingpong: echo process failed (status %d)\n", status);
    return 1;
  }

  qsort(lat, (size_t)n, sizeof *lat, cmp_u64);
  double us_per_tick = 1e6 / hz;
  double client_cpu = (rusage_cpu_us(&ru1) - rusage_cpu_us(&ru0)) / (double)n;
  const struct rusage *s0 = &report->at_first_measured, *s1 = &report->at_end;
  double server_cpu = (rusage_cpu_us(s1) - rusage_cpu_us(s0)) / (double)n;
  long ctx = (ru1.ru_nvcsw - ru0.ru_nvcsw) + (ru1.ru_nivcsw - ru0.ru_nivcsw) + (s1->ru_nvcsw - s0->ru_nvcsw) +
             (s1->ru_nivcsw - s0->ru_nivcsw);
  printf("{\"transport\":\"c-%s\",\"mode\":\"closed-loop\",\"payload_bytes\":%d,\"iterations\":%ld,"
         "\"median_us\":%.4f,\"p99_us\":%.4f,\"calls_per_s\":%.1f,\"cpu_us_per_call\":%.4f,"
         "\"client_cpu_us_per_call\":%.4f,\"server_cpu_us_per_call\":%.4f,\"ctx_switches_per_call\":%.4f,"
         "\"tsc_hz\":%.0f}\n",
         mode, MSG_BYTES, n, (double)quantile(lat, n, 0.5) * us_per_tick, (double)quantile(lat, n, 0.99) * us_per_tick,
         (double)n * 1e9 / wall_ns, client_cpu + server_cpu, client_cpu, server_cpu, (double)ctx / (double)n, hz);
  return 0;
}
