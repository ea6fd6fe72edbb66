//! Markdown describing every mirror table and column: for each column its PostgreSQL
//! type and, for field columns, the Bitrix24 code, title (a user field's label), type,
//! whether Bitrix24 lets it be written, and the items of enumeration fields with their
//! labels. Served at `/schema.md` and printed by `b24sync schema-doc`. Pure.

use std::collections::HashMap;
use std::fmt::Write as _;

use b24_domain::entity::Entity;
use b24_store::{ColumnInfo, MirrorTableSchema};

/// Which tables to describe.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SchemaFilter {
    pub portal: Option<String>,
    pub entity: Option<Entity>,
}

impl SchemaFilter {
    fn admits(&self, table: &MirrorTableSchema) -> bool {
        self.portal.as_ref().is_none_or(|p| *p == table.portal)
            && self.entity.is_none_or(|e| e == table.entity)
    }
}

/// What the columns every mirror table has hold.
const SYSTEM_COLUMNS: [(&str, &str); 6] = [
    ("portal", "the portal the row came from, as configured"),
    (
        "id",
        "the Bitrix24 `ID` (negative for a row inserted in PostgreSQL that back-sync has not created in Bitrix24 yet)",
    ),
    (
        "raw",
        "the whole record as Bitrix24 returned it, every field included",
    ),
    (
        "date_modify",
        "Bitrix24 `DATE_MODIFY`: when the record last changed on the portal",
    ),
    ("synced_at", "when the sync last wrote the row"),
    (
        "deleted_at",
        "when the sync found the record deleted in Bitrix24; NULL for live rows",
    ),
];

/// The document for `tables` (as [`b24_store::Store::mirror_schema`] returns them) in
/// `schema`, limited by `filter`.
pub fn render(schema: &str, tables: &[MirrorTableSchema], filter: &SchemaFilter) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# The PostgreSQL mirror: tables and columns\n");
    let _ = writeln!(
        out,
        "Schema {}. One table per portal and entity; `{schema}.deal`, `{schema}.contact`, \
         `{schema}.lead` and `{schema}.company` are views across portals of the columns every \
         portal's table has. Live rows are `WHERE deleted_at IS NULL`. Enumeration values are \
         item IDs; their labels are listed under each table and kept in `{schema}._field_items`.\n",
        code(schema)
    );
    let chosen: Vec<&MirrorTableSchema> = tables.iter().filter(|t| filter.admits(t)).collect();
    if chosen.is_empty() {
        let _ = writeln!(
            out,
            "No mirror table yet: the first sync of an entity creates its table."
        );
    }
    for table in chosen {
        table_section(&mut out, schema, table);
    }
    out
}

fn table_section(out: &mut String, schema: &str, table: &MirrorTableSchema) {
    let _ = writeln!(
        out,
        "## {}: portal {}, {}\n",
        code(&format!("{schema}.{}", table.table_name)),
        code(&table.portal),
        table.entity
    );
    let _ = writeln!(
        out,
        "| Column | PostgreSQL type | Bitrix24 field | Title | Bitrix24 type | Writable in Bitrix24 | Notes |"
    );
    let _ = writeln!(out, "| --- | --- | --- | --- | --- | --- | --- |");
    let mut by_column: HashMap<&str, (&ColumnInfo, bool)> = HashMap::new();
    for field in &table.fields {
        if let Some(column) = &field.column {
            by_column.entry(column).or_insert((field, false));
        }
        if let Some(currency) = &field.currency_column {
            by_column.entry(currency).or_insert((field, true));
        }
    }
    for (name, pg_type) in &table.columns {
        let system = SYSTEM_COLUMNS.iter().find(|(n, _)| n == name);
        // ID and DATE_MODIFY are fields stored in system columns.
        let field = by_column.get(name.as_str());
        let row = match (system, field) {
            (_, Some((field, is_currency))) => {
                field_row(name, pg_type, field, *is_currency, system)
            }
            (Some((_, meaning)), None) => {
                format!(
                    "| {} | {} | | | | no | {meaning} |",
                    code(name),
                    cell(pg_type)
                )
            }
            (None, None) if name.starts_with("_retype_") => format!(
                "| {} | {} | | | | | the text copy of a field whose type changed, being filled from `raw`; it takes the old column's place when full |",
                code(name),
                cell(pg_type)
            ),
            (None, None) => format!(
                "| {} | {} | | | | | no field recorded for this column (added by hand, or by an earlier version) |",
                code(name),
                cell(pg_type)
            ),
        };
        let _ = writeln!(out, "{row}");
    }
    let without_column: Vec<&ColumnInfo> =
        table.fields.iter().filter(|f| f.column.is_none()).collect();
    if !without_column.is_empty() {
        let _ = writeln!(
            out,
            "\nFields without a column (their values are only in `raw`):\n"
        );
        let _ = writeln!(out, "| Bitrix24 field | Title | Bitrix24 type | Why |");
        let _ = writeln!(out, "| --- | --- | --- | --- |");
        for field in without_column {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} |",
                code(&field.code),
                cell(title(field)),
                cell(&bitrix_type(field)),
                cell(
                    field
                        .rejected_reason
                        .as_deref()
                        .unwrap_or("not stored in a column")
                )
            );
        }
    }
    for field in table.fields.iter().filter(|f| !f.items.is_empty()) {
        let _ = writeln!(
            out,
            "\nItems of {} ({}), column {}:\n",
            code(&field.code),
            cell(title(field)),
            code(field.column.as_deref().unwrap_or("raw only"))
        );
        let _ = writeln!(out, "| Item ID | Label |");
        let _ = writeln!(out, "| --- | --- |");
        for item in &field.items {
            let _ = writeln!(out, "| {} | {} |", code(&item.id), cell(&item.value));
        }
    }
    out.push('\n');
}

fn field_row(
    name: &str,
    pg_type: &str,
    field: &ColumnInfo,
    is_currency: bool,
    system: Option<&(&str, &str)>,
) -> String {
    let mut notes: Vec<String> = Vec::new();
    if let Some((_, meaning)) = system {
        notes.push((*meaning).to_string());
    }
    if is_currency {
        notes.push(format!(
            "the currency of {}",
            code(field.column.as_deref().unwrap_or_default())
        ));
    } else if let Some(currency) = &field.currency_column {
        notes.push(format!("the amount; its currency is in {}", code(currency)));
    }
    if field.is_multiple {
        notes.push("multiple values, as a JSON array".into());
    }
    if !field.items.is_empty() {
        notes.push(format!(
            "an item ID; {} items listed below",
            field.items.len()
        ));
    }
    if let Some(removed) = field.removed_at {
        notes.push(format!(
            "removed from the portal on {}; the column keeps its data",
            removed.format("%Y-%m-%d")
        ));
    }
    let title = if is_currency {
        format!("{} (currency)", title(field))
    } else {
        title(field).to_string()
    };
    format!(
        "| {} | {} | {} | {} | {} | {} | {} |",
        code(name),
        cell(pg_type),
        code(&field.code),
        cell(&title),
        cell(&bitrix_type(field)),
        if field.is_read_only {
            "no (read-only)"
        } else {
            "yes"
        },
        notes.join("; ")
    )
}

/// A user field's label, else the field's title.
fn title(field: &ColumnInfo) -> &str {
    field.label.as_deref().unwrap_or(&field.title)
}

fn bitrix_type(field: &ColumnInfo) -> String {
    let kind = if field.is_dynamic { ", user field" } else { "" };
    format!("{}{kind}", field.bitrix_type)
}

/// A name as inline code, safe in a table cell: a backtick cannot end the span early
/// (it becomes `'`) and a pipe is escaped, which GitHub's tables undo inside code.
fn code(text: &str) -> String {
    let inner: String = text
        .chars()
        .map(|c| match c {
            '`' => '\'',
            '\r' | '\n' => ' ',
            c => c,
        })
        .collect();
    format!("`{}`", inner.replace('|', "\\|"))
}

/// Text safe inside a Markdown table cell: no line breaks, pipes escaped, and the
/// characters Markdown or HTML would act on backslash-escaped (a label is the portal
/// user's free text).
fn cell(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\r' | '\n' => out.push(' '),
            '\\' | '|' | '`' | '*' | '_' | '[' | ']' | '<' | '>' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_cannot_break_the_table_or_inject_markup() {
        assert_eq!(cell("a|b\nc"), "a\\|b c");
        assert_eq!(cell("<script>"), "\\<script\\>");
        assert_eq!(cell("uf_crm_1"), "uf\\_crm\\_1");
        assert_eq!(code("uf_crm_1"), "`uf_crm_1`");
        assert_eq!(code("a`b|c"), "`a'b\\|c`");
    }
}
