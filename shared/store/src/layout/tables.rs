//! Where a portal's rows live: one table per portal and entity, named from the portal
//! name and recorded in `_mirror_tables`; the cross-portal view of each entity; and the
//! way every schema change runs, so it never queues readers behind it for long.

use std::collections::HashMap;
use std::error::Error as _;
use std::time::Duration;

use b24_domain::entity::Entity;
use b24_domain::schema::{ColumnType, MAX_IDENTIFIER_BYTES, SYSTEM_COLUMNS, check_identifier};
use sha2::{Digest, Sha256};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, GenericClient, Transaction};

use crate::{Context, Store, StoreError, quote_ident};

/// Hex digits of the portal name's SHA-256 appended when the name alone cannot be used.
const HASH_DIGITS: usize = 8;

/// The table of `portal`'s `entity`: `<entity>__<portal>` when the portal name is
/// already a lower-case identifier (`deal__acme`); otherwise every character outside
/// `[a-z0-9_]` becomes `_`, upper case is lowered, and the first hex digits of the exact
/// name's SHA-256 follow, so `Acme`, `acme-1` and `acme_1` get different tables
/// (`deal__acme_1_4f0c3b2a`). Long names are cut to fit 63 bytes before the hash.
/// The result always passes `check_identifier`, whatever the portal name holds.
pub(crate) fn portal_table_name(entity: Entity, portal: &str) -> String {
    let prefix = format!("{}__", entity.as_str());
    let slug: String = portal
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '_' => c,
            'A'..='Z' => c.to_ascii_lowercase(),
            _ => '_',
        })
        .collect();
    if slug == portal && prefix.len() + slug.len() <= MAX_IDENTIFIER_BYTES {
        return prefix + &slug;
    }
    let hash: String = Sha256::digest(portal.as_bytes())
        .iter()
        .take(HASH_DIGITS / 2)
        .map(|b| format!("{b:02x}"))
        .collect();
    // The slug is ASCII, so any byte length is a character boundary.
    let room = MAX_IDENTIFIER_BYTES - prefix.len() - 1 - HASH_DIGITS;
    format!("{prefix}{}_{hash}", &slug[..slug.len().min(room)])
}

/// One attempt at a schema change waits this long for its lock. A waiting `ALTER`
/// queues every later reader of the table behind it, so readers wait at most this.
const LOCK_WAIT: Duration = Duration::from_millis(200);
/// Attempts per run; between them the queued readers get through.
const LOCK_ATTEMPTS: u32 = 5;
const LOCK_PAUSE: Duration = Duration::from_millis(300);

/// Attempts at a schema change whose lock waits end after [`LOCK_WAIT`], a few per
/// run. When the lock is never granted the change is left for a later run (logged),
/// never an error:
///
/// ```text
/// let mut attempts = ShortLock::new(&what);
/// let done = loop {
///     let Some(tx) = attempts.begin(client).await? else { break None };
///     let result = change(&tx).await;
///     if let Some(done) = attempts.end(tx, result).await? { break Some(done) }
/// };
/// ```
pub(crate) struct ShortLock<'a> {
    what: &'a str,
    attempt: u32,
}

impl<'a> ShortLock<'a> {
    pub(crate) fn new(what: &'a str) -> Self {
        ShortLock { what, attempt: 0 }
    }

    /// The transaction of the next attempt; `None` once every attempt has waited in
    /// vain.
    pub(crate) async fn begin<'c>(
        &mut self,
        client: &'c mut Client,
    ) -> Result<Option<Transaction<'c>>, StoreError> {
        if self.attempt == LOCK_ATTEMPTS {
            tracing::warn!(
                what = self.what,
                "the table is in use: change left for a later run (values stay in raw)"
            );
            return Ok(None);
        }
        if self.attempt > 0 {
            tokio::time::sleep(LOCK_PAUSE).await;
        }
        self.attempt += 1;
        let tx = client
            .transaction()
            .await
            .context(format_args!("starting {}", self.what))?;
        tx.batch_execute(&format!(
            "SET LOCAL lock_timeout = '{}ms'",
            LOCK_WAIT.as_millis()
        ))
        .await
        .context("setting the lock timeout")?;
        Ok(Some(tx))
    }

    /// Commits the attempt's work, or rolls it back: `None` to try again when its
    /// lock was not granted in time, the error otherwise.
    pub(crate) async fn end<T>(
        &mut self,
        tx: Transaction<'_>,
        result: Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        let what = self.what;
        match result {
            Ok(value) => {
                tx.commit()
                    .await
                    .context(format_args!("committing {what}"))?;
                Ok(Some(value))
            }
            Err(e) => {
                tx.rollback()
                    .await
                    .context(format_args!("rolling back {what}"))?;
                if sql_state(&e) != Some(&SqlState::LOCK_NOT_AVAILABLE) {
                    return Err(e);
                }
                tracing::debug!(what, attempt = self.attempt, "lock not granted in time");
                Ok(None)
            }
        }
    }
}

/// The server's error code behind a store error, if a database error caused it.
pub(crate) fn sql_state(error: &StoreError) -> Option<&SqlState> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = error.source();
    while let Some(e) = cause {
        if let Some(db) = e.downcast_ref::<tokio_postgres::Error>() {
            return db.code();
        }
        cause = e.source();
    }
    None
}

/// Takes a transaction-scoped advisory lock named `key`.
pub(crate) async fn advisory_lock(tx: &Transaction<'_>, key: &str) -> Result<(), StoreError> {
    tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&key])
        .await
        .context("taking an advisory lock")?;
    Ok(())
}

/// `CREATE TABLE IF NOT EXISTS` for a portal table with its system columns and
/// `columns` (name, SQL type).
pub(crate) async fn create_portal_table(
    tx: &Transaction<'_>,
    table: &str,
    columns: &[(String, String)],
) -> Result<(), StoreError> {
    // lz4 compresses the raw records several times faster than the default pglz.
    let has_lz4: bool = tx
        .query_one(
            "SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'",
            &[],
        )
        .await
        .context("checking for lz4 support")?
        .get(0);
    let raw_compression = if has_lz4 { " COMPRESSION lz4" } else { "" };
    let extra: String = columns
        .iter()
        .map(|(name, sql_type)| format!(",\n    {} {sql_type}", quote_ident(name)))
        .collect();
    tx.batch_execute(&format!(
        "CREATE TABLE IF NOT EXISTS {table} (
            portal      text        NOT NULL,
            id          bigint      NOT NULL,
            raw         jsonb{raw_compression} NOT NULL,
            date_modify timestamptz,
            synced_at   timestamptz NOT NULL DEFAULT now(),
            deleted_at  timestamptz{extra},
            PRIMARY KEY (portal, id)
        )"
    ))
    .await
    .context(format_args!("creating {table}"))
}

/// Records that `table_name` holds `portal`'s `entity`, filled under the rules of
/// `mapping_version` (kept when it is registered already); an error when the name is
/// already another portal's (so two portals never share columns).
pub(crate) async fn register_table(
    tx: &Transaction<'_>,
    store: &Store,
    portal: &str,
    entity: Entity,
    table_name: &str,
    mapping_version: i32,
) -> Result<(), StoreError> {
    let registry = store.table("_mirror_tables");
    tx.execute(
        &format!(
            "INSERT INTO {registry} (portal, entity, table_name, mapping_version) VALUES ($1, $2, $3, $4)
             ON CONFLICT DO NOTHING"
        ),
        &[&portal, &entity.as_str(), &table_name, &mapping_version],
    )
    .await
    .context("registering the portal table")?;
    let owner = table_owner(tx, store, table_name).await?;
    check_owner(owner.as_ref(), portal, entity, table_name)
}

/// The (portal, entity) registered for `table_name`.
pub(crate) async fn table_owner(
    client: &impl GenericClient,
    store: &Store,
    table_name: &str,
) -> Result<Option<(String, String)>, StoreError> {
    Ok(client
        .query_opt(
            &format!(
                "SELECT portal, entity FROM {} WHERE table_name = $1",
                store.table("_mirror_tables")
            ),
            &[&table_name],
        )
        .await
        .context("reading the portal table registry")?
        .map(|r| (r.get(0), r.get(1))))
}

pub(crate) fn check_owner(
    owner: Option<&(String, String)>,
    portal: &str,
    entity: Entity,
    table_name: &str,
) -> Result<(), StoreError> {
    match owner {
        Some((p, e)) if p != portal || e != entity.as_str() => Err(StoreError::Invalid(format!(
            "portal {portal:?} would store its {entity} rows in table {table_name:?}, which holds portal {p:?}'s {e}; rename one of the portals"
        ))),
        _ => Ok(()),
    }
}

/// A portal table as the cross-portal view reads it.
#[derive(Debug)]
pub(crate) struct ViewSource {
    pub table_name: String,
    /// The portal name as an SQL string literal (quoted by the server).
    pub portal_literal: String,
    /// Column names and `format_type` types, in table order.
    pub columns: Vec<(String, String)>,
}

/// The view of one entity across portals: the system columns and every standard
/// (non-`UF_`) field column all portal tables have, as text where their types differ.
/// Each branch names its portal as a constant, so a query for one portal reads one
/// table. User-field columns stay in the portal tables (and in `raw`).
pub(crate) fn view_definition(schema: &str, sources: &[ViewSource]) -> String {
    let mut shared: Vec<(&str, Vec<&str>)> = Vec::new();
    if let Some((first, rest)) = sources.split_first() {
        for (name, sql_type) in &first.columns {
            let standard = !name.starts_with("uf_") && check_identifier(name).is_ok();
            if !standard || SYSTEM_COLUMNS.contains(&name.as_str()) {
                continue;
            }
            let types: Option<Vec<&str>> = rest
                .iter()
                .map(|s| {
                    s.columns
                        .iter()
                        .find(|(n, _)| n == name)
                        .map(|(_, t)| t.as_str())
                })
                .collect();
            if let Some(mut types) = types {
                types.push(sql_type);
                shared.push((name, types));
            }
        }
    }
    shared.sort_by(|a, b| a.0.cmp(b.0));
    let column_list: String = shared
        .iter()
        .map(|(name, types)| {
            let quoted = quote_ident(name);
            if types.windows(2).all(|w| w[0] == w[1]) {
                format!(", {quoted}")
            } else {
                format!(", {quoted}::{} AS {quoted}", ColumnType::Text.sql())
            }
        })
        .collect();
    let system: String = SYSTEM_COLUMNS[1..]
        .iter()
        .map(|c| format!(", {}", quote_ident(c)))
        .collect();
    sources
        .iter()
        .map(|s| {
            format!(
                "SELECT {}::text AS portal{system}{column_list} FROM {}.{}",
                s.portal_literal,
                quote_ident(schema),
                quote_ident(&s.table_name)
            )
        })
        .collect::<Vec<_>>()
        .join("\nUNION ALL\n")
}

/// Brings the entity's view up to date with its portal tables, inside the caller's
/// transaction; `force` recreates it even when its definition did not change (after
/// the caller dropped it). A view other objects depend on is left as it is (logged).
pub(crate) async fn refresh_view(
    tx: &Transaction<'_>,
    store: &Store,
    entity: Entity,
    force: bool,
) -> Result<(), StoreError> {
    let view = store.mirror_table(entity);
    advisory_lock(tx, &format!("b24-store:view:{view}")).await?;
    let kind: Option<i8> = tx
        .query_opt(
            "SELECT relkind FROM pg_class WHERE oid = to_regclass($1)",
            &[&view],
        )
        .await
        .context("looking up the entity view")?
        .map(|r| r.get(0));
    if kind == Some(b'r' as i8) {
        // The shared table of an older version: replaced once its rows are moved.
        return Ok(());
    }
    let registered = tx
        .query(
            &format!(
                "SELECT table_name, quote_literal(portal) FROM {}
                 WHERE entity = $1 AND to_regclass(quote_ident($2) || '.' || quote_ident(table_name)) IS NOT NULL
                 ORDER BY portal",
                store.table("_mirror_tables")
            ),
            &[&entity.as_str(), &store.schema()],
        )
        .await
        .context("listing the portal tables")?;
    if registered.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = registered.iter().map(|r| r.get(0)).collect();
    let mut columns: HashMap<String, Vec<(String, String)>> = HashMap::new();
    for r in tx
        .query(
            "SELECT c.relname::text, a.attname::text, format_type(a.atttypid, a.atttypmod)
             FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
             WHERE c.relnamespace = to_regnamespace($1) AND c.relname = ANY($2)
               AND a.attnum > 0 AND NOT a.attisdropped
             ORDER BY c.relname, a.attnum",
            &[&store.schema(), &names],
        )
        .await
        .context("reading the portal tables' columns")?
    {
        columns
            .entry(r.get(0))
            .or_default()
            .push((r.get(1), r.get(2)));
    }
    let sources: Vec<ViewSource> = registered
        .iter()
        .map(|r| {
            let table_name: String = r.get(0);
            ViewSource {
                columns: columns.remove(&table_name).unwrap_or_default(),
                table_name,
                portal_literal: r.get(1),
            }
        })
        .collect();
    let definition = view_definition(store.schema(), &sources);
    let views = store.table("_mirror_views");
    let stored: Option<String> = tx
        .query_opt(
            &format!("SELECT definition FROM {views} WHERE entity = $1"),
            &[&entity.as_str()],
        )
        .await
        .context("reading the stored view definition")?
        .map(|r| r.get(0));
    if !force && kind == Some(b'v' as i8) && stored.as_deref() == Some(definition.as_str()) {
        return Ok(());
    }
    if !replace_view(tx, &view, &definition).await? {
        return Ok(());
    }
    tx.execute(
        &format!(
            "INSERT INTO {views} (entity, definition) VALUES ($1, $2)
             ON CONFLICT (entity) DO UPDATE SET definition = EXCLUDED.definition, updated_at = now()"
        ),
        &[&entity.as_str(), &definition],
    )
    .await
    .context("recording the view definition")?;
    tracing::info!(%view, portals = sources.len(), "cross-portal view updated");
    Ok(())
}

/// `CREATE OR REPLACE VIEW`, or drop and create when the columns changed in a way
/// replacing cannot express. False (logged) when other objects depend on the view.
async fn replace_view(
    tx: &Transaction<'_>,
    view: &str,
    definition: &str,
) -> Result<bool, StoreError> {
    let savepoint = |sql: &'static str| async move {
        tx.batch_execute(sql)
            .await
            .context("managing the view savepoint")
    };
    savepoint("SAVEPOINT b24_view").await?;
    let replaced = tx
        .batch_execute(&format!("CREATE OR REPLACE VIEW {view} AS {definition}"))
        .await
        .context(format_args!("replacing view {view}"));
    match replaced {
        Ok(()) => return savepoint("RELEASE SAVEPOINT b24_view").await.map(|()| true),
        Err(e) if sql_state(&e) == Some(&SqlState::LOCK_NOT_AVAILABLE) => return Err(e),
        Err(_) => savepoint("ROLLBACK TO SAVEPOINT b24_view").await?,
    }
    let recreated = tx
        .batch_execute(&format!(
            "DROP VIEW IF EXISTS {view}; CREATE VIEW {view} AS {definition}"
        ))
        .await
        .context(format_args!("recreating view {view}"));
    match recreated {
        Ok(()) => savepoint("RELEASE SAVEPOINT b24_view").await.map(|()| true),
        Err(e) if sql_state(&e) == Some(&SqlState::LOCK_NOT_AVAILABLE) => Err(e),
        Err(e) => {
            savepoint("ROLLBACK TO SAVEPOINT b24_view").await?;
            tracing::warn!(%view, error = %e, "the cross-portal view keeps its old definition");
            Ok(false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_portal_names_are_kept_and_others_get_a_hash() {
        assert_eq!(portal_table_name(Entity::Deal, "acme"), "deal__acme");
        assert_eq!(
            portal_table_name(Entity::Company, "shop_2"),
            "company__shop_2"
        );
        let dashed = portal_table_name(Entity::Deal, "acme-1");
        let underscored = portal_table_name(Entity::Deal, "acme_1");
        let upper = portal_table_name(Entity::Deal, "Acme_1");
        assert!(dashed.starts_with("deal__acme_1_"), "{dashed}");
        assert_eq!(underscored, "deal__acme_1");
        assert_ne!(dashed, upper);
        assert_eq!(dashed.len(), "deal__acme_1_".len() + HASH_DIGITS);
        // Stable: the same name every time, on every machine.
        assert_eq!(dashed, portal_table_name(Entity::Deal, "acme-1"));
    }

    #[test]
    fn hostile_and_long_portal_names_become_safe_identifiers() {
        let long_a = "a".repeat(200);
        let long_b = format!("{}b", "a".repeat(199));
        for portal in [
            "x\"; DROP TABLE b24.deal; --",
            "a'b",
            "ünïcode.bitrix24.de",
            " ",
            "\\",
            "\0",
            &long_a,
            &long_b,
            &"Z".repeat(300),
        ] {
            for entity in Entity::ALL {
                let name = portal_table_name(entity, portal);
                assert!(check_identifier(&name).is_ok(), "{portal:?} -> {name:?}");
                assert!(name.len() <= MAX_IDENTIFIER_BYTES, "{name}");
                assert!(name.starts_with(&format!("{}__", entity.as_str())));
            }
        }
        assert_ne!(
            portal_table_name(Entity::Company, &long_a),
            portal_table_name(Entity::Company, &long_b)
        );
    }

    fn source(table: &str, portal: &str, columns: &[(&str, &str)]) -> ViewSource {
        ViewSource {
            table_name: table.into(),
            portal_literal: format!("'{portal}'"),
            columns: SYSTEM_COLUMNS
                .iter()
                .map(|c| (c.to_string(), "x".to_string()))
                .chain(columns.iter().map(|(n, t)| (n.to_string(), t.to_string())))
                .collect(),
        }
    }

    #[test]
    fn the_view_has_the_standard_columns_every_portal_has() {
        let a = source(
            "deal__a",
            "a",
            &[
                ("title", "text"),
                ("opportunity", "numeric"),
                ("uf_crm_x", "bigint"),
                ("stage_id", "text"),
                ("_retype_9", "text"),
            ],
        );
        let b = source(
            "deal__b",
            "b",
            &[
                ("uf_crm_x", "bigint"),
                ("stage_id", "text"),
                ("opportunity", "text"),
                ("title", "text"),
            ],
        );
        let sql = view_definition("b24", &[a, b]);
        let branches: Vec<&str> = sql.split("\nUNION ALL\n").collect();
        assert_eq!(
            branches,
            [
                "SELECT 'a'::text AS portal, \"id\", \"raw\", \"date_modify\", \"synced_at\", \"deleted_at\", \
                 \"opportunity\"::text AS \"opportunity\", \"stage_id\", \"title\" FROM \"b24\".\"deal__a\"",
                "SELECT 'b'::text AS portal, \"id\", \"raw\", \"date_modify\", \"synced_at\", \"deleted_at\", \
                 \"opportunity\"::text AS \"opportunity\", \"stage_id\", \"title\" FROM \"b24\".\"deal__b\"",
            ]
        );
    }
}
