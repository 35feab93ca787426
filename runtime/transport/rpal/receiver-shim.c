/*
 * The rpal transport's receiver: one native thread per process, parked in rpal_epoll_wait, that takes
 * the (pointer, length) words peers send with rpal_write_ptrs, copies the bytes they name once into
 * the session's inbox ring (the shm ring format, drained by JS exactly as shm does) and releases the
 * sender's outbox. JS cannot be the receiver: an RPAL call switches into the receiver thread, and a
 * JS callback from a foreign thread costs tens of microseconds.
 *
 * Compiled with gcc on first use (shim.ts) and loaded with bun:ffi. librpal is dlopen'ed by path so
 * this file never links against it (the same path bun:ffi opened gives the same library instance).
 *
 * Wire contract with the peer (everything from the peer is untrusted and checked):
 *  - data socket (abstract Unix socket, peer uid must be ours): 64-byte hello {magic "RPMD", version,
 *    key, service id, outbox control/data addresses and capacity}; then 'R' after requesting the
 *    peer's service; 'W' once our receiver waits; later 'C' = "I released outbox space you waited for".
 *  - words of one rpal_write_ptrs: w0 = 0x5250 << 48 | npairs << 32 | endPos, then npairs (ptr, len)
 *    pairs naming consecutive bytes of the sender's outbox byte stream (1..2 pairs: the stream wraps).
 *    The bytes are frames (16-byte header + body) that may be split anywhere across messages.
 *  - outbox control block of the sender: u32 released position at +0, i32 want-credit flag at +64.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define PUBLIC __attribute__((visibility("default")))
#define EPOLLRPALIN 0x00020000
#define MAX_SESSIONS 256
#define WORD_CAP 64
#define KICK_TAG 0xffffffffffffffffULL
#define HELLO_MAGIC 0x444d5052u /* "RPMD" */
#define WORDS_MAGIC 0x5250ULL
#define OUTBOX_CTRL 128
#define RING_CTRL 256
#define WRAP_MARKER 0xffffffffu
#define SETUP_TIMEOUT_MS 10000

enum { ST_FREE, ST_SETUP, ST_SETUP_DONE, ST_READY, ST_PEER_READY, ST_CLOSING, ST_CLOSED, ST_FAILED };
enum { REC_WHOLE = 1, REC_FIRST = 2, REC_MIDDLE = 3, REC_LAST = 4 };

typedef int (*access_fn)(va_list);
static int (*f_receiver_init)(void);
static int (*f_epoll_ctl)(int, int, int, struct epoll_event *);
static int (*f_epoll_wait)(int, struct epoll_event *, int, int);
static int (*f_read_ptrs)(int, int64_t *, int);
static int (*f_request_service)(uint64_t);
static int (*f_get_request_service_id)(uint64_t);
static int (*f_release_service)(uint64_t);
static int (*f_access)(access_fn, int *, ...);
static int (*f_copy_prepare)(int);
static int (*f_copy_finish)(void);
static void *(*f_double_alloc)(uint64_t);

struct hello {
	uint32_t magic, version;
	uint64_t key;
	int32_t service_id;
	uint32_t outbox_cap;
	uint64_t outbox_ctrl, outbox_data;
	uint8_t pad[24];
};

struct session {
	int state;
	int role; /* 0 listen, 1 connect */
	char name[108];
	char error[256];
	int data_fd, wake_fd, js_fd, js_taken, free_pending;
	uint64_t my_key, peer_key;
	int my_id, peer_id;
	uint32_t max_body;
	/* inbox: local ring (shm ring layout: head, tail, parked, waiting on 64-byte lines) */
	uint8_t *inbox;
	size_t inbox_map;
	uint32_t in_cap, in_mask, max_payload, head;
	/* outbox: peer-visible */
	uint8_t *outbox;
	size_t outbox_map;
	int outbox_mmapped;
	uint32_t out_cap;
	/* the peer's outbox, as it announced it */
	uint64_t p_ctrl, p_data;
	uint32_t p_cap;
	/* words received, and progress through the first message */
	int64_t words[WORD_CAP];
	int nwords, cur_pair;
	uint64_t cur_off;
	/* frame parser state (frames may be split across messages) */
	uint8_t hdr[16];
	int hdr_have, first_written;
	uint32_t body_len, body_done;
	int stalled, kicked, closing_req, requested;
	uint64_t frames_in, stalls;
};

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static struct session g_s[MAX_SESSIONS];
static int g_inited, g_epfd = -1, g_kick = -1;
static char g_err[256];
static pthread_t g_thread;

static void fail(struct session *s, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(s->error, sizeof(s->error), fmt, ap);
	va_end(ap);
	__atomic_store_n(&s->state, ST_FAILED, __ATOMIC_SEQ_CST);
}

static void wake_js(struct session *s)
{
	char b = 1;
	ssize_t w = write(s->wake_fd, &b, 1);
	(void)w; /* EAGAIN: a wake-up is already pending */
}

static void kick(void)
{
	uint64_t one = 1;
	ssize_t w = write(g_kick, &one, sizeof(one));
	(void)w;
}

/* ---- peer memory, touched only through librpal's recovery point (a dead peer must not kill us) ---- */

static int do_copy(va_list ap)
{
	void *dst = va_arg(ap, void *);
	const void *src = va_arg(ap, const void *);
	size_t n = va_arg(ap, size_t);
	memcpy(dst, src, n);
	return 0;
}

static int do_release(va_list ap)
{
	uint32_t *released = va_arg(ap, uint32_t *);
	int32_t *want = va_arg(ap, int32_t *);
	uint32_t pos = va_arg(ap, uint32_t);
	__atomic_store_n(released, pos, __ATOMIC_SEQ_CST);
	return __atomic_exchange_n(want, 0, __ATOMIC_SEQ_CST);
}

static int peer_copy(struct session *s, void *dst, uint64_t src, size_t n)
{
	int ret = -1;
	if (f_copy_prepare)
		f_copy_prepare(s->peer_id);
	int st = f_access(do_copy, &ret, dst, (const void *)(uintptr_t)src, n);
	if (f_copy_finish)
		f_copy_finish();
	return st == 0 && ret == 0 ? 0 : -1;
}

/* ---- inbox ring producer (same algorithm and layout as runtime/transport/shm/ring.ts) ---- */

static uint32_t *ring_word(struct session *s, int line) { return (uint32_t *)(s->inbox + line * 64); }

static int reserve(struct session *s, uint32_t size)
{
	uint32_t idx = s->head & s->in_mask;
	uint32_t contiguous = s->in_cap - idx;
	uint32_t need = size <= contiguous ? size : contiguous + size;
	uint32_t tail = __atomic_load_n(ring_word(s, 1), __ATOMIC_ACQUIRE);
	uint32_t used = s->head - tail;
	if (used > s->in_cap || (tail & 7)) {
		fail(s, "inbox consumer position %u out of range (producer at %u)", tail, s->head);
		return -1;
	}
	if (s->in_cap - used < need) {
		/* announce that we wait, then look again: JS clears the flag and kicks us after consuming */
		__atomic_store_n(ring_word(s, 3), 1, __ATOMIC_SEQ_CST);
		tail = __atomic_load_n(ring_word(s, 1), __ATOMIC_SEQ_CST);
		used = s->head - tail;
		if (s->in_cap - used < need)
			return 0;
		__atomic_store_n(ring_word(s, 3), 0, __ATOMIC_SEQ_CST);
	}
	if (size > contiguous) {
		*(uint32_t *)(s->inbox + RING_CTRL + idx) = WRAP_MARKER;
		s->head += contiguous;
	}
	return 1;
}

static uint8_t *record(struct session *s, uint32_t payload, uint32_t type)
{
	uint8_t *at = s->inbox + RING_CTRL + (s->head & s->in_mask);
	((uint32_t *)at)[0] = payload;
	((uint32_t *)at)[1] = type;
	return at + 8;
}

static void publish(struct session *s, uint32_t payload)
{
	s->head += (8 + payload + 7) & ~7u;
	__atomic_store_n(ring_word(s, 0), s->head, __ATOMIC_RELEASE);
}

/*
 * A frame whose header has been read but whose record is not in the inbox yet, although no stream bytes
 * are left for it: an empty-body frame. Its record is due the moment its header's last byte is read;
 * if the inbox is full right then, feed() has consumed every byte it was given and still owes it.
 */
static int frame_owed(struct session *s) { return s->hdr_have == 16 && s->body_len == 0; }

/*
 * Feeds `n` stream bytes at peer address `src` through the frame parser into the inbox.
 * Returns bytes consumed, or -1 after fail(). The inbox was full if fewer than `n` were consumed, or if
 * all were and frame_owed() (an empty-body frame still to write: call again, with n = 0 if need be).
 */
static int64_t feed(struct session *s, uint64_t src, uint64_t n)
{
	uint64_t done = 0;
	while (done < n || (s->hdr_have == 16 && s->body_len == 0)) {
		uint64_t rem = n - done;
		if (s->hdr_have < 16) {
			uint32_t take = (uint32_t)(rem < (uint64_t)(16 - s->hdr_have) ? rem : (uint64_t)(16 - s->hdr_have));
			if (peer_copy(s, s->hdr + s->hdr_have, src + done, take) != 0) {
				fail(s, "the peer's memory vanished while copying (peer died?)");
				return -1;
			}
			s->hdr_have += (int)take;
			done += take;
			if (s->hdr_have < 16)
				continue;
			memcpy(&s->body_len, s->hdr, 4);
			if (s->body_len > s->max_body) {
				fail(s, "peer sent a frame of %u bytes, over the limit of %u", s->body_len, s->max_body);
				return -1;
			}
			s->body_done = 0;
			s->first_written = 0;
			continue; /* an empty body is emitted below even when no bytes remain */
		}
		uint32_t left = s->body_len - s->body_done;
		uint32_t avail = (uint32_t)(rem < left ? rem : left);
		uint32_t payload, type, chunk;
		int with_hdr = 0;
		if (!s->first_written && avail == s->body_len && 16 + s->body_len <= s->max_payload) {
			chunk = avail;
			payload = 16 + chunk;
			type = REC_WHOLE;
			with_hdr = 1;
		} else if (!s->first_written) {
			chunk = avail < s->max_payload - 16 ? avail : s->max_payload - 16;
			payload = 16 + chunk;
			type = REC_FIRST;
			with_hdr = 1;
		} else {
			chunk = avail < s->max_payload ? avail : s->max_payload;
			payload = chunk;
			type = s->body_done + chunk == s->body_len ? REC_LAST : REC_MIDDLE;
		}
		int r = reserve(s, (8 + payload + 7) & ~7u);
		if (r < 0)
			return -1;
		if (r == 0)
			return (int64_t)done;
		uint8_t *p = record(s, payload, type);
		if (with_hdr) {
			memcpy(p, s->hdr, 16);
			p += 16;
		}
		if (chunk && peer_copy(s, p, src + done, chunk) != 0) {
			fail(s, "the peer's memory vanished while copying (peer died?)");
			return -1;
		}
		publish(s, payload);
		done += chunk;
		s->body_done += chunk;
		if (type == REC_FIRST)
			s->first_written = 1;
		if (s->body_done == s->body_len) {
			s->hdr_have = 0;
			s->frames_in++;
		}
	}
	return (int64_t)done;
}

static void send_byte(struct session *s, char c)
{
	ssize_t w = send(s->data_fd, &c, 1, MSG_DONTWAIT | MSG_NOSIGNAL);
	(void)w; /* a full socket already holds a byte of the same meaning */
}

/* Processes whole messages in s->words. */
static void process(struct session *s)
{
	uint32_t head_before = s->head;
	s->stalled = 0;
	while (s->nwords > 0 && __atomic_load_n(&s->state, __ATOMIC_ACQUIRE) == ST_PEER_READY) {
		uint64_t w0 = (uint64_t)s->words[0];
		int npairs = (int)((w0 >> 32) & 0xffff);
		if ((w0 >> 48) != WORDS_MAGIC || npairs < 1 || npairs > 15) {
			fail(s, "peer sent words that are not an rpal-mesh message (0x%016llx)", (unsigned long long)w0);
			break;
		}
		int need = 1 + 2 * npairs;
		if (s->nwords < need)
			break;
		while (s->cur_pair < npairs) {
			uint64_t ptr = (uint64_t)s->words[1 + 2 * s->cur_pair];
			uint64_t len = (uint64_t)s->words[2 + 2 * s->cur_pair];
			if (len == 0 || len > s->p_cap || ptr < s->p_data || ptr - s->p_data > s->p_cap - len) {
				fail(s, "peer named bytes outside its announced outbox (ptr 0x%llx, len %llu)",
				     (unsigned long long)ptr, (unsigned long long)len);
				goto out;
			}
			int64_t used = feed(s, ptr + s->cur_off, len - s->cur_off);
			if (used < 0)
				goto out;
			s->cur_off += (uint64_t)used;
			/*
			 * Not done with this pair while an empty-body frame read from it is still owed to the
			 * inbox: stall like any inbox-full case, so the message stays unreleased in s->words and
			 * JS's kick (on_kick -> on_words -> here, feed with 0 bytes left) writes it. Treating the
			 * pair as done dropped the record until the peer's next message, which for a stream's
			 * END never comes.
			 */
			if (s->cur_off < len || frame_owed(s)) {
				s->stalled = 1;
				s->stalls++;
				goto out;
			}
			s->cur_pair++;
			s->cur_off = 0;
		}
		int ret = 0;
		if (f_copy_prepare)
			f_copy_prepare(s->peer_id);
		int st = f_access(do_release, &ret, (uint32_t *)(uintptr_t)s->p_ctrl, (int32_t *)(uintptr_t)(s->p_ctrl + 64),
				  (uint32_t)w0);
		if (f_copy_finish)
			f_copy_finish();
		if (st != 0) {
			fail(s, "the peer's memory vanished while releasing its outbox (peer died?)");
			break;
		}
		if (ret == 1)
			send_byte(s, 'C');
		memmove(s->words, s->words + need, (size_t)(s->nwords - need) * sizeof(int64_t));
		s->nwords -= need;
		s->cur_pair = 0;
	}
out:
	/*
	 * Dekker with the JS consumer (RingReader.park stores "parked", then re-reads head): our head store
	 * (a release store in publish) must be visible before we read "parked", and a release store followed
	 * by a load is not ordered — the load may pass the store, and then both sides miss each other and JS
	 * sleeps on a non-empty inbox. Today the exchange in do_release (or reserve's seq_cst store) happens
	 * to order them on every path; the fence states the requirement instead of relying on that.
	 */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (s->head != head_before && __atomic_load_n(ring_word(s, 2), __ATOMIC_SEQ_CST) == 1) {
		uint32_t one = 1;
		if (__atomic_compare_exchange_n(ring_word(s, 2), &one, 0, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
			wake_js(s);
	}
}

static void teardown(struct session *s, int state);

static void on_words(struct session *s)
{
	for (;;) {
		if (s->nwords == WORD_CAP) {
			int64_t probe;
			if (f_read_ptrs(s->data_fd, &probe, 1) > 0)
				fail(s, "peer exceeded the in-flight word limit (%d words unprocessed)", WORD_CAP);
			break;
		}
		int n = f_read_ptrs(s->data_fd, s->words + s->nwords, WORD_CAP - s->nwords);
		if (n <= 0)
			break;
		s->nwords += n;
	}
	if (__atomic_load_n(&s->state, __ATOMIC_ACQUIRE) != ST_FAILED)
		process(s);
	if (__atomic_load_n(&s->state, __ATOMIC_ACQUIRE) == ST_FAILED) {
		/* Unregister at once: words left in librpal's queue would otherwise be reported again and again. */
		teardown(s, -1);
		wake_js(s);
	}
}

/*
 * Releases the peer's service once no other live session of ours uses it. Called with g_lock held,
 * from the receiver thread or after it stopped touching the session, so the peer's memory is not in
 * use when librpal unmaps it.
 */
static void maybe_release(struct session *s)
{
	if (!s->requested)
		return;
	s->requested = 0;
	for (int i = 0; i < MAX_SESSIONS; i++) {
		struct session *o = &g_s[i];
		if (o != s && o->requested && o->peer_key == s->peer_key)
			return;
	}
	f_release_service(s->peer_key);
}

static void teardown(struct session *s, int state)
{
	/* State first: a sender whose rpal_write_ptrs fails once the service is released finds out why. */
	if (state >= 0)
		__atomic_store_n(&s->state, state, __ATOMIC_SEQ_CST);
	maybe_release(s);
	if (s->data_fd >= 0) {
		f_epoll_ctl(g_epfd, EPOLL_CTL_DEL, s->data_fd, NULL);
		shutdown(s->data_fd, SHUT_RDWR);
		close(s->data_fd);
		s->data_fd = -1;
	}
}

static void on_socket(struct session *s, uint32_t events)
{
	char buf[64];
	for (;;) {
		ssize_t n = recv(s->data_fd, buf, sizeof(buf), MSG_DONTWAIT);
		if (n > 0) {
			for (ssize_t i = 0; i < n; i++) {
				if (buf[i] == 'W') {
					int ready = ST_READY;
					__atomic_compare_exchange_n(&s->state, &ready, ST_PEER_READY, 0, __ATOMIC_SEQ_CST,
								    __ATOMIC_SEQ_CST);
				} else if (buf[i] != 'C') {
					fail(s, "peer sent byte 0x%02x on the data socket, which the protocol does not know",
					     (unsigned char)buf[i]);
					teardown(s, -1);
					wake_js(s);
					return;
				}
			}
			wake_js(s); /* peer ready, or credit for our waiting sender */
			continue;
		}
		if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
			if (__atomic_load_n(&s->state, __ATOMIC_ACQUIRE) != ST_FAILED)
				snprintf(s->error, sizeof(s->error), "the peer closed the rpal data connection");
			teardown(s, ST_CLOSED);
			wake_js(s);
			return;
		}
		break;
	}
	(void)events;
}

static void on_kick(void)
{
	uint64_t v;
	ssize_t r = read(g_kick, &v, sizeof(v));
	(void)r;
	pthread_mutex_lock(&g_lock);
	for (int i = 0; i < MAX_SESSIONS; i++) {
		struct session *s = &g_s[i];
		int st = __atomic_load_n(&s->state, __ATOMIC_ACQUIRE);
		if (st == ST_SETUP_DONE) {
			struct epoll_event ev = { .events = EPOLLRPALIN | EPOLLIN | EPOLLRDHUP, .data.u64 = (uint64_t)i };
			if (f_epoll_ctl(g_epfd, EPOLL_CTL_ADD, s->data_fd, &ev) != 0) {
				fail(s, "rpal_epoll_ctl(ADD) on the data socket failed: %s", strerror(errno));
				wake_js(s);
				continue;
			}
			__atomic_store_n(&s->state, ST_READY, __ATOMIC_SEQ_CST);
			send_byte(s, 'W');
			wake_js(s);
		}
		if (s->closing_req && st != ST_FREE && st != ST_SETUP) {
			s->closing_req = 0;
			teardown(s, st == ST_FAILED ? ST_FAILED : ST_CLOSED);
		}
		if (__atomic_exchange_n(&s->kicked, 0, __ATOMIC_SEQ_CST) && st == ST_PEER_READY)
			on_words(s);
	}
	pthread_mutex_unlock(&g_lock);
}

static void *receiver_main(void *arg)
{
	(void)arg;
	if (f_receiver_init() < 0) {
		snprintf(g_err, sizeof(g_err), "rpal_receiver_init failed in the receiver thread");
		return NULL;
	}
	struct epoll_event evs[64];
	for (;;) {
		int n = f_epoll_wait(g_epfd, evs, 64, -1);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			snprintf(g_err, sizeof(g_err), "rpal_epoll_wait failed: %s", strerror(errno));
			return NULL;
		}
		for (int i = 0; i < n; i++) {
			if (evs[i].data.u64 == KICK_TAG) {
				on_kick();
				continue;
			}
			uint64_t idx = evs[i].data.u64;
			if (idx >= MAX_SESSIONS)
				continue;
			pthread_mutex_lock(&g_lock);
			struct session *s = &g_s[idx];
			int st = __atomic_load_n(&s->state, __ATOMIC_ACQUIRE);
			if (st == ST_READY || st == ST_PEER_READY) {
				/*
				 * Words can be reported before the peer's 'W' byte (librpal hands out user events
				 * ahead of the socket's): the 'W' was sent before any word, so read the socket first.
				 */
				if ((evs[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) ||
				    ((evs[i].events & EPOLLRPALIN) && st == ST_READY))
					on_socket(s, evs[i].events);
				st = __atomic_load_n(&s->state, __ATOMIC_ACQUIRE);
				if ((evs[i].events & EPOLLRPALIN) && st == ST_PEER_READY)
					on_words(s);
			}
			pthread_mutex_unlock(&g_lock);
		}
	}
	return NULL;
}

PUBLIC int rms_init(const char *librpal_path, char *err, int errlen)
{
	pthread_mutex_lock(&g_lock);
	if (g_inited) {
		pthread_mutex_unlock(&g_lock);
		return 0;
	}
	void *h = dlopen(librpal_path, RTLD_NOW | RTLD_GLOBAL);
	if (!h) {
		snprintf(err, (size_t)errlen, "dlopen %s: %s", librpal_path, dlerror());
		pthread_mutex_unlock(&g_lock);
		return -1;
	}
#define SYM(var, name)                                                                                  \
	do {                                                                                            \
		*(void **)&var = dlsym(h, name);                                                        \
		if (!var) {                                                                             \
			snprintf(err, (size_t)errlen, "%s does not export %s", librpal_path, name);     \
			pthread_mutex_unlock(&g_lock);                                                  \
			return -1;                                                                      \
		}                                                                                       \
	} while (0)
	SYM(f_receiver_init, "rpal_receiver_init");
	SYM(f_epoll_ctl, "rpal_epoll_ctl");
	SYM(f_epoll_wait, "rpal_epoll_wait");
	SYM(f_read_ptrs, "rpal_read_ptrs");
	SYM(f_request_service, "rpal_request_service");
	SYM(f_get_request_service_id, "rpal_get_request_service_id");
	SYM(f_release_service, "rpal_release_service");
	SYM(f_access, "rpal_read_access_safety");
	*(void **)&f_copy_prepare = dlsym(h, "rpal_copy_prepare");
	*(void **)&f_copy_finish = dlsym(h, "rpal_copy_finish");
	*(void **)&f_double_alloc = dlsym(h, "rpal_test_double_alloc");
	g_epfd = epoll_create1(EPOLL_CLOEXEC);
	g_kick = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = KICK_TAG };
	if (g_epfd < 0 || g_kick < 0 || f_epoll_ctl(g_epfd, EPOLL_CTL_ADD, g_kick, &ev) != 0) {
		snprintf(err, (size_t)errlen, "cannot set up the receiver's epoll: %s", strerror(errno));
		pthread_mutex_unlock(&g_lock);
		return -1;
	}
	if (pthread_create(&g_thread, NULL, receiver_main, NULL) != 0) {
		snprintf(err, (size_t)errlen, "cannot start the receiver thread: %s", strerror(errno));
		pthread_mutex_unlock(&g_lock);
		return -1;
	}
	pthread_detach(g_thread);
	g_inited = 1;
	pthread_mutex_unlock(&g_lock);
	return 0;
}

static int full_io(int fd, void *buf, size_t n, int writing)
{
	size_t done = 0;
	while (done < n) {
		ssize_t r = writing ? send(fd, (char *)buf + done, n - done, MSG_NOSIGNAL) : recv(fd, (char *)buf + done, n - done, 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		done += (size_t)r;
	}
	return 0;
}

/* Records why setup failed; the setup thread publishes ST_FAILED itself when it ends. */
static void setup_error(struct session *s, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(s->error, sizeof(s->error), fmt, ap);
	va_end(ap);
}

static void free_locked(struct session *s);

static void *setup_main(void *arg)
{
	struct session *s = arg;
	int ok_setup = 0;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	size_t nlen = strlen(s->name);
	memcpy(sa.sun_path + 1, s->name, nlen); /* abstract namespace: no file to leave behind */
	socklen_t salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + nlen);
	int fd = -1;
	if (s->role == 0) {
		int l = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (l < 0 || bind(l, (struct sockaddr *)&sa, salen) != 0 || listen(l, 1) != 0) {
			setup_error(s, "cannot listen on the rpal data socket @%s: %s", s->name, strerror(errno));
			if (l >= 0)
				close(l);
			goto done;
		}
		struct pollfd p = { .fd = l, .events = POLLIN };
		int pr = poll(&p, 1, SETUP_TIMEOUT_MS);
		if (pr == 1)
			fd = accept4(l, NULL, NULL, SOCK_CLOEXEC);
		close(l);
		if (fd < 0) {
			setup_error(s, "the app did not connect to the rpal data socket within %d ms", SETUP_TIMEOUT_MS);
			goto done;
		}
	} else {
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		int ok = -1;
		for (int i = 0; i < 100 && fd >= 0; i++) {
			ok = connect(fd, (struct sockaddr *)&sa, salen);
			if (ok == 0 || errno != ECONNREFUSED)
				break;
			usleep(20000); /* the sidecar binds before answering HELLO; this only covers scheduling */
		}
		if (ok != 0) {
			setup_error(s, "cannot connect to the sidecar's rpal data socket @%s: %s", s->name, strerror(errno));
			if (fd >= 0)
				close(fd);
			fd = -1;
			goto done;
		}
	}
	s->data_fd = fd;
	struct ucred cred;
	socklen_t cl = sizeof(cred);
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) != 0 || cred.uid != getuid()) {
		setup_error(s, "the rpal data socket's peer is uid %d, not us (uid %d): refusing it", (int)cred.uid, (int)getuid());
		goto done;
	}
	struct timeval tv = { .tv_sec = SETUP_TIMEOUT_MS / 1000 };
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	struct hello mine = { .magic = HELLO_MAGIC, .version = 1, .key = s->my_key, .service_id = s->my_id,
			      .outbox_cap = s->out_cap, .outbox_ctrl = (uint64_t)(uintptr_t)s->outbox,
			      .outbox_data = (uint64_t)(uintptr_t)s->outbox + OUTBOX_CTRL };
	struct hello peer;
	if (full_io(fd, &mine, sizeof(mine), 1) != 0 || full_io(fd, &peer, sizeof(peer), 0) != 0) {
		setup_error(s, "the rpal data socket handshake broke off: %s", strerror(errno));
		goto done;
	}
	if (peer.magic != HELLO_MAGIC || peer.version != 1) {
		setup_error(s, "the rpal data socket peer does not speak rpal-mesh v1 (magic 0x%08x version %u)", peer.magic, peer.version);
		goto done;
	}
	if (peer.key != s->peer_key || peer.service_id != s->peer_id) {
		setup_error(s, "the rpal data socket peer is not the service negotiated on the control channel (key/id mismatch)");
		goto done;
	}
	if (peer.outbox_cap < 4096 || peer.outbox_cap > (1u << 28) || (peer.outbox_cap & (peer.outbox_cap - 1)) ||
	    peer.outbox_data != peer.outbox_ctrl + OUTBOX_CTRL || peer.outbox_ctrl == 0 ||
	    peer.outbox_data + peer.outbox_cap < peer.outbox_data) {
		setup_error(s, "the peer announced an invalid outbox (capacity %u)", peer.outbox_cap);
		goto done;
	}
	s->p_ctrl = peer.outbox_ctrl;
	s->p_data = peer.outbox_data;
	s->p_cap = peer.outbox_cap;
	/* A reconnecting app may still have a live session here: librpal refuses a second request. */
	pthread_mutex_lock(&g_lock);
	int r = 0, shared = 0;
	for (int i = 0; i < MAX_SESSIONS; i++)
		if (&g_s[i] != s && g_s[i].requested && g_s[i].peer_key == s->peer_key)
			shared = 1;
	if (!shared)
		r = f_request_service(s->peer_key);
	if (r == 0)
		s->requested = 1;
	pthread_mutex_unlock(&g_lock);
	if (r != 0) {
		setup_error(s, "rpal_request_service(peer) failed with %d (the peer's service is gone or not enabled)", r);
		goto done;
	}
	char c = 'R';
	if (full_io(fd, &c, 1, 1) != 0 || full_io(fd, &c, 1, 0) != 0 || c != 'R') {
		setup_error(s, "the peer did not confirm its rpal_request_service");
		goto done;
	}
	int id = f_get_request_service_id(s->peer_key);
	if (id != s->peer_id) {
		setup_error(s, "rpal_get_request_service_id says %d, the peer announced %d", id, s->peer_id);
		goto done;
	}
	struct timeval zero = { 0 };
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &zero, sizeof(zero));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &zero, sizeof(zero));
	ok_setup = 1;
done:
	/* The outcome is published under the lock so rms_session_free never races this thread. */
	pthread_mutex_lock(&g_lock);
	if (s->free_pending) {
		free_locked(s);
		pthread_mutex_unlock(&g_lock);
		return NULL;
	}
	__atomic_store_n(&s->state, ok_setup ? ST_SETUP_DONE : ST_FAILED, __ATOMIC_SEQ_CST);
	pthread_mutex_unlock(&g_lock);
	if (ok_setup)
		kick();
	else
		wake_js(s);
	return NULL;
}

static void release_memory(struct session *s)
{
	if (s->inbox)
		munmap(s->inbox, s->inbox_map);
	if (s->outbox && s->outbox_mmapped)
		munmap(s->outbox, s->outbox_map);
	s->inbox = s->outbox = NULL;
}

PUBLIC int rms_session_open(int role, const char *name, uint64_t my_key, int my_id, uint64_t peer_key, int peer_id,
			    uint32_t inbox_bytes, uint32_t outbox_bytes, uint32_t max_body, char *err, int errlen)
{
	if (!g_inited) {
		snprintf(err, (size_t)errlen, "rms_init was not called");
		return -1;
	}
	if ((inbox_bytes & (inbox_bytes - 1)) || inbox_bytes < 4096 || (outbox_bytes & (outbox_bytes - 1)) || outbox_bytes < 4096 ||
	    strlen(name) > 100) {
		snprintf(err, (size_t)errlen, "bad session parameters (ring sizes must be powers of two >= 4096)");
		return -1;
	}
	pthread_mutex_lock(&g_lock);
	int idx = -1;
	for (int i = 0; i < MAX_SESSIONS; i++)
		if (g_s[i].state == ST_FREE) {
			idx = i;
			break;
		}
	if (idx < 0) {
		pthread_mutex_unlock(&g_lock);
		snprintf(err, (size_t)errlen, "too many rpal sessions in this process (%d)", MAX_SESSIONS);
		return -1;
	}
	struct session *s = &g_s[idx];
	memset(s, 0, sizeof(*s));
	s->data_fd = s->wake_fd = s->js_fd = -1;
	s->role = role;
	strcpy(s->name, name);
	s->my_key = my_key;
	s->my_id = my_id;
	s->peer_key = peer_key;
	s->peer_id = peer_id;
	s->max_body = max_body;
	s->in_cap = inbox_bytes;
	s->in_mask = inbox_bytes - 1;
	s->max_payload = inbox_bytes / 4 - 8;
	s->inbox_map = RING_CTRL + inbox_bytes;
	s->inbox = mmap(NULL, s->inbox_map, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	s->out_cap = outbox_bytes;
	s->outbox_map = OUTBOX_CTRL + outbox_bytes;
	if (f_double_alloc) {
		s->outbox = f_double_alloc(s->outbox_map);
	} else {
		s->outbox = mmap(NULL, s->outbox_map, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		s->outbox_mmapped = 1;
		if (s->outbox == MAP_FAILED)
			s->outbox = NULL;
	}
	if (s->inbox == MAP_FAILED)
		s->inbox = NULL;
	int sv[2];
	if (!s->inbox || !s->outbox || socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv) != 0) {
		snprintf(err, (size_t)errlen, "cannot allocate the session's rings or wake socket: %s", strerror(errno));
		release_memory(s);
		pthread_mutex_unlock(&g_lock);
		return -1;
	}
	memset(s->outbox, 0, OUTBOX_CTRL);
	s->wake_fd = sv[0];
	s->js_fd = sv[1];
	s->state = ST_SETUP;
	pthread_t t;
	if (pthread_create(&t, NULL, setup_main, s) != 0) {
		snprintf(err, (size_t)errlen, "cannot start the setup thread: %s", strerror(errno));
		close(sv[0]);
		close(sv[1]);
		release_memory(s);
		s->state = ST_FREE;
		pthread_mutex_unlock(&g_lock);
		return -1;
	}
	pthread_detach(t);
	pthread_mutex_unlock(&g_lock);
	return idx;
}

static struct session *get(int i) { return i >= 0 && i < MAX_SESSIONS ? &g_s[i] : NULL; }

PUBLIC int rms_session_state(int i)
{
	struct session *s = get(i);
	return s ? __atomic_load_n(&s->state, __ATOMIC_ACQUIRE) : -1;
}

PUBLIC int rms_session_error(int i, char *buf, int len)
{
	struct session *s = get(i);
	if (!s || len <= 0)
		return -1;
	snprintf(buf, (size_t)len, "%s", s->error[0] ? s->error : g_err);
	return 0;
}

PUBLIC void *rms_session_inbox(int i) { return get(i) ? get(i)->inbox : NULL; }
PUBLIC void *rms_session_outbox(int i) { return get(i) ? get(i)->outbox : NULL; }
PUBLIC int rms_session_data_fd(int i) { return get(i) ? get(i)->data_fd : -1; }

PUBLIC int rms_session_take_js_fd(int i)
{
	struct session *s = get(i);
	if (!s || s->js_taken)
		return -1;
	s->js_taken = 1;
	return s->js_fd;
}

PUBLIC double rms_session_frames_in(int i) { return get(i) ? (double)get(i)->frames_in : 0; }
/* Times the receiver found the inbox full and waited for JS to drain it. */
PUBLIC double rms_session_stalls(int i) { return get(i) ? (double)get(i)->stalls : 0; }

/* JS consumed inbox records while we waited for space: resume. */
PUBLIC void rms_session_kick(int i)
{
	struct session *s = get(i);
	if (!s)
		return;
	__atomic_store_n(&s->kicked, 1, __ATOMIC_SEQ_CST);
	kick();
}

PUBLIC void rms_session_close(int i)
{
	struct session *s = get(i);
	if (!s)
		return;
	s->closing_req = 1;
	kick();
}

static void free_locked(struct session *s)
{
	teardown(s, -1);
	if (s->wake_fd >= 0)
		close(s->wake_fd);
	if (!s->js_taken && s->js_fd >= 0)
		close(s->js_fd);
	s->wake_fd = s->js_fd = -1;
	release_memory(s);
	s->state = ST_FREE;
}

/* After JS dropped every view of the rings. During setup, the setup thread frees it when it ends. */
PUBLIC int rms_session_free(int i)
{
	struct session *s = get(i);
	if (!s)
		return -1;
	pthread_mutex_lock(&g_lock);
	if (__atomic_load_n(&s->state, __ATOMIC_ACQUIRE) == ST_SETUP) {
		s->free_pending = 1;
		pthread_mutex_unlock(&g_lock);
		return 1;
	}
	free_locked(s);
	pthread_mutex_unlock(&g_lock);
	return 0;
}
