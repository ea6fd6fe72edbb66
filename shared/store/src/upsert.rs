//! Bulk writes of mirror rows. One query finds which rows are new, changed or
//! unchanged; new rows are copied straight into the table, changed ones through a
//! staging table and one `INSERT ... ON CONFLICT`, unchanged ones are not sent.

use std::collections::HashMap;

use b24_domain::entity::Entity;
use b24_domain::schema::ColumnType;
use b24_domain::values::{ValueError, column_text, record_without_nul, to_copy_text};
use chrono::{DateTime, Utc};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio_postgres::Transaction;

use crate::copy::{CopyBuffer, copy_in};
use crate::layout::{LayoutColumn, portal_table_name};
use crate::{
    Context, Row, Store, StoreError, TableLayout, check_portal, quote_ident, to_db_id, to_db_ids,
};

/// What one `upsert` call did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UpsertStats {
    pub inserted: u64,
    pub updated: u64,
    /// Rows already stored as they are or with a later `DATE_MODIFY`, plus earlier
    /// copies of an ID given more than once in the call.
    pub unchanged: u64,
    /// Values that did not fit their column's type: stored as NULL, kept in `raw`.
    pub invalid_values: u64,
}

/// One row to write, with its `DATE_MODIFY` already converted.
struct Pending<'a> {
    id: i64,
    row: &'a Row,
    date_modify: Option<String>,
}

impl Store {
    /// Writes `rows` (as returned by `crm.<entity>.list` / `get`, keyed by Bitrix24
    /// codes, with `ID` and `DATE_MODIFY`) in a few statements. A row is rewritten
    /// only when it is missing, its `DATE_MODIFY` is later than the stored one, or the
    /// same with a different record (see [`supersedes`]); a soft-deleted row comes
    /// back. When an ID appears more than once, its last copy wins. Calls for one
    /// portal's entity take turns.
    pub async fn upsert(
        &self,
        portal: &str,
        entity: Entity,
        layout: &TableLayout,
        rows: &[Row],
    ) -> Result<UpsertStats, StoreError> {
        check_portal(portal)?;
        if layout.entity() != entity || layout.portal() != portal {
            return Err(StoreError::Invalid(format!(
                "the layout is for portal {:?}'s {}, not portal {portal:?}'s {entity}",
                layout.portal(),
                layout.entity()
            )));
        }
        if rows.is_empty() {
            return Ok(UpsertStats::default());
        }
        let latest = latest_by_id(rows)?;
        let table = layout.table();
        let mut invalid = InvalidValues::default();
        let pending: Vec<Pending> = latest
            .into_iter()
            .map(|(id, row)| {
                let date_modify = row.get("DATE_MODIFY").unwrap_or(&Value::Null);
                let date_modify = to_copy_text(ColumnType::Timestamptz, date_modify)
                    .unwrap_or_else(|e| invalid.note("date_modify", e));
                Pending {
                    id,
                    row,
                    date_modify,
                }
            })
            .collect();

        let mut client = self.client().await?;
        let tx = client.transaction().await.context("starting upsert")?;
        lock_rows(&tx, table, portal).await?;
        let ids: Vec<i64> = pending.iter().map(|p| p.id).collect();
        let versions: Vec<Option<DateTime<Utc>>> = pending
            .iter()
            .map(|p| parse_utc(p.date_modify.as_deref()))
            .collect();
        // The stored record's fingerprint comes back only when its version equals the
        // incoming one: only then does the content decide.
        let stored: HashMap<i64, Stored> = tx
            .query(
                // A join on the unnested IDs keeps the plan on the primary key whatever
                // the table's statistics say: `id = ANY($2)` with hundreds of IDs and no
                // statistics yet (a fresh table during its first big load) is estimated
                // as the whole table and scanned sequentially, per chunk.
                &format!(
                    "SELECT t.id, t.date_modify, t.deleted_at IS NOT NULL,
                            CASE WHEN t.date_modify = k.date_modify AND t.deleted_at IS NULL
                                 THEN sha256(convert_to(t.raw::text, 'UTF8')) END
                     FROM unnest($2::bigint[], $3::timestamptz[]) AS k(id, date_modify)
                     JOIN {table} t ON t.portal = $1 AND t.id = k.id"
                ),
                &[&portal, &ids, &versions],
            )
            .await
            .context(format_args!("reading stored versions from {table}"))?
            .iter()
            .map(|r| {
                let stored = Stored {
                    date_modify: r.get(1),
                    deleted: r.get(2),
                    same_version_fingerprint: r.get(3),
                };
                (r.get(0), stored)
            })
            .collect();
        let (mut new, mut changed) = (Vec::new(), Vec::new());
        for p in &pending {
            match stored.get(&p.id) {
                None => new.push(p),
                Some(stored) => {
                    if supersedes(stored, p.date_modify.as_deref(), p.row) {
                        changed.push(p);
                    }
                }
            }
        }

        let columns = layout.columns();
        let list: String = columns
            .iter()
            .map(|c| format!(", {}", quote_ident(&c.name)))
            .collect();
        let bytes_per_row = 512 + 48 * columns.len();
        let mut write =
            |buf: &mut CopyBuffer, p: &&Pending| write_row(buf, portal, p, columns, &mut invalid);
        let inserted = copy_in(
            &tx,
            &format!("COPY {table} (portal, id, raw, date_modify{list}) FROM STDIN"),
            &new,
            bytes_per_row,
            &mut write,
        )
        .await?;
        let updated = if changed.is_empty() {
            0
        } else {
            // Rows wider than the 2 kB default would be compressed on their way through
            // the staging table; a higher toast target keeps them as they are.
            let definitions: String = columns
                .iter()
                .map(|c| format!(", {} {}", quote_ident(&c.name), c.column_type.sql()))
                .collect();
            tx.batch_execute(&format!(
                "CREATE TEMP TABLE b24_stage (portal text, id bigint, raw jsonb, date_modify timestamptz{definitions})
                 WITH (toast_tuple_target = 8160) ON COMMIT DROP"
            ))
            .await
            .context("creating the upsert staging table")?;
            let copy = format!("COPY b24_stage (portal, id, raw, date_modify{list}) FROM STDIN");
            copy_in(&tx, &copy, &changed, bytes_per_row, &mut write).await?;
            update_from_stage(&tx, table, columns).await?
        };
        tx.commit().await.context("committing upsert")?;

        invalid.log(portal, entity);
        Ok(UpsertStats {
            inserted,
            updated,
            unchanged: (rows.len() as u64).saturating_sub(inserted + updated),
            invalid_values: invalid.total,
        })
    }

    /// Marks rows deleted (keeping their data); returns how many were live.
    pub async fn soft_delete(
        &self,
        portal: &str,
        entity: Entity,
        ids: &[u64],
    ) -> Result<u64, StoreError> {
        check_portal(portal)?;
        let ids = to_db_ids(ids)?;
        if ids.is_empty() {
            return Ok(0);
        }
        let table = self.portal_table(portal, entity);
        let mut client = self.client().await?;
        let tx = client.transaction().await.context("starting soft delete")?;
        lock_rows(&tx, &table, portal).await?;
        let sql = format!(
            "UPDATE {table} SET deleted_at = now(), synced_at = now()
             WHERE portal = $1 AND id = ANY($2) AND deleted_at IS NULL"
        );
        let deleted = match tx.execute(&sql, &[&portal, &ids]).await {
            Err(e) if is_undefined_table(&e) => return Ok(0),
            result => result.context(format_args!("soft-deleting {entity} rows"))?,
        };
        tx.commit().await.context("committing soft delete")?;
        Ok(deleted)
    }

    /// `portal`'s table of `entity`, schema-qualified and quoted.
    pub(crate) fn portal_table(&self, portal: &str, entity: Entity) -> String {
        self.table(&portal_table_name(entity, portal))
    }

    /// The live (not soft-deleted) IDs in `(after, up_to]`, ascending.
    pub async fn live_ids(
        &self,
        portal: &str,
        entity: Entity,
        after: u64,
        up_to: Option<u64>,
    ) -> Result<Vec<u64>, StoreError> {
        let versions = self.live_versions(portal, entity, after, up_to).await?;
        Ok(versions.into_iter().map(|(id, _)| id).collect())
    }

    /// Which of `ids` are live rows, ascending (what a soft delete of them would count).
    pub async fn live_among(
        &self,
        portal: &str,
        entity: Entity,
        ids: &[u64],
    ) -> Result<Vec<u64>, StoreError> {
        check_portal(portal)?;
        let ids = to_db_ids(ids)?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let client = self.client().await?;
        let sql = format!(
            "SELECT t.id FROM unnest($2::bigint[]) AS k(id)
             JOIN {} t ON t.portal = $1 AND t.id = k.id
             WHERE t.deleted_at IS NULL ORDER BY t.id",
            self.portal_table(portal, entity)
        );
        match client.query(&sql, &[&portal, &ids]).await {
            Err(e) if is_undefined_table(&e) => Ok(Vec::new()),
            result => Ok(result
                .context(format_args!("finding live {entity} rows by ID"))?
                .iter()
                .map(|r| r.get::<_, i64>(0) as u64)
                .collect()),
        }
    }

    /// The live rows in `(after, up_to]` with their `date_modify`, ascending by ID.
    pub async fn live_versions(
        &self,
        portal: &str,
        entity: Entity,
        after: u64,
        up_to: Option<u64>,
    ) -> Result<Vec<(u64, Option<DateTime<Utc>>)>, StoreError> {
        check_portal(portal)?;
        let after = to_db_id(after)?;
        let up_to = up_to.map(to_db_id).transpose()?;
        let client = self.client().await?;
        let sql = format!(
            "SELECT id, date_modify FROM {} WHERE portal = $1 AND deleted_at IS NULL AND id > $2 AND ($3::bigint IS NULL OR id <= $3)
             ORDER BY portal, id",
            self.portal_table(portal, entity)
        );
        match client.query(&sql, &[&portal, &after, &up_to]).await {
            Err(e) if is_undefined_table(&e) => Ok(Vec::new()),
            result => Ok(result
                .context(format_args!("listing live {entity} rows"))?
                .iter()
                .map(|r| (r.get::<_, i64>(0) as u64, r.get(1)))
                .collect()),
        }
    }
}

/// A JSON value serialised with the keys of every object in jsonb's storage order
/// (shorter keys first, then bytewise). jsonb sorts every object's keys on input;
/// PostgreSQL's sort returns at once on sorted input, which takes the largest single
/// cost off ingesting a wide record. Key order carries no meaning in jsonb, so nothing
/// else changes.
struct JsonbKeyOrder<'a>(&'a serde_json::Map<String, Value>);

impl serde::Serialize for JsonbKeyOrder<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut entries: Vec<(&String, &Value)> = self.0.iter().collect();
        entries.sort_unstable_by(|(a, _), (b, _)| {
            a.len()
                .cmp(&b.len())
                .then_with(|| a.as_bytes().cmp(b.as_bytes()))
        });
        serializer.collect_map(entries.into_iter().map(|(k, v)| (k, JsonbValue(v))))
    }
}

/// A value inside a record, its objects' keys in jsonb's order too.
struct JsonbValue<'a>(&'a Value);

impl serde::Serialize for JsonbValue<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Object(map) => JsonbKeyOrder(map).serialize(serializer),
            Value::Array(items) => serializer.collect_seq(items.iter().map(JsonbValue)),
            scalar => scalar.serialize(serializer),
        }
    }
}

/// Writes JSON the way PostgreSQL prints jsonb: `", "` between items, `": "` after keys.
struct JsonbTextFormatter;

impl serde_json::ser::Formatter for JsonbTextFormatter {
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        item_separator(writer, first)
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        item_separator(writer, first)
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
    ) -> std::io::Result<()> {
        writer.write_all(b": ")
    }
}

/// jsonb's `", "` before every item of an array or object but the first.
fn item_separator<W: ?Sized + std::io::Write>(writer: &mut W, first: bool) -> std::io::Result<()> {
    if first {
        Ok(())
    } else {
        writer.write_all(b", ")
    }
}

/// SHA-256 of the record as PostgreSQL prints it once stored (`raw::text`), to tell
/// an unchanged record without reading it back. A record printed differently (a float
/// in exponent form, which jsonb writes out in full) only misses this shortcut: it is
/// staged, and the exact jsonb comparison of the final `UPDATE` decides.
fn jsonb_fingerprint(record: &Row) -> Vec<u8> {
    let mut text = Vec::with_capacity(4096);
    let mut serializer = serde_json::Serializer::with_formatter(&mut text, JsonbTextFormatter);
    // Writing into memory cannot fail, and every key of a JSON object is a string.
    let _ =
        serde::Serialize::serialize(&JsonbKeyOrder(&record_without_nul(record)), &mut serializer);
    Sha256::digest(&text).to_vec()
}

/// Serialises writers of one portal's rows in a table, so the rows `upsert` found
/// missing are still missing when it copies them in.
pub(crate) async fn lock_rows(
    tx: &Transaction<'_>,
    table: &str,
    portal: &str,
) -> Result<(), StoreError> {
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext($1))",
        &[&format!("b24-store:rows:{table}:{portal}")],
    )
    .await
    .context("locking the portal's rows")?;
    Ok(())
}

/// What `upsert` reads of a stored row to decide whether to rewrite it.
struct Stored {
    date_modify: Option<DateTime<Utc>>,
    deleted: bool,
    /// [`jsonb_fingerprint`] of the stored record, read only when its `DATE_MODIFY`
    /// equals the incoming one.
    same_version_fingerprint: Option<Vec<u8>>,
}

/// Whether an incoming version replaces the stored one. A later `DATE_MODIFY` does (at
/// the microsecond precision PostgreSQL keeps); an earlier one never does, so late and
/// reordered reads leave the newest version in place. The same `DATE_MODIFY` replaces
/// a soft-deleted row, and a live one whose record differs: the portal's times have
/// whole seconds, so two changes within one second share one, and the read that comes
/// second carries the second change. A record that may differ is staged; the final
/// `UPDATE` compares the jsonb values themselves. Without a time on either side
/// nothing tells the versions apart, so the row is rewritten.
fn supersedes(stored: &Stored, incoming: Option<&str>, row: &Row) -> bool {
    match (
        stored.date_modify,
        incoming.map(DateTime::parse_from_rfc3339),
    ) {
        (Some(stored_at), Some(Ok(incoming_at))) => {
            let (stored_at, incoming_at) =
                (stored_at.timestamp_micros(), incoming_at.timestamp_micros());
            incoming_at > stored_at
                || (incoming_at == stored_at
                    && (stored.deleted
                        || stored.same_version_fingerprint.as_deref()
                            != Some(jsonb_fingerprint(row).as_slice())))
        }
        _ => true,
    }
}

fn parse_utc(time: Option<&str>) -> Option<DateTime<Utc>> {
    time.and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
}

fn write_row(
    buf: &mut CopyBuffer,
    portal: &str,
    p: &Pending,
    columns: &[LayoutColumn],
    invalid: &mut InvalidValues,
) -> Result<(), StoreError> {
    buf.text(portal);
    buf.text(&p.id.to_string());
    buf.json(&JsonbKeyOrder(&record_without_nul(p.row)))?;
    buf.optional(p.date_modify.as_deref());
    for c in columns {
        let value = p.row.get(&c.code).unwrap_or(&Value::Null);
        let text =
            column_text(c.part, c.column_type, value).unwrap_or_else(|e| invalid.note(&c.name, e));
        buf.optional(text.as_deref());
    }
    Ok(())
}

/// Moves the staged rows into the table; the `WHERE` re-checks what the caller
/// decided, under the row locks. Returns the rows written.
async fn update_from_stage(
    tx: &Transaction<'_>,
    table: &str,
    columns: &[LayoutColumn],
) -> Result<u64, StoreError> {
    let names: Vec<String> = columns.iter().map(|c| quote_ident(&c.name)).collect();
    let list: String = names.iter().map(|n| format!(", {n}")).collect();
    let assignments: String = names
        .iter()
        .map(|n| format!(", {n} = EXCLUDED.{n}"))
        .collect();
    tx.execute(
        &format!(
            "INSERT INTO {table} AS cur (portal, id, raw, date_modify, synced_at, deleted_at{list})
             SELECT portal, id, raw, date_modify, now(), NULL{list} FROM b24_stage
             ON CONFLICT (portal, id) DO UPDATE SET raw = EXCLUDED.raw, date_modify = EXCLUDED.date_modify,
                 synced_at = EXCLUDED.synced_at, deleted_at = NULL{assignments}
             WHERE cur.date_modify IS NULL OR EXCLUDED.date_modify IS NULL
                OR EXCLUDED.date_modify > cur.date_modify
                OR (EXCLUDED.date_modify = cur.date_modify
                    AND (cur.deleted_at IS NOT NULL OR EXCLUDED.raw <> cur.raw))"
        ),
        &[],
    )
    .await
    .context(format_args!("updating {table}"))
}

/// A table that was never created holds no rows.
fn is_undefined_table(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE)
}

/// The rows to write, one per ID (the last copy), in first-seen order.
fn latest_by_id(rows: &[Row]) -> Result<Vec<(i64, &Row)>, StoreError> {
    let mut position: HashMap<i64, usize> = HashMap::with_capacity(rows.len());
    let mut latest: Vec<(i64, &Row)> = Vec::with_capacity(rows.len());
    for (index, row) in rows.iter().enumerate() {
        let id =
            row_id(row).map_err(|reason| StoreError::Invalid(format!("row {index}: {reason}")))?;
        match position.get(&id) {
            Some(&at) => latest[at].1 = row,
            None => {
                position.insert(id, latest.len());
                latest.push((id, row));
            }
        }
    }
    Ok(latest)
}

fn row_id(row: &Row) -> Result<i64, String> {
    let id = match row.get("ID") {
        None | Some(Value::Null) => return Err("it has no ID".into()),
        Some(Value::String(s)) => s.trim().parse::<i64>().ok(),
        Some(Value::Number(n)) => n.as_i64(),
        Some(_) => None,
    };
    id.filter(|id| *id > 0)
        .ok_or_else(|| "its ID is not a positive integer".into())
}

/// Per-column counts of values that did not convert; logged without the values.
#[derive(Default)]
struct InvalidValues {
    total: u64,
    by_column: HashMap<String, (u64, ValueError)>,
}

impl InvalidValues {
    fn note(&mut self, column: &str, error: ValueError) -> Option<String> {
        self.total += 1;
        self.by_column
            .entry(column.to_string())
            .or_insert((0, error))
            .0 += 1;
        None
    }

    fn log(&self, portal: &str, entity: Entity) {
        for (column, (count, error)) in &self.by_column {
            tracing::warn!(portal, %entity, column, count, %error, "values stored as NULL (kept in raw)");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(v: Value) -> Row {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn the_last_copy_of_an_id_wins() {
        let rows = [
            row(json!({"ID": "1", "TITLE": "a"})),
            row(json!({"ID": 2, "TITLE": "b"})),
            row(json!({"ID": " 1 ", "TITLE": "c"})),
        ];
        let latest = latest_by_id(&rows).unwrap();
        assert_eq!(
            latest
                .iter()
                .map(|(id, r)| (*id, r["TITLE"].as_str().unwrap()))
                .collect::<Vec<_>>(),
            [(1, "c"), (2, "b")]
        );
    }

    #[test]
    fn a_later_version_or_a_different_record_of_the_same_second_wins() {
        let at = |t: &str| parse_utc(Some(t));
        let record =
            row(json!({"ID": "1", "TITLE": "a", "DATE_MODIFY": "2024-08-30T14:29:00+02:00"}));
        let stored = |raw: Option<&Row>, deleted: bool| Stored {
            date_modify: at("2024-08-30T12:29:00Z"),
            deleted,
            same_version_fingerprint: raw.map(jsonb_fingerprint),
        };
        let same_second = Some("2024-08-30T14:29:00+02:00");
        // Re-read as stored (keys in another order): nothing to write.
        let reordered: Row = record
            .iter()
            .rev()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        assert!(!supersedes(
            &stored(Some(&record), false),
            same_second,
            &reordered
        ));
        // A second change within the same second: same time, different record.
        let mut changed = record.clone();
        changed.insert("TITLE".into(), json!("b"));
        assert!(supersedes(
            &stored(Some(&record), false),
            same_second,
            &changed
        ));
        // A soft-deleted row comes back with the same version.
        assert!(supersedes(&stored(None, true), same_second, &record));
        // Later always wins, earlier never does, whatever the record.
        assert!(supersedes(
            &stored(Some(&record), false),
            Some("2024-08-30T14:29:01+02:00"),
            &record
        ));
        assert!(!supersedes(
            &stored(Some(&record), false),
            Some("2024-08-30T14:28:59+02:00"),
            &changed
        ));
        assert!(!supersedes(
            &stored(None, true),
            Some("2024-08-30T14:28:59+02:00"),
            &changed
        ));
        // No time on either side: rewrite.
        assert!(supersedes(&stored(Some(&record), false), None, &record));
    }

    #[tokio::test]
    async fn the_fingerprint_is_that_of_the_text_postgresql_prints() {
        let db = b24_testkit::TestDb::create().await;
        let client = db.client().await;
        let records = [
            json!({"ID": "1", "TITLE": "plain", "OPPORTUNITY": "1000000.00", "UF_CRM_1": null}),
            json!({"ID": "2", "PHONE": [{"ID": "156", "VALUE_TYPE": "WORK", "VALUE": "+13333333555", "TYPE_ID": "PHONE"}],
                   "PHOTO": {"id": 37375, "showUrl": "/show?a=1&b=2", "downloadUrl": "/dl"},
                   "UF_CRM_LIST": [], "UF_CRM_EMPTY": {}, "UF_CRM_FLAGS": [true, false, null, 12, -3, 2.5]}),
            json!({"ID": "3", "COMMENTS": "quote \" backslash \\ tab \t newline \n cr \r bell \u{7} del \u{7f} nul \u{0}",
                   "TITLE": "Zürich – 東京 🚀 / slash", "A": "", "BB": "same length", "AA": "order"}),
        ];
        for record in records {
            let record = row(record);
            let printed: Vec<u8> = client
                .query_one(
                    "SELECT sha256(convert_to($1::jsonb::text, 'UTF8'))",
                    &[&Value::Object(record_without_nul(&record).into_owned())],
                )
                .await
                .unwrap()
                .get(0);
            assert_eq!(printed, jsonb_fingerprint(&record), "{record:?}");
        }
    }

    #[test]
    fn rows_without_a_usable_id_are_named_in_the_error() {
        for bad in [
            json!({"TITLE": "x"}),
            json!({"ID": "abc"}),
            json!({"ID": -4}),
            json!({"ID": [1]}),
            json!({"ID": null}),
        ] {
            let rows = [row(json!({"ID": "1"})), row(bad.clone())];
            let err = latest_by_id(&rows).unwrap_err().to_string();
            assert!(err.contains("row 1"), "{bad}: {err}");
        }
    }
}
