-- A TCP echo server: one goroutine per connection, an acceptor on every
-- processor (net.serve). Try it: lugo examples/echo.lua 127.0.0.1:8080,
-- then nc 127.0.0.1 8080 in another terminal.
local net = require "lugo.net"

-- reuseport: a listening socket per processor; the kernel spreads new
-- connections over them.
local ln = assert(net.listen("tcp", arg[1] or "127.0.0.1:8080", { reuseport = true }))
io.stderr:write("echo: listening on ", ln:addr(), "\n")

-- serve: an acceptor spawned on every processor; each connection is served
-- in a goroutine of the processor that accepted it, until ln closes.
net.serve(ln, function(conn)
  repeat
    local data = conn:read()
  until not data or not conn:write(data)
  conn:close()
end)
