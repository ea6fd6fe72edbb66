-- What the status page reads (see the README, "The status page", and
-- shared/store/src/status.rs), kept cheap to read however big the mirror grows: exact
-- live and deleted row counts per portal table, kept by statement-level triggers, and
-- indexes for the latest run of each kind. New objects only, plus the triggers: each
-- mirror table is locked for as long as its triggers take to create and its rows to be
-- counted once.

-- One row per portal table (its name as in _mirror_tables): the live (deleted_at IS
-- NULL) and deleted rows, and the newest DATE_MODIFY any writer has stored in it.
CREATE TABLE _mirror_counts (
    table_name         text        PRIMARY KEY,
    live_rows          bigint      NOT NULL,
    deleted_rows       bigint      NOT NULL,
    newest_date_modify timestamptz,
    updated_at         timestamptz NOT NULL DEFAULT now()
);

-- Adds a statement's changes to a table's counts. The row is written (and so locked
-- until the writer commits) only when something changed: an UPDATE of values alone, a
-- back-sync edit say, leaves it alone and waits for nobody.
CREATE FUNCTION _mirror_counts_add(p_table text, p_live bigint, p_deleted bigint, p_newest timestamptz)
RETURNS void LANGUAGE sql SET search_path FROM CURRENT AS $$
    UPDATE _mirror_counts
    SET live_rows = live_rows + p_live,
        deleted_rows = deleted_rows + p_deleted,
        newest_date_modify = greatest(newest_date_modify, p_newest),
        updated_at = now()
    WHERE table_name = p_table
      AND (p_live <> 0 OR p_deleted <> 0
           OR p_newest > coalesce(newest_date_modify, '-infinity'::timestamptz))
$$;

-- AFTER ... FOR EACH STATEMENT, with the statement's rows as transition tables: one
-- call per statement (a COPY of 2,500 rows is one call), never one per row.
CREATE FUNCTION _mirror_counts_inserted() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    PERFORM _mirror_counts_add(TG_TABLE_NAME, count(*) FILTER (WHERE deleted_at IS NULL),
                               count(*) FILTER (WHERE deleted_at IS NOT NULL), max(date_modify))
    FROM new_rows;
    RETURN NULL;
END
$$;

CREATE FUNCTION _mirror_counts_updated() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    live_before bigint;
    live_after  bigint;
    newest      timestamptz;
BEGIN
    SELECT count(*) FILTER (WHERE deleted_at IS NULL) INTO live_before FROM old_rows;
    SELECT count(*) FILTER (WHERE deleted_at IS NULL), max(date_modify) INTO live_after, newest FROM new_rows;
    -- An UPDATE keeps the number of rows: what the live count gains, the deleted loses.
    PERFORM _mirror_counts_add(TG_TABLE_NAME, live_after - live_before, live_before - live_after, newest);
    RETURN NULL;
END
$$;

CREATE FUNCTION _mirror_counts_deleted() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    PERFORM _mirror_counts_add(TG_TABLE_NAME, -count(*) FILTER (WHERE deleted_at IS NULL),
                               -count(*) FILTER (WHERE deleted_at IS NOT NULL), NULL)
    FROM old_rows;
    RETURN NULL;
END
$$;

CREATE FUNCTION _mirror_counts_truncated() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    UPDATE _mirror_counts SET live_rows = 0, deleted_rows = 0, updated_at = now()
    WHERE table_name = TG_TABLE_NAME;
    RETURN NULL;
END
$$;

-- Puts the counting triggers on a portal table and counts its rows once. Creating a
-- trigger locks the table against writes until the transaction ends, so no write falls
-- between the count and the triggers. A table that does not exist is left alone.
CREATE FUNCTION _mirror_counts_install(p_table text) RETURNS void
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    t text := format('%I.%I', current_schema(), p_table);
BEGIN
    IF to_regclass(t) IS NULL THEN
        RETURN;
    END IF;
    EXECUTE format('DROP TRIGGER IF EXISTS _b24sync_count_insert ON %s', t);
    EXECUTE format('DROP TRIGGER IF EXISTS _b24sync_count_update ON %s', t);
    EXECUTE format('DROP TRIGGER IF EXISTS _b24sync_count_delete ON %s', t);
    EXECUTE format('DROP TRIGGER IF EXISTS _b24sync_count_truncate ON %s', t);
    -- A trigger with transition tables serves one event, hence three of them.
    EXECUTE format('CREATE TRIGGER _b24sync_count_insert AFTER INSERT ON %s REFERENCING NEW TABLE AS new_rows
                    FOR EACH STATEMENT EXECUTE FUNCTION %I._mirror_counts_inserted()', t, current_schema());
    EXECUTE format('CREATE TRIGGER _b24sync_count_update AFTER UPDATE ON %s REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
                    FOR EACH STATEMENT EXECUTE FUNCTION %I._mirror_counts_updated()', t, current_schema());
    EXECUTE format('CREATE TRIGGER _b24sync_count_delete AFTER DELETE ON %s REFERENCING OLD TABLE AS old_rows
                    FOR EACH STATEMENT EXECUTE FUNCTION %I._mirror_counts_deleted()', t, current_schema());
    EXECUTE format('CREATE TRIGGER _b24sync_count_truncate AFTER TRUNCATE ON %s
                    FOR EACH STATEMENT EXECUTE FUNCTION %I._mirror_counts_truncated()', t, current_schema());
    EXECUTE format('INSERT INTO _mirror_counts (table_name, live_rows, deleted_rows, newest_date_modify)
                    SELECT %L, count(*) FILTER (WHERE deleted_at IS NULL), count(*) FILTER (WHERE deleted_at IS NOT NULL),
                           max(date_modify) FROM %s
                    ON CONFLICT (table_name) DO UPDATE SET live_rows = EXCLUDED.live_rows,
                        deleted_rows = EXCLUDED.deleted_rows, newest_date_modify = EXCLUDED.newest_date_modify,
                        updated_at = now()', p_table, t);
END
$$;

-- A portal table is registered and created in one transaction (registered first), so
-- its triggers come when that transaction commits: deferred, the table exists by then.
CREATE FUNCTION _mirror_counts_registered() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    PERFORM _mirror_counts_install(NEW.table_name);
    RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER _b24sync_count_new_table AFTER INSERT ON _mirror_tables
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION _mirror_counts_registered();

SELECT _mirror_counts_install(table_name) FROM _mirror_tables;

-- The last completed run of each mode, and the last failed or refused one, are index
-- look-ups however many runs there are (failures and refusals are rare, so that index
-- stays small).
CREATE INDEX _sync_runs_completed ON _sync_runs (portal, entity, mode, started_at DESC)
    WHERE outcome = 'completed';
CREATE INDEX _sync_runs_unsuccessful ON _sync_runs (portal, entity, started_at DESC)
    WHERE outcome IN ('failed', 'refused');
