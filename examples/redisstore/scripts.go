package redisstore

import "github.com/redis/go-redis/v9"

// The scripts read the clock with TIME, so every expiry and every queue
// position is in Redis's time, whatever the clocks of the relay hosts say.
// Every key a script touches shares the hash tag {key}, so they run on
// Redis Cluster too. Numbers passed to redis.call stay below 14 digits,
// which Lua formats without losing precision.

// Results of acquireScript.
const (
	resBusy    = 0  // no slot: TryAcquire fails, a waiter keeps waiting
	resGranted = 1  // the lease was added
	resFull    = -1 // the wait queue is full
)

// acquireScript drops expired leases and stale waiter tickets, then grants
// a lease when the caller's turn has come.
//
// KEYS: leases (zset lease id -> expiry ms), queue (zset ticket -> arrival
// "sec.usec"), seen (zset ticket -> last check ms).
// ARGV: lease id, limit, lease TTL ms, ticket ("" for TryAcquire), max
// waiters (-1: no bound, for a waiter whose stale ticket is re-queued),
// stale-after ms, wake-up channel.
//
// Without a ticket, or for a ticket not yet queued, a slot is granted only
// when the leases and the queued tickets together leave room: nobody
// overtakes a waiter. A queued ticket is granted when fewer tickets are
// ahead of it than there are free slots.
var acquireScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit = tonumber(ARGV[2])
local ttl = tonumber(ARGV[3])
local ticket = ARGV[4]
local stale = tonumber(ARGV[6])

redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local gone = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now - stale, 'LIMIT', 0, 100)
if #gone > 0 then
  redis.call('ZREM', KEYS[2], unpack(gone))
  redis.call('ZREM', KEYS[3], unpack(gone))
end

local held = redis.call('ZCARD', KEYS[1])
local queued = redis.call('ZCARD', KEYS[2])

local function grant()
  redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
  if redis.call('PTTL', KEYS[1]) < ttl then
    redis.call('PEXPIRE', KEYS[1], ttl)
  end
  return 1
end

if ticket == '' then
  if held + queued < limit then return grant() end
  return 0
end

local rank = redis.call('ZRANK', KEYS[2], ticket)
if not rank then
  if held + queued < limit then return grant() end
  local maxw = tonumber(ARGV[5])
  if maxw >= 0 and queued >= maxw then return -1 end
  redis.call('ZADD', KEYS[2], 'NX', t[1] .. '.' .. string.format('%06d', tonumber(t[2])), ticket)
elseif rank < limit - held then
  redis.call('ZREM', KEYS[2], ticket)
  redis.call('ZREM', KEYS[3], ticket)
  -- Slots may be left for those behind (several freed at once).
  if queued > 1 and held + 1 < limit then
    redis.call('PUBLISH', ARGV[7], '')
  end
  return grant()
end
redis.call('ZADD', KEYS[3], now, ticket)
redis.call('PEXPIRE', KEYS[2], stale * 2)
redis.call('PEXPIRE', KEYS[3], stale * 2)
return 0
`)

// releaseScript removes a lease and, when someone waits, wakes them.
//
// KEYS: leases, queue. ARGV: lease id, wake-up channel.
var releaseScript = redis.NewScript(`
local n = redis.call('ZREM', KEYS[1], ARGV[1])
if n > 0 and redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('PUBLISH', ARGV[2], '')
end
return n
`)

// leaveScript removes a waiter's ticket; those behind it move up, so they
// are woken.
//
// KEYS: queue, seen. ARGV: ticket, wake-up channel.
var leaveScript = redis.NewScript(`
if redis.call('ZREM', KEYS[1], ARGV[1]) > 0 then
  redis.call('ZREM', KEYS[2], ARGV[1])
  if redis.call('EXISTS', KEYS[1]) == 1 then
    redis.call('PUBLISH', ARGV[2], '')
  end
end
return 0
`)

// refreshScript pushes the expiry of the given leases of one key forward and
// returns the ids that are gone (expired or removed). Expired leases are
// dropped first and XX never adds, so a lost lease is never resurrected
// over the limit.
//
// KEYS: leases. ARGV: lease TTL ms, lease ids...
var refreshScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local lost = {}
for i = 2, #ARGV do
  if redis.call('ZADD', KEYS[1], 'XX', 'CH', now + ttl, ARGV[i]) == 0 and not redis.call('ZSCORE', KEYS[1], ARGV[i]) then
    lost[#lost + 1] = ARGV[i]
  end
end
if #lost < #ARGV - 1 and redis.call('PTTL', KEYS[1]) < ttl then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return lost
`)

// countScript counts the live leases and queued tickets of a key.
//
// KEYS: leases, queue, seen. ARGV: stale-after ms.
var countScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local held = redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')
local queued = redis.call('ZCOUNT', KEYS[3], '(' .. (now - tonumber(ARGV[1])), '+inf')
return {held, queued}
`)

// batchScript reads sticky bindings and takes, as acquireScript does
// without a ticket, an extra slot and then the first free slot of a list,
// all in one step (scheduler.Batcher).
//
// KEYS: the bindings to read, then for each slot (the extra one first,
// when there is one) its leases, queue and seen. ARGV: number of
// bindings, 1 when the first slot is the extra one, lease id, lease TTL
// ms, stale-after ms, then each slot's limit (<= 0: unlimited, taken
// without a lease).
//
// Reply: {1 when the extra slot was taken (or there is none), the 1-based
// index among the other slots of the one taken (0: none), the bindings'
// values (nil when missing)...}. Nothing is taken when the extra slot is
// full.
var batchScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local nr = tonumber(ARGV[1])
local id = ARGV[3]
local ttl = tonumber(ARGV[4])
local stale = tonumber(ARGV[5])

local out = {0, 0}
for i = 1, nr do
  out[2 + i] = redis.call('GET', KEYS[i])
end

local function take(k, limit)
  if limit <= 0 then return true end
  redis.call('ZREMRANGEBYSCORE', KEYS[k], '-inf', now)
  local gone = redis.call('ZRANGEBYSCORE', KEYS[k + 2], '-inf', now - stale, 'LIMIT', 0, 100)
  if #gone > 0 then
    redis.call('ZREM', KEYS[k + 1], unpack(gone))
    redis.call('ZREM', KEYS[k + 2], unpack(gone))
  end
  if redis.call('ZCARD', KEYS[k]) + redis.call('ZCARD', KEYS[k + 1]) >= limit then
    return false
  end
  redis.call('ZADD', KEYS[k], now + ttl, id)
  if redis.call('PTTL', KEYS[k]) < ttl then
    redis.call('PEXPIRE', KEYS[k], ttl)
  end
  return true
end

local k, a = nr + 1, 6
if ARGV[2] == '1' then
  if not take(k, tonumber(ARGV[a])) then return out end
  k, a = k + 3, a + 1
end
out[1] = 1
local n = 0
while k <= #KEYS do
  n = n + 1
  if take(k, tonumber(ARGV[a])) then
    out[2] = n
    return out
  end
  k, a = k + 3, a + 1
end
return out
`)

// releaseBatchScript removes one lease id from several keys, waking their
// waiters, and writes sticky bindings: the end of a batch's turn in one
// step.
//
// KEYS: leases and queue of each slot to free, then the bindings to write.
// ARGV: lease id, number of slots, each slot's wake-up channel, then for
// each binding its value and TTL ms (0: no expiry).
var releaseBatchScript = redis.NewScript(`
local nf = tonumber(ARGV[2])
for i = 1, nf do
  local k = 2 * i - 1
  if redis.call('ZREM', KEYS[k], ARGV[1]) > 0 and redis.call('EXISTS', KEYS[k + 1]) == 1 then
    redis.call('PUBLISH', ARGV[2 + i], '')
  end
end
local a = 3 + nf
for k = 2 * nf + 1, #KEYS do
  local ms = tonumber(ARGV[a + 1])
  if ms > 0 then
    redis.call('SET', KEYS[k], ARGV[a], 'PX', ms)
  else
    redis.call('SET', KEYS[k], ARGV[a])
  end
  a = a + 2
end
return 0
`)
