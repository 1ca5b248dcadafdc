"""
The Lua scripts with which the Redis store keeps what each proxy reports:
one hash a proxy (console id -> the console's JSON) beside a small hash with
the count and sum of the digest (L{txvnc.core.digest}), both expiring with
the report, and the sorted set C{nodes} of proxies by expiry. A proxy's
changes touch only their own fields, so applying them costs what changed.

Every script takes the key prefix as C{ARGV[1]}. Reports written by an API
from before the per-console hash (one JSON list under C{node:NAME}) are
still listed, so that API processes can be upgraded one at a time.
"""

from __future__ import annotations

#: ARGV: prefix, node, ttl ms, expires at, count, total, then id, json, ...
PUT = """
local p, n = ARGV[1], ARGV[2]
redis.call('DEL', p..'rep:'..n, p..'node:'..n)
for i = 7, #ARGV, 2 do
  redis.call('HSET', p..'rep:'..n, ARGV[i], ARGV[i + 1])
end
redis.call('HSET', p..'repsum:'..n, 'count', ARGV[5], 'total', ARGV[6])
redis.call('PEXPIRE', p..'repsum:'..n, ARGV[3])
redis.call('PEXPIRE', p..'rep:'..n, ARGV[3])
redis.call('ZADD', p..'nodes', ARGV[4], n)
return 1
"""

#: ARGV: prefix, node, now, ttl ms, expires at, number removed, then
#: (id, term) for each removed, then (id, term, json) for each added.
#: Answers {count, total}, or false when no live report is held.
UPDATE = """
local p, n = ARGV[1], ARGV[2]
local live = redis.call('ZSCORE', p..'nodes', n)
if not live or tonumber(live) <= tonumber(ARGV[3])
   or redis.call('EXISTS', p..'repsum:'..n) == 0 then
  return false
end
local sum, rep = p..'repsum:'..n, p..'rep:'..n
local i = 7
for _ = 1, tonumber(ARGV[6]) do
  if redis.call('HDEL', rep, ARGV[i]) == 1 then
    redis.call('HINCRBY', sum, 'count', -1)
    redis.call('HINCRBY', sum, 'total', -tonumber(ARGV[i + 1]))
  end
  i = i + 2
end
while i <= #ARGV do
  if redis.call('HSET', rep, ARGV[i], ARGV[i + 2]) == 1 then
    redis.call('HINCRBY', sum, 'count', 1)
    redis.call('HINCRBY', sum, 'total', tonumber(ARGV[i + 1]))
  end
  i = i + 3
end
redis.call('PEXPIRE', sum, ARGV[4])
redis.call('PEXPIRE', rep, ARGV[4])
redis.call('ZADD', p..'nodes', ARGV[5], n)
return redis.call('HMGET', sum, 'count', 'total')
"""

#: ARGV: prefix, now. Answers "s<json of one console>" and, for reports
#: of an older API, "l<json list of consoles>".
LIST = """
local p = ARGV[1]
local out = {}
for _, n in ipairs(redis.call('ZRANGEBYSCORE', p..'nodes', '(' .. ARGV[2], '+inf')) do
  if redis.call('EXISTS', p..'repsum:'..n) == 1 then
    for _, v in ipairs(redis.call('HVALS', p..'rep:'..n)) do
      table.insert(out, 's'..v)
    end
  else
    local v = redis.call('GET', p..'node:'..n)
    if v then table.insert(out, 'l'..v) else redis.call('ZREM', p..'nodes', n) end
  end
end
return out
"""
