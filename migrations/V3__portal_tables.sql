-- One mirror table per portal and entity (see the README, "Mirror tables"), so one
-- portal's user fields never add, retype or fill another portal's columns. The view
-- named after the entity (deal, contact, lead, company) unions the standard columns
-- of every portal's table; the store (re)creates it, not this migration.

-- Which table holds a portal's entity. The name is derived from the portal name by the
-- store; the unique constraint makes two portals sharing one table impossible.
CREATE TABLE _mirror_tables (
    portal     text        NOT NULL,
    entity     text        NOT NULL,
    table_name text        NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (portal, entity)
);

-- Columns still being filled from raw, a batch of rows per transaction. after_id is
-- how far the fill got, so a run cut short continues there. A row with `replaces` set
-- is the text column a retyped field is copied into; once filled it takes the place of
-- `replaces` (dropped and renamed in one short transaction, never a table rewrite).
CREATE TABLE _column_backfill (
    table_name  text        NOT NULL,
    column_name text        NOT NULL,
    replaces    text,
    after_id    bigint      NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (table_name, column_name)
);

-- The SQL each cross-portal view was last created from, so an unchanged view is never
-- replaced (replacing one takes a lock that waits for its readers).
CREATE TABLE _mirror_views (
    entity     text        PRIMARY KEY,
    definition text        NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
