-- The deal-forwarding robot's ledger (see the README, "Service tables", and
-- shared/store/src/ledger.rs): one row per route and source deal, so a source deal gets
-- exactly one target deal across retries, concurrent invocations and ambiguous failures.
-- A new table only: nothing existing is locked or rewritten.

CREATE TABLE _forward_ledger (
    route          text        NOT NULL,
    source_portal  text        NOT NULL,
    source_deal_id bigint      NOT NULL,
    target_portal  text        NOT NULL,
    -- Known once an add or a lookup on the target found the deal; never changed after.
    target_deal_id bigint,
    -- pending (waiting for a retry), adding / updating (a claim holds the lease),
    -- done (the last run forwarded the deal), failed (given up; the job is in the DLQ).
    state          text        NOT NULL CHECK (state IN ('pending', 'adding', 'updating', 'done', 'failed')),
    -- An add may have been applied without its answer arriving: look the deal up on
    -- the target before adding again. Cleared only when the target deal is recorded.
    ambiguous      boolean     NOT NULL DEFAULT false,
    -- Failed runs since the last successful forward, and the last one's error.
    attempts       integer     NOT NULL DEFAULT 0,
    last_error     text,
    -- The claim working on the row: a random id the claimant chose (so a retried claim
    -- statement recognises its own lease) and when the lease ends (a crashed claimant
    -- blocks the deal until then, no longer).
    lease_id       bigint,
    lease_until    timestamptz,
    -- Successful forwards: the add, then one per update a re-run robot made.
    forwards       integer     NOT NULL DEFAULT 0,
    forwarded_at   timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (route, source_portal, source_deal_id),
    CHECK (target_deal_id IS NOT NULL OR state <> 'updating'),
    CHECK ((lease_until IS NULL) = (state NOT IN ('adding', 'updating')))
);

-- The listings: one route's latest forwards, and every route's unfinished ones (the
-- status page's backlog; done rows, the vast majority, are not in this index).
CREATE INDEX _forward_ledger_route_updated ON _forward_ledger (route, updated_at DESC);
CREATE INDEX _forward_ledger_open_updated ON _forward_ledger (updated_at DESC) WHERE state <> 'done';
