-- lugo.http.fs: Go's http.FileServer and http.ServeFile. Files are read
-- through lugo.os (the blocking pool), in chunks of 64 KiB: the processor
-- never waits on the disk, and a file is never held whole in memory.
--
-- What Go does, this does: the URL path is cleaned before it names a file;
-- "/dir" redirects to "/dir/", "/x/index.html" to "./", "/file/" to
-- "../file"; a directory serves its index.html, else a listing; the type
-- comes from the extension, else from the first 512 bytes; Last-Modified,
-- If-Modified-Since, If-Unmodified-Since, If-Match, If-None-Match (against
-- an ETag the caller set), If-Range; single and multiple byte ranges
-- (multipart/byteranges); HEAD without a body; Go's error texts.
--
-- Where it differs, on purpose (Go's http.Dir follows any link):
--   - file_server resolves names beneath dir as Go's os.Root does: no
--     symbolic link leads out of dir (nor an absolute one at all), and
--     such a name answers 403 Forbidden;
--   - a path with a NUL byte answers 400 "invalid URL path" (Go: 500);
--   - a file that is neither regular nor a directory (a FIFO, a device)
--     answers 403 Forbidden instead of being read;
--   - a redirect's Location is the name percent-escaped, as in a listing.
local los = require "lugo.os"
local http = require "lugo.http"
local I = require "lugo.internal"

local argerror = I.argerror
local type, tostring, tonumber, pairs, ipairs, error, rawget = type, tostring, tonumber, pairs, ipairs, error, rawget
local byte, sub, find, format, lower, gsub, match, gmatch =
  string.byte, string.sub, string.find, string.format, string.lower, string.gsub, string.match, string.gmatch
local concat, sort = table.concat, table.sort
local floor, min = math.floor, math.min
local stderr, os_date = io.stderr, os.date

local M = {}

local CHUNK = 65536   -- bytes read and written at a time
local SNIFF_LEN = 512 -- what DetectContentType looks at
local INDEX = "/index.html"

-- ---------------------------------------------------------------- paths

-- Go's path.Clean (the mux's).
local clean = require("lugo.http.mux").path_clean
M._clean = clean

-- Go's path.Base.
local function base(p)
  if p == "" then return "." end
  p = match(p, "^(.-)/*$")
  if p == "" then return "/" end
  return match(p, "([^/]*)$")
end

-- Go's containsDotDot: a ".." element anywhere.
local function contains_dotdot(p)
  if not find(p, "..", 1, true) then return false end
  for seg in gmatch(p, "[^/\\]+") do
    if seg == ".." then return true end
  end
  return false
end

-- A name as the path of a relative URL (Go's url.URL{Path: name}.String()):
-- what is not allowed in a path segment is escaped, '?' and '#' included,
-- and a colon before any slash gets "./" in front, so that it cannot read
-- as a scheme.
local function escape_byte(c) return format("%%%02X", byte(c)) end
local function url_path(name)
  local s = gsub(name, "[^%w%-_%.~$&+,/:;=@]", escape_byte)
  local colon = find(s, ":", 1, true)
  if colon and not find(sub(s, 1, colon), "/", 1, true) then s = "./" .. s end
  return s
end

local html_escapes = { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&#34;", ["'"] = "&#39;" }
local function html_escape(s) return (gsub(s, "[&<>\"']", html_escapes)) end

-- ---------------------------------------------------------------- dates

local DAYS = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" }
local LONG_DAYS = { "sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday" }
local MONTHS = { "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" }
local month_of, short_day, long_day = {}, {}, {}
for i, m in ipairs(MONTHS) do month_of[lower(m)] = i end
for _, d in ipairs(DAYS) do short_day[lower(d)] = true end
for _, d in ipairs(LONG_DAYS) do long_day[d] = true end

-- Go's http.TimeFormat of t (seconds since the epoch), without the
-- locale: "Mon, 02 Jan 2006 15:04:05 GMT".
local function http_date(t)
  local d = os_date("!*t", floor(t))
  return format("%s, %02d %s %04d %02d:%02d:%02d GMT", DAYS[d.wday], d.day, MONTHS[d.month], d.year, d.hour,
    d.min, d.sec)
end
M.http_date = http_date

local function days_from_civil(y, m, d) -- days since 1970-01-01 (proleptic Gregorian)
  if m <= 2 then y = y - 1 end
  local era = floor(y / 400)
  local yoe = y - era * 400
  local doy = floor((153 * ((m + 9) % 12) + 2) / 5) + d - 1
  return era * 146097 + yoe * 365 + floor(yoe / 4) - floor(yoe / 100) + doy - 719468
end

local MDAYS = { 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 }
local function epoch(y, mon, d, h, mi, s)
  local m = month_of[lower(mon)]
  y, d, h, mi, s = tonumber(y), tonumber(d), tonumber(h), tonumber(mi), tonumber(s)
  if not m or d < 1 or d > MDAYS[m] or h > 23 or mi > 59 or s > 59 then return nil end
  if m == 2 and d == 29 and not (y % 4 == 0 and (y % 100 ~= 0 or y % 400 == 0)) then return nil end
  return days_from_civil(y, m, d) * 86400 + h * 3600 + mi * 60 + s
end

-- Go's http.ParseTime: the IMF-fixdate, RFC 850 and ANSI C formats; nil
-- if s is none of them.
local function parse_http_date(s)
  local wd, d, mon, y, h, mi, sec = match(s, "^(%a+), (%d%d) (%a%a%a) (%d%d%d%d) (%d%d):(%d%d):(%d%d) GMT$")
  if wd then
    if not short_day[lower(wd)] then return nil end
    return epoch(y, mon, d, h, mi, sec)
  end
  wd, d, mon, y, h, mi, sec = match(s, "^(%a+), (%d%d)%-(%a%a%a)%-(%d%d) (%d%d):(%d%d):(%d%d) GMT$")
  if wd then
    if not long_day[lower(wd)] then return nil end
    y = tonumber(y)
    y = y >= 69 and 1900 + y or 2000 + y
    return epoch(y, mon, d, h, mi, sec)
  end
  wd, mon, d, h, mi, sec, y = match(s, "^(%a%a%a) (%a%a%a) +(%d%d?) (%d%d):(%d%d):(%d%d) (%d%d%d%d)$")
  if wd then
    if not short_day[lower(wd)] then return nil end
    return epoch(y, mon, d, h, mi, sec)
  end
  return nil
end
M.parse_http_date = parse_http_date

-- ---------------------------------------------------------------- types

-- Go's builtin mime table, and the common types of /etc/mime.types.
local TYPES = {
  [".avif"] = "image/avif",
  [".css"] = "text/css; charset=utf-8",
  [".csv"] = "text/csv; charset=utf-8",
  [".gif"] = "image/gif",
  [".gz"] = "application/gzip",
  [".htm"] = "text/html; charset=utf-8",
  [".html"] = "text/html; charset=utf-8",
  [".ico"] = "image/vnd.microsoft.icon",
  [".jpeg"] = "image/jpeg",
  [".jpg"] = "image/jpeg",
  [".js"] = "text/javascript; charset=utf-8",
  [".json"] = "application/json",
  [".map"] = "application/json",
  [".md"] = "text/markdown; charset=utf-8",
  [".mjs"] = "text/javascript; charset=utf-8",
  [".mp3"] = "audio/mpeg",
  [".mp4"] = "video/mp4",
  [".oga"] = "audio/ogg",
  [".ogg"] = "audio/ogg",
  [".ogv"] = "video/ogg",
  [".otf"] = "font/otf",
  [".pdf"] = "application/pdf",
  [".png"] = "image/png",
  [".svg"] = "image/svg+xml",
  [".tar"] = "application/x-tar",
  [".ttf"] = "font/ttf",
  [".txt"] = "text/plain; charset=utf-8",
  [".wasm"] = "application/wasm",
  [".wav"] = "audio/wav",
  [".webm"] = "video/webm",
  [".webp"] = "image/webp",
  [".woff"] = "font/woff",
  [".woff2"] = "font/woff2",
  [".xml"] = "text/xml; charset=utf-8",
  [".zip"] = "application/zip",
}

-- Go's mime.TypeByExtension(filepath.Ext(name)), or nil.
local function type_by_name(name)
  local ext = match(name, "(%.[^%./]*)$")
  if not ext then return nil end
  return TYPES[ext] or TYPES[lower(ext)]
end
M.type_by_name = type_by_name

-- ---------------------------------------------------------------- responses

-- Go's http.Error.
local function http_error(w, text, code)
  local h = w:header()
  h:del("Content-Length")
  h:set("Content-Type", "text/plain; charset=utf-8")
  h:set("X-Content-Type-Options", "nosniff")
  w:write_header(code)
  w:write(text .. "\n")
end

-- Go's serveError: headers describing the file go, then http.Error.
local function serve_error(w, text, code)
  local h = w:header()
  h:del("Cache-Control")
  h:del("Content-Encoding")
  h:del("Etag")
  h:del("Last-Modified")
  http_error(w, text, code)
end

-- Go's toHTTPError, on lugo.os's texts (Go's own); a name escaping the
-- root is refused as a permission.
local function ends(s, tail) return sub(s, -#tail) == tail end
local function to_http_error(err)
  err = tostring(err)
  if ends(err, ": no such file or directory") or ends(err, ": not a directory") then
    return "404 page not found", 404
  end
  if ends(err, ": permission denied") or ends(err, ": operation not permitted")
    or ends(err, ": path escapes from parent") then
    return "403 Forbidden", 403
  end
  return "500 Internal Server Error", 500
end

-- Go's localRedirect: a relative Location, so that it works under a
-- stripped prefix.
local function local_redirect(w, r, new_path)
  new_path = url_path(new_path)
  local q = r.raw_query
  if q and q ~= "" then new_path = new_path .. "?" .. q end
  w:header():set("Location", new_path)
  w:write_header(301)
end

local function set_last_modified(w, mtime)
  if mtime and mtime ~= 0 then w:header():set("Last-Modified", http_date(mtime)) end
end

-- Go's writeNotModified.
local function write_not_modified(w)
  local h = w:header()
  h:del("Content-Type")
  h:del("Content-Length")
  h:del("Content-Encoding")
  if h:get("Etag") then h:del("Last-Modified") end
  w:write_header(304)
end

-- ---------------------------------------------------------------- preconditions

local COND_NONE, COND_TRUE, COND_FALSE = 0, 1, 2

local function trim(s) return match(s, "^[ \t\r\n]*(.-)[ \t\r\n]*$") end

-- Go's scanETag: the entity tag at the start of s and the rest, or "".
local function scan_etag(s)
  s = trim(s)
  local start = 1
  if sub(s, 1, 2) == "W/" then start = 3 end
  if #s - start + 1 < 2 or byte(s, start) ~= 34 then return "", "" end
  for i = start + 1, #s do
    local c = byte(s, i)
    if c == 34 then return sub(s, 1, i), sub(s, i + 1) end
    if not (c == 0x21 or (c >= 0x23 and c <= 0x7e) or c >= 0x80) then return "", "" end
  end
  return "", ""
end

local function strong_match(a, b) return a == b and a ~= "" and byte(a, 1) == 34 end
local function weak_match(a, b)
  if sub(a, 1, 2) == "W/" then a = sub(a, 3) end
  if sub(b, 1, 2) == "W/" then b = sub(b, 3) end
  return a == b
end

-- Walk a list of entity tags (If-Match, If-None-Match): f(etag) true stops.
local function each_etag(list, f)
  while true do
    list = trim(list)
    if list == "" then return nil end
    local c = byte(list, 1)
    if c == 44 then -- ','
      list = sub(list, 2)
    elseif c == 42 then -- '*'
      return "*"
    else
      local etag, rest = scan_etag(list)
      if etag == "" then return nil end
      if f(etag) then return etag end
      list = rest
    end
  end
end

local function check_if_match(w, r)
  local im = r:header("If-Match")
  if not im or im == "" then return COND_NONE end
  local mine = w:header():get("Etag") or ""
  if each_etag(im, function(e) return strong_match(e, mine) end) then return COND_TRUE end
  return COND_FALSE
end

local function check_if_none_match(w, r)
  local inm = r:header("If-None-Match")
  if not inm or inm == "" then return COND_NONE end
  local mine = w:header():get("Etag") or ""
  if each_etag(inm, function(e) return weak_match(e, mine) end) then return COND_FALSE end
  return COND_TRUE
end

local function is_get_or_head(r) return r.method == "GET" or r.method == "HEAD" end

-- The Last-Modified header has whole seconds: modtime is compared so.
local function check_if_modified_since(r, mtime)
  if not is_get_or_head(r) then return COND_NONE end
  local ims = r:header("If-Modified-Since")
  if not ims or ims == "" or not mtime or mtime == 0 then return COND_NONE end
  local t = parse_http_date(ims)
  if not t then return COND_NONE end
  if floor(mtime) <= t then return COND_FALSE end
  return COND_TRUE
end

local function check_if_unmodified_since(r, mtime)
  local ius = r:header("If-Unmodified-Since")
  if not ius or ius == "" or not mtime or mtime == 0 then return COND_NONE end
  local t = parse_http_date(ius)
  if not t then return COND_NONE end
  if floor(mtime) <= t then return COND_TRUE end
  return COND_FALSE
end

local function check_if_range(w, r, mtime)
  if not is_get_or_head(r) then return COND_NONE end
  local ir = r:header("If-Range")
  if not ir or ir == "" then return COND_NONE end
  local etag = scan_etag(ir)
  if etag ~= "" then
    return strong_match(etag, w:header():get("Etag") or "") and COND_TRUE or COND_FALSE
  end
  if not mtime or mtime == 0 then return COND_FALSE end
  local t = parse_http_date(ir)
  if t and t == floor(mtime) then return COND_TRUE end
  return COND_FALSE
end

-- Go's checkPreconditions (RFC 7232 section 6): true when the response
-- is already written, else the Range header to honour ("" for none).
local function check_preconditions(w, r, mtime)
  local ch = check_if_match(w, r)
  if ch == COND_NONE then ch = check_if_unmodified_since(r, mtime) end
  if ch == COND_FALSE then
    w:write_header(412)
    return true, ""
  end
  local nm = check_if_none_match(w, r)
  if nm == COND_FALSE then
    if is_get_or_head(r) then write_not_modified(w) else w:write_header(412) end
    return true, ""
  elseif nm == COND_NONE and check_if_modified_since(r, mtime) == COND_FALSE then
    write_not_modified(w)
    return true, ""
  end
  local range = r:header("Range") or ""
  if range ~= "" and check_if_range(w, r, mtime) == COND_FALSE then range = "" end
  return false, range
end

-- ---------------------------------------------------------------- ranges

local ERR_NO_OVERLAP = "invalid range: failed to overlap"
local ERR_INVALID = "invalid range"

-- A decimal integer as Go's ParseInt reads it (an optional sign), or nil.
local function parse_int(s)
  if not match(s, "^[+-]?%d+$") or #s > 19 then return nil end
  return tonumber(s)
end

-- Go's parseRange: a list of { start, length }, nil for no Range header,
-- or nil and an error.
local function parse_range(s, size)
  if s == "" then return nil end
  if sub(s, 1, 6) ~= "bytes=" then return nil, ERR_INVALID end
  local ranges, no_overlap = {}, false
  for ra in gmatch(sub(s, 7) .. ",", "([^,]*),") do
    ra = trim(ra)
    if ra ~= "" then
      local dash = find(ra, "-", 1, true)
      if not dash then return nil, ERR_INVALID end
      local first, last = trim(sub(ra, 1, dash - 1)), trim(sub(ra, dash + 1))
      if first == "" then
        -- a suffix: the last n bytes
        if last == "" or byte(last, 1) == 45 then return nil, ERR_INVALID end
        local i = parse_int(last)
        if not i or i < 0 then return nil, ERR_INVALID end
        if i > size then i = size end
        ranges[#ranges + 1] = { size - i, i }
      else
        local i = parse_int(first)
        if not i or i < 0 then return nil, ERR_INVALID end
        if i >= size then
          no_overlap = true -- starts past the end
        elseif last == "" then
          ranges[#ranges + 1] = { i, size - i }
        else
          local j = parse_int(last)
          if not j or i > j then return nil, ERR_INVALID end
          if j >= size then j = size - 1 end
          ranges[#ranges + 1] = { i, j - i + 1 }
        end
      end
    end
  end
  if no_overlap and #ranges == 0 then return nil, ERR_NO_OVERLAP end
  return ranges
end
M._parse_range = parse_range

local function content_range(ra, size)
  return format("bytes %d-%d/%d", ra[1], ra[1] + ra[2] - 1, size)
end

-- A multipart/byteranges part's head (Go's mime/multipart writer: the
-- part's headers sorted by name).
local function part_head(boundary, first, ra, ctype, size)
  return format("%s--%s\r\nContent-Range: %s\r\nContent-Type: %s\r\n\r\n", first and "" or "\r\n", boundary,
    content_range(ra, size), ctype)
end

local function new_boundary()
  local rnd = los.read_range("/dev/urandom", 0, 30)
  if not rnd or #rnd < 30 then -- no /dev/urandom: the time will do, boundaries need not be secret
    rnd = format("%030.0f", (require("lugo.time").now() % 1e9) * 1e9) .. tostring({})
  end
  return (gsub(sub(rnd, 1, 30), ".", function(c) return format("%02x", byte(c)) end))
end

-- ---------------------------------------------------------------- file systems

-- A file system as serveFile uses it: stat, read_dir and read_range of
-- Go-style names ("/a/b", cleaned again here).

-- Names beneath a root directory (file_server), one per directory and VM.
local roots = {}
local function root_fs(dir)
  local fsys = roots[dir]
  if fsys then return fsys end
  local root, err = los.open_root(dir)
  if not root then return nil, err end -- not kept: the directory may appear later
  local function rel(name)
    name = clean("/" .. name)
    return name == "/" and "." or sub(name, 2)
  end
  fsys = {
    stat = function(name) return root:stat(rel(name)) end,
    read_dir = function(name) return root:read_dir(rel(name)) end,
    read_range = function(name, off, n) return root:read_range(rel(name), off, n) end,
  }
  roots[dir] = fsys
  return fsys
end

-- Names joined to a directory, links followed (Go's http.Dir: serve_file).
local function dir_fs(dir)
  if dir == "" then dir = "." end
  local function join(name) return clean(dir .. "/" .. clean("/" .. name)) end
  return {
    stat = function(name) return los.stat(join(name)) end,
    read_dir = function(name) return los.read_dir(join(name)) end,
    read_range = function(name, off, n) return los.read_range(join(name), off, n) end,
  }
end

-- ---------------------------------------------------------------- serving

-- Go's dirList: a <pre> of links, sorted by name, directories with a "/".
local function dir_list(w, r, fsys, name)
  local list, err = fsys.read_dir(name)
  if not list then
    stderr:write(format("http: error reading directory: %s\n", tostring(err)))
    return http_error(w, "Error reading directory", 500)
  end
  sort(list, function(a, b) return a.name < b.name end)
  w:header():set("Content-Type", "text/html; charset=utf-8")
  local out = { '<!doctype html>\n<meta name="viewport" content="width=device-width">\n<pre>\n' }
  for _, e in ipairs(list) do
    local n = e.is_dir and e.name .. "/" or e.name
    out[#out + 1] = format('<a href="%s">%s</a>\n', url_path(n), html_escape(n))
  end
  out[#out + 1] = "</pre>\n"
  w:write(concat(out))
end

-- Write length bytes of name from start; first: the first chunk, read
-- already. Stops at a read error or a short file (the server then closes
-- the connection: the body is shorter than its Content-Length).
local function copy_range(w, fsys, name, start, length, first)
  local off, left = start, length
  while left > 0 do
    local s = first
    first = nil
    if not s then
      local err
      s, err = fsys.read_range(name, off, min(CHUNK, left))
      if not s then
        stderr:write(format("http: error reading file: %s\n", tostring(err)))
        return false
      end
    end
    if #s == 0 then return false end
    if #s > left then s = sub(s, 1, left) end
    if not w:write(s) then return false end
    off, left = off + #s, left - #s
  end
  return true
end

-- Go's serveContent for a file of the given size and mtime.
local function serve_content(w, r, fsys, name, info)
  local size, mtime = info.size, info.mtime
  set_last_modified(w, mtime)
  local done, range_header = check_preconditions(w, r, mtime)
  if done then return end

  local h = w:header()
  local head -- the file's first bytes, when they were read to sniff its type
  local ctype
  if rawget(h, "Content-Type") == nil then
    ctype = type_by_name(info.name)
    if not ctype then
      local err
      head, err = fsys.read_range(name, 0, (r.method == "HEAD" or range_header ~= "") and SNIFF_LEN or CHUNK)
      if not head then return serve_error(w, to_http_error(err)) end
      ctype = http.detect_content_type(sub(head, 1, SNIFF_LEN))
    end
    h:set("Content-Type", ctype)
  else
    ctype = h:get("Content-Type") or ""
  end

  local ranges, err = parse_range(range_header, size)
  if err then
    if err == ERR_NO_OVERLAP and size == 0 then
      -- some clients send a Range with every request: an empty file is
      -- served whole rather than refused
      ranges = nil
    else
      if err == ERR_NO_OVERLAP then h:set("Content-Range", "bytes */" .. format("%d", size)) end
      return serve_error(w, err, 416)
    end
  end
  if ranges then
    local sum = 0
    for _, ra in ipairs(ranges) do sum = sum + ra[2] end
    if sum > size then ranges = nil end -- more than the file: an attack or a confused client, served whole
    if ranges and #ranges == 0 then ranges = nil end
  end

  local code, send_size, start = 200, size, 0
  local boundary
  if ranges and #ranges == 1 then
    code, start, send_size = 206, ranges[1][1], ranges[1][2]
  elseif ranges then
    code = 206
    boundary = new_boundary()
    send_size = #format("\r\n--%s--\r\n", boundary)
    for i, ra in ipairs(ranges) do
      send_size = send_size + #part_head(boundary, i == 1, ra, ctype, size) + ra[2]
    end
  end

  -- The file is read (so opened: a permission error still gets its status)
  -- before the status is sent.
  local first
  local body = r.method ~= "HEAD"
  local first_at, first_len = start, min(CHUNK, send_size)
  if boundary then first_at, first_len = ranges[1][1], min(CHUNK, ranges[1][2]) end
  if not body or send_size == 0 then first_len = 0 end
  if head and first_at + first_len <= #head then
    first = sub(head, first_at + 1, first_at + first_len)
  elseif first_len > 0 or not head then
    first, err = fsys.read_range(name, first_at, first_len)
    if not first then return serve_error(w, to_http_error(err)) end
  end

  if boundary then
    h:set("Content-Type", "multipart/byteranges; boundary=" .. boundary)
  elseif code == 206 then
    h:set("Content-Range", content_range(ranges[1], size))
  end
  h:set("Accept-Ranges", "bytes")
  -- A wrapper that compresses sets Content-Encoding: its length is not ours.
  if (h:get("Content-Encoding") or "") == "" then h:set("Content-Length", format("%d", send_size)) end
  w:write_header(code)
  if not body or send_size == 0 then return end

  if not boundary then
    copy_range(w, fsys, name, start, send_size, first ~= "" and first or nil)
    return
  end
  for i, ra in ipairs(ranges) do
    if not w:write(part_head(boundary, i == 1, ra, ctype, size)) then return end
    if not copy_range(w, fsys, name, ra[1], ra[2], i == 1 and first ~= "" and first or nil) then return end
  end
  w:write(format("\r\n--%s--\r\n", boundary))
end

-- Go's serveFile: name is the cleaned name in fsys; redirect: send
-- "/dir" to "/dir/" and "/file/" to "/file".
local function serve(w, r, fsys, name, redirect, listing)
  local upath = r.path
  if ends(upath, INDEX) then return local_redirect(w, r, "./") end
  local d, err = fsys.stat(name)
  if not d then return serve_error(w, to_http_error(err)) end
  if redirect then
    if d.is_dir then
      if sub(upath, -1) ~= "/" then return local_redirect(w, r, base(upath) .. "/") end
    elseif sub(upath, -1) == "/" then
      local b = base(upath)
      if b == "/" or b == "." then b = "" end
      return local_redirect(w, r, "../" .. b)
    end
  end
  if d.is_dir then
    if upath == "" or sub(upath, -1) ~= "/" then return local_redirect(w, r, base(upath) .. "/") end
    local index = gsub(name, "/$", "") .. INDEX
    local dd = fsys.stat(index)
    if dd then d, name = dd, index end
  end
  if d.is_dir then -- still: no index.html
    if not listing then return serve_error(w, "404 page not found", 404) end
    if check_if_modified_since(r, d.mtime) == COND_FALSE then return write_not_modified(w) end
    set_last_modified(w, d.mtime)
    return dir_list(w, r, fsys, name)
  end
  if not d.is_regular then return serve_error(w, "403 Forbidden", 403) end
  return serve_content(w, r, fsys, name, d)
end

-- The handler file_server returns, run in whatever processor serves the
-- request: it finds this module there by name.
function M._serve_dir(w, r, dir, listing)
  local upath = r.path
  if byte(upath, 1) ~= 47 then
    upath = "/" .. upath
    r.path = upath
  end
  if find(upath, "\0", 1, true) then return http_error(w, "invalid URL path", 400) end
  local fsys, err = root_fs(dir)
  if not fsys then return serve_error(w, to_http_error(err)) end
  return serve(w, r, fsys, clean(upath), true, listing)
end

-- file_server(dir[, opts]) -> a handler function(w, r) serving the files
-- under dir at the request's path, as Go's http.FileServer(http.Dir(dir)).
-- opts.listing = false answers 404 for a directory without index.html.
function M.file_server(dir, opts)
  if type(dir) ~= "string" then argerror(1, "file_server", "string", dir) end
  local listing = true
  if opts ~= nil then
    if type(opts) ~= "table" then argerror(2, "file_server", "table", opts) end
    for k, v in pairs(opts) do
      if k ~= "listing" then error(format("http.file_server: unknown option '%s'", tostring(k)), 2) end
      if type(v) ~= "boolean" then
        error(format("http.file_server: option 'listing' must be a boolean, got %s", type(v)), 2)
      end
      listing = v
    end
  end
  if dir == "" then dir = "." end
  -- Only strings and booleans in the closure: it is copied to every
  -- processor with the server's options.
  return function(w, r) return require("lugo.http.fs")._serve_dir(w, r, dir, listing) end
end

-- serve_file(w, r, path): the file or directory at path, as Go's
-- http.ServeFile: a request path with a ".." element is refused (400), as
-- the path was probably built from it; links are followed.
function M.serve_file(w, r, path)
  if type(path) ~= "string" then argerror(3, "serve_file", "string", path) end
  if contains_dotdot(r.path) then return http_error(w, "invalid URL path", 400) end
  local dir, file = match(path, "^(.*/)([^/]*)$")
  if not dir then dir, file = "", path end
  return serve(w, r, dir_fs(dir), file, false, true)
end

return M
