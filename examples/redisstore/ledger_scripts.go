package redisstore

import "github.com/redis/go-redis/v9"

// The ledger's scripts. Every key of the ledger starts with the same base,
// Prefix+"{ledger}:", whose hash tag puts them all in one slot of a Redis
// Cluster: a hold must fit the key's and the user's scopes in one atomic
// step, and a Release knows only the request id, so the scopes it touches
// are read from the hold inside the script. Each script declares the keys
// of the request id it works on (for routing) and builds the scope keys
// from the base and the scope names it is given or reads; all share the
// declared keys' slot.
//
// A scope's name is its kind and escaped id ("key:k-1", "user:u%3A1").
// Per scope:
//
//	rate:<scope>            hash m (the minute), r (requests), t (tokens); PX 2 min
//	holds:<scope>           zset request id -> created (the turn's start, ms)
//	held:<scope>            hash request id -> micros held
//	heldsum:<scope>         the sum of held:<scope>
//	spend:<scope>:<window>  micros spent in "total", a day or a month
//
// and per request id hold:<id> (hash t created, c micros, n tokens, m
// minute, k and u its scopes) and settled:<id> (PX SettledTTL).
//
// Amounts are passed to redis.call as the strings they came in, never as
// Lua numbers, which Redis would format with 14 significant digits; the
// comparisons in Lua are exact below 2^53 micro-USD ($9 billion).

// ledgerPrelude is the head of every ledger script: scope key names and
// dropping one hold from one scope.
const ledgerPrelude = `
local B = ARGV[1]
local function scope(name)
  return {name = name, rate = B .. 'rate:' .. name, holds = B .. 'holds:' .. name,
    held = B .. 'held:' .. name, sum = B .. 'heldsum:' .. name}
end
local function drop(s, id)
  redis.call('ZREM', s.holds, id)
  local m = redis.call('HGET', s.held, id)
  if not m then return false end
  redis.call('HDEL', s.held, id)
  redis.call('DECRBY', s.sum, m)
  return true
end
`

// Results of ledgerHoldScript's first element.
const (
	holdDenied   = 0
	holdAdmitted = 1
	holdKnown    = 2 // the id is held or settled already: nothing counted
)

// Denial kinds of ledgerHoldScript.
const (
	denyRequests = 1
	denyTokens   = 2
	denyBudget   = 3
)

// ledgerHoldScript prunes the expired holds of the turn's scopes, checks
// every limit of every scope, and only then counts the turn in all of them
// and records its hold.
//
// KEYS: hold:<id>, settled:<id>.
// ARGV: base, id, now ms, minute, cutoff ms (holds created at or before
// it have expired), gc ms (key expiry), micros, tokens, scope count, then
// per scope: name, budget window, budget, RPM, TPM.
//
// Returns {holdAdmitted or holdKnown, requests, tokens, spent, held} of
// the first scope, or {holdDenied, kind, scope index, used}.
var ledgerHoldScript = redis.NewScript(ledgerPrelude + `
local id, now, minute = ARGV[2], ARGV[3], tonumber(ARGV[4])
local cutoff, gc = tonumber(ARGV[5]), ARGV[6]
local micros, tokens = ARGV[7], ARGV[8]
local n = tonumber(ARGV[9])

-- The id held (live) or settled already counts nothing more. An expired
-- hold of the same id leaves its scopes before it counts again (the
-- pruning below may not reach it).
local known = redis.call('EXISTS', KEYS[2]) == 1
local old = redis.call('HMGET', KEYS[1], 't', 'k', 'u')
if old[1] then
  if tonumber(old[1]) > cutoff then
    known = true
  else
    for i = 2, 3 do
      if old[i] then drop(scope(old[i]), id) end
    end
    redis.call('DEL', KEYS[1])
  end
end

local S = {}
for i = 1, n do
  local a = 9 + (i - 1) * 5
  local s = scope(ARGV[a + 1])
  s.spend = B .. 'spend:' .. s.name .. ':' .. ARGV[a + 2]
  s.budget, s.rpm, s.tpm = tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5])
  local gone = redis.call('ZRANGEBYSCORE', s.holds, '-inf', ARGV[5], 'LIMIT', 0, 256)
  for _, g in ipairs(gone) do drop(s, g) end
  local v = redis.call('HMGET', s.rate, 'm', 'r', 't')
  local m = tonumber(v[1])
  if m and m >= minute then
    s.r, s.t = tonumber(v[2]) or 0, tonumber(v[3]) or 0
  else
    s.r, s.t, s.reset = 0, 0, true
  end
  s.spent = tonumber(redis.call('GET', s.spend) or '0')
  s.heldv = tonumber(redis.call('GET', s.sum) or '0')
  S[i] = s
end

local function state(code)
  if n == 0 then return {code, 0, 0, 0, 0} end
  local s = S[1]
  return {code, s.r, s.t, s.spent, s.heldv}
end

if known then return state(2) end

local nt, nm = tonumber(tokens), tonumber(micros)
for i = 1, n do
  local s = S[i]
  if s.rpm > 0 and s.r + 1 > s.rpm then return {0, 1, i, s.r} end
end
for i = 1, n do
  local s = S[i]
  if s.tpm > 0 and s.t + nt > s.tpm then return {0, 2, i, s.t} end
end
for i = 1, n do
  local s = S[i]
  if s.budget > 0 and s.spent + s.heldv + nm > s.budget then return {0, 3, i, s.spent + s.heldv} end
end

local rec = {'t', now, 'c', micros, 'n', tokens, 'm', ARGV[4]}
for i = 1, n do
  local s = S[i]
  if s.reset then redis.call('HSET', s.rate, 'm', ARGV[4], 'r', 0, 't', 0) end
  s.r = redis.call('HINCRBY', s.rate, 'r', 1)
  s.t = redis.call('HINCRBY', s.rate, 't', tokens)
  redis.call('PEXPIRE', s.rate, 120000)
  redis.call('ZADD', s.holds, now, id)
  redis.call('HSET', s.held, id, micros)
  s.heldv = redis.call('INCRBY', s.sum, micros)
  redis.call('PEXPIRE', s.holds, gc)
  redis.call('PEXPIRE', s.held, gc)
  redis.call('PEXPIRE', s.sum, gc)
  rec[#rec + 1] = string.sub(s.name, 1, 1) -- 'k' or 'u'
  rec[#rec + 1] = s.name
end
redis.call('HSET', KEYS[1], unpack(rec))
redis.call('PEXPIRE', KEYS[1], gc)
return state(1)
`)

// ledgerSettleScript settles a turn once: it marks its id settled, debits
// its cost to every window of its scopes, ends its hold and corrects the
// hold's minute to the tokens the turn used.
//
// KEYS: settled:<id>, hold:<id>.
// ARGV: base, id, settled TTL ms, cost, total tokens, the usage's key scope
// name ("" without a key id), its user scope name, day window, month
// window, day window TTL ms, month window TTL ms.
//
// A scope of the usage without an id is debited when the hold had it (it
// had limits). Returns 1 when settled now, 0 when settled before.
var ledgerSettleScript = redis.NewScript(ledgerPrelude + `
local id = ARGV[2]
if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[3]) then return 0 end
local cost, total = ARGV[4], tonumber(ARGV[5])
local rec = redis.call('HMGET', KEYS[2], 'n', 'm', 'k', 'u')
local held, minute = rec[1], rec[2]

local names = {}
for _, kind in ipairs({{ARGV[6], rec[3]}, {ARGV[7], rec[4]}}) do
  local name = kind[1]
  if name == '' then name = kind[2] end
  if name then names[#names + 1] = name end
end

if tonumber(cost) > 0 then
  for _, name in ipairs(names) do
    local base = B .. 'spend:' .. name .. ':'
    redis.call('INCRBY', base .. 'total', cost)
    local d, m = base .. ARGV[8], base .. ARGV[9]
    redis.call('INCRBY', d, cost)
    redis.call('PEXPIRE', d, ARGV[10])
    redis.call('INCRBY', m, cost)
    redis.call('PEXPIRE', m, ARGV[11])
  end
end

-- The hold's own scopes, and the usage's in case the hold record is gone.
local seen = {}
for _, name in ipairs({rec[3], rec[4], names[1], names[2]}) do
  if name and not seen[name] then
    seen[name] = true
    local s = scope(name)
    if drop(s, id) and held then
      local v = redis.call('HMGET', s.rate, 'm', 't')
      if v[1] == minute then
        local t = tonumber(v[2] or '0') + total - tonumber(held)
        if t < 0 then t = 0 end
        redis.call('HSET', s.rate, 't', t)
      end
    end
  end
end
redis.call('DEL', KEYS[2])
return 1
`)

// ledgerReleaseScript ends a hold without a debit.
//
// KEYS: hold:<id>. ARGV: base, id. Returns 1 when a hold was ended.
var ledgerReleaseScript = redis.NewScript(ledgerPrelude + `
local rec = redis.call('HMGET', KEYS[1], 'k', 'u')
local n = 0
for i = 1, 2 do
  if rec[i] and drop(scope(rec[i]), ARGV[2]) then n = 1 end
end
redis.call('DEL', KEYS[1])
return n
`)

// ledgerBalanceScript reads one scope's spend in a window and its live
// holds. It writes nothing (the expired holds it skips are removed by the
// next Hold of the scope).
//
// KEYS: spend:<scope>:<window>. ARGV: base, scope name, cutoff ms.
// Returns {spent, held, holds}.
var ledgerBalanceScript = redis.NewScript(ledgerPrelude + `
local s = scope(ARGV[2])
local spent = tonumber(redis.call('GET', KEYS[1]) or '0')
local live = redis.call('ZRANGEBYSCORE', s.holds, '(' .. ARGV[3], '+inf')
local held = 0
for _, id in ipairs(live) do
  held = held + (tonumber(redis.call('HGET', s.held, id)) or 0)
end
return {spent, held, #live}
`)
