-- An HTTP hello service on every processor: a listening socket per
-- processor (SO_REUSEPORT), a goroutine per connection, each handler run
-- on the processor that accepted. Try it: lugo examples/hello_http.lua,
-- then curl http://127.0.0.1:8080/ in another terminal.
local http = require "lugo.http"

local addr = arg[1] or "127.0.0.1:8080"
io.stderr:write("hello_http: listening on ", addr, "\n")
assert(http.listen_and_serve(addr, function(w, r) w:write("hello\n") end))
