package = "lugo"
version = "scm-1"
source = {
  url = "git+https://example.invalid/lugo.git",
}
description = {
  summary = "Go's runtime for LuaJIT: goroutines, channels, select, timers, sync, context, net",
  detailed = [[
lugo runs Lua scripts the way Go runs Go programs: a C core embeds LuaJIT and
gives scripts goroutines, channels, select, timers, Go's sync primitives,
context, TCP/Unix listeners and connections that read as blocking, and
HTTP/1.1 servers and clients (lugo.http),
scheduled by Go's GMP model. It installs the `lugo` host (run scripts and
busted specs under the runtime), the Lua modules, and lugo/core.so so that
plain luajit can run a main goroutine with lugo.main.]],
  license = "MIT",
}
dependencies = {
  "lua ~> 5.1", -- LuaJIT: the build finds it (luajit.pc); LuaRocks 3.8 cannot match a "luajit" pin here
}
external_dependencies = {
  HTTP_PARSER = { header = "http_parser.h" }, -- Debian: libhttp-parser-dev
  XXHASH = { header = "xxhash.h" }, -- Debian: libxxhash-dev (header only: xxh3 inlined)
}
build = {
  type = "cmake",
  variables = {
    CMAKE_BUILD_TYPE = "Release",
    CMAKE_INSTALL_PREFIX = "$(PREFIX)",
    LUA_INCDIR = "$(LUA_INCDIR)",
    LUGO_BINDIR = "$(BINDIR)",
    LUGO_LUADIR = "$(LUADIR)",
    LUGO_LIBDIR = "$(LIBDIR)",
    LUGO_TESTS = "OFF",
  },
}
