-- An HTTP/1.1 hello server written by hand over lugo.net: bench/http's
-- stand-in for examples/hello_http.lua (lugo.http) while that does not
-- exist, and a yardstick for what lugo.http costs over bare sockets.
-- Usage: lugo -p 2 bench/lugo/http_hello_net.lua [ADDR]
--
-- Every request, whatever its method and path, gets "hello\n" with a
-- Content-Length, a Date and a Content-Type, as Go's and nginx's do.
-- Connections stay open (HTTP/1.1 keep-alive) unless the request says
-- "Connection: close" or is HTTP/1.0 without "Connection: keep-alive".
-- Pipelined requests are answered in one write per read. Request bodies
-- are not supported (a bench server: GET only).
local lugo, net, runtime = require "lugo", require "lugo.net", require "lugo.runtime"

-- reuseport: one listening socket per processor; an accept loop on each.
local ln = assert(net.listen("tcp", arg[1] or "127.0.0.1:8080", { reuseport = true }))
io.stderr:write("http_hello_net: listening on ", ln:addr(), "\n")

for _ = 1, runtime.gomaxprocs() do
  lugo.spawn(function()
    -- Everything below lives in the processor that runs this loop.
    local find, sub, rep, byte, match, lower =
      string.find, string.sub, string.rep, string.byte, string.match, string.lower
    local time, date = os.time, os.date
    local stamp, response = -1, nil

    -- the whole response, remade once a second for its Date
    local function hello()
      local now = time()
      if now ~= stamp then
        stamp = now
        response = "HTTP/1.1 200 OK\r\nDate: " .. date("!%a, %d %b %Y %H:%M:%S GMT", now) ..
          "\r\nContent-Type: text/plain\r\nContent-Length: 6\r\n\r\nhello\n"
      end
      return response
    end

    -- One pass over what was read: each request's head ends at "\r\n\r\n";
    -- "onnection:" is looked for once per read and again only past a
    -- request that holds it, so that pipelined requests cost linear time.
    local function serve(conn)
      local pending = ""
      while true do
        local data = conn:read()
        if not data then break end
        if pending ~= "" then data = pending .. data end
        local pos, n, last = 1, 0, false
        local hdr = find(data, "onnection:", 1, true)
        while true do
          local e = find(data, "\r\n\r\n", pos, true)
          if not e then break end
          n = n + 1
          local v
          while hdr and hdr < e do
            local c = byte(data, hdr - 1)
            if (c == 67 or c == 99) and byte(data, hdr - 2) == 10 then -- "\n[Cc]onnection:"
              v = match(data, "^[ \t]*([%w-]+)", hdr + 10)
              v = v and lower(v)
            end
            hdr = find(data, "onnection:", hdr + 10, true)
          end
          local eol = find(data, "\r\n", pos, true) -- the request line ends "HTTP/1.x"
          if byte(data, eol - 1) == 48 and byte(data, eol - 3) == 49 then -- HTTP/1.0
            last = v ~= "keep-alive"
          else
            last = v == "close"
          end
          pos = e + 4
          if last then break end
        end
        pending = pos == 1 and data or sub(data, pos)
        if n > 0 then
          local r = hello()
          if not conn:write(n == 1 and r or rep(r, n)) then break end
        end
        if last or #pending > 65536 then break end
      end
      conn:close()
    end

    while true do lugo.go(serve, assert(ln:accept())) end
  end)
end
lugo.select() -- serve until killed
