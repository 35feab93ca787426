/*
 * librpal TEST DOUBLE — the librpal v2 ABI (rpal.h) emulated in user space on a stock kernel, so the
 * rpal transport's binding, handshake, receiver thread and data path run in CI. It is NOT RPAL: there
 * is no user-space thread switch and no shared page tables. Tests only; production detection refuses
 * any library exporting rpal_mesh_test_double_marker.
 *
 * How it stands in for the kernel:
 *  - Each process that calls rpal_init gets a service id 0..254 and a "slot": a 0600 file
 *    /dev/shm/rpal-double-<uid>-<id> mapped at the same fixed address in every process that
 *    requests the service, so a pointer into it is valid in both (RPAL gives the whole address space
 *    that property; the double only this window — senders allocate peer-visible buffers with
 *    rpal_test_double_alloc, which real librpal does not have and does not need).
 *  - The slot header holds, per socket registered with EPOLLRPALIN, a 32-word queue (the size real
 *    librpal uses): rpal_write_ptrs appends words to the peer's queue, rpal_read_ptrs takes them.
 *  - The "switch" is a wake-up: a receiver parked in rpal_epoll_wait sleeps in epoll_wait with its
 *    FIFO /dev/shm/rpal-double-<uid>-<id>.wake registered; a sender that sees it parked writes one
 *    byte there. So rpal_write_ptrs returns without waiting for the receiver (real RPAL runs the
 *    receiver first when it is parked); callers must not rely on either order.
 *  - rpal_uds_fdmap finds the peer's end of a connected Unix socket with sock_diag (UNIX_DIAG_PEER).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <linux/unix_diag.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define PUBLIC __attribute__((visibility("default")))

/* Exported so that production detection can tell this library apart from the real one. */
PUBLIC const char rpal_mesh_test_double_marker[] = "librpal test double (rpal-mesh): not RPAL";

typedef int rpal_error_code_t;
typedef int status_t;
typedef int (*access_fn)(va_list args);

enum {
	E_BAD_ARG = 1,
	E_NO_SERVICE = 2,
	E_RPALFILE_OPS = 101,
	E_SERVICE_KEY = 106,
	E_DONT_INITED = 110,
	E_INVALID_ARG = 113,
	E_FDE_OUTDATED = 115,
	E_QUEUE_PUT_FAILED = 116,
	E_INVAL_THREAD = 119,
	E_INVAL_SERVICE = 120,
};

#define EPOLLRPALIN 0x00020000
#define EPOLLRPALOUT 0x00040000
#define MAX_SERVICES 255
#define QUEUE_WORDS 32
#define MAX_FDS 64
#define SLOT_BASE 0x3f0000000000ULL
#define SLOT_BYTES (1ULL << 30)
#define HEADER_BYTES (1ULL << 20)
#define SLOT_MAGIC 0x52504444u /* "DDPR" */
#define WAKE_TAG 0xd0b1e5a1d0b1e5a1ULL

struct dfd {
	uint32_t used;
	uint32_t gen;
	int32_t fd;
	uint32_t lock;
	uint64_t inode;
	uint32_t head, tail; /* word positions */
	int64_t q[QUEUE_WORDS];
};

struct dslot {
	uint32_t magic;
	uint32_t id;
	uint64_t key;
	int32_t pid;
	uint32_t parked;
	uint64_t alloc_top;
	struct dfd fds[MAX_FDS];
};

struct local_reg {
	int used;
	int epfd;
	uint64_t data;
};

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static int g_inited;
static int g_id = -1;
static uint64_t g_key;
static int g_slot_fd = -1;
static struct dslot *g_slot;
static int g_wake_rd = -1;
static char g_slot_path[128], g_wake_path[128];
static struct dslot *g_peers[MAX_SERVICES];
static int g_peer_wake[MAX_SERVICES];
static struct local_reg g_regs[MAX_FDS];
static int g_wake_epfds[8];
static __thread int t_sender;
static __thread int t_receiver;

static void *slot_addr(int id) { return (void *)(uintptr_t)(SLOT_BASE + (uint64_t)id * SLOT_BYTES); }

/* Addresses where a retired peer's slot was replaced by zero pages (see retire_peer). */
static unsigned char g_placeholder[MAX_SERVICES];

/*
 * Drops a peer's slot without unmapping its address: another thread may still be reading it (the
 * receiver shim requests and releases services on its own thread while JS sends), and real RPAL turns
 * such a read of a departed peer into a recoverable fault. Private zero pages at the same address make
 * a late reader see "no such fd" instead of crashing the process.
 */
static void retire_peer(int id)
{
	if (!g_peers[id])
		return;
	void *p = mmap(slot_addr(id), SLOT_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED)
		munmap(g_peers[id], SLOT_BYTES);
	else
		g_placeholder[id] = 1;
	g_peers[id] = NULL;
}

static void names(int id, char *slot, char *wake)
{
	snprintf(slot, 128, "/dev/shm/rpal-double-%u-%d", (unsigned)getuid(), id);
	snprintf(wake, 128, "/dev/shm/rpal-double-%u-%d.wake", (unsigned)getuid(), id);
}

static void spin_lock(uint32_t *l)
{
	uint32_t z = 0;
	while (!__atomic_compare_exchange_n(l, &z, 1, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) {
		z = 0;
		__builtin_ia32_pause();
	}
}
static void spin_unlock(uint32_t *l) { __atomic_store_n(l, 0, __ATOMIC_RELEASE); }

/* A slot file whose owner died is reclaimed (a SIGKILLed test leaves one behind). */
static int stale(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT;
	struct dslot h;
	ssize_t n = pread(fd, &h, sizeof(h.magic) + sizeof(h.id) + sizeof(h.key) + sizeof(h.pid), 0);
	close(fd);
	if (n < (ssize_t)(sizeof(h.magic) + sizeof(h.id) + sizeof(h.key) + sizeof(h.pid)))
		return 0; /* being created */
	if (h.magic != SLOT_MAGIC)
		return 0;
	return kill(h.pid, 0) != 0 && errno == ESRCH;
}

PUBLIC void rpal_exit(void);

static void at_exit(void) { rpal_exit(); }

PUBLIC int rpal_init(int nr_rpalthread, int flags, rpal_error_code_t *error)
{
	(void)nr_rpalthread;
	(void)flags;
	pthread_mutex_lock(&g_lock);
	if (g_inited) {
		pthread_mutex_unlock(&g_lock);
		return g_slot_fd;
	}
	/* Slots of processes that died without rpal_exit (SIGKILL) are reclaimed, so they never pile up. */
	for (int id = 0; id < MAX_SERVICES - 1; id++) {
		char slot[128], wake[128];
		names(id, slot, wake);
		if (access(slot, F_OK) == 0 && stale(slot)) {
			unlink(slot);
			unlink(wake);
		}
	}
	for (int id = 0; id < MAX_SERVICES - 1 && g_slot_fd < 0; id++) {
		char slot[128], wake[128];
		names(id, slot, wake);
		int fd = open(slot, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		if (fd < 0 && errno == EEXIST && stale(slot)) {
			unlink(slot);
			unlink(wake);
			fd = open(slot, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		}
		if (fd < 0)
			continue;
		if (ftruncate(fd, (off_t)SLOT_BYTES) != 0) {
			close(fd);
			unlink(slot);
			break;
		}
		void *p = mmap(slot_addr(id), SLOT_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED_NOREPLACE, fd, 0);
		if (p == MAP_FAILED || p != slot_addr(id)) {
			if (p != MAP_FAILED)
				munmap(p, SLOT_BYTES);
			close(fd);
			unlink(slot);
			/* The address is taken in this process, e.g. by the slot an earlier rpal_init/rpal_exit
			   left mapped (a test runner that initialises twice): take the next id. */
			continue;
		}
		unlink(wake);
		if (mkfifo(wake, 0600) != 0) {
			munmap(p, SLOT_BYTES);
			close(fd);
			unlink(slot);
			break;
		}
		g_wake_rd = open(wake, O_RDWR | O_NONBLOCK | O_CLOEXEC);
		g_slot = p;
		g_slot_fd = fd;
		g_id = id;
		strcpy(g_slot_path, slot);
		strcpy(g_wake_path, wake);
	}
	if (g_slot_fd < 0 || g_wake_rd < 0) {
		if (error)
			*error = E_RPALFILE_OPS;
		pthread_mutex_unlock(&g_lock);
		return -1;
	}
	uint64_t key = 0;
	if (getrandom(&key, sizeof(key), 0) != sizeof(key)) {
		if (error)
			*error = E_SERVICE_KEY;
		pthread_mutex_unlock(&g_lock);
		return -1;
	}
	g_key = (key & ((1ULL << 63) - 1)) | 1;
	g_slot->id = (uint32_t)g_id;
	g_slot->key = g_key;
	g_slot->pid = getpid();
	g_slot->alloc_top = HEADER_BYTES;
	__atomic_store_n(&g_slot->magic, SLOT_MAGIC, __ATOMIC_RELEASE);
	for (int i = 0; i < MAX_SERVICES; i++)
		g_peer_wake[i] = -1;
	for (int i = 0; i < 8; i++)
		g_wake_epfds[i] = -1;
	g_inited = 1;
	static int registered;
	if (!registered) {
		registered = 1;
		atexit(at_exit);
	}
	pthread_mutex_unlock(&g_lock);
	return g_slot_fd;
}

PUBLIC void rpal_exit(void)
{
	pthread_mutex_lock(&g_lock);
	if (!g_inited) {
		pthread_mutex_unlock(&g_lock);
		return;
	}
	for (int i = 0; i < MAX_SERVICES; i++) {
		retire_peer(i);
		if (g_peer_wake[i] >= 0) {
			close(g_peer_wake[i]);
			g_peer_wake[i] = -1;
		}
	}
	unlink(g_slot_path);
	unlink(g_wake_path);
	/* The slot stays mapped: buffers in it may still be referenced by the caller. */
	close(g_slot_fd);
	g_slot_fd = -1;
	g_inited = 0;
	pthread_mutex_unlock(&g_lock);
}

PUBLIC int rpal_is_enabled(void) { return g_inited; }

PUBLIC status_t rpal_get_service_key(uint64_t *key)
{
	if (!g_inited || !key)
		return -1;
	*key = g_key;
	return 0;
}

PUBLIC int rpal_get_service_id(void) { return g_inited ? g_id : -1; }

PUBLIC int rpal_request_service(uint64_t key)
{
	if (!g_inited)
		return -E_DONT_INITED;
	pthread_mutex_lock(&g_lock);
	int found = -1;
	for (int id = 0; id < MAX_SERVICES - 1 && found < 0; id++) {
		if (id == g_id)
			continue;
		if (g_peers[id] && g_peers[id]->key == key) {
			found = id;
			break;
		}
		if (g_peers[id]) {
			/* The id was reused: its former owner exited (the kernel would have dropped the mapping). */
			retire_peer(id);
			if (g_peer_wake[id] >= 0)
				close(g_peer_wake[id]);
			g_peer_wake[id] = -1;
		}
		char slot[128], wake[128];
		names(id, slot, wake);
		int fd = open(slot, O_RDWR | O_CLOEXEC);
		if (fd < 0)
			continue;
		struct stat st;
		uint64_t k = 0;
		uint32_t magic = 0;
		if (fstat(fd, &st) != 0 || st.st_uid != getuid() || (st.st_mode & 077) != 0 ||
		    pread(fd, &magic, sizeof(magic), 0) != sizeof(magic) ||
		    pread(fd, &k, sizeof(k), offsetof(struct dslot, key)) != sizeof(k) || magic != SLOT_MAGIC ||
		    k != key) {
			close(fd);
			continue;
		}
		/* Our own zero-page placeholder may hold the address: replace it, nothing else. */
		void *p = mmap(slot_addr(id), SLOT_BYTES, PROT_READ | PROT_WRITE,
			       MAP_SHARED | (g_placeholder[id] ? MAP_FIXED : MAP_FIXED_NOREPLACE), fd, 0);
		close(fd);
		if (p != MAP_FAILED && p == slot_addr(id))
			g_placeholder[id] = 0;
		if (p == MAP_FAILED || p != slot_addr(id)) {
			if (p != MAP_FAILED)
				munmap(p, SLOT_BYTES);
			break;
		}
		g_peers[id] = p;
		g_peer_wake[id] = open(wake, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
		found = id;
	}
	pthread_mutex_unlock(&g_lock);
	return found >= 0 ? 0 : -E_NO_SERVICE;
}

PUBLIC int rpal_get_request_service_id(uint64_t key)
{
	for (int id = 0; id < MAX_SERVICES; id++)
		if (g_peers[id] && g_peers[id]->key == key)
			return id;
	return -1;
}

PUBLIC status_t rpal_release_service(uint64_t key)
{
	pthread_mutex_lock(&g_lock);
	int id = rpal_get_request_service_id(key);
	if (id >= 0) {
		retire_peer(id);
		if (g_peer_wake[id] >= 0)
			close(g_peer_wake[id]);
		g_peer_wake[id] = -1;
	}
	pthread_mutex_unlock(&g_lock);
	return id >= 0 ? 0 : -1;
}

PUBLIC status_t rpal_clean_service_start(int64_t *keys)
{
	if (keys)
		keys[0] = 0;
	return 0;
}

PUBLIC void rpal_clean_service_end(int64_t *keys) { (void)keys; }

PUBLIC status_t rpal_sender_init(rpal_error_code_t *error)
{
	if (!g_inited) {
		if (error)
			*error = E_DONT_INITED;
		return -1;
	}
	t_sender = 1;
	return 0;
}

PUBLIC status_t rpal_sender_exit(void)
{
	t_sender = 0;
	return 0;
}

PUBLIC int rpal_receiver_init(void)
{
	if (!g_inited)
		return -1;
	t_receiver = 1;
	return eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
}

PUBLIC void rpal_receiver_exit(void) { t_receiver = 0; }

/*
 * Says once per process why sock_diag could not answer: a kernel without CONFIG_UNIX_DIAG, or with
 * it as a module (Debian: =m) that it cannot load (no /lib/modules for the running kernel, or no
 * modprobe), answers ENOENT, and rpal_uds_fdmap can then map no socket at all.
 */
static void sock_diag_failed(const char *what, int err)
{
	static int warned;
	if (__atomic_exchange_n(&warned, 1, __ATOMIC_RELAXED))
		return;
	fprintf(stderr,
		"librpal test double: rpal_uds_fdmap: sock_diag for AF_UNIX (%s) failed: %s; the kernel "
		"must report a Unix socket's peer: CONFIG_UNIX_DIAG built in, or its unix_diag module "
		"loadable (modprobe unix_diag)\n",
		what, strerror(err));
}

/* The inode of the other end of a connected Unix socket, from sock_diag. 0 if unknown. */
static uint64_t peer_inode(int fd)
{
	struct stat st;
	if (fstat(fd, &st) != 0)
		return 0;
	int nl = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
	if (nl < 0) {
		sock_diag_failed("socket(AF_NETLINK, NETLINK_SOCK_DIAG)", errno);
		return 0;
	}
	struct {
		struct nlmsghdr nlh;
		struct unix_diag_req req;
	} msg;
	memset(&msg, 0, sizeof(msg));
	msg.nlh.nlmsg_len = sizeof(msg);
	msg.nlh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
	msg.nlh.nlmsg_flags = NLM_F_REQUEST;
	msg.req.sdiag_family = AF_UNIX;
	msg.req.udiag_states = 0xffffffff;
	msg.req.udiag_ino = (uint32_t)st.st_ino;
	msg.req.udiag_show = UDIAG_SHOW_PEER;
	msg.req.udiag_cookie[0] = msg.req.udiag_cookie[1] = ~0u;
	struct sockaddr_nl sa = { .nl_family = AF_NETLINK };
	uint64_t result = 0;
	if (sendto(nl, &msg, sizeof(msg), 0, (struct sockaddr *)&sa, sizeof(sa)) == sizeof(msg)) {
		char buf[8192] __attribute__((aligned(8)));
		ssize_t n = recv(nl, buf, sizeof(buf), 0);
		struct nlmsghdr *h = (struct nlmsghdr *)buf;
		if (n > 0 && NLMSG_OK(h, (size_t)n) && h->nlmsg_type == NLMSG_ERROR &&
		    h->nlmsg_len >= NLMSG_LENGTH(sizeof(struct nlmsgerr))) {
			/* Asked about an AF_UNIX socket of ours, so it exists: any error (ENOENT when
			 * unix_diag is missing) means sock_diag cannot answer for AF_UNIX at all. */
			int domain = 0;
			socklen_t dlen = sizeof(domain);
			if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &dlen) == 0 && domain == AF_UNIX)
				sock_diag_failed("SOCK_DIAG_BY_FAMILY", -((struct nlmsgerr *)NLMSG_DATA(h))->error);
		} else if (n > 0 && NLMSG_OK(h, (size_t)n) && h->nlmsg_type == SOCK_DIAG_BY_FAMILY) {
			struct unix_diag_msg *m = NLMSG_DATA(h);
			int len = (int)h->nlmsg_len - NLMSG_LENGTH(sizeof(*m));
			for (struct rtattr *a = (struct rtattr *)(m + 1); RTA_OK(a, len); a = RTA_NEXT(a, len)) {
				if (a->rta_type == UNIX_DIAG_PEER && RTA_PAYLOAD(a) >= 4)
					result = *(uint32_t *)RTA_DATA(a);
			}
		}
	}
	close(nl);
	return result;
}

PUBLIC status_t rpal_uds_fdmap(uint64_t sid_fd, uint64_t *rpalfd)
{
	int peer = (int)(sid_fd >> 32);
	int fd = (int)(sid_fd & 0xffffffffu);
	if (!g_inited || !rpalfd || peer < 0 || peer >= MAX_SERVICES || !g_peers[peer])
		return -1;
	uint64_t ino = peer_inode(fd);
	if (!ino)
		return -1;
	struct dslot *p = g_peers[peer];
	for (int i = 0; i < MAX_FDS; i++) {
		if (__atomic_load_n(&p->fds[i].used, __ATOMIC_ACQUIRE) && p->fds[i].inode == ino) {
			*rpalfd = (uint64_t)i | ((uint64_t)p->fds[i].gen << 16);
			return 0;
		}
	}
	return -1;
}

PUBLIC int rpal_get_peer_rid(uint64_t sid_fd)
{
	(void)sid_fd;
	return 0;
}

static int ensure_wake_in(int epfd)
{
	for (int i = 0; i < 8; i++)
		if (g_wake_epfds[i] == epfd)
			return 0;
	for (int i = 0; i < 8; i++) {
		if (g_wake_epfds[i] < 0) {
			struct epoll_event ev = { .events = EPOLLIN, .data.u64 = WAKE_TAG };
			if (epoll_ctl(epfd, EPOLL_CTL_ADD, g_wake_rd, &ev) != 0 && errno != EEXIST)
				return -1;
			g_wake_epfds[i] = epfd;
			return 0;
		}
	}
	return -1;
}

PUBLIC int rpal_epoll_ctl(int epfd, int op, int fd, struct epoll_event *event)
{
	struct epoll_event ev;
	if (event) {
		ev = *event;
		ev.events &= ~(uint32_t)(EPOLLRPALIN | EPOLLRPALOUT);
	}
	int ret = epoll_ctl(epfd, op, fd, event ? &ev : NULL);
	if (ret != 0 || !g_inited)
		return ret;
	pthread_mutex_lock(&g_lock);
	if (op == EPOLL_CTL_ADD && event && (event->events & EPOLLRPALIN)) {
		struct stat st;
		int slot = -1;
		for (int i = 0; i < MAX_FDS; i++)
			if (!g_slot->fds[i].used) {
				slot = i;
				break;
			}
		if (slot < 0 || fstat(fd, &st) != 0 || ensure_wake_in(epfd) != 0) {
			pthread_mutex_unlock(&g_lock);
			epoll_ctl(epfd, EPOLL_CTL_DEL, fd, NULL);
			return -1;
		}
		struct dfd *d = &g_slot->fds[slot];
		d->fd = fd;
		d->inode = st.st_ino;
		d->head = d->tail = 0;
		d->gen++;
		__atomic_store_n(&d->used, 1, __ATOMIC_RELEASE);
		g_regs[slot] = (struct local_reg){ .used = 1, .epfd = epfd, .data = event->data.u64 };
	} else if (op == EPOLL_CTL_DEL) {
		for (int i = 0; i < MAX_FDS; i++) {
			if (g_slot->fds[i].used && g_slot->fds[i].fd == fd) {
				__atomic_store_n(&g_slot->fds[i].used, 0, __ATOMIC_RELEASE);
				g_regs[i].used = 0;
			}
		}
	}
	pthread_mutex_unlock(&g_lock);
	return 0;
}

/* EPOLLRPALIN events for registered sockets whose queue has words. */
static int user_events(int epfd, struct epoll_event *events, int max)
{
	int n = 0;
	for (int i = 0; i < MAX_FDS && n < max; i++) {
		struct dfd *d = &g_slot->fds[i];
		if (!g_regs[i].used || g_regs[i].epfd != epfd)
			continue;
		if (__atomic_load_n(&d->head, __ATOMIC_ACQUIRE) != __atomic_load_n(&d->tail, __ATOMIC_ACQUIRE)) {
			events[n].events = EPOLLRPALIN;
			events[n].data.u64 = g_regs[i].data;
			n++;
		}
	}
	return n;
}

PUBLIC int rpal_epoll_wait_user(int epfd, struct epoll_event *events, int maxevents, int timeout)
{
	(void)timeout;
	if (!g_inited)
		return 0;
	return user_events(epfd, events, maxevents);
}

PUBLIC int rpal_epoll_wait(int epfd, struct epoll_event *events, int maxevents, int timeout)
{
	if (!g_inited || maxevents <= 0)
		return epoll_wait(epfd, events, maxevents, timeout);
	for (;;) {
		int n = user_events(epfd, events, maxevents);
		if (n > 0)
			return n;
		/* "parked" must be visible before the queues are re-read (the sender's side: rpal_write_ptrs). */
		__atomic_store_n(&g_slot->parked, 1, __ATOMIC_SEQ_CST);
		__atomic_thread_fence(__ATOMIC_SEQ_CST);
		n = user_events(epfd, events, maxevents);
		if (n > 0) {
			__atomic_store_n(&g_slot->parked, 0, __ATOMIC_SEQ_CST);
			return n;
		}
		int r = epoll_wait(epfd, events, maxevents, timeout);
		__atomic_store_n(&g_slot->parked, 0, __ATOMIC_SEQ_CST);
		if (r < 0)
			return r;
		int out = 0;
		for (int i = 0; i < r; i++) {
			if (events[i].data.u64 == WAKE_TAG) {
				char buf[256];
				while (read(g_wake_rd, buf, sizeof(buf)) > 0) {
				}
				continue;
			}
			events[out++] = events[i];
		}
		out += user_events(epfd, events + out, maxevents - out);
		if (out > 0 || timeout >= 0)
			return out;
	}
}

PUBLIC int rpal_read_ptrs(int fd, int64_t *words, int n)
{
	if (!g_inited || !words || n <= 0)
		return -1;
	for (int i = 0; i < MAX_FDS; i++) {
		struct dfd *d = &g_slot->fds[i];
		if (!g_regs[i].used || d->fd != fd)
			continue;
		spin_lock(&d->lock);
		int got = 0;
		while (got < n && d->tail != d->head) {
			words[got++] = d->q[d->tail % QUEUE_WORDS];
			d->tail++;
		}
		spin_unlock(&d->lock);
		return got;
	}
	return -1;
}

PUBLIC int rpal_write_ptrs(int service_id, uint64_t rpalfd, int64_t *words, int len)
{
	if (!words || len <= 0 || len > QUEUE_WORDS)
		return -E_INVALID_ARG;
	if (!t_sender)
		return -E_INVAL_THREAD;
	if (service_id < 0 || service_id >= MAX_SERVICES || !g_peers[service_id])
		return -E_INVAL_SERVICE;
	struct dslot *p = g_peers[service_id];
	uint32_t idx = (uint32_t)(rpalfd & 0xffff);
	uint32_t gen = (uint32_t)(rpalfd >> 16);
	if (idx >= MAX_FDS)
		return -E_INVALID_ARG;
	struct dfd *d = &p->fds[idx];
	if (!__atomic_load_n(&d->used, __ATOMIC_ACQUIRE) || d->gen != gen)
		return -E_FDE_OUTDATED;
	spin_lock(&d->lock);
	if (QUEUE_WORDS - (d->head - d->tail) < (uint32_t)len) {
		spin_unlock(&d->lock);
		return -E_QUEUE_PUT_FAILED;
	}
	for (int i = 0; i < len; i++)
		d->q[(d->head + (uint32_t)i) % QUEUE_WORDS] = words[i];
	__atomic_store_n(&d->head, d->head + (uint32_t)len, __ATOMIC_RELEASE);
	spin_unlock(&d->lock);
	/*
	 * Dekker with rpal_epoll_wait (which stores `parked`, then re-reads the queue): the new head must be
	 * visible before we read `parked`. A release store followed by a load is NOT ordered (x86 lets the
	 * load pass the store still sitting in the store buffer), so without this fence both sides could
	 * read the other's old value — the receiver sleeps with words queued and nobody writes the FIFO.
	 */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (__atomic_load_n(&p->parked, __ATOMIC_SEQ_CST) && g_peer_wake[service_id] >= 0) {
		char b = 1;
		ssize_t w = write(g_peer_wake[service_id], &b, 1);
		(void)w; /* EAGAIN: the FIFO already holds a wake-up */
	}
	return len;
}

PUBLIC status_t rpal_read_access_safety(access_fn do_access, int *do_access_ret, ...)
{
	va_list ap;
	va_start(ap, do_access_ret);
	int r = do_access(ap);
	va_end(ap);
	if (do_access_ret)
		*do_access_ret = r;
	return 0;
}

/* Double only: peer-visible memory (inside this process's slot). Real RPAL needs no such call. */
PUBLIC void *rpal_test_double_alloc(uint64_t bytes)
{
	if (!g_inited || bytes == 0)
		return NULL;
	pthread_mutex_lock(&g_lock);
	uint64_t size = (bytes + 4095) & ~4095ULL;
	void *p = NULL;
	if (g_slot->alloc_top + size <= SLOT_BYTES) {
		p = (char *)g_slot + g_slot->alloc_top;
		g_slot->alloc_top += size;
	}
	pthread_mutex_unlock(&g_lock);
	return p;
}
