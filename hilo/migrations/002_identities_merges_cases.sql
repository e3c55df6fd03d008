-- Identities of every kind, customer consent and preferred channel, merges that can be undone, and cases.
--
-- Merging never rewrites history: timeline_events stays append-only and keeps the customer id it was
-- written with. A merged-away customer points at the survivor (customers.merged_into); a customer's
-- timeline is the events of the customer and of every customer merged into it, directly or through a
-- chain. Identities, interactions and cases are re-pointed to the survivor, and customer_merges records
-- exactly which rows moved, so undoing a merge puts back exactly those rows.

-- Identities ----------------------------------------------------------------------------------------

-- WhatsApp's business-scoped user ids (whatsapp_bsuid) arrive without any phone number.
ALTER TABLE identities DROP CONSTRAINT identities_kind_check;
ALTER TABLE identities ADD CONSTRAINT identities_kind_check
    CHECK (kind IN ('phone', 'whatsapp', 'whatsapp_bsuid', 'email', 'webchat', 'external'));

-- An external id lives in the namespace of its system ('salesforce', 'hubspot', ...): its value is
-- '<system>:<id>' and `system` is derived from it. (kind, value) stays the one unique key that first
-- contacts race on, so (kind, system, value) is unique too, and the same id in two systems is two
-- identities. System names are lowercase and hold no ':'; the id after the first ':' is kept as given.
-- External rows written before this migration had no namespace: they are kept, under 'unknown'.
UPDATE identities SET value = 'unknown:' || value
    WHERE kind = 'external' AND value !~ '^[a-z][a-z0-9_.-]*:.';
ALTER TABLE identities ADD COLUMN system text
    GENERATED ALWAYS AS (CASE WHEN kind = 'external' THEN split_part(value, ':', 1) END) STORED;
ALTER TABLE identities ADD CONSTRAINT identities_external_namespaced
    CHECK (kind <> 'external' OR value ~ '^[a-z][a-z0-9_.-]*:.');

-- Customers -----------------------------------------------------------------------------------------

ALTER TABLE customers
    -- channel -> {"granted": bool, "at": iso timestamp, "source": text}
    ADD COLUMN consent jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(consent) = 'object'),
    ADD COLUMN preferred_channel text
        CHECK (preferred_channel IN ('voice', 'sms', 'whatsapp', 'webchat', 'email')),
    -- set while this customer is merged into another (the survivor); NULL for a live customer
    ADD COLUMN merged_into uuid REFERENCES customers (id),
    ADD CONSTRAINT customers_not_merged_into_self CHECK (merged_into <> id);
CREATE INDEX customers_merged_into ON customers (merged_into) WHERE merged_into IS NOT NULL;

-- Merges --------------------------------------------------------------------------------------------

CREATE TABLE customer_merges (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    survivor_id     uuid NOT NULL REFERENCES customers (id),
    merged_id       uuid NOT NULL REFERENCES customers (id),
    -- exactly the rows the merge re-pointed from merged_id to survivor_id (undo moves these back)
    identity_ids    bigint[] NOT NULL,
    interaction_ids uuid[] NOT NULL,
    case_ids        uuid[] NOT NULL,
    -- the timeline events that joined the survivor's timeline (they are not rewritten: they keep their
    -- customer id and are reached through customers.merged_into)
    timeline_event_ids bigint[] NOT NULL,
    merged_by       text NOT NULL,
    reason          text NOT NULL,
    merged_at       timestamptz NOT NULL DEFAULT now(),
    undone_at       timestamptz,
    undone_by       text,
    CHECK (survivor_id <> merged_id),
    CHECK ((undone_at IS NULL) = (undone_by IS NULL))
);
CREATE INDEX customer_merges_survivor ON customer_merges (survivor_id, merged_at);
-- A customer is merged away by at most one merge in force.
CREATE UNIQUE INDEX customer_merges_active ON customer_merges (merged_id) WHERE undone_at IS NULL;

-- Cases ---------------------------------------------------------------------------------------------

CREATE TABLE cases (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    customer_id    uuid NOT NULL REFERENCES customers (id),
    -- the interaction the case was opened from, if any
    interaction_id uuid REFERENCES interactions (id),
    subject        text NOT NULL CHECK (subject <> ''),
    status         text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'pending', 'closed')),
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX cases_customer ON cases (customer_id, created_at);
CREATE INDEX cases_open ON cases (status) WHERE status <> 'closed';

CREATE TABLE case_interactions (
    case_id        uuid NOT NULL REFERENCES cases (id) ON DELETE CASCADE,
    interaction_id uuid NOT NULL REFERENCES interactions (id),
    linked_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (case_id, interaction_id)
);
CREATE INDEX case_interactions_interaction ON case_interactions (interaction_id);
