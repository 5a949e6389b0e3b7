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

-- ---------------------------------------------------------------- stat, read_dir, read_range, open_root
-- One pool job each (open, fstat, reads, close on the pool thread); errors
-- are Go's texts. A Root resolves names beneath its directory as Go's
-- os.Root does.

local function sh(cmd)
  local ok = os.execute(cmd)
  assert(ok == 0 or ok == true, "command failed: " .. cmd)
end
local q = helper.shell_quote

-- The uid this spec runs as: root reads files whatever their mode.
local function is_root()
  local p = assert(io.popen("id -u"))
  local uid = p:read("*l")
  p:close()
  return uid == "0"
end

-- Run code (a chunk printing results) with lugo as an unprivileged user
-- when this runs as root, so that permissions apply; as ourselves else.
local function run_unprivileged(code)
  local prefix = is_root() and "setpriv --reuid=65534 --regid=65534 --clear-groups" or ""
  return helper.run(code, { env = prefix, flags = "-e " .. q(code), no_script = true })
end

-- A world-readable temporary directory (for run_unprivileged).
local function open_tempdir()
  local dir = tempdir()
  sh("chmod 755 " .. q(dir))
  return dir
end

describe("os.stat", function()
  it("describes a file: name, size, mtime, kind and permission bits", function()
    local dir = tempdir()
    local path = dir .. "/f.txt"
    assert.is_true(los.write_file(path, "12345"))
    sh("chmod 640 " .. q(path) .. " && touch -d '2021-03-04 05:06:07.25 UTC' " .. q(path))
    local info = los.stat(path)
    assert.are.same({ name = "f.txt", size = 5, is_dir = false, is_regular = true, mode = tonumber("640", 8),
      mtime = info.mtime }, info)
    assert.are.near(1614834367.25, info.mtime, 1e-6)
    assert.are.equal(1, select("#", los.stat(path)))
  end)

  it("describes a directory, and follows a symbolic link as Go's os.Stat", function()
    local dir = tempdir()
    sh("mkdir " .. q(dir .. "/sub") .. " && ln -s sub " .. q(dir .. "/link"))
    local d = los.stat(dir .. "/sub")
    assert.is_true(d.is_dir)
    assert.is_false(d.is_regular)
    assert.are.equal("sub", d.name)
    local l = los.stat(dir .. "/link")
    assert.is_true(l.is_dir)
    assert.are.equal("link", l.name)
    assert.are.equal(d.mtime, l.mtime)
    assert.are.equal("sub", los.stat(dir .. "/sub/").name) -- Go's filepath.Base drops trailing slashes
  end)

  it("reports a missing file as nil, 'stat <path>: no such file or directory'", function()
    local path = tempdir() .. "/missing"
    assert.are.same({ n = 2, nil, "stat " .. path .. ": no such file or directory" }, pack(los.stat(path)))
    assert.are.same({ nil, "stat " .. path .. "/x: no such file or directory" }, { los.stat(path .. "/x") })
  end)

  it("reports a path through a file as 'not a directory', and refuses a NUL byte", function()
    local dir = tempdir()
    assert.is_true(los.write_file(dir .. "/f", "x"))
    assert.are.same({ nil, "stat " .. dir .. "/f/x: not a directory" }, { los.stat(dir .. "/f/x") })
    assert.are.same({ nil, "stat " .. dir .. "/f\0x: invalid argument" }, { los.stat(dir .. "/f\0x") })
  end)

  it("needs no read permission on the file itself", function()
    local dir = open_tempdir()
    assert.is_true(los.write_file(dir .. "/secret", "abc"))
    sh("chmod 000 " .. q(dir .. "/secret"))
    local r = run_unprivileged(string.format([[
      local los = require "lugo.os"
      local info = assert(los.stat(%q))
      print(info.size, info.mode, select(2, los.read_range(%q, 0, 3)))
    ]], dir .. "/secret", dir .. "/secret"))
    assert.are.equal("", r.stderr)
    assert.are.equal("3\t0\topen " .. dir .. "/secret: permission denied\n", r.stdout)
  end)
end)

describe("os.read_dir", function()
  it("lists entries sorted by name, without . and .., with kind and size", function()
    local dir = tempdir()
    assert.is_true(los.write_file(dir .. "/b.txt", "bb"))
    assert.is_true(los.write_file(dir .. "/a.txt", "a"))
    assert.is_true(los.write_file(dir .. "/C", ""))
    sh("mkdir " .. q(dir .. "/d") .. " && ln -s d " .. q(dir .. "/e"))
    local list = los.read_dir(dir)
    assert.are.equal(5, #list)
    local names = {}
    for i, e in ipairs(list) do names[i] = e.name end
    assert.are.same({ "C", "a.txt", "b.txt", "d", "e" }, names) -- byte order, as Go sorts
    assert.are.same({ name = "a.txt", is_dir = false, size = 1 }, list[2])
    assert.are.same({ name = "b.txt", is_dir = false, size = 2 }, list[3])
    assert.are.same({ name = "C", is_dir = false, size = 0 }, list[1])
    assert.is_true(list[4].is_dir)
    assert.is_false(list[5].is_dir) -- a link is not followed, as Go's DirEntry
    assert.are.equal(1, list[5].size) -- the link's own size: "d"
  end)

  it("lists an empty directory as an empty table", function()
    assert.are.same({ n = 1, {} }, pack(los.read_dir(tempdir())))
  end)

  it("lists many entries", function()
    local dir = tempdir()
    sh("cd " .. q(dir) .. " && for i in $(seq 1 500); do : > f$i; done")
    local list = los.read_dir(dir)
    assert.are.equal(500, #list)
    for i = 2, #list do assert.is_true(list[i - 1].name < list[i].name) end
  end)

  it("reports Go's errors for a missing directory and for a file", function()
    local dir = tempdir()
    assert.are.same({ n = 2, nil, "open " .. dir .. "/no: no such file or directory" },
      pack(los.read_dir(dir .. "/no")))
    assert.is_true(los.write_file(dir .. "/f", "x"))
    assert.are.same({ nil, "readdirent " .. dir .. "/f: not a directory" }, { los.read_dir(dir .. "/f") })
  end)
end)

describe("os.read_range", function()
  it("reads length bytes from offset, fewer at the end, none past it", function()
    local path = tempdir() .. "/f"
    assert.is_true(los.write_file(path, "0123456789"))
    assert.are.same({ n = 1, "3456" }, pack(los.read_range(path, 3, 4)))
    assert.are.equal("0123456789", los.read_range(path, 0, 10))
    assert.are.equal("789", los.read_range(path, 7, 100))
    assert.are.equal("", los.read_range(path, 10, 5))
    assert.are.equal("", los.read_range(path, 1000, 5))
    assert.are.equal("", los.read_range(path, 2, 0))
  end)

  it("reads a large file back exactly in 64 KiB pieces", function()
    local path = tempdir() .. "/big"
    local parts = {}
    for i = 1, 20000 do parts[i] = all_bytes():sub(i % 97 + 1, i % 97 + 60) end
    local data = table.concat(parts)
    assert.is_true(los.write_file(path, data))
    local got, off = {}, 0
    while true do
      local s = assert(los.read_range(path, off, 65536))
      if s == "" then break end
      got[#got + 1] = s
      off = off + #s
    end
    assert.are.equal(#data, off)
    assert.is_true(table.concat(got) == data)
  end)

  it("reads a file whose size says nothing (/proc) up to length", function()
    local s = assert(los.read_range("/proc/self/status", 0, 100000))
    assert.is_true(#s > 0)
    assert.matches("^Name:", s)
  end)

  it("reports Go's errors: a missing file, a directory", function()
    local dir = tempdir()
    assert.are.same({ n = 2, nil, "open " .. dir .. "/no: no such file or directory" },
      pack(los.read_range(dir .. "/no", 0, 1)))
    assert.are.same({ nil, "read " .. dir .. ": is a directory" }, { los.read_range(dir, 0, 1) })
    assert.are.same({ nil, "open " .. dir .. "/a\0b: invalid argument" }, { los.read_range(dir .. "/a\0b", 0, 1) })
  end)

  it("does not wait on a FIFO (it has no offsets): fails at once", function()
    local fifo = tempdir() .. "/fifo"
    sh("mkfifo " .. q(fifo))
    local res = go_pcall(los.read_range, fifo, 0, 10)
    assert.are.same({ n = 3, true, nil, "read " .. fifo .. ": illegal seek" }, recv_within(res, HANG))
  end)

  it("checks its arguments", function()
    local where
    local err = error_of(function() where = here(); los.read_range("/x", -1, 1) end)
    assert.are.equal(where .. "bad argument #2 to 'read_range' (offset must be a non-negative integer)", err)
    err = error_of(function() where = here(); los.read_range("/x", 0, 1.5) end)
    assert.are.equal(where .. "bad argument #3 to 'read_range' (length must be a non-negative integer)", err)
    err = error_of(function() where = here(); los.read_range("/x", "0", 1) end)
    assert.are.equal(where .. "bad argument #2 to 'read_range' (number expected, got string)", err)
    err = error_of(function() where = here(); los.read_range(nil, 0, 1) end)
    assert.are.equal(where .. "bad argument #1 to 'read_range' (string expected, got nil)", err)
    err = error_of(function() where = here(); los.stat(1) end)
    assert.are.equal(where .. "bad argument #1 to 'stat' (string expected, got number)", err)
    err = error_of(function() where = here(); los.read_dir({}) end)
    assert.are.equal(where .. "bad argument #1 to 'read_dir' (string expected, got table)", err)
  end)
end)

describe("os.open_root resolves names beneath a directory, as Go's os.Root", function()
  -- root/ holds a.txt, sub/ (with a link "up" to ../a.txt), and links that
  -- lead out: abs -> /etc/passwd, out -> ../outside, outdir -> ..
  local function layout()
    local top = tempdir()
    local root = top .. "/root"
    sh("mkdir -p " .. q(root .. "/sub"))
    assert.is_true(los.write_file(root .. "/a.txt", "inside"))
    assert.is_true(los.write_file(top .. "/outside", "outside"))
    sh("ln -s ../a.txt " .. q(root .. "/sub/up") .. " && ln -s /etc/passwd " .. q(root .. "/abs") ..
      " && ln -s ../outside " .. q(root .. "/out") .. " && ln -s .. " .. q(root .. "/outdir") ..
      " && ln -s " .. q(root .. "/a.txt") .. " " .. q(root .. "/absin"))
    return top, root
  end

  it("reads, stats and lists names inside, following links that stay inside", function()
    local _, dir = layout()
    local root = assert(los.open_root(dir))
    assert.are.equal(dir, root:name())
    assert.are.equal("inside", root:read_range("a.txt", 0, 100))
    assert.are.equal("side", root:read_range("sub/up", 2, 100))
    assert.are.equal("inside", root:read_range("sub/../a.txt", 0, 100))
    local info = root:stat("sub/up")
    assert.are.equal("up", info.name)
    assert.are.equal(6, info.size)
    assert.is_true(root:stat(".").is_dir)
    local names = {}
    for i, e in ipairs(root:read_dir(".")) do names[i] = e.name end
    assert.are.same({ "a.txt", "abs", "absin", "out", "outdir", "sub" }, names)
    assert.are.same({ { name = "up", is_dir = false, size = 8 } }, root:read_dir("sub"))
  end)

  it("refuses every way out: '..', absolute names, links out, absolute links", function()
    local _, dir = layout()
    local root = assert(los.open_root(dir))
    assert.are.same({ n = 2, nil, "openat ../outside: path escapes from parent" },
      pack(root:read_range("../outside", 0, 100)))
    assert.are.same({ nil, "openat sub/../../outside: path escapes from parent" },
      { root:read_range("sub/../../outside", 0, 100) })
    assert.are.same({ nil, "openat /etc/passwd: path escapes from parent" }, { root:read_range("/etc/passwd", 0, 9) })
    assert.are.same({ nil, "openat out: path escapes from parent" }, { root:read_range("out", 0, 100) })
    assert.are.same({ nil, "statat out: path escapes from parent" }, { root:stat("out") })
    assert.are.same({ nil, "statat abs: path escapes from parent" }, { root:stat("abs") })
    assert.are.same({ nil, "openat outdir: path escapes from parent" }, { root:read_dir("outdir") })
    assert.are.same({ nil, "statat outdir/outside: path escapes from parent" }, { root:stat("outdir/outside") })
    -- as in Go, an absolute link is refused even when it points inside
    assert.are.same({ nil, "statat absin: path escapes from parent" }, { root:stat("absin") })
  end)

  it("reports Go's errors for missing names", function()
    local _, dir = layout()
    local root = assert(los.open_root(dir))
    assert.are.same({ nil, "statat nope: no such file or directory" }, { root:stat("nope") })
    assert.are.same({ nil, "openat nope: no such file or directory" }, { root:read_range("nope", 0, 1) })
    assert.are.same({ nil, "openat a.txt/x: not a directory" }, { root:read_range("a.txt/x", 0, 1) })
    assert.are.same({ nil, "statat : no such file or directory" }, { root:stat("") })
  end)

  it("is refused for a missing directory or a file", function()
    local dir = tempdir()
    assert.are.same({ n = 2, nil, "open " .. dir .. "/no: no such file or directory" },
      pack(los.open_root(dir .. "/no")))
    assert.is_true(los.write_file(dir .. "/f", "x"))
    assert.are.same({ nil, "open " .. dir .. "/f: not a directory" }, { los.open_root(dir .. "/f") })
    local err = error_of(function() return los.open_root(5) end)
    assert_contains(err, "bad argument #1 to 'open_root' (string expected, got number)")
  end)
end)

describe("os.stat, os.read_dir and os.read_range run in the blocking pool", function()
  it("work from spawned goroutines on every processor, at once", function()
    local dir = tempdir()
    local N = 16
    for i = 1, N do assert.is_true(los.write_file(dir .. "/f" .. i, string.rep("x", i))) end
    local res = lugo.chan(N)
    for i = 1, N do
      lugo.spawn(function(dir, i, res)
        local los = require "lugo.os"
        local info = los.stat(dir .. "/f" .. i)
        local list = los.read_dir(dir)
        local data = los.read_range(dir .. "/f" .. i, 1, 1000)
        local root = los.open_root(dir)
        local rdata = root and root:read_range("f" .. i, 0, 1000)
        res:send({ i, info and info.size, list and #list, data, rdata })
      end, dir, i, res)
    end
    for _ = 1, N do
      local r = recv_within(res, HANG)
      assert.is_table(r)
      local i = r[1]
      assert.are.same({ i, i, N, string.rep("x", i - 1), string.rep("x", i) }, r)
    end
  end)

  it("keep the processor running other goroutines while they wait", function()
    local fifo = tempdir() .. "/fifo"
    sh("mkfifo " .. q(fifo))
    local released = false
    defer(function() -- a failed test leaves no pool thread waiting on the FIFO
      if not released then os.execute("timeout 2 sh -c ': >" .. fifo .. "' 2>/dev/null") end
    end)
    local blocked = go_pcall(los.read_file, fifo) -- holds a pool thread
    local ticks, stop = 0, false
    defer(function() stop = true end)
    lugo.go(function()
      while not stop do
        ticks = ticks + 1
        runtime.gosched()
      end
    end)
    local others = go_pcall(function()
      local n = 0
      for _ = 1, 20 do
        n = n + #los.read_dir(fifo:match("^(.*)/"))
        n = n + los.stat(fifo).size
      end
      return n
    end)
    assert.are.same({ n = 2, true, 20 }, recv_within(others, HANG))
    stop = true
    assert.is_true(ticks > 0)
    assert.is_false(helper.can_recv(blocked))
    released = true
    os.execute("timeout 2 sh -c ': >" .. fifo .. "' 2>/dev/null")
    assert.are.same({ n = 2, true, "" }, recv_within(blocked, HANG))
  end)

  it("raise 'cannot block here' where Lua cannot yield", function()
    local dir = tempdir()
    for _, f in ipairs({ function() los.stat(dir) end, function() los.read_dir(dir) end,
      function() los.read_range(dir, 0, 1) end }) do
      local err = error_of(table.sort, { 3, 1, 2 }, function(a, b)
        f()
        return a < b
      end)
      assert_contains(err, "cannot block here")
    end
  end)
end)
