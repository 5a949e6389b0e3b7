/*
 * print.c — the standard output a program writes to, as Go's os.Stdout:
 * `print` writes each call's line with one write, so that lines printed
 * from several processors at once never tear; and a write to a standard
 * output or error whose reader has gone ends the process with SIGPIPE, as
 * Go's does for descriptors 1 and 2, while a write to a broken socket or
 * any other pipe returns EPIPE (Go's rule).
 *
 * Invariants:
 *   - print runs on the thread that holds the VM; stdio's own lock makes
 *     one fwrite atomic with respect to every other stdio call.
 *   - SIGPIPE: the handler runs on the thread whose write raised it. It
 *     ends the process only if descriptor 1 or 2 is a pipe or socket whose
 *     reader is gone (poll reports POLLERR), whatever wrote: print,
 *     io.write, a file method, an FFI write. Otherwise the write returns
 *     EPIPE. Installed only when SIGPIPE was left at its default (a program
 *     started with it ignored keeps ignoring it, as in Go).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include <lauxlib.h>

#include "rt.h"

static void on_sigpipe(int sig) {
  int saved = errno;
  struct pollfd fds[2] = {{.fd = 1}, {.fd = 2}};
  if (poll(fds, 2, 0) > 0 && ((fds[0].revents & POLLERR) || (fds[1].revents & POLLERR))) {
    /* Die of it: SIGPIPE is blocked while this handler runs, so the raise
     * takes effect, with the default action, as the handler returns. */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_DFL;
    sigaction(sig, &sa, NULL);
    raise(sig);
  }
  errno = saved;
}

void sigpipe_install(void) {
  struct sigaction sa;
  if (sigaction(SIGPIPE, NULL, &sa) != 0 || sa.sa_handler != SIG_DFL) return;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_sigpipe;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sigaction(SIGPIPE, &sa, NULL);
}

/* print(...): as luajit's, tostring on each argument, tabs between, a
 * newline at the end, but written with a single fwrite. */
static int l_print(lua_State *L) {
  int n = lua_gettop(L);
  luaL_Buffer b;
  lua_getglobal(L, "tostring");
  luaL_buffinit(L, &b);
  for (int i = 1; i <= n; i++) {
    /* The tab first: the buffer may need its slot on the stack, which must
     * not be under tostring's result. */
    if (i > 1) luaL_addchar(&b, '\t');
    lua_pushvalue(L, n + 1); /* tostring */
    lua_pushvalue(L, i);
    lua_call(L, 1, 1);
    if (!lua_isstring(L, -1)) return luaL_error(L, "'tostring' must return a string to 'print'");
    luaL_addvalue(&b);
  }
  luaL_addchar(&b, '\n');
  luaL_pushresult(&b);
  size_t len;
  const char *line = lua_tolstring(L, -1, &len);
  fwrite(line, 1, len, stdout);
  return 0;
}

void print_open(lua_State *L, bool adopted) {
  /* An adopted VM (plain luajit) keeps a print its script replaced. */
  lua_getglobal(L, "print");
  bool replace = !adopted || lua_iscfunction(L, -1);
  lua_pop(L, 1);
  if (replace) {
    lua_pushcfunction(L, l_print);
    lua_setglobal(L, "print");
  }
}
