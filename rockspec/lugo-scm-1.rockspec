package = "lugo"
version = "scm-1"
source = {
  url = "git+https://example.invalid/lugo.git",
}
description = {
  summary = "Go's runtime for LuaJIT: goroutines, channels, select, timers, sync",
  detailed = [[
lugo runs Lua scripts the way Go runs Go programs: a C core embeds LuaJIT and
gives scripts goroutines, channels, select, timers and Go's sync primitives,
scheduled by Go's GMP model. It installs the `lugo` host (run scripts and
busted specs under the runtime), the Lua modules, and lugo/core.so so that
plain luajit can run a main goroutine with lugo.main.]],
  license = "MIT",
}
dependencies = {
  "luajit >= 2.1.0-beta3",
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
