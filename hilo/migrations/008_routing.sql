-- Routing (routing/): the configuration of queues and agents, and the durable record of what the live
-- state in Redis decided: every interaction queued, every offer and assignment, every agent state change.
-- After a Redis restart the live state is rebuilt from these tables (routing/engine.py rebuild_from_postgres).

-- Agents: skills with levels, teams, and how many interactions of each channel at once.
ALTER TABLE agents
    ADD COLUMN skills   jsonb  NOT NULL DEFAULT '{}',
    ADD COLUMN teams    text[] NOT NULL DEFAULT '{}',
    ADD COLUMN capacity jsonb  NOT NULL DEFAULT '{"voice": 1}',
    ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now();

-- Queues: the whole queue as dialplans.models.Queue (skills, priority, aging, SLA, escalation, hours, ...).
CREATE TABLE routing_queues (
    id         text PRIMARY KEY,
    name       text NOT NULL,
    config     jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Every interaction routing was asked to place, from queued to ended. `skills` are its own requirement
-- (the queue's come from the queue); `queues` are where it waits now (its queue, plus overflows).
CREATE TABLE routing_interactions (
    interaction_id uuid PRIMARY KEY,
    queue          text NOT NULL,
    channel        text NOT NULL CHECK (channel IN ('voice', 'sms', 'whatsapp', 'webchat')),
    priority       integer NOT NULL CHECK (priority BETWEEN 0 AND 10),
    skills         jsonb NOT NULL DEFAULT '{}',
    enqueued_at    timestamptz NOT NULL,
    state          text NOT NULL DEFAULT 'waiting' CHECK (state IN ('waiting', 'offered', 'assigned', 'ended')),
    agent_id       text,
    queues         text[] NOT NULL,
    places         text,  -- after an escalation: each queue and the skills needed there ('q@a=1 q2@*')
    ended_at       timestamptz,
    end_reason     text
);
CREATE INDEX routing_interactions_open ON routing_interactions (enqueued_at) WHERE state <> 'ended';

-- Offers and assignments: an offer answered is an assignment (answered_at), until it ends (ended_at).
CREATE TABLE routing_offers (
    id             bigserial PRIMARY KEY,
    interaction_id uuid NOT NULL REFERENCES routing_interactions (interaction_id),
    agent_id       text NOT NULL,
    queue          text NOT NULL,  -- the queue the agent got it through (an overflow queue, maybe)
    channel        text NOT NULL,
    offered_at     timestamptz NOT NULL,
    answered_at    timestamptz,
    ended_at       timestamptz,
    -- not-answered: the agent let it ring; released: done after being answered; withdrawn: the interaction
    -- ended while offered or assigned; expired: nobody settled the offer in time (its node is gone)
    outcome        text CHECK (outcome IN ('not-answered', 'released', 'withdrawn', 'expired'))
);
-- One interaction is never with two agents at once, here as in Redis.
CREATE UNIQUE INDEX routing_offers_one_open ON routing_offers (interaction_id) WHERE ended_at IS NULL;
CREATE INDEX routing_offers_agent_open ON routing_offers (agent_id) WHERE ended_at IS NULL;
CREATE INDEX routing_offers_offered ON routing_offers (offered_at);

-- Agent states with time stamps: what was shown (state) and what the person had set (presence, reason).
CREATE TABLE agent_states (
    id             bigserial PRIMARY KEY,
    agent_id       text NOT NULL,
    state          text NOT NULL CHECK (state IN ('offline', 'available', 'ringing', 'busy', 'wrapup', 'away')),
    presence       text NOT NULL CHECK (presence IN ('offline', 'available', 'away')),
    reason         text,
    interaction_id uuid,
    wrapup_until   timestamptz,
    at             timestamptz NOT NULL
);
CREATE INDEX agent_states_agent_at ON agent_states (agent_id, at DESC, id DESC);
