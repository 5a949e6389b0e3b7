/* bench/c/echoserver.c: the least an echo server can do on this kernel, to
 * show in bench/net how far any server (lugo's, Go's) is from the floor.
 *
 *   echoserver ADDR:PORT [THREADS]   (default 2 threads)
 *
 * One thread per CPU, each with its own SO_REUSEPORT listener and its own
 * edge-triggered epoll set: read until EAGAIN, write back what was read.
 * No scheduler, no buffers beyond one stack array, no timers: what is left
 * of a round trip's cost is the kernel's (TCP over loopback, the wake-ups
 * of the client). Writes of 64-byte echoes never fill a socket buffer
 * here; a short write drops the connection rather than queue the rest,
 * which bench/net's client would report as a failure. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

static struct sockaddr_in addr;

static void die(const char *what) {
  fprintf(stderr, "echoserver: %s: %s\n", what, strerror(errno));
  exit(1);
}

static void *serve(void *arg) {
  (void)arg;
  int one = 1;
  int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (ls < 0) die("socket");
  if (setsockopt(ls, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) ||
      setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one))
    die("setsockopt");
  if (bind(ls, (struct sockaddr *)&addr, sizeof addr) || listen(ls, 1024)) die("listen");
  int ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) die("epoll_create1");
  struct epoll_event ev = {.events = EPOLLIN, .data.fd = ls};
  if (epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev)) die("epoll_ctl");
  struct epoll_event evs[256];
  char buf[4096];
  for (;;) {
    int n = epoll_wait(ep, evs, 256, -1);
    if (n < 0 && errno != EINTR) die("epoll_wait");
    for (int i = 0; i < n; i++) {
      int fd = evs[i].data.fd;
      if (fd == ls) {
        int c;
        while ((c = accept4(ls, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
          struct epoll_event cev = {.events = EPOLLIN | EPOLLRDHUP | EPOLLET, .data.fd = c};
          if (setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) || epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev))
            close(c);
        }
        continue;
      }
      for (;;) {
        ssize_t r = recv(fd, buf, sizeof buf, 0);
        if (r > 0) {
          if (send(fd, buf, (size_t)r, MSG_NOSIGNAL) == r) continue;
        } else if (r < 0 && (errno == EAGAIN || errno == EINTR)) {
          break;
        }
        close(fd); /* EOF, an error, or a short write */
        break;
      }
    }
  }
  return NULL;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: echoserver ADDR:PORT [THREADS]\n");
    return 2;
  }
  char host[64];
  const char *colon = strrchr(argv[1], ':');
  if (!colon || (size_t)(colon - argv[1]) >= sizeof host) {
    fprintf(stderr, "echoserver: bad address %s\n", argv[1]);
    return 2;
  }
  memcpy(host, argv[1], (size_t)(colon - argv[1]));
  host[colon - argv[1]] = 0;
  addr.sin_family = AF_INET;
  addr.sin_port = htons((uint16_t)atoi(colon + 1));
  if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
    fprintf(stderr, "echoserver: bad address %s\n", argv[1]);
    return 2;
  }
  int threads = argc > 2 ? atoi(argv[2]) : 2;
  if (threads < 1 || threads > 64) threads = 2;
  pthread_t th[64];
  for (int i = 1; i < threads; i++)
    if (pthread_create(&th[i], NULL, serve, NULL)) die("pthread_create");
  serve(NULL);
  return 0;
}
