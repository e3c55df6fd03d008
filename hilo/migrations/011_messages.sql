-- Messaging bridges (bridges/): inbound messages as received, the outbox, and delivery statuses.
--
-- An inbound message is committed here before its webhook is acknowledged; the provider's message id is
-- unique, so a redelivery changes nothing. Processing (handing it to the conversation layer) is a separate
-- step with a lease, so a node that stops between receipt and processing leaves it for the next one.

CREATE TABLE messages (
    id                  bigserial PRIMARY KEY,
    channel             text NOT NULL CHECK (channel IN ('sms', 'whatsapp', 'webchat')),
    provider            text NOT NULL CHECK (provider IN ('twilio', 'whatsapp_cloud', 'webchat')),
    provider_message_id text NOT NULL CHECK (provider_message_id <> ''),
    -- the dialplans/channels.yaml entry it arrived on (NULL: no entry matched; kept all the same)
    channel_name        text,
    sender              text NOT NULL,  -- as the provider gives it (e.g. whatsapp:+34600111222 or 34600111222)
    recipient           text NOT NULL,  -- our side: number, phone_number_id or web chat site
    address             text NOT NULL,  -- the sender normalised (+E.164 for phones): the 24-hour window key
    text                text,
    choice_id           text,
    media               jsonb NOT NULL DEFAULT '[]',
    received_at         timestamptz NOT NULL DEFAULT now(),
    -- processing: 'received' until the conversation layer returned ('processed') or gave up ('failed')
    state               text NOT NULL DEFAULT 'received' CHECK (state IN ('received', 'processed', 'failed')),
    attempts            integer NOT NULL DEFAULT 0,
    next_attempt_at     timestamptz NOT NULL DEFAULT now(),
    lease               uuid,
    leased_until        timestamptz,
    last_error          text,
    processed_at        timestamptz,
    UNIQUE (provider, provider_message_id)
);
-- The head of each conversation's line (its oldest unprocessed message) is what processors look for.
CREATE INDEX messages_unprocessed ON messages (channel, sender, recipient, id) WHERE state = 'received';
CREATE INDEX messages_window ON messages (channel, address, received_at);

CREATE TABLE outbound_messages (
    id                  bigserial PRIMARY KEY,
    channel             text NOT NULL CHECK (channel IN ('sms', 'whatsapp', 'webchat')),
    provider            text NOT NULL CHECK (provider IN ('twilio', 'whatsapp_cloud', 'webchat')),
    sender              text NOT NULL,
    recipient           text NOT NULL,
    address             text NOT NULL,
    conversation_id     text NOT NULL,
    text                text NOT NULL,
    choices             jsonb NOT NULL DEFAULT '[]',
    template            text,
    -- queued (in the outbox) < accepted (the provider took it) < sent < delivered < read; failed is final
    state               text NOT NULL DEFAULT 'queued'
                        CHECK (state IN ('queued', 'accepted', 'sent', 'delivered', 'read', 'failed')),
    provider_message_id text,
    attempts            integer NOT NULL DEFAULT 0,
    next_attempt_at     timestamptz NOT NULL DEFAULT now(),
    lease               uuid,
    leased_until        timestamptz,
    error_code          text,
    last_error          text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    accepted_at         timestamptz,
    updated_at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (provider, provider_message_id)
);
CREATE INDEX outbound_messages_queued ON outbound_messages (conversation_id, id) WHERE state = 'queued';
CREATE INDEX outbound_messages_due ON outbound_messages (next_attempt_at) WHERE state = 'queued';

-- Every status a provider reported, in the order received (they arrive out of order; the outbound row
-- keeps the highest). A status for a message whose send result is not recorded yet waits here.
CREATE TABLE message_statuses (
    id                  bigserial PRIMARY KEY,
    provider            text NOT NULL,
    provider_message_id text NOT NULL,
    status              text NOT NULL,
    provider_status     text NOT NULL,  -- the provider's own word (e.g. Twilio's undelivered)
    error_code          text,
    error_message       text,
    occurred_at         timestamptz,
    received_at         timestamptz NOT NULL DEFAULT now(),
    UNIQUE (provider, provider_message_id, provider_status)
);
CREATE INDEX message_statuses_message ON message_statuses (provider, provider_message_id);

CREATE FUNCTION message_state_rank(state text) RETURNS integer LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE state WHEN 'queued' THEN 0 WHEN 'accepted' THEN 1 WHEN 'sent' THEN 2 WHEN 'delivered' THEN 3
                      WHEN 'read' THEN 4 WHEN 'failed' THEN 5 END
$$;

-- Processors and outbox workers on every node wake up on these (sent at commit).
CREATE FUNCTION messages_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(TG_ARGV[0], '');
    RETURN NULL;
END $$;
CREATE TRIGGER messages_notify AFTER INSERT ON messages
    FOR EACH ROW EXECUTE FUNCTION messages_notify('hilo_inbox');
CREATE TRIGGER outbound_messages_notify AFTER INSERT ON outbound_messages
    FOR EACH ROW EXECUTE FUNCTION messages_notify('hilo_outbox');
