-- The audit of live work (supervisor_actions) also holds transfers, done or refused, and every refusal of the
-- scope rule (routing/scope.py: who may act on which agent, queue or interaction), so what was tried is there
-- as well as what was done:
--   transfer, transfer-complete, transfer-cancel   a call handed on (blind or attended), by its agent, a
--                                                  supervisor or an admin
--   read                                           something refused to be read: a screen-pop, a chat, an
--                                                  agent, a queue, routing's record of an interaction,
--                                                  a team's wallboard
--                                                  (detail.read says which)
--   chat-accept, chat-reply, chat-handback,        acting on a conversation or wrapping up, refused
--   chat-close, wrapup
-- and a queue or a team as a target (a queue's record, a wallboard of a team, refused to a supervisor of
-- other teams).
ALTER TABLE supervisor_actions DROP CONSTRAINT supervisor_actions_action_check;
ALTER TABLE supervisor_actions ADD CONSTRAINT supervisor_actions_action_check CHECK (action IN (
    'listen', 'whisper', 'barge', 'supervision-end', 'hold', 'unhold', 'agent-state', 'move',
    'transfer', 'transfer-complete', 'transfer-cancel',
    'read', 'chat-accept', 'chat-reply', 'chat-handback', 'chat-close', 'wrapup'));
ALTER TABLE supervisor_actions DROP CONSTRAINT supervisor_actions_target_kind_check;
ALTER TABLE supervisor_actions ADD CONSTRAINT supervisor_actions_target_kind_check CHECK (
    target_kind IN ('interaction', 'agent', 'supervision', 'queue', 'team'));
