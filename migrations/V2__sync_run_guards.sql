-- Every sync mode resumes from its own checkpoint, deletions wait for the end of a
-- run's listing, and each run records how it ended. Only nullable columns without
-- defaults are added: a catalog change that takes its lock for an instant.

-- Incremental: the `>=DATE_MODIFY` bound of the unfinished pass, the last ID it wrote,
-- and the cursor it adopts when it completes. Reconcile: the last ID it compared.
ALTER TABLE _sync_state
    ADD COLUMN incremental_since    text,
    ADD COLUMN incremental_after_id bigint,
    ADD COLUMN incremental_target   text,
    ADD COLUMN reconcile_checkpoint bigint;

-- completed, stopped (time box; continues from its checkpoint), refused (too many
-- deletions without confirmation) or failed; the counts behind a refusal.
ALTER TABLE _sync_runs
    ADD COLUMN outcome      text,
    ADD COLUMN would_delete bigint,
    ADD COLUMN live_rows    bigint;

-- IDs a full sync or reconcile found gone from the portal (confirmed by a lookup by
-- ID), soft-deleted only when the listing has ended and the deletion guard allows it.
CREATE TABLE _sync_pending_deletes (
    portal text   NOT NULL,
    entity text   NOT NULL,
    mode   text   NOT NULL,
    id     bigint NOT NULL,
    PRIMARY KEY (portal, entity, mode, id)
);
