-- The post-chat survey: after an agent closes a conversation whose flow's queue node has `after_agent`,
-- the flow goes on there over text (bridges/conversations.py) in the state `survey`. The agent's
-- interaction has ended by then; the answers are recorded on it.
ALTER TABLE conversations DROP CONSTRAINT conversations_state_check;
ALTER TABLE conversations ADD CONSTRAINT conversations_state_check
    CHECK (state IN ('bot', 'message', 'queued', 'offered', 'agent', 'survey', 'closed'));
CREATE INDEX conversations_survey ON conversations (last_message_at) WHERE state = 'survey';
