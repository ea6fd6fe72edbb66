-- Back-sync (see the README, "Back-sync", and shared/store/src/outbox.rs): edits made
-- in PostgreSQL to the mirror tables are written by triggers to an outbox, which the
-- back-sync function pushes to Bitrix24. New objects and one nullable column only:
-- nothing existing is rewritten.

-- Why Bitrix24 does not take a field from back-sync (read-only, a file...); NULL when
-- it does. Written with the rest of the field's metadata.
ALTER TABLE _fields ADD COLUMN write_refusal text;

CREATE TABLE _outbox (
    id               bigserial   PRIMARY KEY,
    portal           text        NOT NULL,
    entity           text        NOT NULL,
    -- The Bitrix24 ID; negative for a row inserted in PostgreSQL that Bitrix24 has
    -- not given an ID yet (rewritten to the new ID once the record is created).
    record_id        bigint      NOT NULL,
    op               text        NOT NULL CHECK (op IN ('create', 'update', 'delete')),
    -- Field code -> {column -> new value}: text for scalar columns (every digit of a
    -- numeric kept), JSON for jsonb columns, null for NULL.
    changes          jsonb       NOT NULL DEFAULT '{}'::jsonb,
    -- The DATE_MODIFY the edited row held: the version the editor saw.
    seen_date_modify timestamptz,
    changed_by       text        NOT NULL DEFAULT current_user,
    created_at       timestamptz NOT NULL DEFAULT now(),
    -- pending (to push, from next_attempt_at), pushing (claimed by a drain until
    -- lease_until), done, conflict (the portal changed the record after the editor saw
    -- it and the policy kept the portal's values), failed (the portal refused it, or
    -- every attempt failed), skipped (a delete the configuration does not allow).
    state            text        NOT NULL DEFAULT 'pending'
                     CHECK (state IN ('pending', 'pushing', 'done', 'conflict', 'failed', 'skipped')),
    attempts         integer     NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    lease_id         bigint,
    lease_until      timestamptz,
    -- A create's new Bitrix24 ID.
    bitrix_id        bigint,
    last_error       text,
    finished_at      timestamptz,
    CHECK ((lease_until IS NULL) = (state <> 'pushing'))
);

-- The drain: a record's open rows in order. The status view: the backlog per state, and
-- the conflicts and failures of the last day (the outbox keeps every row).
CREATE INDEX _outbox_open ON _outbox (portal, entity, record_id, id) WHERE state IN ('pending', 'pushing');
CREATE INDEX _outbox_state ON _outbox (portal, state, created_at DESC);
CREATE INDEX _outbox_finished ON _outbox (portal, state, finished_at DESC) WHERE state IN ('conflict', 'failed');

-- Local IDs of rows inserted in PostgreSQL, used negated: a portal table's id defaults
-- to -nextval of it (the sync always gives the ID), so a row inserted without one is a
-- record to create in Bitrix24 and keeps its local ID until Bitrix24 gives it one. A
-- column default rather than a BEFORE INSERT trigger: such a trigger would make every
-- COPY of the sync insert row by row.
CREATE SEQUENCE _outbox_local_ids;

-- A column's value in an outbox row: JSON for a jsonb column, else the text PostgreSQL
-- prints (a numeric keeps every digit), null for NULL.
CREATE FUNCTION _outbox_column_value(row_json jsonb, col text, col_type text) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN coalesce(row_json -> col, 'null'::jsonb) = 'null'::jsonb THEN 'null'::jsonb
                WHEN col_type = 'jsonb' THEN row_json -> col
                ELSE to_jsonb(row_json ->> col) END
$$;

-- AFTER INSERT, UPDATE or DELETE on a mirror table, for writers other than the sync:
-- the change goes to the outbox, for the fields Bitrix24 lets back-sync write. Any
-- other change is refused with an error that names the column and why.
-- Arguments: the portal and the entity.
CREATE FUNCTION _outbox_capture() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    v_portal  text := TG_ARGV[0];
    v_entity  text := TG_ARGV[1];
    new_row   jsonb;
    old_row   jsonb := '{}'::jsonb;
    changed   text[];
    unknown   text;
    refused   text;
    v_changes jsonb;
BEGIN
    IF TG_OP = 'DELETE' THEN
        -- A row the portal already deleted has nothing left to delete there.
        IF OLD.deleted_at IS NULL THEN
            INSERT INTO _outbox (portal, entity, record_id, op, seen_date_modify)
            VALUES (v_portal, v_entity, OLD.id, 'delete', OLD.date_modify);
        END IF;
        RETURN NULL;
    END IF;
    new_row := to_jsonb(NEW);
    IF TG_OP = 'INSERT' AND NEW.id > 0 THEN
        RAISE EXCEPTION 'a row inserted into % must leave id empty: back-sync creates the record in Bitrix24 and writes its new ID back (positive IDs are Bitrix24''s records, written by the sync)', TG_TABLE_NAME
            USING ERRCODE = 'check_violation';
    END IF;
    IF TG_OP = 'INSERT' AND (NEW.portal <> v_portal OR NEW.date_modify IS NOT NULL
                             OR NEW.deleted_at IS NOT NULL OR NEW.raw <> '{}'::jsonb) THEN
        RAISE EXCEPTION 'a row inserted into % must leave portal, raw, date_modify and deleted_at to their defaults: Bitrix24 sets them', TG_TABLE_NAME
            USING ERRCODE = 'check_violation';
    END IF;
    IF TG_OP = 'UPDATE' THEN
        old_row := to_jsonb(OLD);
        IF OLD.deleted_at IS NOT NULL THEN
            RAISE EXCEPTION 'row % of % was deleted in Bitrix24: it cannot be edited', OLD.id, TG_TABLE_NAME
                USING ERRCODE = 'check_violation';
        END IF;
    END IF;
    SELECT array_agg(n.key) INTO changed
    FROM jsonb_each(new_row) AS n
    WHERE n.value IS DISTINCT FROM coalesce(old_row -> n.key, 'null'::jsonb);
    IF TG_OP = 'UPDATE' AND changed && ARRAY['portal', 'id', 'raw', 'date_modify', 'synced_at', 'deleted_at'] THEN
        RAISE EXCEPTION 'columns portal, id, raw, date_modify, synced_at and deleted_at of % are written by the sync only (to delete a record, DELETE its row)', TG_TABLE_NAME
            USING ERRCODE = 'check_violation';
    END IF;
    changed := array(SELECT c FROM unnest(changed) AS c
                     WHERE c NOT IN ('portal', 'id', 'raw', 'date_modify', 'synced_at', 'deleted_at'));
    SELECT string_agg(format('%s (%s: %s)', c.col, f.code,
                             coalesce(f.write_refusal, 'read-only in Bitrix24')), ', ')
               FILTER (WHERE f.code IS NOT NULL AND (f.write_refusal IS NOT NULL OR f.is_read_only)),
           string_agg(c.col, ', ') FILTER (WHERE f.code IS NULL)
    INTO refused, unknown
    FROM unnest(changed) AS c(col)
    LEFT JOIN _fields f
           ON f.portal = v_portal AND f.entity = v_entity AND f.removed_at IS NULL
          AND c.col IN (f.column_name, f.currency_column);
    IF refused IS NOT NULL THEN
        RAISE EXCEPTION 'back-sync cannot write % of %: %', CASE WHEN TG_OP = 'INSERT' THEN 'the new row' ELSE 'row ' || OLD.id END, TG_TABLE_NAME, refused
            USING ERRCODE = 'check_violation',
                  HINT = 'Only fields Bitrix24 lets back-sync write are pushed; see _fields.write_refusal.';
    END IF;
    IF unknown IS NOT NULL THEN
        RAISE EXCEPTION 'columns % of % hold no Bitrix24 field back-sync can write (a field the portal no longer reports, or one still being added)', unknown, TG_TABLE_NAME
            USING ERRCODE = 'check_violation';
    END IF;
    SELECT jsonb_object_agg(f.code,
               jsonb_build_object(f.column_name, _outbox_column_value(new_row, f.column_name, f.column_type))
               || CASE WHEN f.currency_column IS NULL THEN '{}'::jsonb
                       ELSE jsonb_build_object(f.currency_column, _outbox_column_value(new_row, f.currency_column, 'text')) END)
    INTO v_changes
    FROM _fields f
    WHERE f.portal = v_portal AND f.entity = v_entity AND f.removed_at IS NULL
      AND (f.column_name = ANY(changed) OR f.currency_column = ANY(changed));
    IF TG_OP = 'UPDATE' AND v_changes IS NULL THEN
        RETURN NULL;
    END IF;
    INSERT INTO _outbox (portal, entity, record_id, op, changes, seen_date_modify)
    VALUES (v_portal, v_entity, NEW.id,
            CASE TG_OP WHEN 'INSERT' THEN 'create' ELSE 'update' END,
            coalesce(v_changes, '{}'::jsonb),
            CASE TG_OP WHEN 'UPDATE' THEN OLD.date_modify END);
    RETURN NULL;
END
$$;
