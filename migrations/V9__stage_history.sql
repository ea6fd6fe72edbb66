-- Stage history (`crm.stagehistory.list`): every move of a deal, lead or smart-process
-- item between stages and funnels, as the portal records it. Append-only: an entry never
-- changes, so the sync reads only entries after the newest one it has (see the README,
-- "Stage history"). New table only.
CREATE TABLE stage_history (
    portal            text        NOT NULL,
    -- 1 lead, 2 deal, or a smart process's entityTypeId.
    entity_type_id    integer     NOT NULL,
    id                bigint      NOT NULL,
    owner_id          bigint,
    -- 1 created, 2 moved to an intermediate stage, 3 to a final stage, 5 funnel changed.
    type_id           bigint,
    created_time      timestamptz,
    category_id       bigint,
    -- STAGE_ID (deals, smart processes) or STATUS_ID (leads); their semantics P, S, F.
    stage_id          text,
    stage_semantic_id text,
    raw               jsonb       NOT NULL,
    synced_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (portal, entity_type_id, id)
);
CREATE INDEX stage_history_owner ON stage_history (portal, entity_type_id, owner_id, created_time);
