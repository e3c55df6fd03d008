-- Dialling booked callbacks (ivr/callbacks.py). A booking made while waiting in a queue keeps the
-- interaction's place in routing; when routing offers it to an agent, Hilo rings the agent, then dials the
-- customer and bridges them. pending -> dialing -> done | failed; a customer who does not answer is tried
-- again after a pause (next_attempt_at), up to max_attempts dials, keeping the place each time.
ALTER TABLE callbacks
    ADD COLUMN max_attempts    integer NOT NULL DEFAULT 3 CHECK (max_attempts >= 1),
    ADD COLUMN next_attempt_at timestamptz,
    ADD COLUMN agent_id        text,
    ADD COLUMN last_result     text;

-- The dialler's question every second: which bookings are due.
CREATE INDEX callbacks_due ON callbacks (next_attempt_at) WHERE state IN ('pending', 'dialing');
