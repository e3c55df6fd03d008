-- Text conversations (SMS, WhatsApp, web chat): one open conversation per customer address and our
-- address, run by the same flows as calls and handed to agents through the same routing.
--
-- The flow's position is not stored: it is rebuilt by running the flow again over the stored answers
-- (`inputs`) with the stored results of everything outside the flow (`journal`: clock readings, customer
-- lookups, verifications, HTTP answers), so the run takes the same path; the replies already handed to
-- the outbox (`conversation_replies`) are not sent again (bridges/conversation_flow.py says why).
CREATE TABLE conversations (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    interaction_id uuid NOT NULL UNIQUE REFERENCES interactions (id),
    customer_id    uuid NOT NULL REFERENCES customers (id),
    channel        text NOT NULL CHECK (channel IN ('sms', 'whatsapp', 'webchat')),
    provider       text NOT NULL,
    address        text NOT NULL,  -- the customer's side as the provider gives it: where replies go
    our_address    text NOT NULL,  -- our number, phone_number_id or web chat site
    flow           text,
    -- bot: the flow answers; message: a text voicemail is being taken; queued/offered: waiting for an
    -- agent; agent: an agent owns it (the flow is silent); closed.
    state          text NOT NULL DEFAULT 'bot'
                   CHECK (state IN ('bot', 'message', 'queued', 'offered', 'agent', 'closed')),
    queue          text,
    priority       integer NOT NULL DEFAULT 0,
    agent_id       text REFERENCES agents (id),
    offered_at     timestamptz,
    queued_at      timestamptz,
    run            integer NOT NULL DEFAULT 1,  -- a new flow run after an agent hands the conversation back
    inputs         jsonb NOT NULL DEFAULT '[]',  -- this run's answers, in order (secret digits masked)
    journal        jsonb NOT NULL DEFAULT '[]',  -- this run's outside results, in the order the flow asked
    outputs        integer NOT NULL DEFAULT 0,  -- how many flow messages this run has produced
    created_at     timestamptz NOT NULL DEFAULT now(),
    last_message_at timestamptz NOT NULL DEFAULT now(),
    closed_at      timestamptz
);
CREATE UNIQUE INDEX conversations_open ON conversations (channel, address, our_address) WHERE closed_at IS NULL;
CREATE INDEX conversations_waiting ON conversations (state) WHERE state IN ('queued', 'offered');
CREATE INDEX conversations_agent ON conversations (agent_id) WHERE closed_at IS NULL;

-- Each inbound message (bridges messages.id) is handled once: the handler is called at least once.
CREATE TABLE conversation_inbound (
    message_id      bigint PRIMARY KEY,
    conversation_id uuid NOT NULL REFERENCES conversations (id),
    handled_at      timestamptz NOT NULL DEFAULT now()
);

-- Replies decided by the flow (or the conversation layer), written in the same transaction as the
-- decision and then handed to the outbox: a crash in between loses nothing (they are handed over on the
-- next message or at start), and `outbox_id` says which were handed over already.
CREATE TABLE conversation_replies (
    id              bigserial PRIMARY KEY,
    conversation_id uuid NOT NULL REFERENCES conversations (id),
    text            text NOT NULL,
    choices         jsonb NOT NULL DEFAULT '[]',
    outbox_id       bigint,  -- NULL: not handed over yet; 0: the outbox refused it (message.failed says why)
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX conversation_replies_pending ON conversation_replies (conversation_id, id) WHERE outbox_id IS NULL;
