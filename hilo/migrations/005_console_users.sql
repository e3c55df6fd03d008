-- People who sign in to the console, and the wrap-up (disposition + note) an agent gives an interaction.

CREATE TABLE console_users (
    -- lowercase, so "Bob" and "bob" cannot be two users
    username      text PRIMARY KEY CHECK (username ~ '^[a-z0-9][a-z0-9._-]{0,63}$'),
    -- scrypt$N$r$p$salt$hash (console/passwords.py); the password itself is never stored
    password_hash text NOT NULL CHECK (password_hash LIKE 'scrypt$%'),
    role          text NOT NULL CHECK (role IN ('agent', 'supervisor', 'admin')),
    -- the agent (routing.yaml) whose calls an agent user takes; agents cannot sign in without one
    agent_id      text REFERENCES agents (id),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CHECK (role <> 'agent' OR agent_id IS NOT NULL)
);
-- One console user per agent: a screen-pop for an agent reaches exactly one person.
CREATE UNIQUE INDEX console_users_agent ON console_users (agent_id) WHERE agent_id IS NOT NULL;

-- One wrap-up per interaction: the primary key makes a repeated submit (double click, retry after a lost
-- answer) a no-op instead of a second disposition on the timeline.
CREATE TABLE interaction_wrapups (
    interaction_id uuid PRIMARY KEY REFERENCES interactions (id),
    agent_id       text REFERENCES agents (id),
    username       text NOT NULL,
    disposition    text NOT NULL,
    note           text NOT NULL DEFAULT '',
    created_at     timestamptz NOT NULL DEFAULT now()
);
