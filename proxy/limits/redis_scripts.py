"""The Redis limiter's Lua scripts: every admission, settlement, renewal and
seed is one of these, run atomically by Redis (EVALSHA; redis-py loads a
script once and re-loads it only after a Redis restart forgot it).

The arithmetic is the in-process limiter's, step for step and in the same
order (bucket.py, quotas.py, limiter.py), so that both backends admit the
same requests and report the same numbers: Lua numbers are IEEE doubles, as
Python floats are, and levels travel as "%.17g" strings, which round-trip
exactly. Counters are integers (HINCRBY); money is integer nano-dollars.

State per subject (one hash: a user `u:<id>` or a key `k:<id>`):

    r_l r_s r_c   rpm bucket: level, stamp (unix s), capacity
    t_l t_s t_c   tpm bucket
    d m           the day (days since the epoch) and month (year*12+month-1)
                  the counters below were last rolled to
    rd td rb tb   requests/tokens today, requests/tokens of earlier days this month
    cm            cost this month, nano-dollars

Holds of a key: the sorted set `c:<key id>`, member = hold id, score = the
hold's deadline. A member past its deadline is a hold whose worker stopped
renewing it (killed): it no longer counts as in flight, and its estimate
stays charged, since nobody knows what the request used.

Time is Redis's own (`TIME`), so workers' clocks cannot disagree. ARGV[1]
overrides it: a number is used as "now" (the tests' injected clock), "@"
reads it from the test-clock key (a test hook for several processes), ""
means TIME.
"""

from __future__ import annotations

COMMON = r"""
local EPS = 1e-6
local function now_of(arg, clock_key)
  if arg == '' or (arg == '@' and redis.call('EXISTS', clock_key) == 0) then
    local t = redis.call('TIME')
    return tonumber(t[1]) + tonumber(t[2]) / 1000000
  end
  if arg == '@' then return tonumber(redis.call('GET', clock_key)) end
  return tonumber(arg)
end
local function f(x) return string.format('%.17g', x) end
local function i(x) return string.format('%d', x) end
local function day_of(now) return math.floor(now / 86400) end
local function month_of(day)
  -- Days since the epoch to the civil month (H. Hinnant's days_from_civil, inverted).
  local z = day + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
                          - math.floor(doe / 146096)) / 365)
  local y = yoe + era * 400
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local m = mp < 10 and mp + 3 or mp - 9
  if m <= 2 then y = y + 1 end
  return y * 12 + m - 1
end
local FIELDS = {'r_l', 'r_s', 'r_c', 't_l', 't_s', 't_c', 'd', 'm', 'rd', 'td', 'rb', 'tb', 'cm'}
local function load(key, day, month)
  local v = redis.call('HMGET', key, unpack(FIELDS))
  local s = {key = key}
  if v[3] then s.r = {l = tonumber(v[1]), s = tonumber(v[2]), c = tonumber(v[3])} end
  if v[6] then s.t = {l = tonumber(v[4]), s = tonumber(v[5]), c = tonumber(v[6])} end
  if v[7] then
    s.d, s.m = tonumber(v[7]), tonumber(v[8])
    s.rd, s.td, s.rb, s.tb, s.cm = tonumber(v[9]), tonumber(v[10]), tonumber(v[11]),
                                   tonumber(v[12]), tonumber(v[13])
  else
    s.d, s.m, s.rd, s.td, s.rb, s.tb, s.cm = day, month, 0, 0, 0, 0, 0
  end
  return s
end
local function roll(s, day, month)
  -- QuotaUsage.roll
  if s.d == day and s.m == month then return end
  if s.m ~= month then s.rb, s.tb, s.cm = 0, 0, 0
  else s.rb, s.tb = s.rb + s.rd, s.tb + s.td end
  s.d, s.m, s.rd, s.td = day, month, 0, 0
end
local function refill(b, now)
  -- TokenBucket.refill
  if now > b.s then
    local level = b.l + (now - b.s) * (b.c / 60.0)
    if level < b.c then b.l = level else b.l = b.c end
    b.s = now
  end
end
local function save(s)
  local args = {'d', i(s.d), 'm', i(s.m), 'rd', i(s.rd), 'td', i(s.td), 'rb', i(s.rb),
                'tb', i(s.tb), 'cm', i(s.cm)}
  for _, p in ipairs({'r', 't'}) do
    local b = s[p]
    if b then
      table.insert(args, p .. '_l'); table.insert(args, f(b.l))
      table.insert(args, p .. '_s'); table.insert(args, f(b.s))
      table.insert(args, p .. '_c'); table.insert(args, f(b.c))
    end
  end
  redis.call('HSET', s.key, unpack(args))
  if not s.r then redis.call('HDEL', s.key, 'r_l', 'r_s', 'r_c') end
  if not s.t then redis.call('HDEL', s.key, 't_l', 't_s', 't_c') end
end
"""

# KEYS: user hash, key hash, key's holds, seeded marker, hold sequence, test clock
# ARGV: now, hold ttl (s), per_user, user rpm, user tpm, key rpm, key tpm,
#       max_concurrent, user quota x5, key quota x5, tokens, cost (nano); "" = no limit
ADMIT = COMMON + r"""
local now = now_of(ARGV[1], KEYS[6])
if redis.call('EXISTS', KEYS[4]) == 0 then return {'unseeded', f(now)} end
local day = day_of(now)
local month = month_of(day)
local function num(x) if x == '' then return nil end return tonumber(x) end
local user = load(KEYS[1], day, month)
local key = load(KEYS[2], day, month)
roll(user, day, month)
roll(key, day, month)
-- _configure_user / _configure_key: a bucket is created full, resized
-- (refilled at its old rate, then clipped, never topped up), or dropped.
local function bucket(s, p, cap)
  if cap == nil then s[p] = nil; return end
  local b = s[p]
  if b == nil then b = {l = cap, s = now, c = cap}
  elseif b.c ~= cap then
    refill(b, now); b.c = cap
    if b.l > cap then b.l = cap end
  end
  refill(b, now)
  s[p] = b
end
bucket(user, 'r', num(ARGV[4])); bucket(user, 't', num(ARGV[5]))
bucket(key, 'r', num(ARGV[6])); bucket(key, 't', num(ARGV[7]))
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', f(now))
local inflight = redis.call('ZCARD', KEYS[3])

local function state(s)
  local out = {}
  for _, p in ipairs({'r', 't'}) do
    local b = s[p]
    if b then
      table.insert(out, f(b.l)); table.insert(out, f(b.s)); table.insert(out, f(b.c))
    else
      table.insert(out, ''); table.insert(out, ''); table.insert(out, '')
    end
  end
  for _, name in ipairs({'d', 'm', 'rd', 'td', 'rb', 'tb', 'cm'}) do
    table.insert(out, i(s[name]))
  end
  return out
end
local before_user = state(user)
local before_key = state(key)

local tokens = tonumber(ARGV[19])
local cost = tonumber(ARGV[20])
-- QuotaUsage.breach
local function breach(s, base)
  local rd, td, rm, tm, budget = num(ARGV[base]), num(ARGV[base + 1]), num(ARGV[base + 2]),
                                 num(ARGV[base + 3]), num(ARGV[base + 4])
  if rd and s.rd >= rd then return true end
  if td then
    local used = s.td
    if used >= td or used + (tokens < td and tokens or td) > td then return true end
  end
  if rm and s.rb + s.rd >= rm then return true end
  if tm then
    local used = s.tb + s.td
    if used >= tm or used + (tokens < tm and tokens or tm) > tm then return true end
  end
  if budget then
    local used = s.cm
    if used >= budget or used + (cost < budget and cost or budget) > budget then return true end
  end
  return false
end
local a, b = key, nil
if ARGV[3] == '1' then a, b = user, key end
local function fit(bk)
  local capacity = bk.c
  if capacity == 0 then capacity = 1 end
  if tokens < capacity then return tokens end
  return capacity
end
local refused = nil
if breach(user, 9) then refused = 'quota'
elseif breach(key, 14) then refused = 'quota'
elseif ARGV[8] ~= '' and inflight >= tonumber(ARGV[8]) then refused = 'concurrency'
end
local need_a, need_b = 0, 0
local function check(s)
  if s.r and not (s.r.l + EPS >= 1) then return false, 0 end
  if not s.t then return true, 0 end
  local need = fit(s.t)
  if not (s.t.l + EPS >= need) then return false, need end
  return true, need
end
if not refused then
  local ok
  ok, need_a = check(a)
  if not ok then refused = 'bucket'
  elseif b then
    ok, need_b = check(b)
    if not ok then refused = 'bucket' end
  end
end
if refused then
  save(user); save(key)
  local out = {'refused', f(now), refused, i(inflight)}
  for _, v in ipairs(before_user) do table.insert(out, v) end
  for _, v in ipairs(before_key) do table.insert(out, v) end
  return out
end
-- _take
for _, s in ipairs({user, key}) do
  s.rd = s.rd + 1; s.td = s.td + tokens; s.cm = s.cm + cost
end
if a.r then a.r.l = a.r.l - 1 end
if a.t then a.t.l = a.t.l - need_a end
if b then
  if b.r then b.r.l = b.r.l - 1 end
  if b.t then b.t.l = b.t.l - need_b end
end
save(user); save(key)
local hold = redis.call('INCR', KEYS[5])
redis.call('ZADD', KEYS[3], f(now + tonumber(ARGV[2])), hold)
local out = {'ok', f(now), i(hold), i(inflight), f(need_a), f(need_b)}
for _, v in ipairs(before_user) do table.insert(out, v) end
for _, v in ipairs(before_key) do table.insert(out, v) end
return out
"""

# KEYS: user hash, key hash, key's holds, (unused), (unused), test clock
# ARGV: now, hold id, mode ("settle" | "release"), real tokens, real cost (nano),
#       estimated tokens, estimated cost, day, month, a ("u" | "k"), reserved_a,
#       a had tpm, b had tpm, reserved_b
# Exactly once per hold: the first call that still finds it live applies its
# correction; a hold that expired keeps its estimate (a killed worker's request
# may well have been served) and a second call finds nothing.
FINISH = COMMON + r"""
local now = now_of(ARGV[1], KEYS[6])
local score = redis.call('ZSCORE', KEYS[3], ARGV[2])
if not score then return 0 end
redis.call('ZREM', KEYS[3], ARGV[2])
if tonumber(score) <= now then return 0 end
local settle = ARGV[3] == 'settle'
local tokens, cost = tonumber(ARGV[4]), tonumber(ARGV[5])
local est_tokens, est_cost = tonumber(ARGV[6]), tonumber(ARGV[7])
local day, month = tonumber(ARGV[8]), tonumber(ARGV[9])
local a_key = ARGV[10] == 'u' and KEYS[1] or KEYS[2]
local reserved_a, reserved_b = tonumber(ARGV[11]), tonumber(ARGV[14])
local function tpm_of(key)
  local v = redis.call('HMGET', key, 't_l', 't_s', 't_c')
  if not v[3] then return nil end
  return {l = tonumber(v[1]), s = tonumber(v[2]), c = tonumber(v[3])}
end
local function put(key, b)
  redis.call('HSET', key, 't_l', f(b.l), 't_s', f(b.s))
end
local function adjust(key, delta)
  -- TokenBucket.adjust
  local b = tpm_of(key)
  if not b then return end
  refill(b, now)
  local level = b.l + delta
  if level < b.c then b.l = level else b.l = b.c end
  put(key, b)
end
if ARGV[12] == '1' then
  if settle then
    -- Limiter.settle's inlined adjust: refill without the clip, then the delta, then clip.
    local b = tpm_of(a_key)
    if b then
      local level = b.l
      if now > b.s then level = level + (now - b.s) * (b.c / 60.0); b.s = now end
      level = level + reserved_a - tokens
      if level < b.c then b.l = level else b.l = b.c end
      put(a_key, b)
    end
  elseif reserved_a ~= 0 then
    adjust(a_key, reserved_a)
  end
end
if ARGV[13] == '1' then
  if settle then adjust(KEYS[2], reserved_b - tokens)
  elseif reserved_b ~= 0 then adjust(KEYS[2], reserved_b) end
end
local d_req, d_tokens, d_cost = 0, tokens - est_tokens, cost - est_cost
if not settle then d_req, d_tokens, d_cost = -1, -est_tokens, -est_cost end
if d_req == 0 and d_tokens == 0 and d_cost == 0 then return 1 end
for _, key in ipairs({KEYS[1], KEYS[2]}) do
  -- QuotaUsage.correct
  local v = redis.call('HMGET', key, 'd', 'm')
  if v[2] and tonumber(v[2]) == month then
    if tonumber(v[1]) == day then
      redis.call('HINCRBY', key, 'rd', i(d_req)); redis.call('HINCRBY', key, 'td', i(d_tokens))
    else
      redis.call('HINCRBY', key, 'rb', i(d_req)); redis.call('HINCRBY', key, 'tb', i(d_tokens))
    end
    -- (formatted: a Lua -0 would reach Redis as "-0", which is no integer)
    redis.call('HINCRBY', key, 'cm', i(d_cost))
  end
end
return 1
"""

# KEYS: seeded marker, test clock, then one subject hash per totals
# ARGV: now, then per totals: day, month, requests_day, tokens_day,
#       requests_month, tokens_month, cost (nano)
# Added to what is there: after Redis lost its data, workers re-register the
# holds they still have in flight before the seed lands on top of them.
SEED = COMMON + r"""
if redis.call('EXISTS', KEYS[1]) == 1 then return -1 end
local now = now_of(ARGV[1], KEYS[2])
local day = day_of(now)
local month = month_of(day)
local n = 0
for j = 3, #KEYS do
  local base = 2 + (j - 3) * 7
  local t_day, t_month = tonumber(ARGV[base]), tonumber(ARGV[base + 1])
  if t_month == month then
    local s = load(KEYS[j], day, month)
    roll(s, day, month)
    local rd, td = 0, 0
    if t_day == day then rd, td = tonumber(ARGV[base + 2]), tonumber(ARGV[base + 3]) end
    s.rd = s.rd + rd; s.td = s.td + td
    s.rb = s.rb + math.max(0, tonumber(ARGV[base + 4]) - rd)
    s.tb = s.tb + math.max(0, tonumber(ARGV[base + 5]) - td)
    s.cm = s.cm + tonumber(ARGV[base + 6])
    save(s)
    n = n + 1
  end
end
redis.call('SET', KEYS[1], '1')
return n
"""

# KEYS: seeded marker, test clock, then one holds set per hold
# ARGV: now, ttl, then the hold ids, in KEYS' order
# Returns {seeded (0/1), ids of the holds no longer found}.
RENEW = COMMON + r"""
local now = now_of(ARGV[1], KEYS[2])
local deadline = f(now + tonumber(ARGV[2]))
local lost = {}
for j = 3, #KEYS do
  local id = ARGV[j]
  local score = redis.call('ZSCORE', KEYS[j], id)
  if score and tonumber(score) > now then
    redis.call('ZADD', KEYS[j], 'XX', deadline, id)
  else
    table.insert(lost, id)
  end
end
return {redis.call('EXISTS', KEYS[1]), lost}
"""

# KEYS: user hash, key hash, key's holds, test clock
# ARGV: now, ttl, hold id, tokens, cost (nano), day, month
# A hold Redis forgot (it restarted empty) put back by the worker that holds it.
RESTORE = COMMON + r"""
local now = now_of(ARGV[1], KEYS[4])
local today = day_of(now)
local this_month = month_of(today)
local day, month = tonumber(ARGV[6]), tonumber(ARGV[7])
if redis.call('ZSCORE', KEYS[3], ARGV[3]) then return 0 end
for _, key in ipairs({KEYS[1], KEYS[2]}) do
  local s = load(key, today, this_month)
  roll(s, today, this_month)
  if month == this_month then
    if day == today then
      s.rd = s.rd + 1; s.td = s.td + tonumber(ARGV[4])
    else
      s.rb = s.rb + 1; s.tb = s.tb + tonumber(ARGV[4])
    end
    s.cm = s.cm + tonumber(ARGV[5])
  end
  save(s)
end
redis.call('ZADD', KEYS[3], f(now + tonumber(ARGV[2])), ARGV[3])
return 1
"""
