-- Routing decisions in Redis. One call of this script is one event (an interaction queued, an agent freed,
-- an offer answered, ...) together with every decision it causes, so two Hilo nodes can never hand one agent
-- more than its capacity, nor one interaction to two agents. `now` comes from the caller: given the same
-- state and the same `now`, the decisions are the same (sets are sorted, ties broken by id).
--
-- ARGV: command, key prefix, now (ms), the command's arguments. Answers JSON:
--   {result = {...}, assignments = [...], states = [...], events = [...]}
-- `assignments` are the offers made, `states` the agent state changes (for the history), `events` the rest
-- (escalations, answers, releases, ...) for the durable record.
--
-- Keys under the prefix P:
--   P:agent:<id>            hash: presence (offline|available|away), reason, state (what is shown: ringing >
--                           wrapup > busy > presence), since, queues (a,b), skills (x=3,y=1), cap:<channel>,
--                           load:<channel>, offer (interaction being offered), wrapup_until, idle_since, endpoint
--   P:skills                hash agent -> skills, to read many agents' skills in one call
--   P:agents                set of agent ids
--   P:avail:<q>:<ch>        zset of agents who may take one more <ch> interaction of queue <q> now, by idle_since
--   P:queue:<q>             hash: skills, priority, aging_ms, steps, order, max_wait_ms
--   P:int:<id>              hash: queue, places ('<queue>@<skills needed there>' for its own queue, then each
--                           overflow queue, space separated), own (its own skills), channel, priority,
--                           enqueued_at, score, steps, step, state (waiting|offered|assigned), agent, via,
--                           offered_at, answered_at
--   P:wait:<q>:<ch>:<sig>   zset of waiting interactions needing skills <sig>, by score (lowest first)
--   P:sigs:<q>:<ch>         set of the <sig>s with someone waiting
--   P:escalations           zset interaction -> when its next escalation step is due
--   P:wrapups               zset agent -> when the wrap-up ends
--   P:offers                zset interaction -> when it was offered (offers nobody settles expire)
--   P:interactions          set of every interaction held (waiting, offered or assigned): what the
--                           reconciler (ivr/reconcile.py) reads in one call
--   P:config                hash: offer_ttl_ms
--
-- A waiting interaction's score is enqueued_at - priority * aging_ms: comparing scores at any moment is
-- comparing priority + waited / aging, so priorities age without ever rescoring anything.

local cmd, P, NOW = ARGV[1], ARGV[2], tonumber(ARGV[3])
local unpack = unpack or table.unpack
local CHANNELS = {'voice', 'sms', 'whatsapp', 'webchat'}
local out = {assignments = {}, states = {}, events = {}}

local function K_agent(a) return P .. ':agent:' .. a end
local K_SKILLS = P .. ':skills'
local K_AGENTS = P .. ':agents'
local function K_queue(q) return P .. ':queue:' .. q end
local function K_int(i) return P .. ':int:' .. i end
local function K_avail(q, ch) return P .. ':avail:' .. q .. ':' .. ch end
local function K_wait(q, ch, sig) return P .. ':wait:' .. q .. ':' .. ch .. ':' .. sig end
local function K_sigs(q, ch) return P .. ':sigs:' .. q .. ':' .. ch end
local K_ESC = P .. ':escalations'
local K_WRAPUPS = P .. ':wrapups'
local K_OFFERS = P .. ':offers'
local K_CONFIG = P .. ':config'
local K_HELD = P .. ':interactions'

local function split(s, sep)
  local t = {}
  if s == nil or s == false or s == '' then return t end
  for part in string.gmatch(s, '[^' .. sep .. ']+') do t[#t + 1] = part end
  return t
end

-- 'a=3,b=1' -> {a = 3, b = 1}; '*' (or nothing) is no skill at all
local function levels(s)
  local t = {}
  if s == nil or s == false or s == '*' then return t end
  for name, lvl in string.gmatch(s, '([^,=]+)=(%d+)') do t[name] = tonumber(lvl) end
  return t
end

local function sig_of(t)
  local names = {}
  for name in pairs(t) do names[#names + 1] = name end
  if #names == 0 then return '*' end
  table.sort(names)
  local parts = {}
  for _, n in ipairs(names) do parts[#parts + 1] = n .. '=' .. t[n] end
  return table.concat(parts, ',')
end

-- Does an agent with skills `have` meet `need`, and how well (the sum of its levels in the needed skills)?
local function meets(have, need)
  local score = 0
  for name, lvl in pairs(need) do
    local h = have[name]
    if h == nil or h < lvl then return false, 0 end
    score = score + h
  end
  return true, score
end

local function hash(key)
  local flat = redis.call('HGETALL', key)
  if #flat == 0 then return nil end
  local t = {}
  for j = 1, #flat, 2 do t[flat[j]] = flat[j + 1] end
  return t
end

-- Set (or with nil, delete) one field both in Redis and in the Lua copy.
local function set(key, t, field, value)
  if value == nil then
    if t[field] ~= nil then redis.call('HDEL', key, field) end
  else
    redis.call('HSET', key, field, value)
  end
  t[field] = value
end

-- Agents ---------------------------------------------------------------------------------------------------

local function load_of(ag, ch) return tonumber(ag['load:' .. ch] or '0') end
local function cap_of(ag, ch) return tonumber(ag['cap:' .. ch] or '0') end

local function eligible(ag)
  return ag.presence == 'available' and ag.offer == nil and ag.wrapup_until == nil
end

local function shown_state(ag)
  if ag.offer ~= nil then return 'ringing' end
  if ag.wrapup_until ~= nil then return 'wrapup' end
  for _, ch in ipairs(CHANNELS) do if load_of(ag, ch) > 0 then return 'busy' end end
  return ag.presence
end

-- Keep the agent in exactly the availability sets it belongs in (old_queues: ones it may have left).
local function reindex(a, ag, old_queues)
  local ok = eligible(ag)
  local score = tonumber(ag.idle_since) or NOW
  local serves = {}
  for _, q in ipairs(split(ag.queues, ',')) do serves[q] = true end
  local function each(q)
    for _, ch in ipairs(CHANNELS) do
      if ok and serves[q] and load_of(ag, ch) < cap_of(ag, ch) then
        redis.call('ZADD', K_avail(q, ch), score, a)
      else
        redis.call('ZREM', K_avail(q, ch), a)
      end
    end
  end
  for q in pairs(serves) do each(q) end
  for _, q in ipairs(old_queues or {}) do if not serves[q] then each(q) end end
end

-- After any change to an agent: the shown state, the history entry if something a person sees changed,
-- and the availability sets.
local function refresh(a, ag, interaction, old_queues)
  local key = K_agent(a)
  local state = shown_state(ag)
  local mark = state .. '|' .. ag.presence .. '|' .. (ag.reason or '')
  if mark ~= ag.mark then
    if state ~= ag.state then
      set(key, ag, 'state', state)
      set(key, ag, 'since', NOW)
    end
    set(key, ag, 'mark', mark)
    table.insert(out.states, {
      agent = a, state = state, presence = ag.presence, reason = ag.reason, at = NOW,
      interaction = interaction, wrapup_until = tonumber(ag.wrapup_until),
    })
  end
  reindex(a, ag, old_queues)
end

-- Interactions ---------------------------------------------------------------------------------------------

-- Where an interaction waits, and what an agent needs there: {{q = queue, sig = skills}, ...}, its own
-- queue first.
local function places_of(it)
  local t = {}
  for _, p in ipairs(split(it.places, ' ')) do
    local q, sig = string.match(p, '^([^@]+)@(.+)$')
    t[#t + 1] = {q = q, sig = sig}
  end
  return t
end

local function places_text(places)
  local parts = {}
  for _, p in ipairs(places) do parts[#parts + 1] = p.q .. '@' .. p.sig end
  return table.concat(parts, ' ')
end

-- A queue's requirement together with the interaction's own skills (the higher level of each).
local function requirement(queue_skills, own)
  local need = levels(queue_skills)
  for name, lvl in pairs(levels(own)) do
    if (need[name] or 0) < lvl then need[name] = lvl end
  end
  return sig_of(need)
end

local function wait_add(i, it)
  for _, p in ipairs(places_of(it)) do
    redis.call('ZADD', K_wait(p.q, it.channel, p.sig), it.score, i)
    redis.call('SADD', K_sigs(p.q, it.channel), p.sig)
  end
end

local function wait_remove(i, it)
  for _, p in ipairs(places_of(it)) do
    local wk = K_wait(p.q, it.channel, p.sig)
    redis.call('ZREM', wk, i)
    if redis.call('ZCARD', wk) == 0 then redis.call('SREM', K_sigs(p.q, it.channel), p.sig) end
  end
end

-- Escalation steps as copied from the queue when the interaction was queued: 'after_ms|sig|overflow;...'
local function steps_of(it)
  local t = {}
  for _, s in ipairs(split(it.steps, ';')) do
    local after, sig, over = string.match(s, '^(%d+)|([^|]*)|([^|]*)$')
    t[#t + 1] = {after = tonumber(after), sig = sig, overflow = over}
  end
  return t
end

-- Apply every escalation step due by now to a waiting interaction; true if one was applied. A step with
-- `overflow` adds a place in that queue, needing the step's skills, or else that queue's own plus the
-- interaction's; a step with only skills makes them what its own queue needs from then on.
local function escalate(i, it)
  local key = K_int(i)
  local steps = steps_of(it)
  local n = tonumber(it.step) or 1
  local changed = false
  while steps[n] ~= nil and tonumber(it.enqueued_at) + steps[n].after <= NOW do
    local s = steps[n]
    local places = places_of(it)
    wait_remove(i, it)
    if s.overflow ~= '' then
      local qc = hash(K_queue(s.overflow))
      local present = false
      for _, p in ipairs(places) do if p.q == s.overflow then present = true end end
      if qc ~= nil and not present then
        local sig = s.sig ~= '' and s.sig or requirement(qc.skills, it.own)
        places[#places + 1] = {q = s.overflow, sig = sig}
      end
    elseif s.sig ~= '' then
      places[1].sig = s.sig
    end
    set(key, it, 'places', places_text(places))
    wait_add(i, it)
    n = n + 1
    set(key, it, 'step', n)
    changed = true
    table.insert(out.events, {kind = 'escalated', interaction = i, step = n - 1, places = it.places, at = NOW})
  end
  if steps[n] ~= nil then
    redis.call('ZADD', K_ESC, tonumber(it.enqueued_at) + steps[n].after, i)
  else
    redis.call('ZREM', K_ESC, i)
  end
  return changed
end

local function describe(i, it, endpoint)
  return {
    interaction = i, agent = it.agent, queue = it.queue, via = it.via, channel = it.channel,
    endpoint = endpoint, offered_at = tonumber(it.offered_at), enqueued_at = tonumber(it.enqueued_at),
    priority = tonumber(it.priority), state = it.state,
  }
end

local function assign(i, it, a, ag, via)
  local ikey, akey = K_int(i), K_agent(a)
  wait_remove(i, it)
  redis.call('ZREM', K_ESC, i)
  set(ikey, it, 'state', 'offered')
  set(ikey, it, 'agent', a)
  set(ikey, it, 'via', via)
  set(ikey, it, 'offered_at', NOW)
  set(akey, ag, 'load:' .. it.channel, load_of(ag, it.channel) + 1)
  set(akey, ag, 'offer', i)
  set(akey, ag, 'idle_since', NOW)  -- the longest-idle rule counts from the last offer
  redis.call('ZADD', K_OFFERS, NOW, i)
  refresh(a, ag, i)
  local offer = describe(i, it, ag.endpoint)
  table.insert(out.assignments, offer)
  table.insert(out.events, {kind = 'offered', interaction = i, agent = a, via = via, channel = it.channel, at = NOW})
  return offer
end

-- The best available agent for a waiting interaction, over every queue it waits in.
local function best_agent(it)
  local order = redis.call('HGET', K_queue(it.queue), 'order') or 'best_skill'
  local best = nil
  local function better(c)
    if best == nil then return true end
    if order == 'longest_idle' then
      if c.idle ~= best.idle then return c.idle < best.idle end
      if c.level ~= best.level then return c.level > best.level end
    else
      if c.level ~= best.level then return c.level > best.level end
      if c.idle ~= best.idle then return c.idle < best.idle end
    end
    return c.agent < best.agent
  end
  for _, p in ipairs(places_of(it)) do
    local q, need, any = p.q, levels(p.sig), p.sig == '*'
    local flat = redis.call('ZRANGE', K_avail(q, it.channel), 0, -1, 'WITHSCORES')
    if #flat > 0 and any then
      -- nobody is better qualified than anybody else: the longest idle (lowest id on a tie)
      local c = {agent = flat[1], idle = tonumber(flat[2]), level = 0, queue = q}
      if better(c) then best = c end
    elseif #flat > 0 then
      local ids = {}
      for j = 1, #flat, 2 do ids[#ids + 1] = flat[j] end
      local skills = {}
      for from = 1, #ids, 500 do
        local chunk = redis.call('HMGET', K_SKILLS, unpack(ids, from, math.min(from + 499, #ids)))
        for k = 1, #chunk do skills[from + k - 1] = chunk[k] end
      end
      for j = 1, #ids do
        local ok, level = meets(levels(skills[j]), need)
        if ok then
          local c = {agent = ids[j], idle = tonumber(flat[2 * j]), level = level, queue = q}
          if better(c) then best = c end
        end
      end
    end
  end
  return best
end

-- The waiting interaction that should go to this agent next: lowest score over the agent's queues and the
-- channels it has room for, among the skill requirements it meets.
local function best_interaction(ag)
  local have = levels(ag.skills)
  local best = nil
  local queues = split(ag.queues, ',')
  table.sort(queues)
  for _, q in ipairs(queues) do
    for _, ch in ipairs(CHANNELS) do
      if load_of(ag, ch) < cap_of(ag, ch) then
        local sigs = redis.call('SMEMBERS', K_sigs(q, ch))
        table.sort(sigs)
        for _, sig in ipairs(sigs) do
          if meets(have, levels(sig)) then
            local head = redis.call('ZRANGE', K_wait(q, ch, sig), 0, 0, 'WITHSCORES')
            if #head > 0 then
              local s = tonumber(head[2])
              if best == nil or s < best.score or (s == best.score and head[1] < best.interaction) then
                best = {interaction = head[1], score = s, queue = q}
              end
            end
          end
        end
      end
    end
  end
  return best
end

local function serve_interaction(i, it)
  if it == nil or it.state ~= 'waiting' then return nil end
  local c = best_agent(it)
  if c == nil then return nil end
  return assign(i, it, c.agent, hash(K_agent(c.agent)), c.queue)
end

local function serve_agent(a, ag)
  if ag == nil or not eligible(ag) then return nil end
  local b = best_interaction(ag)
  if b == nil then return nil end
  return assign(b.interaction, hash(K_int(b.interaction)), a, ag, b.queue)
end

-- Take an offered or assigned interaction off its agent; wrapup_ms > 0 starts a wrap-up.
local function unload(i, it, wrapup_ms)
  local a = it.agent
  local ag = a and hash(K_agent(a))
  redis.call('ZREM', K_OFFERS, i)
  if ag == nil then return nil end
  local akey = K_agent(a)
  set(akey, ag, 'load:' .. it.channel, math.max(0, load_of(ag, it.channel) - 1))
  if ag.offer == i then set(akey, ag, 'offer', nil) end
  if wrapup_ms > 0 then
    local untl = math.max(NOW + wrapup_ms, tonumber(ag.wrapup_until) or 0)
    set(akey, ag, 'wrapup_until', untl)
    redis.call('ZADD', K_WRAPUPS, untl, a)
  elseif it.state == 'assigned' then
    set(akey, ag, 'idle_since', NOW)
  end
  refresh(a, ag, i)
  return ag
end

local function new_interaction(i, q, ch, prio, own, at)
  local qc = hash(K_queue(q))
  if qc == nil then return nil end
  local eff = prio + tonumber(qc.priority)
  local it = {
    queue = q, places = q .. '@' .. requirement(qc.skills, own), own = sig_of(levels(own)), channel = ch,
    priority = eff, enqueued_at = at, score = at - eff * tonumber(qc.aging_ms), steps = qc.steps or '',
    step = 1, state = 'waiting', max_wait_ms = qc.max_wait_ms,
  }
  local flat = {}
  for k, v in pairs(it) do flat[#flat + 1] = k; flat[#flat + 1] = v end
  redis.call('HSET', K_int(i), unpack(flat))
  redis.call('SADD', K_HELD, i)
  return it
end

local function drop_interaction(i)
  redis.call('DEL', K_int(i))
  redis.call('SREM', K_HELD, i)
end

-- Housekeeping: what time alone brings about, done first in every call (and by `tick`) ------------------

local function housekeeping()
  local due = redis.call('ZRANGEBYSCORE', K_WRAPUPS, '-inf', NOW, 'LIMIT', 0, 50)
  for _, a in ipairs(due) do
    redis.call('ZREM', K_WRAPUPS, a)
    local ag = hash(K_agent(a))
    if ag ~= nil and ag.wrapup_until ~= nil then
      set(K_agent(a), ag, 'idle_since', ag.wrapup_until)
      set(K_agent(a), ag, 'wrapup_until', nil)
      refresh(a, ag)
      serve_agent(a, ag)
    end
  end
  -- An offer nobody answered nor refused in time: the node handling that interaction is gone, and with
  -- it the interaction. Free the agent.
  local ttl = tonumber(redis.call('HGET', K_CONFIG, 'offer_ttl_ms') or '120000')
  local stale = redis.call('ZRANGEBYSCORE', K_OFFERS, '-inf', NOW - ttl, 'LIMIT', 0, 20)
  for _, i in ipairs(stale) do
    local it = hash(K_int(i))
    redis.call('ZREM', K_OFFERS, i)
    if it ~= nil and it.state == 'offered' then
      local ag = unload(i, it, 0)
      drop_interaction(i)
      table.insert(out.events, {kind = 'expired', interaction = i, agent = it.agent, state = 'offered', at = NOW})
      if ag ~= nil then serve_agent(it.agent, ag) end
    end
  end
  local esc = redis.call('ZRANGEBYSCORE', K_ESC, '-inf', NOW, 'LIMIT', 0, 50)
  for _, i in ipairs(esc) do
    local it = hash(K_int(i))
    if it ~= nil and it.state == 'waiting' then
      if escalate(i, it) then serve_interaction(i, it) end
    else
      redis.call('ZREM', K_ESC, i)
    end
  end
end

-- Commands ------------------------------------------------------------------------------------------------

local result = {}
housekeeping()

if cmd == 'tick' then
  result = {status = 'ok'}

elseif cmd == 'enqueue' then
  -- interaction, queue, channel, priority, own skills, enqueued_at[, agent to offer it to first]
  local i = ARGV[4]
  local existing = hash(K_int(i))
  if existing ~= nil then
    result = {status = 'duplicate', state = existing.state, agent = existing.agent}
  else
    local it = new_interaction(i, ARGV[5], ARGV[6], tonumber(ARGV[7]), ARGV[8], tonumber(ARGV[9]))
    if it == nil then
      result = {status = 'unknown-queue'}
    else
      wait_add(i, it)
      escalate(i, it)
      -- a transfer to one agent: theirs if they can take it now, else the queue's best as for anyone
      local to, offer = ARGV[10], nil
      local ag = (to ~= nil and to ~= '') and hash(K_agent(to)) or nil
      if ag ~= nil and eligible(ag) and load_of(ag, it.channel) < cap_of(ag, it.channel) then
        offer = assign(i, it, to, ag, it.queue)
      else
        offer = serve_interaction(i, it)
      end
      result = {status = offer and 'offered' or 'waiting', places = it.places, score = it.score, priority = it.priority}
    end
  end

elseif cmd == 'assign' then
  local i = ARGV[4]
  local it = hash(K_int(i))
  if it == nil then
    result = {status = 'unknown'}
  elseif it.state == 'waiting' then
    local offer = serve_interaction(i, it)
    result = {status = offer and 'offered' or 'waiting'}
  else
    result = {status = it.state, offer = describe(i, it, redis.call('HGET', K_agent(it.agent), 'endpoint'))}
  end

elseif cmd == 'next' then
  local a = ARGV[4]
  local ag = hash(K_agent(a))
  if ag == nil then
    result = {status = 'unknown'}
  else
    local offer = serve_agent(a, ag)
    result = {status = offer and 'offered' or 'none'}
  end

elseif cmd == 'answered' then
  local i, a = ARGV[4], ARGV[5]
  local it = hash(K_int(i))
  if it ~= nil and it.agent == a and it.state == 'offered' then
    set(K_int(i), it, 'state', 'assigned')
    set(K_int(i), it, 'answered_at', NOW)
    redis.call('ZREM', K_OFFERS, i)
    local ag = hash(K_agent(a))
    set(K_agent(a), ag, 'offer', nil)
    refresh(a, ag, i)
    table.insert(out.events, {kind = 'answered', interaction = i, agent = a, at = NOW})
    serve_agent(a, ag)  -- room for more on another channel (1 call + 3 chats)
    result = {status = 'assigned'}
  elseif it ~= nil and it.agent == a and it.state == 'assigned' then
    result = {status = 'duplicate'}
  else
    result = {status = 'not-offered', state = it and it.state, agent = it and it.agent}
  end

elseif cmd == 'not_answered' then
  -- the agent did not take the offer: away (with the reason given), the interaction back in its place
  local i, a, reason = ARGV[4], ARGV[5], ARGV[6]
  local it = hash(K_int(i))
  if it ~= nil and it.agent == a and it.state == 'offered' then
    local before = hash(K_agent(a))
    if before ~= nil then
      set(K_agent(a), before, 'presence', 'away')
      set(K_agent(a), before, 'reason', reason)
    end
    unload(i, it, 0)
    local ikey = K_int(i)
    set(ikey, it, 'state', 'waiting')
    set(ikey, it, 'agent', nil)
    set(ikey, it, 'via', nil)
    set(ikey, it, 'offered_at', nil)
    table.insert(out.events, {kind = 'not_answered', interaction = i, agent = a, at = NOW})
    wait_add(i, it)
    escalate(i, it)
    local offer = serve_interaction(i, it)
    result = {status = offer and 'offered' or 'waiting'}
  else
    result = {status = 'not-offered', state = it and it.state, agent = it and it.agent}
  end

elseif cmd == 'requeue' then
  -- an offer or assignment whose node could not carry it on (it died mid-call): back in its place, the
  -- agent free again without being set away (not their doing); then the agent takes the best waiting
  local i = ARGV[4]
  local it = hash(K_int(i))
  if it == nil or (it.state ~= 'offered' and it.state ~= 'assigned') then
    result = {status = 'not-held', state = it and it.state}
  else
    local a, was = it.agent, it.state
    local ag = unload(i, it, 0)
    local ikey = K_int(i)
    set(ikey, it, 'state', 'waiting')
    set(ikey, it, 'agent', nil)
    set(ikey, it, 'via', nil)
    set(ikey, it, 'offered_at', nil)
    set(ikey, it, 'answered_at', nil)
    table.insert(out.events, {kind = 'requeued', interaction = i, agent = a, state = was, at = NOW})
    wait_add(i, it)
    escalate(i, it)
    if ag ~= nil then serve_agent(a, ag) end
    -- read again: the agent may have taken it back just now (serve_agent works on its own copy), and an
    -- interaction offered twice would leave the first agent ringing for nobody
    local again = hash(K_int(i))
    local offer = serve_interaction(i, again)
    result = {status = (offer or again.state == 'offered') and 'offered' or 'waiting'}
  end

elseif cmd == 'release' or cmd == 'remove' then
  -- release: the agent is done with it (wrap-up ms); remove: it ended wherever it was (reason)
  local i = ARGV[4]
  local wrapup_ms = cmd == 'release' and tonumber(ARGV[5]) or 0
  local it = hash(K_int(i))
  if it == nil then
    result = {status = 'unknown'}
  else
    local ag = nil
    if it.state == 'waiting' then
      wait_remove(i, it)
      redis.call('ZREM', K_ESC, i)
    else
      ag = unload(i, it, it.state == 'assigned' and wrapup_ms or 0)
    end
    drop_interaction(i)
    table.insert(out.events, {
      kind = cmd == 'release' and 'released' or 'removed', interaction = i, agent = it.agent,
      state = it.state, reason = cmd == 'remove' and ARGV[5] or nil, at = NOW,
    })
    if ag ~= nil then serve_agent(it.agent, ag) end
    result = {status = 'done', state = it.state, agent = it.agent}
  end

elseif cmd == 'move' then
  -- a waiting interaction moved by a supervisor: interaction, 'queue' or 'agent', the target. To a queue it
  -- keeps its place in time (enqueued_at) and its own priority, and starts that queue's escalation steps;
  -- to an agent it is offered to that agent now (who must be available with room for its channel).
  local i, how, target = ARGV[4], ARGV[5], ARGV[6]
  local it = hash(K_int(i))
  if it == nil then
    result = {status = 'unknown'}
  elseif it.state ~= 'waiting' then
    result = {status = 'not-waiting', state = it.state, agent = it.agent}
  elseif how == 'queue' then
    local old = hash(K_queue(it.queue))
    if hash(K_queue(target)) == nil then
      result = {status = 'unknown-queue'}
    else
      local from = it.queue
      local own_priority = tonumber(it.priority) - (old and tonumber(old.priority) or 0)
      wait_remove(i, it)
      redis.call('ZREM', K_ESC, i)
      drop_interaction(i)
      local moved = new_interaction(i, target, it.channel, own_priority, it.own, tonumber(it.enqueued_at))
      wait_add(i, moved)
      table.insert(out.events, {
        kind = 'moved', interaction = i, from = from, queue = target, places = moved.places,
        priority = own_priority, at = NOW,
      })
      escalate(i, moved)
      local offer = serve_interaction(i, moved)
      result = {status = offer and 'offered' or 'waiting', from = from, queue = target}
    end
  else
    local ag = hash(K_agent(target))
    if ag == nil then
      result = {status = 'unknown-agent'}
    elseif not eligible(ag) or load_of(ag, it.channel) >= cap_of(ag, it.channel) then
      result = {status = 'agent-busy', state = shown_state(ag)}
    else
      local offer = assign(i, it, target, ag, it.queue)
      result = {status = 'offered', offer = offer}
    end
  end

elseif cmd == 'presence' then
  local a, presence, reason = ARGV[4], ARGV[5], ARGV[6]
  local ag = hash(K_agent(a))
  if ag == nil then
    result = {status = 'unknown'}
  else
    local key = K_agent(a)
    if presence == 'available' and ag.presence ~= 'available' then set(key, ag, 'idle_since', NOW) end
    set(key, ag, 'presence', presence)
    set(key, ag, 'reason', reason ~= '' and reason or nil)
    refresh(a, ag)
    serve_agent(a, ag)
    result = {status = 'ok', state = ag.state}
  end

elseif cmd == 'put_agent' then
  -- agent, queues, skills, capacities (voice=1,webchat=3), endpoint, presence if new
  local a = ARGV[4]
  local key = K_agent(a)
  local ag = hash(key)
  local old = {}
  if ag == nil then
    ag = {presence = ARGV[9], idle_since = NOW}
    redis.call('HSET', key, 'presence', ARGV[9], 'idle_since', NOW)
    redis.call('SADD', K_AGENTS, a)
  else
    old = split(ag.queues, ',')
  end
  set(key, ag, 'queues', ARGV[5])
  set(key, ag, 'skills', ARGV[6])
  local caps = levels(ARGV[7])
  for _, ch in ipairs(CHANNELS) do set(key, ag, 'cap:' .. ch, caps[ch] or 0) end
  set(key, ag, 'endpoint', ARGV[8])
  redis.call('HSET', K_SKILLS, a, ARGV[6])
  refresh(a, ag, nil, old)
  serve_agent(a, ag)
  result = {status = 'ok', state = ag.state}

elseif cmd == 'drop_agent' then
  local a = ARGV[4]
  local ag = hash(K_agent(a))
  if ag == nil then
    result = {status = 'unknown'}
  elseif shown_state(ag) == 'ringing' or shown_state(ag) == 'busy' then
    result = {status = 'busy', state = shown_state(ag)}
  else
    local old = split(ag.queues, ',')
    ag.queues = ''
    reindex(a, ag, old)
    redis.call('DEL', K_agent(a))
    redis.call('HDEL', K_SKILLS, a)
    redis.call('SREM', K_AGENTS, a)
    redis.call('ZREM', K_WRAPUPS, a)
    result = {status = 'ok'}
  end

elseif cmd == 'put_queue' then
  -- queue, skills, priority, aging_ms, steps, order, max_wait_ms
  redis.call('HSET', K_queue(ARGV[4]), 'skills', ARGV[5], 'priority', ARGV[6], 'aging_ms', ARGV[7],
    'steps', ARGV[8], 'order', ARGV[9], 'max_wait_ms', ARGV[10])
  result = {status = 'ok'}

elseif cmd == 'drop_queue' then
  local q = ARGV[4]
  local waiting = 0
  for _, ch in ipairs(CHANNELS) do waiting = waiting + redis.call('SCARD', K_sigs(q, ch)) end
  if waiting > 0 then
    result = {status = 'busy'}
  else
    redis.call('DEL', K_queue(q))
    result = {status = 'ok'}
  end

elseif cmd == 'restore_offer' then
  -- rebuilding from the durable record: interaction, queue, channel, priority, own skills, enqueued_at,
  -- agent, state (offered|assigned), offered_at, via
  local i, a, state = ARGV[4], ARGV[10], ARGV[11]
  local ag = hash(K_agent(a))
  if hash(K_int(i)) ~= nil or ag == nil then
    result = {status = 'skipped'}
  else
    local it = new_interaction(i, ARGV[5], ARGV[6], tonumber(ARGV[7]), ARGV[8], tonumber(ARGV[9]))
    if it == nil then
      result = {status = 'unknown-queue'}
    else
      local ikey, akey = K_int(i), K_agent(a)
      set(ikey, it, 'state', state)
      set(ikey, it, 'agent', a)
      set(ikey, it, 'via', ARGV[13])
      set(ikey, it, 'offered_at', tonumber(ARGV[12]))
      set(akey, ag, 'load:' .. it.channel, load_of(ag, it.channel) + 1)
      if state == 'offered' then
        set(akey, ag, 'offer', i)
        redis.call('ZADD', K_OFFERS, tonumber(ARGV[12]), i)
      end
      refresh(a, ag, i)
      result = {status = 'ok'}
    end
  end

elseif cmd == 'restore_wrapup' then
  local a, untl = ARGV[4], tonumber(ARGV[5])
  local ag = hash(K_agent(a))
  if ag == nil then
    result = {status = 'unknown'}
  else
    set(K_agent(a), ag, 'wrapup_until', untl)
    redis.call('ZADD', K_WRAPUPS, untl, a)
    refresh(a, ag)
    result = {status = 'ok'}
  end

elseif cmd == 'configure' then
  redis.call('HSET', K_CONFIG, 'offer_ttl_ms', ARGV[4])
  result = {status = 'ok'}

else
  return redis.error_reply('unknown routing command ' .. tostring(cmd))
end

return cjson.encode({result = result, assignments = out.assignments, states = out.states, events = out.events})
