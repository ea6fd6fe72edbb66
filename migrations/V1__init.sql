-- Service tables of the mirror. Names are unqualified: the store runs migrations with
-- search_path set to the configured schema, so every schema gets its own copy.
-- Mirror tables (deal, contact, lead, company) are created from field metadata by the
-- store at sync time, not here.

-- Field metadata per portal and entity: what each column holds and what it is called
-- in Bitrix24. Fields whose code cannot be a column keep column_name NULL and say why.
CREATE TABLE _fields (
    portal          text        NOT NULL,
    entity          text        NOT NULL,
    code            text        NOT NULL,
    position        integer     NOT NULL,
    column_name     text,
    column_type     text,
    currency_column text,
    title           text        NOT NULL,
    label           text,
    bitrix_type     text        NOT NULL,
    is_multiple     boolean     NOT NULL,
    is_dynamic      boolean     NOT NULL,
    is_read_only    boolean     NOT NULL,
    rejected_reason text,
    first_seen_at   timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    removed_at      timestamptz,
    PRIMARY KEY (portal, entity, code)
);

-- Items of enumeration (list) fields, so labels of the stored item ids resolve by join.
CREATE TABLE _field_items (
    portal  text NOT NULL,
    entity  text NOT NULL,
    code    text NOT NULL,
    item_id text NOT NULL,
    value   text NOT NULL,
    PRIMARY KEY (portal, entity, code, item_id)
);

-- Where the next sync of a portal entity continues.
CREATE TABLE _sync_state (
    portal          text        NOT NULL,
    entity          text        NOT NULL,
    cursor          text,
    full_checkpoint bigint,
    full_started_at timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (portal, entity)
);

-- One row per sync run.
CREATE TABLE _sync_runs (
    id            bigserial   PRIMARY KEY,
    portal        text        NOT NULL,
    entity        text        NOT NULL,
    mode          text        NOT NULL,
    started_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz,
    rows_read     bigint,
    rows_written  bigint,
    rows_deleted  bigint,
    http_requests bigint,
    error         text
);
CREATE INDEX _sync_runs_portal_entity_started ON _sync_runs (portal, entity, started_at DESC);

-- The shared request budget of each portal (leaky bucket and per-method operating
-- time), updated under a row lock by every process that calls the portal.
CREATE TABLE _rate_limit (
    portal            text             PRIMARY KEY,
    bucket_level      double precision NOT NULL DEFAULT 0,
    bucket_updated_at double precision NOT NULL DEFAULT 0,
    operating         jsonb            NOT NULL DEFAULT '{}'::jsonb,
    updated_at        timestamptz      NOT NULL DEFAULT now()
);
