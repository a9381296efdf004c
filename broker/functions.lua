#!lua name=vledger_@VERSION@
-- Every Lua step of vledger, one Redis Functions library (docs/INTERNALS.md "Redis Functions").
--
-- Loaded by the loader user alone (broker/redis_functions.py, `vledger redis-functions`); a
-- node's user may only FCALL / FCALL_RO these functions (broker/redis_acl.py), never EVAL nor
-- FUNCTION LOAD, so no node password can make Redis run a script of its own. The library's and
-- each function's name carry a digest of this file (@VERSION@ is replaced by it), so two code
-- versions' libraries live side by side during a rolling upgrade (function names are global).
--
-- Every caller of a node's user may call any of these with any arguments: each function
-- checks the counts and ranges it loops over (bounded) before it touches a key. A command a
-- function runs is checked against the caller's ACL user, as it was for a script.
-- Functions flagged no-writes are called with FCALL_RO: their keys count as read, which the
-- readers' users (read-only key patterns) need.

local VERSION = '@VERSION@'
local WRITE, READ = {}, {'no-writes'}

local function register(name, flags, callback)
  redis.register_function{function_name = 'vledger_' .. VERSION .. '_' .. name, callback = callback, flags = flags}
end

-- An argument as an integer in [low, high], else the call fails before it did anything.
local function bounded(value, low, high, what)
  local n = tonumber(value)
  if n == nil or n ~= math.floor(n) or n < low or n > high then
    return error({err = 'ERR vledger: ' .. what .. ' out of range: ' .. tostring(value)})
  end
  return n
end

-- --- the accounts' helpers (broker/accounts.py) --------------------------------------------
-- KEYS[1] is always the version counter and ARGV[1] the channel; a function answers
-- {status, version}: 'ok' after a change, 'unchanged' when there was nothing to do, else an
-- error code, before anything was written.
-- A version that is no count (a string of anything else, another type: written by hand) is
-- reset to the Redis clock in ms, so every node reloads; INCR failing there failed every admin
-- command after its record (outsider o9 K1). Not "above every version a node reported": a count
-- set higher by hand is reported too, so an admin command's wait counts admin records (k29).
local function version_now(KEYS)
  local v = redis.pcall('GET', KEYS[1])
  if type(v) == 'table' then return nil end
  if not v then return 0 end
  if v ~= '0' and not string.match(v, '^[1-9]%d*$') or #v > 15 then return nil end
  return tonumber(v)
end
local function changed(KEYS, ARGV)
  local v
  if version_now(KEYS) == nil then
    local now = redis.call('TIME')
    v = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
    redis.call('DEL', KEYS[1])
    redis.call('SET', KEYS[1], string.format('%d', v))
  else
    v = redis.call('INCR', KEYS[1])
  end
  redis.call('PUBLISH', ARGV[1], v)
  return {'ok', v}
end
local function unchanged(KEYS)
  return {'unchanged', version_now(KEYS) or -1}
end

-- read(key, command...): the command's reply, or nil (the key named in ``spoiled``) for a key of
-- another type (set so by hand), which failed every node's load, the home's too, until someone
-- deleted it (k29). Any other error (a right the ACL denies) is raised as it is. One pair per call.
local function reader()
  local spoiled = {}
  local function read(key, ...)
    local reply = redis.pcall(...)
    if type(reply) == 'table' and reply.err then
      if not string.find(reply.err, 'WRONGTYPE', 1, true) then error(reply) end
      table.insert(spoiled, key)
      return nil
    end
    return reply
  end
  return read, spoiled
end

-- The node's applied key, of another type, is replaced by its hash: a string SET there by hand
-- failed the node's every heartbeat and, at its next start, the start itself, until someone
-- deleted it (outsider o10 L1). It is the node's own key (its user alone writes it, but the admin's):
-- nothing in it is anyone else's to keep. Answers 'replaced' then (logged and alerted), else 1.
local function hset_own(key, ...)
  local reply = redis.pcall('HSET', key, ...)
  if type(reply) ~= 'table' or not reply.err then return 1 end
  if not string.find(reply.err, 'WRONGTYPE', 1, true) then error(reply) end
  redis.call('DEL', key)
  redis.call('HSET', key, ...)
  return 'replaced'
end

-- Whether this library is loaded, asked by anyone that may call a function (no key): its version.
register('ping', READ, function(KEYS, ARGV)
  return VERSION
end)

-- ===== broker/replication.py =====
-- SET the node's height only if it grows: a late or repeated report never lowers it. A value
-- that is no height (not a number, or past 2**63 - 1: written by hand with the node's Redis
-- password) counts as none, so it cannot hold the node's reports back for ever.
-- KEYS: the node's held key    ARGV: node, height, ledger, channel (a channel is no key: no slot of its own)
register('advance', WRITE, function(KEYS, ARGV)
  local current = tonumber(redis.call('GET', KEYS[1]) or '-1') or -1
  if current > 9223372036854775807 or current < -1 then current = -1 end
  local height = tonumber(ARGV[2])
  if height > current then
    redis.call('SET', KEYS[1], ARGV[2])
    redis.call('PUBLISH', ARGV[4], ARGV[1] .. ' ' .. ARGV[3] .. ' ' .. ARGV[2])
    return height
  end
  return current
end)

-- SET the node's height to what its store holds, whatever was there: the outbox's report at its
-- start and each heartbeat (PROTOCOL 10.3), which puts right a height written by hand or left
-- by a store since repaired to fewer records. Announced only when it changes.
-- KEYS: the node's held key    ARGV: node, height, ledger, channel
register('set_held', WRITE, function(KEYS, ARGV)
  if redis.call('GET', KEYS[1]) ~= ARGV[2] then
    redis.call('SET', KEYS[1], ARGV[2])
    redis.call('PUBLISH', ARGV[4], ARGV[1] .. ' ' .. ARGV[3] .. ' ' .. ARGV[2])
  end
  return tonumber(ARGV[2])
end)

-- Close a raiser's open alerts raised at heights up to ARGV[1] (PROTOCOL 10.5): an alert of one
-- of these keys raised since at a greater height (its cause past what resolved the older one:
-- another part of the node, or an earlier run, raised it) stays open. A value that is no JSON
-- object with a height, which the raiser's own user wrote, is closed.
-- KEYS: the open hash    ARGV: upto, fields...
register('resolve_up_to', WRITE, function(KEYS, ARGV)
  local upto = tonumber(ARGV[1])
  local closed = 0
  for i = 2, #ARGV do
    local raw = redis.call('HGET', KEYS[1], ARGV[i])
    if raw then
      local ok, alert = pcall(cjson.decode, raw)
      local height = ok and type(alert) == 'table' and tonumber(alert['height']) or nil
      if height == nil or height <= upto then
        closed = closed + redis.call('HDEL', KEYS[1], ARGV[i])
      end
    end
  end
  return closed
end)

-- A promotion (PROTOCOL 10.9) names a ledger's home in a new epoch, never an older or equal one
-- of another home: two promotions of one epoch cannot both win. Returns nil, or what is named.
-- An entry that is no "<epoch> <home>" is none (any ingest user may write one: review18 3); one
-- the caller found no witnessed note proves (ARGV[4], ARGV[5]: its epoch and home, "" for none)
-- is replaced, only while it is still exactly that one.
register('promote', WRITE, function(KEYS, ARGV)
  local current = redis.call('HGET', KEYS[1], ARGV[1])
  local wanted = ARGV[2] .. ' ' .. ARGV[3]
  local number, home = nil, nil
  if current then number, home = string.match(current, '^(%d+) (%S+)$') end
  local unproven = ARGV[4] ~= '' and number ~= nil and tonumber(number) == tonumber(ARGV[4]) and home == ARGV[5]
  if number and current ~= wanted and tonumber(number) >= tonumber(ARGV[2]) and not unproven then
      return current
  end
  redis.call('HSET', KEYS[1], ARGV[1], wanted)
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
  return false
end)

-- Undoes a promotion whose handover record was not placed (10.9 step 4), only while Redis still
-- names this epoch at this home: a later promotion's entry is never touched. ARGV: ledger, the
-- "<epoch> <home>" the promotion wrote, the entry before it ("" for none: epoch 1), the home
-- before it (put back in the home map only where it names the promoted node). Returns 1 if undone.
register('unpromote', WRITE, function(KEYS, ARGV)
  if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
  if ARGV[3] == '' then redis.call('HDEL', KEYS[1], ARGV[1]) else redis.call('HSET', KEYS[1], ARGV[1], ARGV[3]) end
  if redis.call('HGET', KEYS[2], ARGV[1]) == ARGV[5] then redis.call('HSET', KEYS[2], ARGV[1], ARGV[4]) end
  return 1
end)

-- Append a run of heights to a ledger's stream only where it continues the stream: heights
-- the stream has are skipped, and a gap stops the run. Returns the stream's last height, so
-- the caller sees at once what the stream lacks (after a Redis restart that lost its tail),
-- and the first height of the run the stream holds with other bytes or lacks (-1: none),
-- where the caller must rewrite the stream from its store.
-- KEYS: stream, checkpoint (none: the note goes on the entry only)
-- ARGV: first height, max length, origin, checkpoint, records...
register('append', WRITE, function(KEYS, ARGV)
  local first = bounded(ARGV[1], 0, 2^53, 'first height')
  local last = -1
  local top = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
  if #top > 0 then last = tonumber(string.match(top[1][1], '^(%d+)')) end
  local bottom = nil
  for i = 5, #ARGV do
    local height = first + i - 5
    if height <= last then
      local held = redis.call('XRANGE', KEYS[1], height .. '-1', height .. '-1')
      local same = false
      if #held > 0 then
        local fields = held[1][2]
        -- an entry holds record, origin and maybe checkpoint: one of many fields (any ingest
        -- user may XADD one) is read no further than these
        for j = 1, math.min(#fields, 6), 2 do
          if fields[j] == 'record' then same = fields[j + 1] == ARGV[i] end
        end
      else
        -- Trimmed from the stream's front (MAXLEN): nothing there disagrees with the caller.
        if bottom == nil then
          bottom = tonumber(string.match(redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)[1][1], '^(%d+)'))
        end
        same = height < bottom
      end
      if not same then return {last, height} end
    else
      if height ~= last + 1 then return {last, -1} end
      local added
      -- Trimmed by the run's last entry only: MAXLEN on each XADD cost Redis a sixth of its
      -- time a record (p38); trimmed whole stream nodes at a time (~), it ends the run as short.
      if i < #ARGV then
        added = redis.pcall('XADD', KEYS[1], height .. '-1', 'record', ARGV[i], 'origin', ARGV[3])
      elseif ARGV[4] ~= '' then
        added = redis.pcall('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], height .. '-1',
                            'record', ARGV[i], 'origin', ARGV[3], 'checkpoint', ARGV[4])
      else
        added = redis.pcall('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], height .. '-1', 'record', ARGV[i], 'origin', ARGV[3])
      end
      if type(added) == 'table' and added.err then
        -- The stream's last id is above its last entry: entries were deleted from its tail (XDEL
        -- does not lower the last id), and nothing can be appended until the caller rewinds it.
        if string.find(added.err, 'equal or smaller', 1, true) then return {last, height} end
        return redis.error_reply(added.err)
      end
      if i == #ARGV and ARGV[4] ~= '' and #KEYS > 1 then redis.call('SET', KEYS[2], ARGV[4]) end
      last = height
    end
  end
  return {last, -1}
end)

-- Cut a ledger's stream back to below height ARGV[1] (the home rewrites it from its store):
-- its entries from there are deleted, its last id set back so those ids can be added again,
-- and every consumer group that read past it goes back too, so it reads the true ones.
-- Every ingest user may XADD any number of entries without MAXLEN and create any number of
-- groups (review r31 #3: one call over 1M entries blocked Redis 4.4 s, unkillably, as it had
-- written), so a call deletes at most ARGV[2] (1 to 10,000) entries, from the top, and answers
-- {deleted, left}: left counts the entries still at or above the cut (up to ARGV[2]), and the
-- caller calls again until none is left. Only that last call sets the last id and the groups
-- back, and only when there are at most ARGV[2] groups (else an error, before it wrote).
-- Redis 7.2 on and Valkey refuse to set the last id below a deleted one (max_deleted_entry_id):
-- there the stream is made again from its newest ARGV[2] entries below the cut (older ones go,
-- as a MAXLEN trim's would: readers take them from the home), and its groups with it (each at
-- its delivered id or below the cut; their pending lists start empty). Rare: a repair only.
register('rewind', WRITE, function(KEYS, ARGV)
  local height = bounded(ARGV[1], 0, 2^53, 'height')
  local count = bounded(ARGV[2], 1, 10000, 'count')
  local below = '0-0'
  if height > 0 then below = (height - 1) .. '-1' end
  local gone = redis.call('XREVRANGE', KEYS[1], '+', height .. '-1', 'COUNT', count + 1)
  local last = #gone <= count  -- this call deletes every entry left from the cut on
  if last and redis.call('EXISTS', KEYS[1]) == 1 and #redis.call('XINFO', 'GROUPS', KEYS[1]) > count then
    return redis.error_reply('ERR vledger: consumer groups out of range: more than ' .. count)
  end
  local deleted = math.min(#gone, count)
  for i = 1, deleted do redis.call('XDEL', KEYS[1], gone[i][1]) end
  if not last then
    return {deleted, #redis.call('XREVRANGE', KEYS[1], '+', height .. '-1', 'COUNT', count)}
  end
  if redis.call('EXISTS', KEYS[1]) == 0 then return {deleted, 0} end
  local groups = {}
  for _, group in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
    local name, delivered
    for j = 1, #group, 2 do
      if group[j] == 'name' then name = group[j + 1] end
      if group[j] == 'last-delivered-id' then delivered = group[j + 1] end
    end
    if tonumber(string.match(delivered, '^(%d+)')) >= height then delivered = below end
    table.insert(groups, {name, delivered})
  end
  local set = redis.pcall('XSETID', KEYS[1], below)
  if type(set) == 'table' and set.err then
    local kept = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', count)
    redis.call('DEL', KEYS[1])
    for i = #kept, 1, -1 do redis.call('XADD', KEYS[1], kept[i][1], unpack(kept[i][2])) end
    for _, group in ipairs(groups) do redis.call('XGROUP', 'CREATE', KEYS[1], group[1], group[2], 'MKSTREAM') end
    if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('XSETID', KEYS[1], below) end
  else
    for _, group in ipairs(groups) do redis.call('XGROUP', 'SETID', KEYS[1], group[1], group[2]) end
  end
  return {deleted, 0}
end)


-- ===== broker/accounts.py =====
-- KEYS: version    ARGV: channel. Resets (announced) a version that is no count; else nothing.
register('repair_version', WRITE, function(KEYS, ARGV)
  if version_now(KEYS) == nil then return changed(KEYS, ARGV) end
  return unchanged(KEYS)
end)

-- KEYS: version, names, account    ARGV: channel, name, role
-- A hash left under a name not in the set is no account's (one of another type, set by hand,
-- failed the home's rebuild of the accounts): replaced.
register('add_account', WRITE, function(KEYS, ARGV)
  if redis.call('SISMEMBER', KEYS[2], ARGV[2]) == 1 then return {'account_exists', 0} end
  redis.call('SADD', KEYS[2], ARGV[2])
  redis.call('DEL', KEYS[3])
  redis.call('HSET', KEYS[3], 'role', ARGV[3], 'enabled', '1')
  return changed(KEYS, ARGV)
end)

-- KEYS: version, names, account, keys    ARGV: channel, name
register('remove_account', WRITE, function(KEYS, ARGV)
  if redis.call('SISMEMBER', KEYS[2], ARGV[2]) == 0 then return {'no_such_account', 0} end
  redis.call('SREM', KEYS[2], ARGV[2])
  redis.call('DEL', KEYS[3])
  local owners = redis.call('HGETALL', KEYS[4])
  for i = 1, #owners, 2 do
    if owners[i + 1] == ARGV[2] then redis.call('HDEL', KEYS[4], owners[i]) end
  end
  return changed(KEYS, ARGV)
end)

-- KEYS: version, names, account    ARGV: channel, name, field, value
register('set_field', WRITE, function(KEYS, ARGV)
  if redis.call('SISMEMBER', KEYS[2], ARGV[2]) == 0 then return {'no_such_account', 0} end
  if redis.call('HGET', KEYS[3], ARGV[3]) == ARGV[4] then return unchanged(KEYS) end
  redis.call('HSET', KEYS[3], ARGV[3], ARGV[4])
  return changed(KEYS, ARGV)
end)

-- KEYS: version, names, keys    ARGV: channel, name, public key
register('add_key', WRITE, function(KEYS, ARGV)
  if redis.call('SISMEMBER', KEYS[2], ARGV[2]) == 0 then return {'no_such_account', 0} end
  local owner = redis.call('HGET', KEYS[3], ARGV[3])
  if owner == ARGV[2] then return unchanged(KEYS) end
  if owner then return {'key_in_use', 0} end
  redis.call('HSET', KEYS[3], ARGV[3], ARGV[2])
  return changed(KEYS, ARGV)
end)

-- KEYS: version, keys    ARGV: channel, public key
register('revoke_key', WRITE, function(KEYS, ARGV)
  if redis.call('HDEL', KEYS[2], ARGV[2]) == 0 then return {'no_such_key', 0} end
  return changed(KEYS, ARGV)
end)

-- KEYS: version, names, account, keys, admin records    ARGV: channel, name, public key
-- Once the admin ledger exists, an account made or changed here would be one no record shows
-- (PROTOCOL 16.3): only the no-op is left, which a restart and a host's --totp rely on.
-- Its reads take a key of another type (set so by hand) as empty: `vledger supervise start`
-- failed on it before any node (the admin ledger's home repairs it) could start (k29).
register('bootstrap_admin', WRITE, function(KEYS, ARGV)
  local read, spoiled = reader()
  local owner = read(KEYS[4], 'HGET', KEYS[4], ARGV[3])
  if owner and owner ~= ARGV[2] then return {'key_in_use', 0} end
  local exists = read(KEYS[2], 'SISMEMBER', KEYS[2], ARGV[2]) == 1
  if exists and read(KEYS[3], 'HGET', KEYS[3], 'role') ~= 'admin' then return {'not_admin', 0} end
  if exists and owner and read(KEYS[3], 'HGET', KEYS[3], 'enabled') == '1' then return unchanged(KEYS) end
  local held = read(KEYS[5], 'LLEN', KEYS[5])
  if held == nil or held > 0 then return {'admin_ledger_exists', 0} end
  if #spoiled > 0 then return {'wrong_type', 0} end
  redis.call('SADD', KEYS[2], ARGV[2])
  redis.call('HSET', KEYS[3], 'role', 'admin', 'enabled', '1')
  redis.call('HSET', KEYS[4], ARGV[3], ARGV[2])
  return changed(KEYS, ARGV)
end)

-- KEYS: version, admin records    ARGV: channel, height of the first record, the records' bytes
-- A record already at an index is compared, not taken as "done": a junk entry pushed there by
-- hand put every later record one index off, which no checkpoint proves again (r13 #3).
register('push_admin_records', WRITE, function(KEYS, ARGV)
  local size = redis.call('LLEN', KEYS[2])
  local height = tonumber(ARGV[2])
  local last = math.min(size, height + #ARGV - 2) - 1
  if last >= height then
    -- LRANGE, not LINDEX: the home's Redis user may run it (broker/redis_acl.py) in a redis.acl made before
    local held = redis.call('LRANGE', KEYS[2], height, last)
    for i = 1, #held do
      if held[i] ~= ARGV[2 + i] then return {'admin_conflict', height + i - 1} end
    end
  end
  if size < height then return {'admin_gap', size} end
  if size >= height + #ARGV - 2 then return unchanged(KEYS) end
  for i = 3 + size - height, #ARGV do
    redis.call('RPUSH', KEYS[2], ARGV[i])
  end
  return changed(KEYS, ARGV)
end)

-- KEYS: admin records    ARGV: first, last index. The SHA-1 of the concatenated SHA-1s (hex) of
-- those entries: the home compares it with its store's (review r14 F2), no copy of the list, a
-- page a call (the whole list in one script blocked Redis 22 ms at 10k records: review r15 F-C).
-- At most 1000 entries a call (ingest/admin_ledger.py BYTES_CHECK_PAGE).
register('admin_records_digest', READ, function(KEYS, ARGV)
  local first = bounded(ARGV[1], 0, 2^53, 'first index')
  local last = bounded(ARGV[2], first - 1, first + 999, 'last index')
  local digests = {}
  if last < first then return redis.sha1hex('') end  -- LRANGE of first, -1 would read the whole list
  for i, data in ipairs(redis.call('LRANGE', KEYS[1], first, last)) do
    digests[i] = redis.sha1hex(data)
  end
  return redis.sha1hex(table.concat(digests))
end)

-- KEYS: version, admin records    ARGV: channel, the records' bytes from height 0
register('rewrite_admin_records', WRITE, function(KEYS, ARGV)
  redis.call('DEL', KEYS[2])
  for i = 2, #ARGV do
    redis.call('RPUSH', KEYS[2], ARGV[i])
  end
  return changed(KEYS, ARGV)
end)

-- KEYS: version, names, keys    ARGV: account key prefix. Keys of another type: the fourth element.
register('snapshot', READ, function(KEYS, ARGV)
  local read, spoiled = reader()
  local version = redis.pcall('GET', KEYS[1])
  if type(version) == 'table' then version = 'not a string' end
  local accounts = {}
  for _, name in ipairs(read(KEYS[2], 'SMEMBERS', KEYS[2]) or {}) do
    local fields = read(ARGV[1] .. name, 'HMGET', ARGV[1] .. name, 'role', 'enabled')
    if fields then table.insert(accounts, {name, fields[1], fields[2]}) end
  end
  local owners = read(KEYS[3], 'HGETALL', KEYS[3]) or {}
  return {version or '0', accounts, owners, spoiled}
end)

-- KEYS: version, names, keys    ARGV: channel, account key prefix. Deletes each of the keys the
-- snapshot reads that is of another type (announced); the home then rebuilds them from its store.
register('repair_account_types', WRITE, function(KEYS, ARGV)
  local read, spoiled = reader()
  for _, name in ipairs(read(KEYS[2], 'SMEMBERS', KEYS[2]) or {}) do
    -- its name goes with it: a name without its hash is no account the rebuild could add again
    local before = #spoiled
    read(ARGV[2] .. name, 'HGET', ARGV[2] .. name, 'role')
    if #spoiled > before then redis.call('SREM', KEYS[2], name) end
  end
  read(KEYS[3], 'HGET', KEYS[3], '')
  if #spoiled == 0 then return unchanged(KEYS) end
  for _, key in ipairs(spoiled) do redis.call('DEL', key) end
  local answer = changed(KEYS, ARGV)
  table.insert(answer, spoiled)
  return answer
end)

-- KEYS: keys    ARGV: public key, account key prefix
register('lookup', READ, function(KEYS, ARGV)
  local read, spoiled = reader()
  local owner = read(KEYS[1], 'HGET', KEYS[1], ARGV[1])
  if not owner then return false end
  local fields = read(ARGV[2] .. owner, 'HMGET', ARGV[2] .. owner, 'role', 'enabled')
  if not fields then return false end
  return {owner, fields[1], fields[2]}
end)

-- KEYS: the node's applied hash    ARGV: channel, node, version, admin records enforced
register('record_applied', WRITE, function(KEYS, ARGV)
  local now = redis.call('TIME')
  local done = hset_own(KEYS[1], 'version', ARGV[3], 'admin', ARGV[4], 'seen', now[1] * 1000 + math.floor(now[2] / 1000))
  redis.call('PUBLISH', ARGV[1], ARGV[2])
  return done
end)

-- KEYS: the node's applied hash    ARGV: channel, node
-- A clean stop: ``seen`` 0 is a heartbeat as old as the clock, so the node is at once not live
-- (no admin command waits for it) and shown down; a node killed is live until its window ends.
register('record_stopped', WRITE, function(KEYS, ARGV)
  local now = redis.call('TIME')
  local done = hset_own(KEYS[1], 'seen', 0, 'stopped', now[1] * 1000 + math.floor(now[2] / 1000))
  redis.call('PUBLISH', ARGV[1], ARGV[2])
  return done
end)

-- KEYS: the node's applied hash: alive, not a new version (a node whose proof is stuck behind
-- Redis's copy stays live, so an admin's command names it in ``pending``, r13 #3)
register('record_alive', WRITE, function(KEYS, ARGV)
  local now = redis.call('TIME')
  return hset_own(KEYS[1], 'seen', now[1] * 1000 + math.floor(now[2] / 1000))
end)


-- ===== broker/second_factor.py =====
-- KEYS: hash, recovery set, unrecorded set, failures    ARGV: sealed secret, mode, account, digests...
register('totp_enroll', WRITE, function(KEYS, ARGV)
  local exists = redis.call('HEXISTS', KEYS[1], 'secret') == 1
  if exists and ARGV[2] == 'enroll' then return 'already_enrolled' end
  if not exists and ARGV[2] == 'reset' then return 'not_enrolled' end
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[4])
  redis.call('HSET', KEYS[1], 'secret', ARGV[1], 'last', '-1')
  for i = 4, #ARGV do redis.call('SADD', KEYS[2], ARGV[i]) end
  if ARGV[2] == 'replace' then redis.call('SADD', KEYS[3], ARGV[3]) end  -- the account and its mark
  return 'ok'
end)

-- KEYS: hash    ARGV: sealed secret the code was checked against, step
register('totp_use_step', WRITE, function(KEYS, ARGV)
  local fields = redis.call('HMGET', KEYS[1], 'secret', 'last')
  if fields[1] ~= ARGV[1] then return 0 end
  if tonumber(fields[2]) >= tonumber(ARGV[2]) then return 0 end
  redis.call('HSET', KEYS[1], 'last', ARGV[2])
  return 1
end)

-- KEYS: failures    ARGV: window in seconds. A count kept longer than the window (no expiry,
-- or a longer one: only a Redis writer's hand makes either) is cut back to the window, so that
-- one write locks an account's codes out for a window at most, not for good. (``LT`` takes a
-- key without an expiry for one that never expires.)
register('totp_failures', WRITE, function(KEYS, ARGV)
  redis.call('EXPIRE', KEYS[1], ARGV[1], 'LT')
  return tonumber(redis.call('GET', KEYS[1])) or 0
end)

-- KEYS: failures    ARGV: window in seconds
register('totp_failed', WRITE, function(KEYS, ARGV)
  local count = redis.call('INCR', KEYS[1])
  if count == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
  return count
end)


-- ===== broker/tallies.py =====
-- The entry and the latest id in one step: the latest never names an entry not yet in the stream.
register('tally_publish', WRITE, function(KEYS, ARGV)
  local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*',
    'height', ARGV[2], 'body', ARGV[3], 'signature', ARGV[4])
  redis.call('SET', KEYS[2], id)
  return id
end)

-- A range of a stream, cut short once its entries' fields reach ARGV[5] bytes (a command's COUNT
-- bounds entries, not bytes), each field counted as RESP sends it, "$<length>\r\n...\r\n": an
-- entry of a million empty fields is no small one. An entry larger alone is returned without its
-- fields (oversized), so that a reader still moves past it; those bytes never leave Redis. A user
-- that may run no script reads the same way through broker/bounded_range.py.
-- At most 1000 entries (broker/tallies.py HISTORY_PAGE is 500) and 4 MiB (MAX_READ_BYTES) a call;
-- an entry's fields are counted only until they pass the budget.
register('tally_read', READ, function(KEYS, ARGV)
  if ARGV[1] ~= 'XRANGE' and ARGV[1] ~= 'XREVRANGE' then
    return error({err = 'ERR vledger: tally_read reads with XRANGE or XREVRANGE, not ' .. tostring(ARGV[1])})
  end
  local count = bounded(ARGV[4], 1, 1000, 'count')
  local budget, total, kept = bounded(ARGV[5], 0, 4194304, 'byte budget'), 0, {}
  local got = redis.call(ARGV[1], KEYS[1], ARGV[2], ARGV[3], 'COUNT', count)
  for _, entry in ipairs(got) do
    local size = 0
    for _, value in ipairs(entry[2]) do
      size = size + #value + #tostring(#value) + 5
      if size > budget then break end
    end
    if size > budget then
      entry[2], size = {}, 0
    end
    if #kept > 0 and total + size > budget then break end
    total = total + size
    kept[#kept + 1] = entry
  end
  return kept
end)


-- --- a raiser's open alerts (broker/replication.py ReplicationLedger._read_open) ------------
-- KEYS[1] a raiser's open hash    ARGV: fields (its cap + 1), bytes (its cap)
-- Sized and read in one step (review r29): sized in one call and read in the next, a hash its
-- raiser grew between the two (a RENAME toggled in a loop) was read past the byte cap. Past
-- ARGV[2] bytes (MEMORY USAGE, every field up to ARGV[1] sampled) the size alone is answered,
-- else at most ARGV[1] distinct fields with their values (HRANDFIELD; another type: its error).
register('read_open', READ, function(KEYS, ARGV)
  local fields = bounded(ARGV[1], 1, 10001, 'field count')
  local budget = bounded(ARGV[2], 1, 67108864, 'byte budget')
  -- A user whose ACL file predates either command is told NOPERM, and reads as before.
  if not (redis.acl_check_cmd('MEMORY', 'USAGE', KEYS[1]) and redis.acl_check_cmd('HRANDFIELD', KEYS[1], ARGV[1])) then
    return redis.error_reply('NOPERM an ACL file older than HRANDFIELD or MEMORY USAGE')
  end
  local used = redis.call('MEMORY', 'USAGE', KEYS[1], 'SAMPLES', fields)
  if used and used > budget then return used end
  -- Past ARGV[1] fields MEMORY USAGE is an estimate from the first fields in the hash's order,
  -- which its raiser reads back and can put its large values behind (review r31 #2): what was
  -- read is counted too, and past the budget only its size leaves Redis.
  local got = redis.pcall('HRANDFIELD', KEYS[1], fields, 'WITHVALUES')
  if type(got) == 'table' and not got.err then
    local size = 0
    for _, part in ipairs(got) do size = size + #part end
    if size > budget then return size end
  end
  return got
end)
