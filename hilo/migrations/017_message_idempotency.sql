-- Messaging: one effect per outbound message on the way out, too.
--
-- An outbound message may carry an idempotency key (the conversation layer derives it from its reply row):
-- a second enqueue with the same key finds the first row and changes nothing, so a reply handed to the
-- outbox again after a crash is not sent twice. NULL (most agent replies): no key, every enqueue is new.
ALTER TABLE outbound_messages ADD COLUMN idempotency_key text;
CREATE UNIQUE INDEX outbound_messages_idempotency_key ON outbound_messages (idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- A secret typed in a chat (a PIN, a date of birth, answering a flow's secret gather or verification) is
-- replaced in `messages.text` by its mask as soon as the conversation layer learns what it answered, in the
-- transaction that records the answer; `redacted_at` says that it happened.
ALTER TABLE messages ADD COLUMN redacted_at timestamptz;
