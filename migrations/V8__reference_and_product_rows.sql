-- Data people join the mirror against (see the README, "Reference tables and product
-- rows"): funnels and stages, currencies, users, and the product rows of deals and smart
-- processes. One table each for every portal (a `portal` column), refreshed by the sync:
-- a reference table is replaced as a whole per portal, an owner's product rows as a
-- whole per owner. New tables only: nothing existing is locked or rewritten.

-- Funnels (`crm.category.list`), per entity type: deals (2) and smart processes.
CREATE TABLE crm_category (
    portal         text        NOT NULL,
    entity_type_id integer     NOT NULL,
    id             bigint      NOT NULL,
    name           text,
    sort           integer,
    is_default     boolean,
    raw            jsonb       NOT NULL,
    synced_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (portal, entity_type_id, id)
);

-- Reference lists (`crm.status.list`): every ENTITY_ID, deal and smart-process stages
-- (`DEAL_STAGE`, `DEAL_STAGE_<category>`, `DT<type>_<category>:...`), lead statuses,
-- sources, types...
CREATE TABLE crm_status (
    portal      text        NOT NULL,
    entity_id   text        NOT NULL,
    status_id   text        NOT NULL,
    name        text,
    sort        integer,
    category_id bigint,
    semantics   text,
    color       text,
    raw         jsonb       NOT NULL,
    synced_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (portal, entity_id, status_id)
);

-- Currencies (`crm.currency.list`).
CREATE TABLE crm_currency (
    portal     text        NOT NULL,
    currency   text        NOT NULL,
    full_name  text,
    is_base    boolean,
    amount     numeric,
    amount_cnt integer,
    sort       integer,
    raw        jsonb       NOT NULL,
    synced_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (portal, currency)
);

-- Users (`user.get`, every page: it has no modification-time filter).
CREATE TABLE bitrix_user (
    portal        text        NOT NULL,
    id            bigint      NOT NULL,
    active        boolean,
    name          text,
    last_name     text,
    second_name   text,
    email         text,
    work_position text,
    raw           jsonb       NOT NULL,
    synced_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (portal, id)
);

-- Product rows (`crm.item.productrow.list`) of deals (`owner_type` D) and of smart
-- processes that link products (T followed by the type's ID in hexadecimal).
CREATE TABLE product_row (
    portal        text        NOT NULL,
    id            bigint      NOT NULL,
    owner_type    text        NOT NULL,
    owner_id      bigint      NOT NULL,
    product_id    bigint,
    product_name  text,
    price         numeric,
    quantity      numeric,
    discount_rate numeric,
    discount_sum  numeric,
    tax_rate      numeric,
    tax_included  boolean,
    measure_code  integer,
    measure_name  text,
    sort          integer,
    raw           jsonb       NOT NULL,
    synced_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (portal, id)
);
CREATE INDEX product_row_owner ON product_row (portal, owner_type, owner_id);
