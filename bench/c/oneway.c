/* C reference for the seed's metric (RPAL.md): one-way latency in TSC cycles from the client's
 * rdtsc just before sending a 32-byte message to the server's rdtsc just after receiving it; the
 * reply goes back over the same channel and is not timed, so one message is in flight at a time.
 * The seed reports the mean (total cycles / messages); we print the mean as cycles_one_way and the
 * median and p99 beside it. Modes:
 *   uds  server parks in epoll_wait on a connected AF_UNIX stream socket (the seed's baseline)
 *   shm  server busy-polls a shared slot (the floor of this machine; burns a core)
 * Usage: oneway MODE MESSAGES */
#include "common.h"

#include <stdalign.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>

#define WARMUP 2000

struct slots {
  alignas(64) uint64_t req_seq;
  uint64_t req_tsc;
  alignas(64) uint64_t resp_seq;
};

/* Shared with the server: its one-way samples and its CPU time over the measured messages. */
struct results {
  struct rusage at_first_measured;
  struct rusage at_end;
  uint64_t cycles[];
};

static void record(struct results *r, long received, uint64_t cycles, long n) {
  long i = received - WARMUP - 1;
  if (i == 0) getrusage(RUSAGE_SELF, &r->at_first_measured);
  if (i >= 0 && i < n) r->cycles[i] = cycles;
}

static void epoll_server(int fd, struct results *r, long n) {
  int ep = epoll_create1(0);
  if (ep < 0) die("epoll_create1");
  struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd}, got[4];
  if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl");
  char buf[MSG_BYTES];
  long received = 0;
  for (;;) {
    int k = epoll_wait(ep, got, 4, -1);
    if (k < 0) {
      if (errno == EINTR) continue;
      die("epoll_wait");
    }
    if (!read_all(fd, buf, MSG_BYTES)) break;
    uint64_t now = tsc_now();
    uint64_t sent;
    memcpy(&sent, buf, sizeof sent);
    record(r, ++received, now - sent, n);
    write_all(fd, buf, MSG_BYTES);
  }
  getrusage(RUSAGE_SELF, &r->at_end);
  _exit(0);
}

static void spin_server(struct slots *s, struct results *r, long n) {
  uint64_t seen = 0;
  for (;;) {
    uint64_t seq;
    while ((seq = __atomic_load_n(&s->req_seq, __ATOMIC_ACQUIRE)) == seen) _mm_pause();
    uint64_t now = tsc_now();
    if (seq == UINT64_MAX) break;
    record(r, (long)seq, now - s->req_tsc, n);
    __atomic_store_n(&s->resp_seq, seq, __ATOMIC_RELEASE);
    seen = seq;
  }
  getrusage(RUSAGE_SELF, &r->at_end);
  _exit(0);
}

int main(int argc, char **argv) {
  if (argc != 3 && argc != 4) {
    fprintf(stderr, "usage: %s uds|shm MESSAGES [MAX_SECONDS]\n", argv[0]);
    return 2;
  }
  const char *mode = argv[1];
  long n = parse_count(argv[2], "MESSAGES");
  int is_uds = strcmp(mode, "uds") == 0;
  if (!is_uds && strcmp(mode, "shm") != 0) {
    fprintf(stderr, "oneway: unknown mode '%s' (expected uds or shm)\n", mode);
    return 2;
  }
  /* The measured loop also stops after MAX_SECONDS (reporting what it did): on a crowded machine a
   * pinned reference can crawl, and the bench must end in bounded time. */
  double max_ns = argc == 4 ? (double)parse_count(argv[3], "MAX_SECONDS") * 1e9 : 1e18;
  double hz = tsc_hz();
  size_t results_bytes = sizeof(struct results) + sizeof(uint64_t) * (size_t)n;
  struct results *r = mmap(NULL, results_bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  struct slots *s = mmap(NULL, sizeof *s, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (r == MAP_FAILED || s == MAP_FAILED) die("mmap");
  memset(s, 0, sizeof *s);
  int sv[2] = {-1, -1};
  if (is_uds && socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0) die("socketpair");

  pid_t child = fork();
  if (child < 0) die("fork");
  pin_from_env(child == 0);
  if (child == 0) {
    if (is_uds) {
      close(sv[0]);
      epoll_server(sv[1], r, n);
    }
    spin_server(s, r, n);
  }
  if (is_uds) close(sv[1]);

  char msg[MSG_BYTES], reply[MSG_BYTES];
  memset(msg, 'x', sizeof msg);
  struct rusage ru0, ru1;
  double wall0 = 0;
  long done = 0;
  for (long i = -WARMUP; i < n; i++) {
    if (i > 0 && (i & 1023) == 0 && mono_ns() - wall0 > max_ns) break;
    if (i >= 0) done++;
    if (i == 0) {
      getrusage(RUSAGE_SELF, &ru0);
      wall0 = mono_ns();
    }
    uint64_t seq = (uint64_t)(i + WARMUP + 1);
    if (is_uds) {
      uint64_t t0 = tsc_now();
      memcpy(msg, &t0, sizeof t0);
      write_all(sv[0], msg, MSG_BYTES);
      if (!read_all(sv[0], reply, MSG_BYTES)) {
        fprintf(stderr, "oneway: the server closed early\n");
        return 1;
      }
    } else {
      s->req_tsc = tsc_now();
      __atomic_store_n(&s->req_seq, seq, __ATOMIC_RELEASE);
      while (__atomic_load_n(&s->resp_seq, __ATOMIC_ACQUIRE) != seq) _mm_pause();
    }
  }
  double wall_ns = mono_ns() - wall0;
  getrusage(RUSAGE_SELF, &ru1);
  n = done;
  if (is_uds) shutdown(sv[0], SHUT_WR);
  else __atomic_store_n(&s->req_seq, UINT64_MAX, __ATOMIC_RELEASE);
  int status;
  if (waitpid(child, &status, 0) < 0) die("waitpid");
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    fprintf(stderr, "oneway: server failed (status %d)\n", status);
    return 1;
  }

  long double total = 0;
  for (long i = 0; i < n; i++) total += r->cycles[i];
  qsort(r->cycles, (size_t)n, sizeof(uint64_t), cmp_u64);
  double mean = (double)(total / n);
  double us_per_tick = 1e6 / hz;
  double client_cpu = (rusage_cpu_us(&ru1) - rusage_cpu_us(&ru0)) / (double)n;
  double server_cpu = (rusage_cpu_us(&r->at_end) - rusage_cpu_us(&r->at_first_measured)) / (double)n;
  printf("{\"transport\":\"c-%s\",\"mode\":\"one-way\",\"payload_bytes\":%d,\"iterations\":%ld,"
         "\"cycles_one_way\":%.0f,\"cycles_one_way_median\":%llu,\"cycles_one_way_p99\":%llu,"
         "\"median_us\":%.4f,\"p99_us\":%.4f,\"calls_per_s\":%.1f,\"cpu_us_per_call\":%.4f,"
         "\"client_cpu_us_per_call\":%.4f,\"server_cpu_us_per_call\":%.4f,\"tsc_hz\":%.0f}\n",
         is_uds ? "uds" : "shm-spin", MSG_BYTES, n, mean, (unsigned long long)quantile(r->cycles, n, 0.5),
         (unsigned long long)quantile(r->cycles, n, 0.99), (double)quantile(r->cycles, n, 0.5) * us_per_tick,
         (double)quantile(r->cycles, n, 0.99) * us_per_tick, (double)n * 1e9 / wall_ns, client_cpu + server_cpu,
         client_cpu, server_cpu, hz);
  return 0;
}
