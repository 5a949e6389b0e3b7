-- A TCP echo server: one goroutine per connection, an accept loop on every
-- processor. Try it: lugo examples/echo.lua 127.0.0.1:8080, then
-- nc 127.0.0.1 8080 in another terminal.
local lugo, net, runtime = require "lugo", require "lugo.net", require "lugo.runtime"

-- reuseport: a listening socket per processor; the kernel spreads new
-- connections over them.
local ln = assert(net.listen("tcp", arg[1] or "127.0.0.1:8080", { reuseport = true }))
io.stderr:write("echo: listening on ", ln:addr(), "\n")

local function serve(conn)
  repeat
    local data = conn:read()
  until not data or not conn:write(data)
  conn:close()
end

for _ = 1, runtime.gomaxprocs() do
  lugo.spawn(function()
    while true do lugo.go(serve, assert(ln:accept())) end
  end)
end
lugo.select() -- serve until killed
