/* C reference for bench-mesh's sidecar CPU: the least a TCP forwarder can do per call on this
 * machine. A sidecar's CPU is ~45 % kernel wake/sleep (per call: 2 epoll_pwait2, 2 recvfrom, 2
 * sendto, and a cross-CPU wakeup that costs ~6 us under nested virtualisation); this program makes
 * exactly that pattern and nothing else, so its vCPU per 1k rps, measured in the same run, is the
 * floor a sidecar's figure can be judged against. h2c passes through it unchanged.
 *
 * Single-threaded, level-triggered epoll. Each readiness event gets one recv and one send: a drain
 * loop would add a recv returning EAGAIN per message, which the sidecars do not make, and level
 * triggering reports whatever is left on the next wait. Interest changes (epoll_ctl) happen only on
 * a partial send, a connect finishing or an EOF, never per message in the steady state.
 *
 * Usage: tcp-proxy UPSTREAM_HOST UPSTREAM_PORT
 * Listens on 127.0.0.1 (ephemeral port) and prints {"ready":true,"port":N}. Exits 0 on SIGTERM or
 * SIGINT, and on its own when its parent goes away (checked only when idle for a second, so a
 * killed bench leaves no proxy behind and the steady state makes no extra syscall). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BUF_BYTES (64 * 1024)
#define MAX_EVENTS 64

enum { DOWN = 0, UP = 1 };

struct pair;

/* What an epoll event's data.ptr points at: one socket of a pair, or the listener / signalfd
 * (pair == NULL). */
struct endpoint {
  int fd;
  int idx; /* DOWN or UP within its pair */
  struct pair *pair;
  uint32_t interest; /* events registered with epoll now, to skip epoll_ctl calls that change nothing */
  int parked;        /* taken out of the epoll set after a hang-up (see on_event) */
};

/* Bytes read from one side and not yet sent to the other. Reading that side stops while any are
 * pending, so a slow receiver holds back its sender instead of growing a buffer. */
struct dir {
  char *buf;
  size_t off, len;
  int eof; /* the source side sent FIN and it was passed on as shutdown(SHUT_WR) */
};

struct pair {
  struct endpoint ep[2];
  struct dir dir[2]; /* dir[i]: read from ep[i], sent to ep[1 - i] */
  int connecting;    /* upstream connect in flight: nothing is read until it completes */
  int dead;          /* closed; freed after the current batch of events, which may still name it */
  struct pair *prev, *next;
};

static int epfd = -1;
static struct pair *live; /* every open pair, for closing them on exit */
static struct pair *graveyard;
static struct sockaddr_storage up_addr;
static socklen_t up_addrlen;
static const char *up_host, *up_port;

static void fatal(const char *what) {
  fprintf(stderr, "tcp-proxy: %s: %s\n", what, strerror(errno));
  exit(1);
}

static void conn_error(struct pair *p, const char *what, int err) {
  fprintf(stderr, "tcp-proxy: connection %d<->%d (upstream %s:%s): %s: %s\n", p->ep[DOWN].fd, p->ep[UP].fd, up_host,
          up_port, what, strerror(err));
}

static int set_interest(struct endpoint *e, uint32_t want) {
  if (e->parked) {
    /* A parked side waits out of the set until there is something to read from it again. */
    if (!(want & EPOLLIN)) return 0;
    struct epoll_event ev = {.events = want, .data.ptr = e};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, e->fd, &ev) < 0) {
      conn_error(e->pair, "epoll_ctl(ADD) of a parked socket", errno);
      return -1;
    }
    e->parked = 0;
    e->interest = want;
    return 0;
  }
  if (e->interest == want) return 0;
  struct epoll_event ev = {.events = want, .data.ptr = e};
  if (epoll_ctl(epfd, EPOLL_CTL_MOD, e->fd, &ev) < 0) {
    conn_error(e->pair, "epoll_ctl(MOD)", errno);
    return -1;
  }
  e->interest = want;
  return 0;
}

/* Side i is read while its direction has nothing pending and has not ended, and written while the
 * other direction has bytes pending for it (or, upstream, while its connect is in flight). */
static int update_interest(struct pair *p) {
  for (int i = 0; i < 2; i++) {
    uint32_t want = 0;
    if (p->connecting) {
      if (i == UP) want = EPOLLOUT;
    } else {
      if (!p->dir[i].eof && p->dir[i].len == 0) want |= EPOLLIN;
      if (p->dir[1 - i].len > p->dir[1 - i].off) want |= EPOLLOUT;
    }
    if (set_interest(&p->ep[i], want) < 0) return -1;
  }
  return 0;
}

static void close_pair(struct pair *p) {
  if (p->dead) return;
  p->dead = 1;
  for (int i = 0; i < 2; i++) {
    /* close() also removes the fd from the epoll set (no other descriptor refers to it). */
    if (close(p->ep[i].fd) < 0) conn_error(p, i == DOWN ? "close(downstream)" : "close(upstream)", errno);
  }
  if (p->prev) p->prev->next = p->next;
  else live = p->next;
  if (p->next) p->next->prev = p->prev;
  p->next = graveyard;
  graveyard = p;
}

static void bury(void) {
  while (graveyard) {
    struct pair *p = graveyard;
    graveyard = p->next;
    free(p->dir[0].buf);
    free(p);
  }
}

/* Passes a FIN on: once both directions have ended the pair is done. */
static void end_dir(struct pair *p, int i) {
  p->dir[i].eof = 1;
  if (shutdown(p->ep[1 - i].fd, SHUT_WR) < 0) {
    conn_error(p, i == DOWN ? "shutdown(upstream, SHUT_WR)" : "shutdown(downstream, SHUT_WR)", errno);
    close_pair(p);
    return;
  }
  if (p->dir[0].eof && p->dir[1].eof) close_pair(p);
  else if (update_interest(p) < 0) close_pair(p);
}

/* Sends what dir i holds to the other side; -1 when the pair had to be closed. */
static int flush_dir(struct pair *p, int i) {
  struct dir *d = &p->dir[i];
  ssize_t w = send(p->ep[1 - i].fd, d->buf + d->off, d->len - d->off, MSG_NOSIGNAL);
  if (w < 0) {
    if (errno == EAGAIN || errno == EINTR) w = 0;
    else {
      conn_error(p, i == DOWN ? "send(upstream)" : "send(downstream)", errno);
      close_pair(p);
      return -1;
    }
  }
  d->off += (size_t)w;
  if (d->off == d->len) d->off = d->len = 0;
  return 0;
}

static void on_readable(struct pair *p, int i) {
  struct dir *d = &p->dir[i];
  ssize_t n = recv(p->ep[i].fd, d->buf, BUF_BYTES, 0);
  if (n < 0) {
    if (errno == EAGAIN || errno == EINTR) return;
    conn_error(p, i == DOWN ? "recv(downstream)" : "recv(upstream)", errno);
    close_pair(p);
    return;
  }
  if (n == 0) {
    end_dir(p, i);
    return;
  }
  d->off = 0;
  d->len = (size_t)n;
  if (flush_dir(p, i) < 0) return;
  /* Partial send: stop reading side i, wait for the other side to take more. */
  if (d->len != 0 && update_interest(p) < 0) close_pair(p);
}

static void on_writable(struct pair *p, int i) {
  if (p->connecting) {
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(p->ep[UP].fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) err = errno;
    if (err != 0) {
      conn_error(p, "connect(upstream)", err);
      close_pair(p);
      return;
    }
    p->connecting = 0;
    if (update_interest(p) < 0) close_pair(p);
    return;
  }
  struct dir *d = &p->dir[1 - i];
  if (d->len == 0) return;
  if (flush_dir(p, 1 - i) < 0) return;
  if (d->len == 0 && update_interest(p) < 0) close_pair(p);
}

static void on_event(struct endpoint *e, uint32_t events) {
  struct pair *p = e->pair;
  if (p->dead) return;
  int i = e->idx;
  if (events & EPOLLERR) {
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(e->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) err = errno;
    conn_error(p, i == DOWN ? "downstream socket error" : (p->connecting ? "connect(upstream)" : "upstream socket error"),
               err ? err : EIO);
    close_pair(p);
    return;
  }
  if ((events & EPOLLOUT) && (e->interest & EPOLLOUT)) {
    on_writable(p, i);
    if (p->dead) return;
  }
  if ((events & (EPOLLIN | EPOLLHUP)) && (e->interest & EPOLLIN)) {
    on_readable(p, i);
    return;
  }
  if (!(events & EPOLLHUP)) return;
  /* A hang-up on a side we are not reading is reported again on every wait (it cannot be masked).
   * When that side's bytes are still held back for the other side (it sent data and FIN, and the
   * other side already ended), they are deliverable: take the side out of the set until they have
   * gone, then read its FIN. Otherwise the peer is gone, and so is the pair. */
  if (p->dir[i].len > 0 && !p->dir[i].eof) {
    if (epoll_ctl(epfd, EPOLL_CTL_DEL, e->fd, NULL) < 0) {
      conn_error(p, "epoll_ctl(DEL) after a hang-up", errno);
      close_pair(p);
      return;
    }
    e->parked = 1;
    e->interest = 0;
    return;
  }
  close_pair(p);
}

static int set_nodelay(int fd) {
  int one = 1;
  return setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static void on_accept(int lfd) {
  int dfd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
  if (dfd < 0) {
    if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED) return;
    fprintf(stderr, "tcp-proxy: accept4: %s\n", strerror(errno));
    return;
  }
  if (set_nodelay(dfd) < 0) {
    fprintf(stderr, "tcp-proxy: setsockopt(downstream, TCP_NODELAY): %s\n", strerror(errno));
    close(dfd);
    return;
  }
  int ufd = socket(up_addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (ufd < 0) {
    fprintf(stderr, "tcp-proxy: socket(upstream): %s\n", strerror(errno));
    close(dfd);
    return;
  }
  if (set_nodelay(ufd) < 0) {
    fprintf(stderr, "tcp-proxy: setsockopt(upstream, TCP_NODELAY): %s\n", strerror(errno));
    close(dfd);
    close(ufd);
    return;
  }
  int connecting = 0;
  if (connect(ufd, (struct sockaddr *)&up_addr, up_addrlen) < 0) {
    if (errno != EINPROGRESS) {
      fprintf(stderr, "tcp-proxy: connect(upstream %s:%s): %s; closing the downstream connection\n", up_host, up_port,
              strerror(errno));
      close(dfd);
      close(ufd);
      return;
    }
    connecting = 1;
  }
  struct pair *p = calloc(1, sizeof *p);
  char *bufs = malloc(2 * BUF_BYTES);
  if (!p || !bufs) {
    fprintf(stderr, "tcp-proxy: out of memory for a connection's buffers\n");
    free(p);
    free(bufs);
    close(dfd);
    close(ufd);
    return;
  }
  p->dir[DOWN].buf = bufs;
  p->dir[UP].buf = bufs + BUF_BYTES;
  p->connecting = connecting;
  p->ep[DOWN] = (struct endpoint){.fd = dfd, .idx = DOWN, .pair = p};
  p->ep[UP] = (struct endpoint){.fd = ufd, .idx = UP, .pair = p};
  p->next = live;
  if (live) live->prev = p;
  live = p;
  for (int i = 0; i < 2; i++) {
    /* Registered with no events: update_interest sets them. ERR and HUP are reported regardless. */
    struct epoll_event ev = {.events = 0, .data.ptr = &p->ep[i]};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, p->ep[i].fd, &ev) < 0) {
      conn_error(p, "epoll_ctl(ADD)", errno);
      close_pair(p);
      return;
    }
  }
  if (update_interest(p) < 0) close_pair(p);
}

static void resolve_upstream(const char *host, const char *port) {
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
  int rc = getaddrinfo(host, port, &hints, &res);
  if (rc != 0) {
    fprintf(stderr, "tcp-proxy: resolving upstream %s:%s: %s\n", host, port, gai_strerror(rc));
    exit(2);
  }
  memcpy(&up_addr, res->ai_addr, res->ai_addrlen);
  up_addrlen = res->ai_addrlen;
  freeaddrinfo(res);
}

/* epoll_pwait2 is what Bun's event loop calls; epoll_wait on kernels before 5.11. */
static int wait_events(struct epoll_event *evs, int timeout_ms) {
  static int have_pwait2 = 1;
  if (have_pwait2) {
    struct timespec ts = {.tv_sec = timeout_ms / 1000, .tv_nsec = (long)(timeout_ms % 1000) * 1000000L};
    int n = epoll_pwait2(epfd, evs, MAX_EVENTS, &ts, NULL);
    if (n >= 0 || errno != ENOSYS) return n;
    have_pwait2 = 0;
  }
  return epoll_wait(epfd, evs, MAX_EVENTS, timeout_ms);
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: %s UPSTREAM_HOST UPSTREAM_PORT\n", argv[0]);
    return 2;
  }
  up_host = argv[1];
  up_port = argv[2];
  resolve_upstream(up_host, up_port);
  pid_t parent = getppid();

  if (signal(SIGPIPE, SIG_IGN) == SIG_ERR) fatal("signal(SIGPIPE)");
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGINT);
  if (sigprocmask(SIG_BLOCK, &stop, NULL) < 0) fatal("sigprocmask");
  int sfd = signalfd(-1, &stop, SFD_NONBLOCK | SFD_CLOEXEC);
  if (sfd < 0) fatal("signalfd");

  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (lfd < 0) fatal("socket(listen)");
  struct sockaddr_in la = {.sin_family = AF_INET, .sin_port = 0, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  if (bind(lfd, (struct sockaddr *)&la, sizeof la) < 0) fatal("bind(127.0.0.1:0)");
  if (listen(lfd, 512) < 0) fatal("listen");
  socklen_t lalen = sizeof la;
  if (getsockname(lfd, (struct sockaddr *)&la, &lalen) < 0) fatal("getsockname(listen)");

  epfd = epoll_create1(EPOLL_CLOEXEC);
  if (epfd < 0) fatal("epoll_create1");
  struct endpoint listen_ep = {.fd = lfd}, signal_ep = {.fd = sfd};
  struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &listen_ep};
  if (epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &ev) < 0) fatal("epoll_ctl(ADD listen)");
  ev.data.ptr = &signal_ep;
  if (epoll_ctl(epfd, EPOLL_CTL_ADD, sfd, &ev) < 0) fatal("epoll_ctl(ADD signalfd)");

  if (printf("{\"ready\":true,\"port\":%d}\n", ntohs(la.sin_port)) < 0 || fflush(stdout) != 0) fatal("writing the ready line");

  struct epoll_event evs[MAX_EVENTS];
  int running = 1;
  while (running) {
    int n = wait_events(evs, 1000);
    if (n < 0) {
      if (errno == EINTR) continue;
      fatal("epoll_pwait2");
    }
    if (n == 0) {
      if (getppid() != parent) {
        fprintf(stderr, "tcp-proxy: parent %d went away; exiting\n", (int)parent);
        running = 0;
      }
      continue;
    }
    for (int k = 0; k < n; k++) {
      struct endpoint *e = evs[k].data.ptr;
      if (e == &listen_ep) on_accept(lfd);
      else if (e == &signal_ep) running = 0;
      else on_event(e, evs[k].events);
    }
    bury();
  }

  while (live) close_pair(live);
  bury();
  if (close(lfd) < 0) fatal("close(listen)");
  if (close(sfd) < 0) fatal("close(signalfd)");
  if (close(epfd) < 0) fatal("close(epoll)");
  return 0;
}
