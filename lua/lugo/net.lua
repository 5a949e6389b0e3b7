-- lugo.net: TCP and Unix listeners and connections whose calls read as
-- blocking: the goroutine parks while its descriptor is not ready, on the
-- processor's poller (runtime/netpoll.c, runtime/net.c). Errors a program
-- can expect come back as nil and Go's text ("EOF", "i/o timeout", "use of
-- closed network connection", "connection refused", ...).
local I = require "lugo.internal"

local core, C, argerror, ERR = I.core, I.C, I.argerror, I.ERR
local type, getmetatable, error = type, getmetatable, error
local resolve, listen, socket, connect = core.net_resolve, core.net_listen, core.conn_socket, core.conn_connect
local accept, ln_close, ln_addr = core.ln_accept, core.ln_close, core.ln_addr
local read, write, close, close_write = core.conn_read, core.conn_write, core.conn_close, core.conn_close_write
local set_nodelay, addr, set_deadline = core.conn_set_nodelay, core.conn_addr, core.set_deadline
local READ_SOME, READ_EXACTLY, READ_LINE = 0, 1, 2
local TIMEOUT = "i/o timeout"

local Listener, Conn, Context = I.mt.listener, I.mt.connection, I.mt.context

local net = {}

-- The C functions park the goroutine and return nothing when it wakes:
-- call again until they answer. ERR: it could not park (raised at the
-- caller of the API function).
local function retry(f, a, b, c, d)
  local r, e = f(a, b, c, d)
  while r == nil and e == nil do r, e = f(a, b, c, d) end
  if r == ERR then error(e, 3) end
  if r == nil then return nil, e end
  return r
end

local function check_ctx(ctx, n, fname)
  if ctx ~= nil and getmetatable(ctx) ~= Context then argerror(n, fname, "context", ctx, 4) end
end

local function check_opts(opts, n, fname)
  if opts ~= nil and type(opts) ~= "table" then argerror(n, fname, "table", opts, 4) end
  return opts or {}
end

-- listen(network, address[, opts]) -> listener, or nil, err.
-- network: "tcp", "tcp4", "tcp6" or "unix"; address "host:port" (port 0:
-- any free port) or a socket path ("@name": Linux's abstract namespace).
-- opts.reuseport: a socket per processor, so that connections spread over
-- every processor's acceptors; opts.backlog: the accept queue's length.
function net.listen(network, address, opts)
  if type(network) ~= "string" then argerror(1, "listen", "string", network) end
  if type(address) ~= "string" then argerror(2, "listen", "string", address) end
  opts = check_opts(opts, 3, "listen")
  local backlog = opts.backlog
  if backlog ~= nil and type(backlog) ~= "number" then argerror(3, "listen", "number opts.backlog", backlog) end
  local addrs, err = retry(resolve, network, address, true)
  if not addrs then return nil, err end
  return listen(network, addrs[1], opts.reuseport and true or false, backlog)
end

-- dial(network, address[, opts]) -> connection, or nil, err.
-- opts.timeout: seconds for the whole dial (0: none, as in Go); opts.ctx: a
-- context whose cancellation abandons it. Names resolve in the blocking pool.
function net.dial(network, address, opts)
  if type(network) ~= "string" then argerror(1, "dial", "string", network) end
  if type(address) ~= "string" then argerror(2, "dial", "string", address) end
  opts = check_opts(opts, 3, "dial")
  local timeout, ctx = opts.timeout, opts.ctx
  if timeout ~= nil and type(timeout) ~= "number" then argerror(3, "dial", "number opts.timeout", timeout) end
  check_ctx(ctx, 3, "dial")
  if ctx then
    local e = ctx:err()
    if e then return nil, e end
  end
  local deadline = timeout and timeout ~= 0 and C.walltime() + timeout
  local addrs, err = retry(resolve, network, address, false)
  if not addrs then return nil, err end
  local first
  for i = 1, #addrs do
    local c, e = socket(addrs[i])
    if c then
      if deadline then set_deadline(c, 1, deadline) end
      local ok
      ok, e = retry(connect, c, addrs[i], ctx)
      if ok then
        if deadline then set_deadline(c, 1, nil) end
        return c
      end
      close(c)
    end
    first = first or e
    if e == TIMEOUT or (ctx and ctx:err()) then break end
  end
  return nil, first
end

local listener = {}
Listener.__index = listener

-- An acceptor of serve(): runs on one processor, serving each connection
-- it accepts in a goroutine of that processor; then on_stop, if given.
function net._acceptor(ln, handler, ctx, wg, conns, on_stop)
  local go = require("lugo").go
  require "lugo.sync" -- the wait groups' methods
  local serve_one = handler
  if conns then
    serve_one = function(c)
      handler(c)
      conns:done() -- not reached when handler raises: that is a panic, and the end
    end
  end
  local err
  while true do
    local c, e = ln:accept(ctx)
    if not c then
      err = e
      break
    end
    if conns then conns:add(1) end
    go(serve_one, c)
  end
  if on_stop then on_stop() end
  wg:done()
  return err
end

local serve_options = { ctx = true, conns = true, on_stop = true }

-- serve(ln, handler[, opts]) runs handler(conn) in a goroutine per
-- connection, accepting on every processor: an acceptor is spawned per
-- processor (handler is copied into each, by spawn's rules), and each
-- connection is served on the processor that accepted it. Returns nil,
-- err once the listener is closed (or opts.ctx is done). The Go idiom of
-- one accept loop and lugo.go(handle, conn) serves every connection on
-- the one processor that runs the loop.
--   opts.ctx      stop accepting once it is done
--   opts.conns    a waitgroup counting the connections being served (a
--                 graceful shutdown waits for it to reach 0)
--   opts.on_stop  run on each processor when its acceptor stops, before
--                 serve returns (copied with handler: upvalues they share
--                 stay shared, one copy per processor)
function net.serve(ln, handler, opts)
  if getmetatable(ln) ~= Listener then argerror(1, "serve", "listener", ln) end
  if type(handler) ~= "function" then argerror(2, "serve", "function", handler) end
  opts = check_opts(opts, 3, "serve")
  for k in pairs(opts) do
    if not serve_options[k] then error(string.format("serve: unknown option '%s'", tostring(k)), 2) end
  end
  check_ctx(opts.ctx, 3, "serve")
  if opts.conns ~= nil and getmetatable(opts.conns) ~= I.mt.waitgroup then
    argerror(3, "serve", "waitgroup opts.conns", opts.conns)
  end
  if opts.on_stop ~= nil and type(opts.on_stop) ~= "function" then
    argerror(3, "serve", "function opts.on_stop", opts.on_stop)
  end
  local n = C.gomaxprocs()
  local wg = require("lugo.sync").waitgroup()
  wg:add(n)
  for _ = 1, n do
    -- spread over the idle processors (spawn would start each acceptor
    -- here, where it blocks at once, unless a thief took it meanwhile)
    I.core.spawn_spread(function(l, h, c, g, cs, st) require("lugo.net")._acceptor(l, h, c, g, cs, st) end,
      ln, handler, opts.ctx, wg, opts.conns, opts.on_stop)
  end
  wg:wait()
  if opts.ctx and opts.ctx:err() then return nil, opts.ctx:err() end
  return nil, "use of closed network connection"
end

local function check_listener(ln, fname)
  if getmetatable(ln) ~= Listener then argerror(1, fname, "listener", ln, 4) end
end

-- accept([ctx]) -> connection, or nil, err. Any goroutine on any
-- processor may accept; close() wakes them with "use of closed network
-- connection".
function listener.accept(ln, ctx)
  check_listener(ln, "accept")
  check_ctx(ctx, 2, "accept")
  return retry(accept, ln, ctx)
end

function listener.close(ln)
  check_listener(ln, "close")
  return ln_close(ln)
end

function listener.addr(ln)
  check_listener(ln, "addr")
  return ln_addr(ln)
end

-- set_deadline(t): accept fails with "i/o timeout" from time t (seconds
-- since the epoch) on; nil clears it.
function listener.set_deadline(ln, t)
  check_listener(ln, "set_deadline")
  if t ~= nil and type(t) ~= "number" then argerror(2, "set_deadline", "number", t) end
  set_deadline(ln, 0, t)
end

local conn = {}
Conn.__index = conn

local function check_conn(c, fname)
  if getmetatable(c) ~= Conn then argerror(1, fname, "connection", c, 4) end
end

local function check_size(n, argn, fname, optional, min)
  if n == nil and optional then return end
  if type(n) ~= "number" then argerror(argn, fname, "number", n, 4) end
  if not (n >= min and n < 2 ^ 31) then
    error(("bad argument #%d to '%s' (size out of range)"):format(argn, fname), 3)
  end
end

local function reader(kind, fname, optional_size)
  local min = kind == READ_EXACTLY and 0 or 1
  return function(c, n, ctx)
    check_conn(c, fname)
    check_size(n, 2, fname, optional_size, min)
    check_ctx(ctx, 3, fname)
    return retry(read, c, kind, n, ctx)
  end
end

-- read([n][, ctx]) -> up to n bytes (default 65536) as soon as some are
-- there, or nil, err ("EOF" at the end of the stream).
conn.read = reader(READ_SOME, "read", true)

-- read_exactly(n[, ctx]) -> exactly n bytes, or nil, err ("unexpected EOF"
-- if the stream ends part way; those bytes stay for the next read).
conn.read_exactly = reader(READ_EXACTLY, "read_exactly", false)

-- read_line([max][, ctx]) -> the next line without its "\n" (or "\r\n"),
-- at most max bytes long (default 65536), or nil, err. A last line without
-- an end of line is returned as it is; then "EOF".
conn.read_line = reader(READ_LINE, "read_line", true)

-- write(s[, ctx]) -> #s once all of s is written, or nil, err and how many
-- bytes were written.
function conn.write(c, s, ctx)
  check_conn(c, "write")
  if type(s) ~= "string" then argerror(2, "write", "string", s) end
  check_ctx(ctx, 3, "write")
  local n, err, written = write(c, s, ctx)
  while n == nil and err == nil do n, err, written = write(c, s, ctx) end
  if n == ERR then error(err, 2) end
  if n == nil then return nil, err, written end
  return n
end

function conn.close(c)
  check_conn(c, "close")
  return close(c)
end

-- close_write(): the peer reads EOF; this side may still read.
function conn.close_write(c)
  check_conn(c, "close_write")
  return close_write(c)
end

local function deadline_setter(mode, fname)
  return function(c, t)
    check_conn(c, fname)
    if t ~= nil and type(t) ~= "number" then argerror(2, fname, "number", t, 3) end
    set_deadline(c, mode, t)
  end
end

-- Deadlines are times (seconds since the epoch): from then on, pending and
-- new reads (writes) fail with "i/o timeout"; nil clears.
conn.set_deadline = deadline_setter(2, "set_deadline")
conn.set_read_deadline = deadline_setter(0, "set_read_deadline")
conn.set_write_deadline = deadline_setter(1, "set_write_deadline")

function conn.local_addr(c)
  check_conn(c, "local_addr")
  return addr(c, false)
end

function conn.remote_addr(c)
  check_conn(c, "remote_addr")
  return addr(c, true)
end

-- set_nodelay([on]): TCP_NODELAY, on by default as in Go.
function conn.set_nodelay(c, on)
  check_conn(c, "set_nodelay")
  return set_nodelay(c, on == nil or on)
end

return net
