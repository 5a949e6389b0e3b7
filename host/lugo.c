/*
 * lugo — the command line: `lugo [options] [script [args]]`, as `luajit`,
 * except that the script runs as the main goroutine of a lugo runtime.
 *
 * Everything the command line asks for (LUA_INIT, -l, -e, -j, -O, -b, the
 * script, -i) is compiled first, so that a syntax error is reported before
 * anything runs, and then run in order inside the main goroutine, so that
 * each of them may block on channels and timers.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>
#include <luajit.h>
#include <lualib.h>

#include "lugo.h"

static const char *progname = "lugo";

/* The main goroutine's body. Its frames carry the "[lugo]" chunk name,
 * which tracebacks leave out. Each chunk it runs (-e, -l, the script) runs
 * as luajit runs it: an error that escapes it is reported as luajit does
 * ("progname: message" and the traceback, nothing for a nil error) and ends
 * the program with status 1; the chunk is called by xpcall itself, so that
 * its frame reads "in main chunk". */
static const char launcher_src[] =
    "local steps, script, argv, interactive, progname = ...\n"
    "local core_traceback = require('lugo.core').traceback\n"
    "local function traceback(e)\n"
    "  if type(e) ~= 'string' and type(e) ~= 'number' then\n"
    "    local mt = getmetatable(e)\n"
    "    if e == nil or type(mt) ~= 'table' or mt.__tostring == nil then return e end\n"
    "    e = tostring(e)\n"
    "    if type(e) ~= 'string' then return e end\n"
    "  end\n"
    "  local tb = core_traceback(e, 2) -- not a tail call: level 2 is the error's\n"
    "  return tb\n"
    "end\n"
    "local function run(f, ...)\n"
    "  local ok, err = xpcall(f, traceback, ...)\n"
    "  if ok then return end\n"
    "  if err ~= nil then\n"
    "    local msg = (type(err) == 'string' or type(err) == 'number') and err or '(error object is not a string)'\n"
    "    io.stdout:flush()\n"
    "    io.stderr:write(progname, ': ', msg, '\\n')\n"
    "    io.stderr:flush()\n"
    "  end\n"
    "  os.exit(1)\n"
    "end\n"
    "local function split(s)\n"
    "  local t = {}\n"
    "  for a in s:gmatch('[^,]+') do t[#t + 1] = a end\n"
    "  return t\n"
    "end\n"
    "local function jitcmd(spec)\n"
    "  local cmd, args = spec:match('^([^=]*)=?(.*)$')\n"
    "  if jit[cmd] and args == '' and (cmd == 'on' or cmd == 'off' or cmd == 'flush') then\n"
    "    return jit[cmd]()\n"
    "  end\n"
    "  local ok, m = pcall(require, 'jit.' .. cmd)\n"
    "  if not ok or type(m) ~= 'table' or not m.start then\n"
    "    error('unknown luaJIT command or jit.* modules not installed: ' .. cmd, 0)\n"
    "  end\n"
    "  return m.start(unpack(split(args)))\n"
    "end\n"
    "local function pack(...) return { n = select('#', ...), ... } end\n"
    "local function repl()\n"
    "  local buf\n"
    "  while true do\n"
    "    io.stdout:write(buf and '>> ' or '> ')\n"
    "    io.stdout:flush()\n"
    "    local line = io.stdin:read('*l')\n"
    "    if not line then io.stdout:write('\\n') return end\n"
    "    local src = buf and (buf .. '\\n' .. line) or line\n"
    "    local f, err = loadstring('return ' .. src, '=stdin')\n"
    "    if not f then f, err = loadstring(src, '=stdin') end\n"
    "    if not f and err:find('<eof>', 1, true) then\n"
    "      buf = src\n"
    "    else\n"
    "      buf = nil\n"
    "      if not f then\n"
    "        io.stderr:write(err, '\\n')\n"
    "      else\n"
    "        local r = pack(xpcall(f, debug.traceback))\n"
    "        if not r[1] then io.stderr:write(tostring(r[2]), '\\n')\n"
    "        elseif r.n > 1 then print(unpack(r, 2, r.n)) end\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "end\n"
    "return function()\n"
    "  for i = 1, #steps do\n"
    "    local kind, v = steps[i][1], steps[i][2]\n"
    "    if kind == 'e' then run(v)\n"
    "    elseif kind == 'l' then run(require, v)\n"
    "    elseif kind == 'j' then run(jitcmd, v)\n"
    "    elseif kind == 'O' then run(function() require('jit.opt').start(unpack(split(v))) end)\n"
    "    elseif kind == 'b' then return run(function() require('jit.bcsave').start(unpack(v)) end)\n"
    "    end\n"
    "  end\n"
    "  if script then run(script, unpack(argv, 1, argv.n)) end\n"
    "  if interactive then repl() end\n"
    "end\n";

static void usage(const char *message) {
  if (message) fprintf(stderr, "%s: %s\n", progname, message);
  fprintf(stderr,
          "usage: %s [options]... [script [args]...].\n"
          "Available options are:\n"
          "  -e chunk  Execute string 'chunk'.\n"
          "  -p n      Run with n processors (default: LUGO_MAXPROCS, else the CPUs).\n"
          "  -l name   Require library 'name'.\n"
          "  -b ...    Save or list bytecode.\n"
          "  -j cmd    Perform LuaJIT control command.\n"
          "  -O[opt]   Control LuaJIT optimizations.\n"
          "  -i        Enter interactive mode after executing 'script'.\n"
          "  -v        Show version information.\n"
          "  --        Stop handling options.\n"
          "  -         Execute stdin and stop handling options.\n",
          progname);
  exit(1);
}

static void print_version(void) {
  printf("lugo %s -- %s %s. https://luajit.org/\n", LUGO_VERSION, LUAJIT_VERSION, LUAJIT_COPYRIGHT);
  fflush(stdout);
}

/* A load error ends the program as luajit's would: message, status 1. */
static void check_load(lua_State *L, int status) {
  if (status == 0) return;
  const char *msg = lua_tostring(L, -1);
  fprintf(stderr, "%s: %s\n", progname, msg ? msg : "(error object is not a string)");
  exit(1);
}

/* [-0, +0] steps[#steps + 1] = {kind, value at the top of the stack} */
static void add_step(lua_State *L, int steps, const char *kind) {
  lua_createtable(L, 2, 0);
  lua_pushstring(L, kind);
  lua_rawseti(L, -2, 1);
  lua_insert(L, -2);
  lua_rawseti(L, -2, 2);
  lua_rawseti(L, steps, (int)lua_objlen(L, steps) + 1);
}

int main(int argc, char **argv) {
  if (argv[0] && argv[0][0]) progname = argv[0];
  /* Options: everything before the script. */
  int script = 0; /* index of the script in argv, 0 if none */
  lugo_options opts = {0};
  bool has_e = false, has_v = false, interactive = false, has_b = false;
  int i;
  for (i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (a[0] != '-') break;
    if (strcmp(a, "--") == 0) {
      i++;
      break;
    }
    if (strcmp(a, "-") == 0) break;
    switch (a[1]) {
    case 'e':
    case 'l':
    case 'j':
    case 'p':
      if (a[2] == '\0' && ++i >= argc) usage("option requires an argument");
      if (a[1] == 'e') has_e = true;
      if (a[1] == 'p') {
        const char *v = a[2] ? a + 2 : argv[i];
        char *end;
        long n = strtol(v, &end, 10);
        if (*end || n < 1 || n > 256) usage("-p needs a number of processors from 1 to 256");
        opts.maxprocs = (int)n;
      }
      break;
    case 'O': break;
    case 'i':
      if (a[2]) usage("unrecognized option");
      interactive = has_v = true;
      break;
    case 'v':
      if (a[2]) usage("unrecognized option");
      has_v = true;
      break;
    case 'b': has_b = true; break;
    default: usage("unrecognized option");
    }
    if (has_b) break;
  }
  if (!has_b && i < argc) script = i;

  lugo_runtime *rt = lugo_new(&opts);
  lua_State *L = lugo_vm(rt);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "lugo.internal");
  check_load(L, lua_pcall(L, 1, 0, 0));

  /* arg: the script at 0, its arguments after, the interpreter before. */
  int base = script ? script : (has_b ? i : argc);
  lua_createtable(L, argc > base ? argc - base : 0, base + 1);
  for (int k = 0; k < argc; k++) {
    lua_pushstring(L, argv[k]);
    lua_rawseti(L, -2, k - base);
  }
  lua_setglobal(L, "arg");

  if (has_v) print_version();

  lua_newtable(L);
  int steps = lua_gettop(L);
  const char *init = getenv("LUA_INIT");
  if (init) {
    if (init[0] == '@') check_load(L, luaL_loadfile(L, init + 1));
    else check_load(L, luaL_loadbuffer(L, init, strlen(init), "=LUA_INIT"));
    add_step(L, steps, "e");
  }
  for (int k = 1; k < argc && (script == 0 || k < script); k++) {
    const char *a = argv[k];
    if (a[0] != '-' || strcmp(a, "--") == 0 || strcmp(a, "-") == 0) break;
    char opt = a[1];
    if (opt == 'b') {
      lua_createtable(L, argc - k, 0);
      for (int j = k + 1; j < argc; j++) {
        lua_pushstring(L, argv[j]);
        lua_rawseti(L, -2, j - k);
      }
      add_step(L, steps, "b");
      break;
    }
    if (opt == 'p' && a[2] == '\0') k++; /* its number */
    if (opt != 'e' && opt != 'l' && opt != 'j' && opt != 'O') continue;
    const char *v = a + 2;
    if ((opt == 'e' || opt == 'l' || opt == 'j') && *v == '\0') v = argv[++k];
    if (opt == 'e') {
      check_load(L, luaL_loadbuffer(L, v, strlen(v), "=(command line)"));
      add_step(L, steps, "e");
    } else {
      lua_pushstring(L, v);
      add_step(L, steps, (char[]){opt, '\0'});
    }
  }

  /* The script: a file, "-" for stdin, or stdin when nothing else was asked. */
  bool from_stdin = script && strcmp(argv[script], "-") == 0;
  if (!script && !has_e && !has_v && !has_b) {
    if (isatty(0)) {
      print_version();
      interactive = true;
    } else {
      from_stdin = true;
    }
  }
  if (script || from_stdin) check_load(L, luaL_loadfile(L, from_stdin ? NULL : argv[script]));
  else lua_pushnil(L);
  int nscript = script ? argc - script - 1 : 0;
  lua_createtable(L, nscript, 1);
  for (int k = 0; k < nscript; k++) {
    lua_pushstring(L, argv[script + 1 + k]);
    lua_rawseti(L, -2, k + 1);
  }
  lua_pushinteger(L, nscript);
  lua_setfield(L, -2, "n");
  lua_pushboolean(L, interactive);
  lua_pushstring(L, progname);

  check_load(L, luaL_loadbuffer(L, launcher_src, sizeof launcher_src - 1, "=[lugo]"));
  lua_insert(L, steps);
  lua_call(L, 5, 1); /* launcher(steps, script, argv, interactive, progname) -> main */

  int status = lugo_run(rt, 0);
  fflush(stdout);
  lugo_close(rt);
  return status;
}
