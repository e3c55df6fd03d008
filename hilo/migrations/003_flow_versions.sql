-- Every applied flow configuration (flows/*.yaml, numbers.yaml, hours.yaml as texts), append-only.
-- The live configuration is the newest version; a rollback is a new version that copies an older one,
-- so the history always says who made each change live, when, and why.
CREATE TABLE flow_versions (
    version      integer PRIMARY KEY CHECK (version > 0),
    files        jsonb NOT NULL,
    digest       text NOT NULL,
    applied_by   text NOT NULL CHECK (applied_by <> ''),
    applied_at   timestamptz NOT NULL DEFAULT now(),
    comment      text NOT NULL DEFAULT '',
    rollback_of  integer REFERENCES flow_versions (version)
);

CREATE FUNCTION flow_versions_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'flow_versions is append-only (% refused)', TG_OP;
END $$;

CREATE TRIGGER flow_versions_append_only BEFORE UPDATE OR DELETE ON flow_versions
    FOR EACH ROW EXECUTE FUNCTION flow_versions_append_only();
