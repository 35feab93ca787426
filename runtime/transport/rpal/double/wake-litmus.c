/*
 * Litmus test for the librpal TEST DOUBLE's wake-up protocol (rpal_write_ptrs vs a receiver parking in
 * rpal_epoll_wait), between two real processes. Built and run by test/rpal-double.test.ts.
 *
 * The double's "RPAL call" is a Dekker handshake: the sender publishes words, then reads the peer's
 * `parked`; the receiver stores `parked`, then re-reads its queues. If either side lets its read pass
 * its own store, both can read the other's old value: the receiver sleeps with words queued and no
 * wake-up byte is ever written — the rpal transport then stalls forever (seen as a bench run whose
 * calls "made no progress"). The window is nanoseconds wide, so this program makes the two sides meet
 * in it as often as possible instead of hoping a long RPC run hits it:
 *  - B (child) echoes each word back and parks in rpal_epoll_wait at once;
 *  - A (parent) never parks: it spins on rpal_epoll_wait_user for the echo, then sends the next word
 *    after a random 0..15 pause instructions (~0..0.3 µs), i.e. right across B's way back into
 *    rpal_epoll_wait (measured: the lost wake-ups of the unfixed double cluster at 0..11 pauses);
 *  - each on its own CPU when there are two, since the race needs two CPUs really running at once.
 * An echo missing for `stall_ms` is a lost wake-up (B only ever waits for A's words).
 *
 * usage: wake-litmus <librpal-double.so> <duration_ms> <stall_ms>
 * prints "ok <n> round trips" and exits 0, or "LOST WAKE-UP ..." and exits 1; other failures exit 2.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define EPOLLRPALIN 0x00020000
#define QUIT_WORD (-1LL)

static int (*r_init)(int, int, int *);
static int (*r_get_key)(uint64_t *);
static int (*r_get_id)(void);
static int (*r_request)(uint64_t);
static int (*r_sender_init)(int *);
static int (*r_epoll_ctl)(int, int, int, struct epoll_event *);
static int (*r_epoll_wait)(int, struct epoll_event *, int, int);
static int (*r_epoll_wait_user)(int, struct epoll_event *, int, int);
static int (*r_read)(int, int64_t *, int);
static int (*r_write)(int, uint64_t, int64_t *, int);
static int (*r_fdmap)(uint64_t, uint64_t *);

static void die(const char *what)
{
	fprintf(stderr, "wake-litmus (%d): %s: %s\n", (int)getpid(), what, strerror(errno));
	exit(2);
}

static void load(const char *path)
{
	void *h = dlopen(path, RTLD_NOW);
	if (!h) {
		fprintf(stderr, "wake-litmus: dlopen %s: %s\n", path, dlerror());
		exit(2);
	}
#define SYM(v, n)                                                                                          \
	do {                                                                                               \
		*(void **)&v = dlsym(h, n);                                                                \
		if (!v) {                                                                                  \
			fprintf(stderr, "wake-litmus: %s lacks %s\n", path, n);                            \
			exit(2);                                                                           \
		}                                                                                          \
	} while (0)
	SYM(r_init, "rpal_init");
	SYM(r_get_key, "rpal_get_service_key");
	SYM(r_get_id, "rpal_get_service_id");
	SYM(r_request, "rpal_request_service");
	SYM(r_sender_init, "rpal_sender_init");
	SYM(r_epoll_ctl, "rpal_epoll_ctl");
	SYM(r_epoll_wait, "rpal_epoll_wait");
	SYM(r_epoll_wait_user, "rpal_epoll_wait_user");
	SYM(r_read, "rpal_read_ptrs");
	SYM(r_write, "rpal_write_ptrs");
	SYM(r_fdmap, "rpal_uds_fdmap");
}

static void pin(int cpu)
{
	cpu_set_t all, one;
	if (sched_getaffinity(0, sizeof(all), &all) != 0 || CPU_COUNT(&all) < 2)
		return; /* one CPU: run anyway (the race is then rare, the test still proves progress) */
	int seen = 0;
	for (int c = 0; c < CPU_SETSIZE; c++) {
		if (!CPU_ISSET(c, &all))
			continue;
		if (seen++ == cpu) {
			CPU_ZERO(&one);
			CPU_SET(c, &one);
			sched_setaffinity(0, sizeof(one), &one);
			return;
		}
	}
}

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void full(int fd, void *buf, size_t n, int writing)
{
	size_t done = 0;
	while (done < n) {
		ssize_t r = writing ? write(fd, (char *)buf + done, n - done) : read(fd, (char *)buf + done, n - done);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			die(writing ? "write to the other process" : "read from the other process");
		done += (size_t)r;
	}
}

struct ident {
	uint64_t key;
	int32_t id;
};

/* Both processes: init, swap identities over the pipes, request each other, register our socket end. */
static void setup(const char *lib, int sock, int to, int from, struct ident *peer, int *epfd, uint64_t *rpalfd)
{
	load(lib);
	int err = 0;
	if (r_init(1, 0, &err) < 0)
		die("rpal_init");
	struct ident me = { 0 };
	r_get_key(&me.key);
	me.id = r_get_id();
	full(to, &me, sizeof(me), 1);
	full(from, peer, sizeof(*peer), 0);
	if (r_request(peer->key) != 0)
		die("rpal_request_service");
	*epfd = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event ev = { .events = EPOLLRPALIN | EPOLLIN | EPOLLRDHUP, .data.u64 = 1 };
	if (*epfd < 0 || r_epoll_ctl(*epfd, EPOLL_CTL_ADD, sock, &ev) != 0)
		die("rpal_epoll_ctl");
	/* Both registered before either maps the other's end. */
	char c = 'r';
	full(to, &c, 1, 1);
	full(from, &c, 1, 0);
	if (r_sender_init(&err) != 0)
		die("rpal_sender_init");
	if (r_fdmap(((uint64_t)(uint32_t)peer->id << 32) | (uint32_t)sock, rpalfd) != 0)
		die("rpal_uds_fdmap");
}

/* Sends one word; librpal errors are fatal except a full queue (not read yet: try again). */
static void put(int id, uint64_t rpalfd, int64_t w)
{
	for (;;) {
		int r = r_write(id, rpalfd, &w, 1);
		if (r == 1)
			return;
		if (r != -116) { /* -116: E_QUEUE_PUT_FAILED */
			fprintf(stderr, "wake-litmus (%d): rpal_write_ptrs failed with %d\n", (int)getpid(), r);
			exit(2);
		}
		sched_yield();
	}
}

/* B: echo every word, parking in rpal_epoll_wait between them (the side whose wake-up can be lost). */
static int echo(int sock, int epfd, struct ident peer, uint64_t rpalfd)
{
	struct epoll_event evs[8];
	for (;;) {
		int n = r_epoll_wait(epfd, evs, 8, -1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			die("rpal_epoll_wait");
		for (int i = 0; i < n; i++)
			if (evs[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP))
				return 0; /* A closed its end: it is done, or gone */
		int64_t w[32];
		int got;
		while ((got = r_read(sock, w, 32)) > 0) {
			for (int i = 0; i < got; i++) {
				if (w[i] == QUIT_WORD)
					return 0;
				put(peer.id, rpalfd, w[i]);
			}
		}
	}
}

/* A: one word at a time, sent at a random offset from B's last echo; waits for each echo without parking. */
static int ping(int sock, int epfd, struct ident peer, uint64_t rpalfd, double duration_ms, double stall_ms)
{
	struct epoll_event evs[8];
	uint32_t rng = 0x9e3779b9u;
	double end = now_ms() + duration_ms;
	long i = 0;
	for (;; i++) {
		if ((i & 255) == 0 && now_ms() > end)
			break;
		/* B is between its echo and asleep in epoll_wait meanwhile: land our word anywhere in that. */
		rng ^= rng << 13;
		rng ^= rng >> 17;
		rng ^= rng << 5;
		for (uint32_t d = rng & 15; d > 0; d--)
			__builtin_ia32_pause();
		put(peer.id, rpalfd, i);
		double deadline = now_ms() + stall_ms;
		for (unsigned spins = 0;; spins++) {
			if (r_epoll_wait_user(epfd, evs, 8, 0) > 0) {
				int64_t w;
				int got = r_read(sock, &w, 1);
				if (got == 1 && w == i)
					break;
				if (got == 1) {
					fprintf(stderr, "wake-litmus: echo %lld, expected %ld\n", (long long)w, i);
					return 2;
				}
			}
			if ((spins & 1023) == 0 && now_ms() > deadline) {
				printf("LOST WAKE-UP at round trip %ld: the echo process slept with our word queued "
				       "for %.0f ms (no wake-up was delivered)\n",
				       i + 1, stall_ms);
				fflush(stdout);
				return 1;
			}
		}
	}
	put(peer.id, rpalfd, QUIT_WORD);
	printf("ok %ld round trips\n", i);
	fflush(stdout);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: wake-litmus <librpal-double.so> <duration_ms> <stall_ms>\n");
		return 2;
	}
	const char *lib = argv[1];
	double duration_ms = atof(argv[2]);
	double stall_ms = atof(argv[3]);
	int sv[2], ab[2], ba[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0 || pipe(ab) != 0 || pipe(ba) != 0)
		die("socketpair/pipe");
	pid_t child = fork();
	if (child < 0)
		die("fork");
	if (child == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		close(sv[0]);
		pin(1);
		struct ident peer;
		int epfd;
		uint64_t rpalfd;
		setup(lib, sv[1], ba[1], ab[0], &peer, &epfd, &rpalfd);
		exit(echo(sv[1], epfd, peer, rpalfd)); /* exit, not _exit: the double's atexit removes its files */
	}
	close(sv[1]);
	pin(0);
	struct ident peer;
	int epfd;
	uint64_t rpalfd;
	setup(lib, sv[0], ab[1], ba[0], &peer, &epfd, &rpalfd);
	int rc = ping(sv[0], epfd, peer, rpalfd, duration_ms, stall_ms);
	if (rc != 0)
		kill(child, SIGKILL); /* it may be asleep for good; its slot files are stale then (the test removes them) */
	else
		shutdown(sv[0], SHUT_RDWR);
	int st;
	while (waitpid(child, &st, 0) < 0 && errno == EINTR) {
	}
	if (rc == 0 && !(WIFEXITED(st) && WEXITSTATUS(st) == 0)) {
		fprintf(stderr, "wake-litmus: the echo process ended with status 0x%x\n", st);
		return 2;
	}
	exit(rc);
}
