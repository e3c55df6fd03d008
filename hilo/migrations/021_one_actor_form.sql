-- One form for who did it in every audit trail: `kind:name@door` (grammar and reasons in hilo/audit.py), e.g.
-- user:maria@console, user:maria@api, token:admin@api, login:root@cli, system:retention@system.
--
-- The rows written before, in the four older forms, are rewritten here. Each old form is mapped the one way
-- its writer's code allows; the old forms did not say the door a console user came through (cookie or bearer
-- token), so those rows get the door `unknown`. Text that cannot be read for sure becomes
-- `unknown:<the old text, percent-encoded>@<door if known, else unknown>`: recognisably not a real actor, and
-- nothing of it lost. Rows already in the form are left as they are, so running this again changes nothing.
-- Every rewritten value is kept in `actor_rewrites` (table, column, row, old, new): the audit trail says
-- what it said before, too.
--
-- Facts the mapping relies on (the code up to migration 020): the only API token a server was ever given has
-- the role admin (server/app.py); console user names match ^[a-z0-9][a-z0-9._-]{0,63}$ (migration 005); the
-- writers were console/audit.py, recordings/access.py, crm_bridge/rest.py, flows/rest.py,
-- flows/versions_cli.py, flows/runtime.py, bridges/conversations.py and console/desk.py.
--
-- The timeline's `by` (call.held, routing.moved, message.sent, ...) is written in the new form from now on but
-- is not rewritten: the timeline is the customer's append-only history, already delivered to webhook
-- subscribers as it was.

CREATE TABLE IF NOT EXISTS actor_rewrites (
    table_name   text NOT NULL,
    column_name  text NOT NULL,
    row_key      text NOT NULL,  -- the row's primary key, as text
    old_actor    text NOT NULL,
    new_actor    text NOT NULL,
    rewritten_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (table_name, column_name, row_key)
);

-- A name as it stands in an actor: RFC 3986 unreserved characters as they are, every other byte of its UTF-8
-- as %XX (upper-case hex), at most 64 characters of it (hilo.audit.encode_name).
CREATE OR REPLACE FUNCTION pg_temp.actor_name(name text) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(string_agg(
        CASE WHEN strpos('ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~', c) > 0 THEN c
             ELSE upper(regexp_replace(encode(convert_to(c, 'UTF8'), 'hex'), '(..)', '%\1', 'g'))
        END, '' ORDER BY i), '')
    FROM unnest(string_to_array(left(name, 64), NULL)) WITH ORDINALITY AS chars(c, i)
$$;

-- The new form of `old`, written to `source` (table.column); `old_role` is supervisor_actions.actor_role.
CREATE OR REPLACE FUNCTION pg_temp.new_actor(source text, old text, old_role text DEFAULT NULL) RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
    user_name CONSTANT text := '^[a-z0-9][a-z0-9._-]{0,63}$';
    actor_form CONSTANT text :=
        '^(user|token|login|system|unknown):([A-Za-z0-9._~-]|%[0-9A-F]{2})+@(console|api|cli|system|unknown)$';
    rest text;
BEGIN
    IF old IS NULL OR old ~ actor_form THEN
        RETURN old;
    END IF;
    IF source = 'supervisor_actions.actor' THEN
        -- console/audit.py: the console user's name, or "api-token" for the API token (whose role is actor_role)
        IF old = 'api-token' AND NOT EXISTS (SELECT 1 FROM console_users u WHERE u.username = old)
           AND old_role IS NOT NULL AND old_role <> '' THEN
            RETURN 'token:' || pg_temp.actor_name(old_role) || '@api';
        ELSIF old ~ user_name AND old <> 'api-token' THEN
            RETURN 'user:' || old || '@unknown';
        END IF;
    ELSIF source = 'recording_audit.actor' THEN
        -- recordings/access.py: console:<user>, api:<role> (the token); the jobs; a signed URL that failed
        IF old LIKE 'console:%' AND substr(old, 9) ~ user_name THEN
            RETURN 'user:' || substr(old, 9) || '@unknown';
        ELSIF old LIKE 'api:%' AND substr(old, 5) ~ user_name THEN
            RETURN 'token:' || substr(old, 5) || '@api';
        ELSIF old = 'system:retention' THEN
            RETURN 'system:retention@unknown';  -- the server's schedule or `hilo recordings purge`: not recorded
        ELSIF old = 'system:flow' THEN
            RETURN 'system:flow@system';
        ELSIF old = 'unverified' THEN
            RETURN 'unknown:unverified@api';
        END IF;
    ELSIF source IN ('customer_merges.merged_by', 'customer_merges.undone_by') THEN
        -- crm_bridge/rest.py: api:<user name, else the token's role>; bridges/conversations.py: conversation
        IF old = 'conversation' THEN
            RETURN 'system:conversation@system';
        ELSIF old LIKE 'api:%' AND substr(old, 5) ~ user_name THEN
            rest := substr(old, 5);
            IF rest <> 'admin' THEN
                RETURN 'user:' || rest || '@unknown';
            ELSIF NOT EXISTS (SELECT 1 FROM console_users u WHERE u.username = 'admin') THEN
                RETURN 'token:admin@api';
            END IF;  -- api:admin with a console user named admin: either of them
            RETURN 'unknown:' || pg_temp.actor_name(old) || '@unknown';
        END IF;
    ELSIF source = 'flow_versions.applied_by' THEN
        -- flows/rest.py read no principal and wrote "admin token (api)" for every admin, signed in or not:
        -- the door is known, who is not.
        IF old = 'admin token (api)' THEN
            RETURN 'unknown:' || pg_temp.actor_name(old) || '@api';
        ELSIF old LIKE '% (api)' AND left(old, -6) ~ user_name THEN
            RETURN 'user:' || left(old, -6) || '@unknown';
        ELSIF old = 'hilo serve' THEN
            RETURN 'system:serve@system';  -- flows/runtime.py, first start
        ELSIF old = 'make run' THEN
            RETURN 'login:make-run@cli';  -- stack/up.sh, now --by make-run
        ELSIF old = 'cli' THEN
            RETURN 'unknown:cli@cli';  -- flows/versions_cli.py when it found no login name
        ELSIF old LIKE '% (cli)' AND length(old) > 6 THEN
            RETURN 'login:' || pg_temp.actor_name(left(old, -6)) || '@cli';
        ELSIF old <> '' THEN
            -- every other writer is accounted for above: this is --by text or $USER from `hilo flows apply`
            RETURN 'login:' || pg_temp.actor_name(old) || '@cli';
        END IF;
    ELSIF source = 'interaction_wrapups.username' THEN
        -- console/desk.py: the console user's name, or api-token:<role> for the API token
        IF old LIKE 'api-token:%' AND substr(old, 11) ~ user_name THEN
            RETURN 'token:' || substr(old, 11) || '@api';
        ELSIF old ~ user_name THEN
            RETURN 'user:' || old || '@unknown';
        END IF;
    END IF;
    IF old = '' THEN
        RETURN 'unknown:-@unknown';
    END IF;
    RETURN 'unknown:' || pg_temp.actor_name(old) || '@unknown';
END $$;

-- The append-only guards stand down for this transaction only (ALTER TABLE is transactional).
ALTER TABLE recording_audit DISABLE TRIGGER recording_audit_append_only;
ALTER TABLE flow_versions DISABLE TRIGGER flow_versions_append_only;

WITH mapped AS (
    SELECT id, actor AS old, pg_temp.new_actor('supervisor_actions.actor', actor, actor_role) AS new
      FROM supervisor_actions
), kept AS (
    INSERT INTO actor_rewrites (table_name, column_name, row_key, old_actor, new_actor)
    SELECT 'supervisor_actions', 'actor', id::text, old, new FROM mapped WHERE new <> old
    ON CONFLICT DO NOTHING
)
UPDATE supervisor_actions t SET actor = m.new FROM mapped m WHERE t.id = m.id AND m.new <> m.old;

WITH mapped AS (
    SELECT id, actor AS old, pg_temp.new_actor('recording_audit.actor', actor) AS new FROM recording_audit
), kept AS (
    INSERT INTO actor_rewrites (table_name, column_name, row_key, old_actor, new_actor)
    SELECT 'recording_audit', 'actor', id::text, old, new FROM mapped WHERE new <> old
    ON CONFLICT DO NOTHING
)
UPDATE recording_audit t SET actor = m.new FROM mapped m WHERE t.id = m.id AND m.new <> m.old;

WITH mapped AS (
    SELECT id, merged_by AS old_merged, pg_temp.new_actor('customer_merges.merged_by', merged_by) AS new_merged,
           undone_by AS old_undone, pg_temp.new_actor('customer_merges.undone_by', undone_by) AS new_undone
      FROM customer_merges
), kept AS (
    INSERT INTO actor_rewrites (table_name, column_name, row_key, old_actor, new_actor)
    SELECT 'customer_merges', 'merged_by', id::text, old_merged, new_merged FROM mapped
     WHERE new_merged <> old_merged
    UNION ALL
    SELECT 'customer_merges', 'undone_by', id::text, old_undone, new_undone FROM mapped
     WHERE new_undone <> old_undone
    ON CONFLICT DO NOTHING
)
UPDATE customer_merges t SET merged_by = m.new_merged, undone_by = m.new_undone
  FROM mapped m
 WHERE t.id = m.id AND (m.new_merged <> m.old_merged OR m.new_undone IS DISTINCT FROM m.old_undone);

WITH mapped AS (
    SELECT version, applied_by AS old, pg_temp.new_actor('flow_versions.applied_by', applied_by) AS new
      FROM flow_versions
), kept AS (
    INSERT INTO actor_rewrites (table_name, column_name, row_key, old_actor, new_actor)
    SELECT 'flow_versions', 'applied_by', version::text, old, new FROM mapped WHERE new <> old
    ON CONFLICT DO NOTHING
)
UPDATE flow_versions t SET applied_by = m.new FROM mapped m WHERE t.version = m.version AND m.new <> m.old;

WITH mapped AS (
    SELECT interaction_id, username AS old, pg_temp.new_actor('interaction_wrapups.username', username) AS new
      FROM interaction_wrapups
), kept AS (
    INSERT INTO actor_rewrites (table_name, column_name, row_key, old_actor, new_actor)
    SELECT 'interaction_wrapups', 'username', interaction_id::text, old, new FROM mapped WHERE new <> old
    ON CONFLICT DO NOTHING
)
UPDATE interaction_wrapups t SET username = m.new FROM mapped m
 WHERE t.interaction_id = m.interaction_id AND m.new <> m.old;

ALTER TABLE recording_audit ENABLE TRIGGER recording_audit_append_only;
ALTER TABLE flow_versions ENABLE TRIGGER flow_versions_append_only;

DROP FUNCTION pg_temp.new_actor(text, text, text);
DROP FUNCTION pg_temp.actor_name(text);

COMMENT ON COLUMN supervisor_actions.actor IS 'who, and through which door: kind:name@door (hilo/audit.py)';
COMMENT ON COLUMN recording_audit.actor IS 'who, and through which door: kind:name@door (hilo/audit.py)';
COMMENT ON COLUMN customer_merges.merged_by IS 'who, and through which door: kind:name@door (hilo/audit.py)';
COMMENT ON COLUMN customer_merges.undone_by IS 'who, and through which door: kind:name@door (hilo/audit.py)';
COMMENT ON COLUMN flow_versions.applied_by IS 'who, and through which door: kind:name@door (hilo/audit.py)';
COMMENT ON COLUMN interaction_wrapups.username IS
    'who wrapped up, and through which door: kind:name@door (hilo/audit.py), despite the column''s name';
