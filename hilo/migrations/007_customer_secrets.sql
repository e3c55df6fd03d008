-- What a caller proves who they are with (a PIN, a date of birth): only scrypt hashes are kept. Failed
-- attempts are counted across calls, so a caller cannot guess by calling again and again.
CREATE TABLE customer_secrets (
    customer_id   uuid NOT NULL REFERENCES customers (id),
    field         text NOT NULL CHECK (field IN ('pin', 'birth_date')),
    secret_hash   text NOT NULL,
    failures      integer NOT NULL DEFAULT 0,
    locked_until  timestamptz,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, field)
);
