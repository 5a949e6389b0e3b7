-- lugo.http.mux: Go 1.22's ServeMux. Patterns are "[METHOD ][HOST]/[PATH]"
-- with wildcards {name} (one segment), {name...} (the rest of the path,
-- last only) and {$} (the end of the path, last only); a trailing slash is
-- an anonymous {...}. The most specific pattern wins; two patterns that
-- match some request with neither more specific conflict, an error raised
-- when the second one is registered (a pattern with a host beats one
-- without). Patterns compile at registration into Go's decision tree
-- (host, then method, then one level per path segment); a request walks it
-- once (twice when a {...} pattern matched, for the trailing-slash
-- redirect) and allocates only its segments and r.path_values.
--
-- Also Go's http.Error, NotFound, Redirect, StatusText and the mux's
-- cleanPath, for lugo.http.
local type, pairs, ipairs, tostring, pcall, rawget = type, pairs, ipairs, tostring, pcall, rawget
local setmetatable, getmetatable, error = setmetatable, getmetatable, error
local byte, sub, find, format, gsub, char = string.byte, string.sub, string.find, string.format, string.gsub,
  string.char
local gmatch, tonumber = string.gmatch, tonumber
local concat, sort = table.concat, table.sort
local getinfo = debug.getinfo

local M = {}

local SLASH = 47

-- ---------------------------------------------------------------- status

M.status_text = {
  [100] = "Continue", [101] = "Switching Protocols", [102] = "Processing", [103] = "Early Hints",
  [200] = "OK", [201] = "Created", [202] = "Accepted", [203] = "Non-Authoritative Information",
  [204] = "No Content", [205] = "Reset Content", [206] = "Partial Content", [207] = "Multi-Status",
  [208] = "Already Reported", [226] = "IM Used",
  [300] = "Multiple Choices", [301] = "Moved Permanently", [302] = "Found", [303] = "See Other",
  [304] = "Not Modified", [305] = "Use Proxy", [307] = "Temporary Redirect", [308] = "Permanent Redirect",
  [400] = "Bad Request", [401] = "Unauthorized", [402] = "Payment Required", [403] = "Forbidden",
  [404] = "Not Found", [405] = "Method Not Allowed", [406] = "Not Acceptable",
  [407] = "Proxy Authentication Required", [408] = "Request Timeout", [409] = "Conflict", [410] = "Gone",
  [411] = "Length Required", [412] = "Precondition Failed", [413] = "Request Entity Too Large",
  [414] = "Request URI Too Long", [415] = "Unsupported Media Type", [416] = "Requested Range Not Satisfiable",
  [417] = "Expectation Failed", [418] = "I'm a teapot", [421] = "Misdirected Request",
  [422] = "Unprocessable Entity", [423] = "Locked", [424] = "Failed Dependency", [425] = "Too Early",
  [426] = "Upgrade Required", [428] = "Precondition Required", [429] = "Too Many Requests",
  [431] = "Request Header Fields Too Large", [451] = "Unavailable For Legal Reasons",
  [500] = "Internal Server Error", [501] = "Not Implemented", [502] = "Bad Gateway",
  [503] = "Service Unavailable", [504] = "Gateway Timeout", [505] = "HTTP Version Not Supported",
  [506] = "Variant Also Negotiates", [507] = "Insufficient Storage", [508] = "Loop Detected",
  [510] = "Not Extended", [511] = "Network Authentication Required",
}
local status_text = M.status_text

-- ---------------------------------------------------------------- strings

local function hexbyte(h) return char(tonumber(h, 16)) end

-- Go's url.PathUnescape, and the original string when an escape is invalid.
local function unescape(s)
  local i = find(s, "%", 1, true)
  if not i then return s end
  repeat
    if not find(s, "^%x%x", i + 1) then return s end
    i = find(s, "%", i + 3, true)
  until not i
  return (gsub(s, "%%(%x%x)", hexbyte))
end

local function upper_escape(c) return format("%%%02X", byte(c)) end

-- Go's url.URL.EscapedPath of a path without RawPath (escape, encodePath).
local function escape_path(s)
  if not find(s, "[^%w%-_%.~%$&%+,/:;=@]") then return s end
  return (gsub(s, "[^%w%-_%.~%$&%+,/:;=@]", upper_escape))
end

local function lower_escape(c) return format("%%%x", byte(c)) end

-- Go's hexEscapeNonASCII (its hex is lower case).
local function hex_escape_non_ascii(s)
  if not find(s, "[\128-\255]") then return s end
  return (gsub(s, "[\128-\255]", lower_escape))
end

local html_entities = { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&#34;", ["'"] = "&#39;" }
local function html_escape(s) return (gsub(s, "[&<>\"']", html_entities)) end

local quote_escapes = {
  ['"'] = '\\"', ["\\"] = "\\\\", ["\a"] = "\\a", ["\b"] = "\\b", ["\f"] = "\\f", ["\n"] = "\\n",
  ["\r"] = "\\r", ["\t"] = "\\t", ["\v"] = "\\v", ["\127"] = "\\x7f",
}
for i = 0, 31 do
  local c = char(i)
  if not quote_escapes[c] then quote_escapes[c] = format("\\x%02x", i) end
end

-- Go's %q of a string (strconv.Quote): valid UTF-8 is kept, other bytes
-- are \xNN.
local function quote(s)
  local out, n, i, len = {}, 0, 1, #s
  while i <= len do
    local b = byte(s, i)
    local size = 0
    if b >= 0xC2 and b <= 0xDF then size = 2
    elseif b >= 0xE0 and b <= 0xEF then size = 3
    elseif b >= 0xF0 and b <= 0xF4 then size = 4 end
    local piece
    if b < 0x80 then
      piece = sub(s, i, i)
      piece = quote_escapes[piece] or piece
      i = i + 1
    elseif size > 0 and i + size - 1 <= len and not find(sub(s, i + 1, i + size - 1), "[^\128-\191]") then
      piece = sub(s, i, i + size - 1)
      i = i + size
    else
      piece = format("\\x%02x", b)
      i = i + 1
    end
    n = n + 1
    out[n] = piece
  end
  return '"' .. concat(out) .. '"'
end

-- ---------------------------------------------------------------- paths

-- Go's path.Clean.
local function path_clean(p)
  if p == "" then return "." end
  local rooted = byte(p, 1) == SLASH
  local out, n = {}, 0
  for seg in gmatch(p, "[^/]+") do
    if seg == ".." then
      if n > 0 and out[n] ~= ".." then
        out[n] = nil
        n = n - 1
      elseif not rooted then
        n = n + 1
        out[n] = ".."
      end
    elseif seg ~= "." then
      n = n + 1
      out[n] = seg
    end
  end
  local s = concat(out, "/", 1, n)
  if rooted then return "/" .. s end
  if s == "" then return "." end
  return s
end

-- Whether a rooted path is already its own cleanPath (no allocation).
local function is_clean(p)
  if find(p, "//", 1, true) or find(p, "/./", 1, true) or find(p, "/../", 1, true) then return false end
  local len = #p
  if byte(p, len) == 46 then -- '.'
    if byte(p, len - 1) == SLASH then return false end
    if byte(p, len - 1) == 46 and byte(p, len - 2) == SLASH then return false end
  end
  return true
end

-- clean_path(p): the canonical path, as Go's cleanPath: rooted, without
-- . and .. elements nor repeated slashes, keeping a trailing slash.
local function clean_path(p)
  if p == "" then return "/" end
  if byte(p, 1) ~= SLASH then p = "/" .. p end
  if is_clean(p) then return p end
  local np = path_clean(p)
  if byte(p, -1) == SLASH and np ~= "/" then np = np .. "/" end
  return np
end
M.clean_path = clean_path
M.path_clean = path_clean -- Go's path.Clean, for lugo.http.fs

-- Go's stripHostPort: h without a trailing ":port" (net.SplitHostPort's
-- rules; h unchanged when it does not split).
local function strip_host_port(h)
  if h == nil then return "" end
  if not find(h, ":", 1, true) then return h end
  local i = #h
  while byte(h, i) ~= 58 do i = i - 1 end -- the last ':'
  if byte(h, 1) == 91 then -- '['
    local e = find(h, "]", 1, true)
    if not e or e + 1 ~= i then return h end
    if find(h, "[", 2, true) or find(h, "]", e + 1, true) then return h end
    return sub(h, 2, e - 1)
  end
  local host = sub(h, 1, i - 1)
  if find(host, ":", 1, true) or find(h, "[%[%]]") then return h end
  return host
end

-- ---------------------------------------------------------------- responses

-- error(w, msg, code): Go's http.Error.
function M.error(w, msg, code)
  local h = w:header()
  h:del("Content-Length")
  h:del("Content-Encoding")
  h:set("Content-Type", "text/plain; charset=utf-8")
  h:set("X-Content-Type-Options", "nosniff")
  w:write_header(code)
  w:write(tostring(msg) .. "\n")
end
local http_error = M.error

-- not_found(w, r): Go's http.NotFound.
function M.not_found(w, r)
  http_error(w, "404 page not found", 404)
end
local not_found = M.not_found

-- Whether url.Parse(u) succeeds with neither scheme nor host: Redirect
-- makes only such URLs absolute.
local function is_relative_url(u)
  if find(u, "[%c]") then return false end -- control bytes: a parse error
  local frag = ""
  local h = find(u, "#", 1, true)
  if h then u, frag = sub(u, 1, h - 1), sub(u, h + 1) end
  local q = find(u, "?", 1, true)
  local p = q and sub(u, 1, q - 1) or u
  -- a scheme, or a colon in the first segment (a parse error)
  local s = find(p, "/", 1, true)
  if find(s and sub(p, 1, s - 1) or p, ":", 1, true) then return false end
  if sub(p, 1, 2) == "//" and sub(p, 1, 3) ~= "///" then
    local e = find(p, "/", 3, true)
    if (e and e > 3) or (not e and #p > 2) then return false end -- a host
  end
  if unescape(p) == p and find(p, "%", 1, true) then return false end -- bad escape
  if unescape(frag) == frag and find(frag, "%", 1, true) then return false end
  return true
end

-- redirect(w, r, url, code): Go's http.Redirect. A relative url is made
-- absolute against r.path and cleaned (keeping a trailing slash and the
-- query). Without a Content-Type already set, GET and HEAD get
-- "text/html; charset=utf-8" and GET a short HTML body.
function M.redirect(w, r, url, code)
  if is_relative_url(url) then
    local oldpath = r.path
    if oldpath == nil or oldpath == "" then oldpath = "/" end
    if url == "" or byte(url, 1) ~= SLASH then
      local dir = oldpath:match("^(.*/)") or ""
      url = dir .. url
    end
    local query = ""
    local q = find(url, "?", 1, true)
    if q then url, query = sub(url, 1, q - 1), sub(url, q) end
    local trailing = byte(url, -1) == SLASH
    url = path_clean(url)
    if trailing and byte(url, -1) ~= SLASH then url = url .. "/" end
    url = url .. query
  end
  local h = w:header()
  local had_ct = h:get("Content-Type") ~= nil
  h:set("Location", hex_escape_non_ascii(url))
  local method = r.method
  if not had_ct and (method == "GET" or method == "HEAD") then
    h:set("Content-Type", "text/html; charset=utf-8")
  end
  w:write_header(code)
  if not had_ct and method == "GET" then
    w:write('<a href="' .. html_escape(url) .. '">' .. (status_text[code] or "") .. "</a>.\n\n")
  end
end
local redirect = M.redirect

-- redirect_handler(url, code): Go's http.RedirectHandler.
function M.redirect_handler(url, code)
  return function(w, r) return redirect(w, r, url, code) end
end
local redirect_handler = M.redirect_handler

local function method_not_allowed(allow)
  return function(w)
    w:header():set("Allow", allow)
    http_error(w, "Method Not Allowed", 405)
  end
end

local function bad_request_star(w, r)
  local proto = r.proto
  if proto == nil or proto == "HTTP/1.1" or (proto ~= "HTTP/1.0" and proto ~= "HTTP/0.9") then
    w:header():set("Connection", "close")
  end
  w:write_header(400)
end

-- ---------------------------------------------------------------- patterns

-- A pattern: { str, method, host, segs = { { s, wild, multi }... }, nseg,
-- last_multi, names = { wildcard names in order }, nnames, loc }.
-- A trailing slash is an anonymous multi segment (s == ""); {$} is the
-- literal segment "/". Literal segments are stored unescaped.

local function is_token_char(b)
  return (b >= 48 and b <= 57) or (b >= 65 and b <= 90) or (b >= 97 and b <= 122) or
    b == 33 or (b >= 35 and b <= 39) or b == 42 or b == 43 or b == 45 or b == 46 or
    b == 94 or b == 95 or b == 96 or b == 124 or b == 126
end

local function valid_method(m)
  if m == "" then return false end
  for i = 1, #m do
    if not is_token_char(byte(m, i)) then return false end
  end
  return true
end

-- A Go identifier: letters (every non-ASCII byte counts as one), '_', and
-- digits after the first character.
local function valid_wildcard_name(s)
  return find(s, "^[%a_\128-\255][%w_\128-\255]*$") ~= nil
end

local function trim_space(s)
  return (s:match("^[ \t\n\v\f\r]*(.-)[ \t\n\v\f\r]*$"))
end

-- parse(s) -> pattern, or nil, Go's message.
local function parse_pattern(s)
  if s == "" then return nil, "empty pattern" end
  local off = 0
  local function fail(msg) return nil, format("at offset %d: %s", off, msg) end
  local method, rest, found = s, "", false
  local i = find(s, "[ \t]")
  if i then method, rest, found = sub(s, 1, i - 1), trim_space(sub(s, i + 1)), true end
  if not found then rest, method = method, "" end
  if method ~= "" and not valid_method(method) then return fail("invalid method " .. quote(method)) end
  local p = { str = s, method = method }
  if found then off = #method + 1 end
  i = find(rest, "/", 1, true)
  if not i then return fail("host/path missing /") end
  p.host, rest = sub(rest, 1, i - 1), sub(rest, i)
  local j = find(p.host, "{", 1, true)
  if j then
    off = off + j - 1
    return fail("host contains '{' (missing initial '/'?)")
  end
  off = off + i - 1
  if method ~= "" and method ~= "CONNECT" and rest ~= clean_path(rest) then
    return fail("non-CONNECT pattern with unclean path can never match")
  end
  local segs, names, seen = {}, {}, {}
  while rest ~= "" do
    rest = sub(rest, 2)
    off = #s - #rest
    if rest == "" then -- trailing slash
      segs[#segs + 1] = { s = "", wild = true, multi = true }
      break
    end
    local e = find(rest, "/", 1, true) or #rest + 1
    local seg
    seg, rest = sub(rest, 1, e - 1), sub(rest, e)
    local b = find(seg, "{", 1, true)
    if not b then
      segs[#segs + 1] = { s = unescape(seg), wild = false, multi = false }
    else
      if b ~= 1 then return fail("bad wildcard segment (must start with '{')") end
      if byte(seg, -1) ~= 125 then return fail("bad wildcard segment (must end with '}')") end
      local name = sub(seg, 2, -2)
      if name == "$" then
        if rest ~= "" then return fail("{$} not at end") end
        segs[#segs + 1] = { s = "/", wild = false, multi = false }
        break
      end
      local multi = false
      if #name >= 3 and sub(name, -3) == "..." then name, multi = sub(name, 1, -4), true end
      if multi and rest ~= "" then return fail("{...} wildcard not at end") end
      if name == "" then return fail("empty wildcard") end
      if not valid_wildcard_name(name) then return fail("bad wildcard name " .. quote(name)) end
      if seen[name] then return fail("duplicate wildcard name " .. quote(name)) end
      seen[name] = true
      segs[#segs + 1] = { s = name, wild = true, multi = multi }
      names[#names + 1] = name
    end
  end
  p.segs, p.nseg, p.names, p.nnames = segs, #segs, names, #names
  p.last_multi = segs[#segs].multi
  return p
end

-- Relationships between two patterns p1, p2 (Go's names).
local EQUIVALENT, MORE_GENERAL, MORE_SPECIFIC = "equivalent", "moreGeneral", "moreSpecific"
local DISJOINT, OVERLAPS = "disjoint", "overlaps"

local function inverse(r)
  if r == MORE_SPECIFIC then return MORE_GENERAL end
  if r == MORE_GENERAL then return MORE_SPECIFIC end
  return r
end

-- The relationship of two patterns from those of two parts of them.
local function combine(r1, r2)
  if r1 == EQUIVALENT then return r2 end
  if r1 == DISJOINT then return DISJOINT end
  if r1 == OVERLAPS then return r2 == DISJOINT and DISJOINT or OVERLAPS end
  if r2 == EQUIVALENT then return r1 end
  if r2 == inverse(r1) then return OVERLAPS end
  return r2
end

-- No method matches every method; GET matches GET and HEAD.
local function compare_methods(p1, p2)
  local m1, m2 = p1.method, p2.method
  if m1 == m2 then return EQUIVALENT end
  if m1 == "" then return MORE_GENERAL end
  if m2 == "" then return MORE_SPECIFIC end
  if m1 == "GET" and m2 == "HEAD" then return MORE_GENERAL end
  if m2 == "GET" and m1 == "HEAD" then return MORE_SPECIFIC end
  return DISJOINT
end

local function compare_segments(s1, s2)
  if s1.multi and s2.multi then return EQUIVALENT end
  if s1.multi then return MORE_GENERAL end
  if s2.multi then return MORE_SPECIFIC end
  if s1.wild and s2.wild then return EQUIVALENT end
  if s1.wild then return s2.s == "/" and DISJOINT or MORE_GENERAL end -- {x} never matches the {$} slash
  if s2.wild then return s1.s == "/" and DISJOINT or MORE_SPECIFIC end
  return s1.s == s2.s and EQUIVALENT or DISJOINT
end

local function compare_paths(p1, p2)
  local n1, n2 = p1.nseg, p2.nseg
  if n1 ~= n2 and not p1.last_multi and not p2.last_multi then return DISJOINT end
  local rel, n = EQUIVALENT, n1 < n2 and n1 or n2
  for i = 1, n do
    rel = combine(rel, compare_segments(p1.segs[i], p2.segs[i]))
    if rel == DISJOINT then return rel end
  end
  if n1 == n2 then return rel end
  -- The shorter one must end in a multi, more general than the rest of the other.
  if n1 < n2 and p1.last_multi then return combine(rel, MORE_GENERAL) end
  if n2 < n1 and p2.last_multi then return combine(rel, MORE_SPECIFIC) end
  return DISJOINT
end

local function conflicts_with(p1, p2)
  -- Different hosts: the one with a host wins, or they match different requests.
  if p1.host ~= p2.host then return false end
  local mrel = compare_methods(p1, p2)
  if mrel == DISJOINT then return false end
  local rel = combine(mrel, compare_paths(p1, p2))
  return rel == EQUIVALENT or rel == OVERLAPS
end

-- One segment of a path that matches s ("/" then a literal or the name).
local function segment_text(s)
  if s.multi or s.s == "/" then return "/" end
  return "/" .. s.s
end

local function matching_rest(out, segs, from)
  for i = from, #segs do out[#out + 1] = segment_text(segs[i]) end
end

-- A path that both p1 and p2 match (they overlap).
local function common_path(p1, p2)
  local out, a, b = {}, p1.segs, p2.segs
  local n = p1.nseg < p2.nseg and p1.nseg or p2.nseg
  for i = 1, n do
    out[#out + 1] = segment_text(a[i].wild and b[i] or a[i])
  end
  if p1.nseg > n then matching_rest(out, a, n + 1) elseif p2.nseg > n then matching_rest(out, b, n + 1) end
  return concat(out)
end

-- A path that p1 matches and p2 does not.
local function difference_path(p1, p2)
  local out, a, b = {}, p1.segs, p2.segs
  local n = p1.nseg < p2.nseg and p1.nseg or p2.nseg
  for i = 1, n do
    local s1, s2 = a[i], b[i]
    if s1.multi and s2.multi then
      out[#out + 1] = "/"
      return concat(out)
    elseif s1.multi then
      -- A trailing slash tells them apart, unless s2 is {$}: then any segment.
      out[#out + 1] = "/"
      if s2.s == "/" then out[#out + 1] = s1.s ~= "" and s1.s or "x" end
      return concat(out)
    elseif s1.wild and not s2.wild and not s2.multi then
      -- Anything but the literal: the name, or the literal tweaked.
      out[#out + 1] = s1.s ~= s2.s and segment_text(s1) or "/" .. s2.s .. "x"
    else
      out[#out + 1] = segment_text(s1)
    end
  end
  if p1.nseg > n then matching_rest(out, a, n + 1) elseif p2.nseg > n then matching_rest(out, b, n + 1) end
  return concat(out)
end

-- Why p1 conflicts with p2, in Go's words.
local function describe_conflict(p1, p2)
  local mrel, prel = compare_methods(p1, p2), compare_paths(p1, p2)
  local rel = combine(mrel, prel)
  if rel == EQUIVALENT then return format("%s matches the same requests as %s", p1.str, p2.str) end
  if prel == OVERLAPS then
    return format("%s and %s both match some paths, like %s.\nBut neither is more specific than the other.\n" ..
      "%s matches %s, but %s doesn't.\n%s matches %s, but %s doesn't.",
      p1.str, p2.str, quote(common_path(p1, p2)),
      p1.str, quote(difference_path(p1, p2)), p2.str,
      p2.str, quote(difference_path(p2, p1)), p1.str)
  end
  if mrel == MORE_GENERAL and prel == MORE_SPECIFIC then
    return format("%s matches more methods than %s, but has a more specific path pattern", p1.str, p2.str)
  end
  if mrel == MORE_SPECIFIC and prel == MORE_GENERAL then
    return format("%s matches fewer methods than %s, but has a more general path pattern", p1.str, p2.str)
  end
  return format("bug: unexpected way for two patterns %s and %s to conflict: methods %s, paths %s",
    p1.str, p2.str, mrel, prel)
end

-- ---------------------------------------------------------------- the tree

-- A node: children (segment -> node: literals, "/" for {$}), wild (the
-- {x} child), multi (the leaf of a {x...} or trailing slash here). A leaf
-- also has pattern, handler, str (the pattern's string), names, nnames,
-- and named_multi when it ends in a named {x...}.
local function new_node() return { children = {} } end

local function set_leaf(n, p, h)
  if n.pattern then error("http: internal: two patterns for one leaf: " .. p.str, 0) end
  n.pattern, n.handler, n.str, n.names, n.nnames = p, h, p.str, p.names, p.nnames
  n.last_multi, n.nseg = p.last_multi, p.nseg
  n.named_multi = p.last_multi and p.segs[p.nseg].s ~= ""
end

local function add_pattern(mux, p, h)
  local hosts = mux.hosts
  local methods = hosts[p.host]
  if not methods then
    methods = {}
    hosts[p.host] = methods
    if p.host ~= "" then mux.nhosts = mux.nhosts + 1 end
  end
  local n = methods[p.method]
  if not n then
    n = new_node()
    methods[p.method] = n
  end
  for i = 1, p.nseg do
    local seg = p.segs[i]
    if seg.multi then
      local c = {}
      set_leaf(c, p, h)
      n.multi = c
      return
    elseif seg.wild then
      local c = n.wild
      if not c then c = new_node(); n.wild = c end
      n = c
    else
      local c = n.children[seg.s]
      if not c then c = new_node(); n.children[seg.s] = c end
      n = c
    end
  end
  set_leaf(n, p, h)
end

-- Wildcard values of the match in progress (matching never yields, so
-- one array per VM does); caps2 is for the trailing-slash probe and 405.
local caps, caps2 = {}, {}

-- The backtracking stack of match_path, one frame per path segment: the
-- node, the segment's '/' position, the segment, where the next one
-- starts, the captures so far, and the next alternative to try (0: the
-- literal child, 1: the {x} child, 2: the {x...} child).
local st_node, st_pos, st_seg, st_next, st_nc, st_alt = {}, {}, {}, {}, {}, {}

-- match_path(n, path, last, cs) -> leaf, number of values in cs: walk the
-- tree from n along path (which starts with '/'); last is the index of
-- its last byte, #path + 1 when a trailing slash is added virtually. At
-- each segment, literal children first, then {x} (never for the trailing
-- slash), then {x...}: the order the precedence rules checked at
-- registration make right. A loop rather than recursion, for the JIT.
local function match_path(n, path, last, cs)
  local d, pos, nc, plen = 0, 1, 0, #path
  while true do
    if pos > last then
      if n.pattern then return n, nc end
    else
      local seg, nxt
      if pos == last then
        seg, nxt = "/", pos + 1
      else
        nxt = find(path, "/", pos + 1, true) or plen + 1
        seg = sub(path, pos + 1, nxt - 1)
        if find(seg, "%", 1, true) then seg = unescape(seg) end
      end
      d = d + 1
      st_node[d], st_pos[d], st_seg[d], st_next[d], st_nc[d], st_alt[d] = n, pos, seg, nxt, nc, 0
    end
    -- the next alternative of the innermost frame that has one
    while true do
      if d == 0 then return nil end
      local fn, alt, seg = st_node[d], st_alt[d], st_seg[d]
      if alt == 0 then
        st_alt[d] = 1
        local c = fn.children[seg]
        if c then
          n, pos, nc = c, st_next[d], st_nc[d]
          break
        end
        alt = 1
      end
      if alt == 1 then
        st_alt[d] = 2
        local c = fn.wild
        if c and seg ~= "/" then
          nc = st_nc[d] + 1
          cs[nc] = seg
          n, pos = c, st_next[d]
          break
        end
      end
      local c = fn.multi
      if c then
        nc = st_nc[d]
        if c.named_multi then
          nc = nc + 1
          cs[nc] = unescape(sub(path, st_pos[d] + 1))
        end
        return c, nc
      end
      d = d - 1
    end
  end
end

local function match_method_path(methods, method, path, last, cs)
  local n = methods[method]
  if n then
    local l, k = match_path(n, path, last, cs)
    if l then return l, k end
  end
  if method == "HEAD" then
    n = methods.GET
    if n then
      local l, k = match_path(n, path, last, cs)
      if l then return l, k end
    end
  end
  n = methods[""]
  if n then return match_path(n, path, last, cs) end
  return nil
end

-- tree_match(mux, host, method, path, extra, cs) -> leaf, captures: the
-- host's patterns first, then those without a host. extra: match path
-- with a trailing slash added.
local function tree_match(mux, host, method, path, extra, cs)
  if byte(path, 1) ~= SLASH then return nil end
  local last = extra and #path + 1 or #path
  if host ~= "" then
    local methods = mux.hosts[host]
    if methods then
      local l, k = match_method_path(methods, method, path, last, cs)
      if l then return l, k end
    end
  end
  local methods = mux.hosts[""]
  if methods then return match_method_path(methods, method, path, last, cs) end
  return nil
end

-- Go's exactMatch: no {x...} in the match, or one that matched nothing.
local function exact_match(leaf, path, extra)
  if not leaf then return false end
  if not leaf.last_multi then return true end
  local slashes = 0
  if extra then
    slashes = 1
  elseif path ~= "" and byte(path, -1) ~= SLASH then
    return false
  end
  local i = find(path, "/", 1, true)
  while i do
    slashes = slashes + 1
    i = find(path, "/", i + 1, true)
  end
  return leaf.nseg == slashes
end

-- Methods with a pattern for host and path (path with a trailing slash
-- too), sorted, ", "-joined; nil if none.
local function allowed_methods(mux, host, path)
  local set, any = {}, false
  local function collect(methods)
    if not methods then return end
    for m, n in pairs(methods) do
      if m ~= "" and not set[m] and byte(path, 1) == SLASH and
          (match_path(n, path, #path, caps2) or match_path(n, path, #path + 1, caps2)) then
        set[m], any = true, true
      end
    end
  end
  if host ~= "" then collect(mux.hosts[host]) end
  collect(mux.hosts[""])
  if not any then return nil end
  if set.GET then set.HEAD = true end
  local list = {}
  for m in pairs(set) do list[#list + 1] = m end
  sort(list)
  return concat(list, ", ")
end

-- ---------------------------------------------------------------- the mux

local Mux = {}
Mux.__index = Mux
Mux.__call = function(mux, w, r) return mux:serve_http(w, r) end

-- new() -> an empty mux.
function M.new()
  return setmetatable({
    hosts = {},     -- host -> method -> root node of the path tree
    nhosts = 0,     -- hosts other than "": none, and requests' Host is never looked at
    patterns = {},  -- in registration order
    multis = {},    -- patterns ending in {x...} or a trailing slash
    index = {},     -- "pos=literal" or "pos*" -> other patterns with that segment
    _lugo_mux = true, -- what rebind() looks for in a copy
  }, Mux)
end

-- rebind(mux) -> mux: a mux copied to another processor (spawn copies
-- tables without their metatables, as every value between VMs) gets its
-- methods back, and so do the muxes it routes to.
function M.rebind(mux, seen)
  seen = seen or {}
  if seen[mux] then return mux end
  seen[mux] = true
  setmetatable(mux, Mux)
  local function walk(n)
    local h = n.handler
    if type(h) == "table" and rawget(h, "_lugo_mux") then M.rebind(h, seen) end
    if n.children then
      for _, c in pairs(n.children) do walk(c) end
    end
    if n.wild then walk(n.wild) end
    if n.multi then walk(n.multi) end
  end
  for _, methods in pairs(mux.hosts) do
    for _, n in pairs(methods) do walk(n) end
  end
  return mux
end

-- Whether a frame belongs to the mux or lugo.http (whose handle() calls
-- here): "registered at" names the caller's code, as Go's does.
local MY_SOURCE = getinfo(1, "S").source
local function internal(info)
  local src = info.source
  return info.what == "C" or info.what == "tail" or src == MY_SOURCE or src == "=lugo.http" or
    find(src, "lugo[/.]http%.lua$") ~= nil or find(src, "lugo[/.]http[/.]mux%.lua$") ~= nil
end

-- The caller's level (as error() counts from the function at `from`) and
-- location.
local function caller(from)
  local level = from + 1
  while true do
    local info = getinfo(level + 1, "Sl")
    if not info then return from, "unknown location" end
    if not internal(info) then
      local src = info.source
      src = byte(src, 1) == 64 and sub(src, 2) or info.short_src -- '@file'
      return level, format("%s:%d", src, info.currentline)
    end
    level = level + 1
  end
end

local function serve_http_of(h) return h.serve_http end

-- A function, an object with a serve_http method, or a callable.
local function valid_handler(h)
  local t = type(h)
  if t == "function" then return true end
  if t ~= "table" and t ~= "userdata" then return false end
  local ok, f = pcall(serve_http_of, h)
  if ok and type(f) == "function" then return true end
  local mt = getmetatable(h)
  return type(mt) == "table" and mt.__call ~= nil
end

-- Patterns that might conflict with p (Go's routingIndex): every multi,
-- then, for a {$} pattern, those with {$} at the same place, else those
-- with the same literal or a wildcard at the literal position shared with
-- the fewest patterns (every pattern when p has no literal).
local function index_key(i, seg)
  if seg.wild then return i .. "*" end
  return i .. "=" .. seg.s
end

local function possible_conflicts(mux, p, f)
  for _, q in ipairs(mux.multis) do
    local e = f(q)
    if e then return e end
  end
  local function apply(list)
    if not list then return nil end
    for k = 1, #list do
      local e = f(list[k])
      if e then return e end
    end
  end
  local index = mux.index
  local last = p.segs[p.nseg]
  if not last.wild and last.s == "/" then return apply(index[index_key(p.nseg, last)]) end
  local lmin, wmin, min
  for i = 1, p.nseg do
    local seg = p.segs[i]
    if seg.multi then break end
    if not seg.wild then
      local l, w = index[index_key(i, seg)], index[i .. "*"]
      local sum = (l and #l or 0) + (w and #w or 0)
      if not min or sum < min then lmin, wmin, min = l, w, sum end
    end
  end
  if min then return apply(lmin) or apply(wmin) end
  for _, q in ipairs(mux.patterns) do
    if not q.last_multi then
      local e = f(q)
      if e then return e end
    end
  end
end

local function add_to_index(mux, p)
  mux.patterns[#mux.patterns + 1] = p
  if p.last_multi then
    mux.multis[#mux.multis + 1] = p
    return
  end
  local index = mux.index
  for i = 1, p.nseg do
    local key = index_key(i, p.segs[i])
    local list = index[key]
    if not list then list = {}; index[key] = list end
    list[#list + 1] = p
  end
end

-- handle(pattern, handler): register handler (a function h(w, r), or an
-- object with serve_http(self, w, r), or a callable) for pattern. Raises
-- Go's message for an invalid pattern or one conflicting with a pattern
-- already registered.
function Mux.handle(mux, pattern, handler)
  if getmetatable(mux) ~= Mux then error("bad argument #1 to 'handle' (mux expected)", 2) end
  local level, loc = caller(1)
  if type(pattern) ~= "string" then
    error(format("bad argument #1 to 'handle' (string expected, got %s)", type(pattern)), level)
  end
  if pattern == "" then error("http: invalid pattern", level) end
  if handler == nil then error("http: nil handler", level) end
  if not valid_handler(handler) then
    error("http: handler must be a function or have a serve_http method", level)
  end
  local p, err = parse_pattern(pattern)
  if not p then error(format("parsing %s: %s", quote(pattern), err), level) end
  p.loc = loc
  err = possible_conflicts(mux, p, function(q)
    if conflicts_with(p, q) then
      return format("pattern %s (registered at %s) conflicts with pattern %s (registered at %s):\n%s",
        quote(p.str), p.loc, quote(q.str), q.loc, describe_conflict(p, q))
    end
  end)
  if err then error(err, level) end
  add_pattern(mux, p, handler)
  add_to_index(mux, p)
end
Mux.handle_func = Mux.handle

-- find(mux, r) -> handler, pattern string, leaf (nil unless a pattern
-- matched), number of wildcard values in caps.
local function find_handler(mux, r)
  local method = r.method
  local path = r.path or ""
  -- The escaped path: lugo.http computes raw_path with path and stores it
  -- only when it differs (reading a nil raw_path would compute it again).
  local raw = rawget(r, "raw_path")
  if raw == nil and rawget(r, "path") == nil then raw = r.raw_path end
  if raw then path = raw end
  local q = r.raw_query
  local host, leaf, nc, cpath
  if method == "CONNECT" then
    -- Neither the host nor the path is canonicalised.
    host, cpath = r.host or "", path
  else
    host = mux.nhosts > 0 and strip_host_port(r.host) or ""
    cpath = clean_path(path)
  end
  leaf, nc = tree_match(mux, host, method, cpath, false, caps)
  if not exact_match(leaf, cpath, false) and byte(cpath, -1) ~= SLASH then
    -- "/tree" when only "/tree/" (or "/tree/{x...}") would match it exactly.
    local l2 = tree_match(mux, host, method, cpath, true, caps2)
    if exact_match(l2, cpath, true) then
      local to = clean_path(r.path or "") .. "/"
      local url = escape_path(to)
      if q and q ~= "" then url = url .. "?" .. q end
      return redirect_handler(url, 301), to
    end
  end
  if cpath ~= path then
    local url = cpath
    if q and q ~= "" then url = url .. "?" .. q end
    return redirect_handler(url, 301), leaf and leaf.str or ""
  end
  if not leaf then
    local allow = allowed_methods(mux, host, cpath)
    if allow then return method_not_allowed(allow), "" end
    return not_found, ""
  end
  return leaf.handler, leaf.str, leaf, nc
end

-- handler(r) -> handler, pattern: what serve_http would call for r, and
-- the pattern that matched ("" if none; for a redirect, the path it
-- redirects to).
function Mux.handler(mux, r)
  local h, pattern = find_handler(mux, r)
  return h, pattern
end

-- serve_http(w, r): dispatch r to the handler of the most specific pattern
-- that matches it, with r.pattern and r.path_values (wildcard name ->
-- decoded value) set; or answer 404, 405 (with Allow) or a 301 redirect.
function Mux.serve_http(mux, w, r)
  if r.path == "*" then return bad_request_star(w, r) end -- the target "*" (OPTIONS *)
  local h, pattern, leaf, nc = find_handler(mux, r)
  local values = {}
  if leaf then
    local names = leaf.names
    for i = 1, nc do values[names[i]] = caps[i] end
  end
  r.pattern, r.path_values = pattern, values
  if type(h) == "function" then return h(w, r) end
  local f = h.serve_http
  if f then return f(h, w, r) end
  return h(w, r)
end

return M
