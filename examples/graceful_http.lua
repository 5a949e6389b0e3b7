-- An HTTP service that stops gracefully on SIGTERM or SIGINT: it stops
-- accepting, lets the requests in flight finish, then exits 0. A second
-- signal during the shutdown ends it at once (the default action is back).
-- Try it: lugo examples/graceful_http.lua 127.0.0.1:8080, then
-- curl 'http://127.0.0.1:8080/work?s=5' and press Ctrl-C in the server's
-- terminal while curl waits: curl still gets its answer.
local lugo = require "lugo"
local http = require "lugo.http"
local net = require "lugo.net"
local time = require "lugo.time"
local context = require "lugo.context"
local signal = require("lugo.os").signal

-- Registered before anything is served, so that no signal finds the
-- default action in place once the service has started.
local ctx, stop = signal.notify_context(context.background(), "SIGTERM", "SIGINT")

local function handler(w, r)
  if r.path ~= "/work" then
    w:write("hello\n")
    return
  end
  -- Work that takes s seconds, and wraps up early when the server shuts
  -- down: r.ctx is cancelled then, and the response still goes out.
  io.stdout:write("working\n")
  io.stdout:flush()
  local i = lugo.select(lugo.case.recv(r.ctx:done()), lugo.case.recv(time.after(tonumber(r:query("s")) or 1)))
  w:write(i == 1 and "wrapped up: shutting down\n" or "done\n")
end

-- A socket per processor (reuseport); port 0 picks a free port, printed
-- below for whoever started us.
local ln = assert(net.listen("tcp", arg[1] or "127.0.0.1:8080", { reuseport = true }))
local srv = http.server({ handler = handler, read_header_timeout = 5 })
local served = lugo.chan(1)
lugo.go(function() served:send((select(2, srv:serve(ln)))) end)
io.stdout:write("listening on ", ln:addr(), "\n")
io.stdout:flush()

ctx:done():recv()
stop() -- from here a second SIGTERM or SIGINT ends the process at once
io.stdout:write("shutting down\n")
io.stdout:flush()
local grace, cancel = context.with_timeout(context.background(), 10)
local ok, err = srv:shutdown(grace)
cancel()
served:recv() -- "http: Server closed"
if not ok then
  io.stderr:write("graceful_http: shutdown: ", err, "\n")
  os.exit(1)
end
io.stdout:write("bye\n")
