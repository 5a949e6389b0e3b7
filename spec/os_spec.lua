-- lugo.os: read_file and write_file, which run in the blocking pool so that
-- the processor keeps running other goroutines while the call waits
-- (docs/api.md, "lugo.os"). Errors are Go's: `nil, "open /x: no such file
-- or directory"`. Each `it` body runs in the main goroutine on processor 0.
local lugo = require "lugo"
local los = require "lugo.os"
local runtime = require "lugo.runtime"
local helper = require "helper"

local pack, recv, recv_within = helper.pack, helper.recv, helper.recv_within
local error_of, here, go_pcall = helper.error_of, helper.here, helper.go_pcall
local assert_contains = helper.assert_contains
local HANG = 10 -- seconds; only against hangs

local defer = helper.defer

local tempdir = helper.tempdir

-- The contents of path read with plain io, or nil.
local function io_read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

-- Every byte value, NUL first.
local function all_bytes()
  local t = {}
  for i = 0, 255 do t[#t + 1] = string.char(i) end
  return table.concat(t)
end

describe("os.write_file and os.read_file round-trip a file's contents", function()
  it("writes a file that read_file gives back, returning exactly true and the data", function()
    local path = tempdir() .. "/hello.txt"
    assert.are.same({ n = 1, true }, pack(los.write_file(path, "hello, world\n")))
    assert.are.same({ n = 1, "hello, world\n" }, pack(los.read_file(path)))
  end)

  it("agrees with plain io in both directions", function()
    local dir = tempdir()
    assert.is_true(los.write_file(dir .. "/a", "from lugo"))
    assert.are.equal("from lugo", io_read(dir .. "/a"))
    local f = assert(io.open(dir .. "/b", "wb"))
    f:write("from io")
    f:close()
    assert.are.equal("from io", los.read_file(dir .. "/b"))
  end)

  it("keeps binary data with NUL bytes and every byte value", function()
    local path = tempdir() .. "/bin"
    local data = "\0\0head\0" .. all_bytes() .. "\0tail\0\0"
    assert.is_true(los.write_file(path, data))
    local got = los.read_file(path)
    assert.are.equal(#data, #got)
    assert.is_true(got == data)
    assert.is_true(io_read(path) == data)
  end)

  it("writes and reads an empty file", function()
    local path = tempdir() .. "/empty"
    assert.is_true(los.write_file(path, ""))
    assert.are.equal("", io_read(path))
    assert.are.same({ n = 1, "" }, pack(los.read_file(path)))
  end)

  it("handles a file of several megabytes", function()
    local path = tempdir() .. "/big"
    local chunk = all_bytes() .. "0123456789"
    local parts = {}
    for i = 1, 30000 do parts[i] = chunk:sub(i % 200 + 1) .. i end -- about 5 MB, no period
    local data = table.concat(parts)
    assert.is_true(#data > 4 * 1024 * 1024)
    assert.is_true(los.write_file(path, data))
    local got = los.read_file(path)
    assert.are.equal(#data, #got)
    assert.is_true(got == data)
    assert.is_true(io_read(path) == data)
  end)

  it("truncates a file that exists", function()
    local path = tempdir() .. "/t"
    assert.is_true(los.write_file(path, string.rep("long ", 1000)))
    assert.is_true(los.write_file(path, "short"))
    assert.are.equal("short", los.read_file(path))
    assert.is_true(los.write_file(path, ""))
    assert.are.equal("", los.read_file(path))
  end)

  it("creates a file that does not exist", function()
    local path = tempdir() .. "/new"
    assert.is_nil(io_read(path))
    assert.is_true(los.write_file(path, "x"))
    assert.are.equal("x", io_read(path))
  end)
end)

describe("os.read_file and os.write_file report failures as nil and Go's error", function()
  it("reads a missing file as nil, 'open <path>: no such file or directory'", function()
    local path = tempdir() .. "/missing"
    assert.are.same({ n = 2, nil, "open " .. path .. ": no such file or directory" },
      pack(los.read_file(path)))
  end)

  it("reads an empty path as 'open : no such file or directory'", function()
    assert.are.same({ nil, "open : no such file or directory" }, { los.read_file("") })
  end)

  it("fails to write into a missing directory", function()
    local path = tempdir() .. "/no/such/dir/file"
    assert.are.same({ n = 2, nil, "open " .. path .. ": no such file or directory" },
      pack(los.write_file(path, "data")))
    assert.is_nil(io_read(path))
  end)

  it("fails to read a directory with 'read <path>: is a directory'", function()
    local dir = tempdir()
    assert.are.same({ nil, "read " .. dir .. ": is a directory" }, { los.read_file(dir) })
  end)

  it("fails to write a directory with 'open <path>: is a directory'", function()
    local dir = tempdir()
    assert.are.same({ nil, "open " .. dir .. ": is a directory" }, { los.write_file(dir, "x") })
  end)

  it("refuses a path with a NUL byte, as Go does, instead of using a shorter one", function()
    local dir = tempdir()
    local path = dir .. "/name\0suffix"
    local ok, err = los.write_file(path, "x")
    assert.is_nil(ok)
    assert.are.equal("open " .. path .. ": invalid argument", err)
    assert.is_nil(io_read(dir .. "/name"))
    assert.is_true(los.write_file(dir .. "/other", "x"))
    ok, err = los.read_file(dir .. "/other\0suffix")
    assert.is_nil(ok)
    assert.are.equal("open " .. dir .. "/other\0suffix: invalid argument", err)
  end)
end)

describe("os.read_file and os.write_file check their arguments", function()
  local bad = { { nil, "nil" }, { {}, "table" }, { true, "boolean" }, { print, "function" } }
  for _, b in ipairs(bad) do
    it("raises a bad-argument error for a " .. b[2] .. " path or data", function()
      local where
      local err = error_of(function() where = here(); los.read_file(b[1]) end)
      assert.are.equal(where .. "bad argument #1 to 'read_file' (string expected, got " .. b[2] .. ")", err)
      err = error_of(function() where = here(); los.write_file(b[1], "x") end)
      assert.are.equal(where .. "bad argument #1 to 'write_file' (string expected, got " .. b[2] .. ")", err)
      err = error_of(function() where = here(); los.write_file("/nonexistent/x", b[1]) end)
      assert.are.equal(where .. "bad argument #2 to 'write_file' (string expected, got " .. b[2] .. ")", err)
    end)
  end
end)

describe("file calls do not hold up the processor", function()
  it("lets the processor run other goroutines while many reads happen at once", function()
    local dir = tempdir()
    local N = 40
    for i = 1, N do
      assert.is_true(los.write_file(dir .. "/f" .. i, string.rep(tostring(i), 1000 + i)))
    end
    local ticks, stop = 0, false
    defer(function() stop = true end)
    lugo.go(function()
      while not stop do
        ticks = ticks + 1
        runtime.gosched()
      end
    end)
    local results = lugo.chan(N)
    for i = 1, N do
      lugo.go(function()
        local data, err = los.read_file(dir .. "/f" .. i)
        results:send({ i, data, err })
      end)
    end
    local seen = 0
    for _ = 1, N do
      local r = recv_within(results, HANG)
      assert.is_table(r)
      assert.is_nil(r[3])
      assert.is_true(r[2] == string.rep(tostring(r[1]), 1000 + r[1]))
      seen = seen + 1
    end
    stop = true
    assert.are.equal(N, seen)
    assert.is_true(ticks > 0)
  end)

  -- A FIFO in a fresh directory, and a cleanup that releases whatever still
  -- waits on it (a reader's or a writer's open), so that a failing test
  -- leaves no pool thread stuck.
  local function make_fifo()
    local fifo = tempdir() .. "/fifo"
    local q = helper.shell_quote(fifo)
    local made = os.execute("mkfifo " .. q)
    assert.is_true(made == 0 or made == true)
    defer(function()
      os.execute("timeout 2 cat " .. q .. " >/dev/null 2>&1 & timeout 2 sh -c ': >" .. q .. "' 2>/dev/null; wait")
    end)
    return fifo
  end

  it("keeps running other goroutines while a read waits on a FIFO", function()
    local fifo = make_fifo()
    local dir = fifo:match("^(.*)/")
    local read = go_pcall(los.read_file, fifo) -- blocks in open until a writer comes
    -- Meanwhile this processor keeps running goroutines: a ticker, and
    -- file calls on other files.
    local ticks, stop = 0, false
    defer(function() stop = true end)
    lugo.go(function()
      while not stop do
        ticks = ticks + 1
        runtime.gosched()
      end
    end)
    local others = go_pcall(function()
      for i = 1, 3 do
        assert(los.write_file(dir .. "/x" .. i, "data " .. i))
        assert(los.read_file(dir .. "/x" .. i) == "data " .. i)
      end
      return "done"
    end)
    assert.are.same({ n = 2, true, "done" }, recv_within(others, HANG))
    helper.settle()
    stop = true
    assert.is_true(ticks > 0)
    assert.is_false(helper.can_recv(read))
    local wrote = go_pcall(los.write_file, fifo, "through the pipe\0!")
    assert.are.same({ n = 2, true, true }, recv_within(wrote, HANG))
    assert.are.same({ n = 2, true, "through the pipe\0!" }, recv_within(read, HANG))
  end)

  it("does not hold up other file calls behind one that waits", function()
    local fifo = make_fifo()
    local path = fifo .. ".txt"
    assert.is_true(los.write_file(path, "plain"))
    -- In a fresh program whose pool has one idle thread, file calls start
    -- in one burst; the FIFO read, started last, runs first and waits for a
    -- writer. The others must not wait behind it. Whether a call lands
    -- behind it is a race, hence several programs.
    local code = [[
      local lugo, los, time = require "lugo", require "lugo.os", require "lugo.time"
      local fifo, path = arg[1], arg[2]
      assert(los.read_file(path) == "plain")
      local done = lugo.chan(10)
      for _ = 1, 10 do lugo.go(function() done:send(los.read_file(path)) end) end
      lugo.go(function() los.read_file(fifo) end)
      local got, timeout = 0, time.after(2)
      while got < 10 and lugo.select(lugo.case.recv(done), lugo.case.recv(timeout)) == 1 do got = got + 1 end
      print(got)
      os.execute("timeout 2 sh -c ': >" .. fifo .. "'")
    ]]
    for _ = 1, 5 do
      local r = helper.run(code, { args = { fifo, path } })
      assert.are.equal("10\n", r.stdout)
      assert.are.equal("", r.stderr)
      assert.are.equal(0, r.status)
    end
  end)

  it("works on every processor, from spawned goroutines", function()
    local dir = tempdir()
    local N = 8
    local res = lugo.chan(N)
    for i = 1, N do
      lugo.spawn(function(dir, i, res)
        local los = require "lugo.os"
        local ok, werr = pcall(los.write_file, dir .. "/s" .. i, "spawned " .. i)
        local rok, data = pcall(los.read_file, dir .. "/s" .. i)
        res:send({ i, ok, werr, rok, data })
      end, dir, i, res)
    end
    for _ = 1, N do
      local r = recv_within(res, HANG)
      assert.is_table(r)
      assert.are.same({ r[1], true, true, true, "spawned " .. r[1] }, r)
      assert.are.equal("spawned " .. r[1], io_read(dir .. "/s" .. r[1]))
    end
  end)

  it("writes many files at once from many goroutines", function()
    local dir = tempdir()
    local N = 30
    local done = lugo.chan(N)
    for i = 1, N do
      lugo.go(function() done:send({ i, los.write_file(dir .. "/w" .. i, ("w" .. i):rep(i)) }) end)
    end
    for _ = 1, N do
      local r = recv(done, "a write")
      assert.is_true(r[2])
    end
    for i = 1, N do assert.are.equal(("w" .. i):rep(i), los.read_file(dir .. "/w" .. i)) end
  end)
end)

describe("file calls cannot block where Lua cannot yield", function()
  it("raises 'cannot block here' inside a table.sort comparator", function()
    local path = tempdir() .. "/f"
    assert.is_true(los.write_file(path, "x"))
    local err = error_of(table.sort, { 3, 1, 2 }, function(a, b)
      los.read_file(path)
      return a < b
    end)
    assert_contains(err, "cannot block here")
    assert_contains(err, "table.sort")
    err = error_of(table.sort, { 3, 1, 2 }, function(a, b)
      los.write_file(path, "y")
      return a < b
    end)
    assert_contains(err, "cannot block here")
    assert.are.equal("x", io_read(path)) -- nothing was written
  end)

  it("raises 'cannot block here' inside a string.gsub callback", function()
    local path = tempdir() .. "/f"
    local err = error_of(string.gsub, "abc", ".", function()
      local data = los.read_file(path)
      return data
    end)
    assert_contains(err, "cannot block here")
  end)

  it("still works afterwards", function()
    local path = tempdir() .. "/f"
    error_of(table.sort, { 2, 1 }, function(a, b) los.read_file(path) return a < b end)
    assert.is_true(los.write_file(path, "after"))
    assert.are.equal("after", los.read_file(path))
  end)
end)
