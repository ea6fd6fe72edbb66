//! Column storage of one entity's records.
//!
//! A million deals must fit in well under 2 GB, so records are kept column by column
//! in typed vectors (8 bytes for a number or an instant, 4 for a status code, 1 for a
//! flag) and rendered to JSON only when read. IDs only grow, so the ID column is
//! sorted and `>ID` windows are found by binary search; deleted rows stay as
//! tombstones so positions never shift.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use crate::schema::{Entity, FieldDef, Kind, ValueType, multifield_value_types};
use crate::values::{
    PortalClock, format_money, is_empty_input, parse_flag, parse_float, parse_int, parse_money,
    parse_money_uf, scalar_text,
};

const NULL_INT: i64 = i64::MIN;
const NULL_DAY: i32 = i32::MIN;
const NULL_CODE: u32 = u32::MAX;
const NULL_FLAG: u8 = 2;

/// A value on its way into a column.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Stored {
    Null,
    Int(i64),
    Float(f64),
    Flag(bool),
    Str(Box<str>),
    Day(i32),
    Time(i64),
    /// Values of a multiple user field.
    List(Box<[Stored]>),
    /// Multi-field items as rendered.
    Json(Box<Value>),
}

impl Stored {
    pub fn cell(&self) -> Cell<'_> {
        match self {
            Stored::Null => Cell::Null,
            Stored::Int(v) => Cell::Int(*v),
            Stored::Float(v) => Cell::Float(*v),
            Stored::Flag(v) => Cell::Flag(*v),
            Stored::Str(v) => Cell::Str(v),
            Stored::Day(v) => Cell::Day(*v),
            Stored::Time(v) => Cell::Time(*v),
            Stored::List(v) => Cell::List(v),
            Stored::Json(v) => Cell::Json(v),
        }
    }
}

/// A value read from a column.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Cell<'a> {
    Null,
    Int(i64),
    Float(f64),
    Flag(bool),
    Str(&'a str),
    Day(i32),
    Time(i64),
    List(&'a [Stored]),
    Json(&'a Value),
}

enum Column {
    Int(Vec<i64>),
    Float(Vec<f64>),
    Flag(Vec<u8>),
    Code(Vec<u32>),
    Text(Vec<Option<Box<str>>>),
    Day(Vec<i32>),
    Time(Vec<i64>),
    List(Vec<Option<Box<[Stored]>>>),
    Json(Vec<Option<Box<Value>>>),
}

impl Column {
    fn for_field(field: &FieldDef) -> Column {
        if field.multiple && field.value_type != ValueType::Multifield {
            return Column::List(Vec::new());
        }
        match field.value_type {
            ValueType::Integer | ValueType::Enumeration | ValueType::Money | ValueType::File => {
                Column::Int(Vec::new())
            }
            ValueType::Double => Column::Float(Vec::new()),
            ValueType::Char | ValueType::Boolean => Column::Flag(Vec::new()),
            ValueType::Code => Column::Code(Vec::new()),
            ValueType::Text | ValueType::MoneyUf => Column::Text(Vec::new()),
            ValueType::Date => Column::Day(Vec::new()),
            ValueType::DateTime => Column::Time(Vec::new()),
            ValueType::Multifield => Column::Json(Vec::new()),
        }
    }

    fn push(&mut self, value: Stored, codes: &mut Interner) {
        match self {
            Column::Int(v) => v.push(NULL_INT),
            Column::Float(v) => v.push(f64::NAN),
            Column::Flag(v) => v.push(NULL_FLAG),
            Column::Code(v) => v.push(NULL_CODE),
            Column::Text(v) => v.push(None),
            Column::Day(v) => v.push(NULL_DAY),
            Column::Time(v) => v.push(NULL_INT),
            Column::List(v) => v.push(None),
            Column::Json(v) => v.push(None),
        }
        let row = self.len() - 1;
        self.set(row, value, codes);
    }

    fn len(&self) -> usize {
        match self {
            Column::Int(v) | Column::Time(v) => v.len(),
            Column::Float(v) => v.len(),
            Column::Flag(v) => v.len(),
            Column::Code(v) => v.len(),
            Column::Text(v) => v.len(),
            Column::Day(v) => v.len(),
            Column::List(v) => v.len(),
            Column::Json(v) => v.len(),
        }
    }

    /// Stores a value; a value of another kind than the column's is stored as null
    /// (parsing per field type makes that impossible for input).
    fn set(&mut self, row: usize, value: Stored, codes: &mut Interner) {
        match (self, value) {
            (Column::Int(v), Stored::Int(x)) | (Column::Time(v), Stored::Time(x)) => v[row] = x,
            (Column::Int(v) | Column::Time(v), _) => v[row] = NULL_INT,
            (Column::Float(v), Stored::Float(x)) => v[row] = x,
            (Column::Float(v), _) => v[row] = f64::NAN,
            (Column::Flag(v), Stored::Flag(x)) => v[row] = u8::from(x),
            (Column::Flag(v), _) => v[row] = NULL_FLAG,
            (Column::Code(v), Stored::Str(x)) => v[row] = codes.intern(&x),
            (Column::Code(v), _) => v[row] = NULL_CODE,
            (Column::Text(v), Stored::Str(x)) => v[row] = Some(x),
            (Column::Text(v), _) => v[row] = None,
            (Column::Day(v), Stored::Day(x)) => v[row] = x,
            (Column::Day(v), _) => v[row] = NULL_DAY,
            (Column::List(v), Stored::List(x)) => v[row] = (!x.is_empty()).then_some(x),
            (Column::List(v), _) => v[row] = None,
            (Column::Json(v), Stored::Json(x)) => {
                v[row] = x.as_array().is_some_and(|a| !a.is_empty()).then_some(x)
            }
            (Column::Json(v), _) => v[row] = None,
        }
    }

    fn get<'a>(&'a self, row: usize, codes: &'a Interner) -> Cell<'a> {
        match self {
            Column::Int(v) => match v[row] {
                NULL_INT => Cell::Null,
                x => Cell::Int(x),
            },
            Column::Time(v) => match v[row] {
                NULL_INT => Cell::Null,
                x => Cell::Time(x),
            },
            Column::Float(v) => match v[row] {
                x if x.is_nan() => Cell::Null,
                x => Cell::Float(x),
            },
            Column::Flag(v) => match v[row] {
                NULL_FLAG => Cell::Null,
                x => Cell::Flag(x == 1),
            },
            Column::Code(v) => match v[row] {
                NULL_CODE => Cell::Null,
                x => Cell::Str(codes.get(x)),
            },
            Column::Text(v) => v[row].as_deref().map_or(Cell::Null, Cell::Str),
            Column::Day(v) => match v[row] {
                NULL_DAY => Cell::Null,
                x => Cell::Day(x),
            },
            Column::List(v) => v[row].as_deref().map_or(Cell::Null, Cell::List),
            Column::Json(v) => v[row].as_deref().map_or(Cell::Null, Cell::Json),
        }
    }
}

/// Status codes and currencies repeat a lot: keep each once.
#[derive(Default)]
struct Interner {
    ids: HashMap<Box<str>, u32>,
    strings: Vec<Box<str>>,
}

impl Interner {
    fn intern(&mut self, text: &str) -> u32 {
        if let Some(&id) = self.ids.get(text) {
            return id;
        }
        let id = self.strings.len() as u32;
        self.strings.push(text.into());
        self.ids.insert(text.into(), id);
        id
    }

    fn get(&self, id: u32) -> &str {
        self.strings.get(id as usize).map_or("", |s| s)
    }
}

/// Columns with a role the portal maintains itself, found by the names each kind of
/// table gives them (`DATE_MODIFY` on the classic entities, `UPDATED_TIME` on smart
/// processes).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Roles {
    pub created_time: Option<usize>,
    pub updated_time: Option<usize>,
    pub created_by: Option<usize>,
    pub updated_by: Option<usize>,
    pub moved_time: Option<usize>,
    pub moved_by: Option<usize>,
    /// `STAGE_ID` (deals, smart processes) or `STATUS_ID` (leads).
    pub stage: Option<usize>,
    pub previous_stage: Option<usize>,
    pub category: Option<usize>,
}

impl Roles {
    fn find(fields: &[FieldDef]) -> Roles {
        let column = |names: &[&str]| fields.iter().position(|f| names.contains(&f.name.as_str()));
        Roles {
            created_time: column(&["DATE_CREATE", "CREATED_TIME"]),
            updated_time: column(&["DATE_MODIFY", "UPDATED_TIME"]),
            created_by: column(&["CREATED_BY_ID", "CREATED_BY"]),
            updated_by: column(&["MODIFY_BY_ID", "UPDATED_BY"]),
            moved_time: column(&["MOVED_TIME"]),
            moved_by: column(&["MOVED_BY_ID", "MOVED_BY"]),
            stage: column(&["STAGE_ID", "STATUS_ID"]),
            previous_stage: column(&["PREVIOUS_STAGE_ID"]),
            category: column(&["CATEGORY_ID"]),
        }
    }
}

/// Every record of one entity.
pub(crate) struct Table {
    pub kind: Kind,
    /// The columns the portal maintains (standard fields, so user fields never move them).
    pub roles: Roles,
    pub fields: Vec<FieldDef>,
    columns: Vec<Column>,
    index: HashMap<String, usize>,
    live: Vec<bool>,
    live_count: usize,
    pub next_id: u64,
    pub ids: IdCounters,
    codes: Interner,
    /// Records the webhook's user may not read, as after a role change.
    hidden: Option<Hiding>,
    /// Uploaded files by ID (seeded file values have generated content instead).
    files: HashMap<i64, StoredFile>,
}

/// A file in a file field: its name and bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StoredFile {
    pub name: String,
    pub bytes: Vec<u8>,
}

/// A seeded share of records hidden from the webhook's user: a record is hidden
/// when a hash of its ID and the seed falls below the share, so the same records
/// stay hidden however often they are read, and new records follow the same rule.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Hiding {
    pub share: f64,
    pub seed: u64,
}

impl Hiding {
    fn hides(&self, id: u64) -> bool {
        // SplitMix64's finalizer: a well-mixed 64-bit value from ID and seed.
        let mut x = id ^ self.seed.rotate_left(32) ^ 0x9e37_79b9_7f4a_7c15;
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^= x >> 31;
        ((x >> 11) as f64 / (1u64 << 53) as f64) < self.share
    }
}

/// Who reads a record: `get` (and the dump) or `list`, which show empty user
/// fields differently.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reader {
    Get,
    List,
}

/// IDs the portal hands out for multi-field items and uploaded files.
pub(crate) struct IdCounters {
    next_multifield_id: u64,
    next_file_id: u64,
}

impl IdCounters {
    pub fn file(&mut self) -> i64 {
        let id = self.next_file_id;
        self.next_file_id += 1;
        id as i64
    }

    pub fn multifield(&mut self) -> u64 {
        let id = self.next_multifield_id;
        self.next_multifield_id += 1;
        id
    }
}

/// Column 0 of every table is `ID`.
pub(crate) const ID_COLUMN: usize = 0;

impl Table {
    pub fn new(kind: impl Into<Kind>, fields: Vec<FieldDef>) -> Table {
        let columns = fields.iter().map(Column::for_field).collect();
        let index = fields
            .iter()
            .enumerate()
            .map(|(i, f)| (f.name.clone(), i))
            .collect();
        Table {
            kind: kind.into(),
            roles: Roles::find(&fields),
            fields,
            columns,
            index,
            live: Vec::new(),
            live_count: 0,
            next_id: 1,
            ids: IdCounters {
                next_multifield_id: 1,
                next_file_id: 1,
            },
            codes: Interner::default(),
            hidden: None,
            files: HashMap::new(),
        }
    }

    /// The column of a field name, case-sensitively as in `filter`, `select` and
    /// `order` (`id` is no field: the portal drops it silently).
    pub fn column(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    /// The column of a field name in `add`/`update` fields: exact, else upper-cased.
    pub fn writable_column(&self, name: &str) -> Option<usize> {
        self.column(name)
            .or_else(|| self.column(&name.to_ascii_uppercase()))
    }

    /// The classic entity this table holds, if it holds one.
    pub fn entity(&self) -> Option<Entity> {
        match self.kind {
            Kind::Classic(entity) => Some(entity),
            _ => None,
        }
    }

    /// `deal`, `contact`... for a classic entity; `dynamic` for a smart process.
    fn entity_name(&self) -> &'static str {
        match self.kind {
            Kind::Classic(entity) => entity.as_str(),
            Kind::Smart(_) => "dynamic",
            Kind::Users => "user",
        }
    }

    /// Hides a share of the records from the webhook's user (`None` shows all).
    pub fn set_hiding(&mut self, hiding: Option<Hiding>) {
        self.hidden = hiding;
    }

    /// Live records the webhook's user may not read.
    pub fn hidden_count(&self) -> usize {
        (0..self.rows())
            .filter(|&row| self.live[row] && self.is_hidden(row))
            .count()
    }

    /// Whether the webhook's user may not read the record at `row`.
    pub fn is_hidden(&self, row: usize) -> bool {
        self.hidden.is_some_and(|h| h.hides(self.id_at(row)))
    }

    /// Live and readable by the webhook's user: what `list` sees.
    pub fn is_visible(&self, row: usize) -> bool {
        self.live[row] && !self.is_hidden(row)
    }

    pub fn rows(&self) -> usize {
        self.live.len()
    }

    pub fn live_count(&self) -> usize {
        self.live_count
    }

    pub fn is_live(&self, row: usize) -> bool {
        self.live[row]
    }

    pub fn id_at(&self, row: usize) -> u64 {
        match &self.columns[ID_COLUMN] {
            Column::Int(ids) => ids[row] as u64,
            _ => 0,
        }
    }

    /// The first row whose ID is greater than `id` (or equal, with `inclusive`).
    pub fn first_row_after(&self, id: i64, inclusive: bool) -> usize {
        match &self.columns[ID_COLUMN] {
            Column::Int(ids) => ids.partition_point(|&x| if inclusive { x < id } else { x <= id }),
            _ => 0,
        }
    }

    /// The live row holding `id`.
    pub fn row_of(&self, id: u64) -> Option<usize> {
        let id = i64::try_from(id).ok()?;
        let row = self.first_row_after(id, true);
        (row < self.rows() && self.id_at(row) == id as u64 && self.live[row]).then_some(row)
    }

    pub fn cell(&self, row: usize, column: usize) -> Cell<'_> {
        self.columns[column].get(row, &self.codes)
    }

    pub fn live_ids(&self) -> Vec<u64> {
        (0..self.rows())
            .filter(|&r| self.live[r])
            .map(|r| self.id_at(r))
            .collect()
    }

    /// Appends a record; `values` is aligned with `fields` and starts with the ID.
    pub fn push(&mut self, values: Vec<Stored>) {
        for (column, value) in self.columns.iter_mut().zip(values) {
            column.push(value, &mut self.codes);
        }
        self.live.push(true);
        self.live_count += 1;
    }

    pub fn set(&mut self, row: usize, column: usize, value: Stored) {
        self.columns[column].set(row, value, &mut self.codes);
    }

    pub fn delete(&mut self, row: usize) {
        if std::mem::replace(&mut self.live[row], false) {
            self.live_count -= 1;
        }
    }

    /// Adds a field; `value_for_row` gives every existing record its value.
    pub fn add_field(&mut self, field: FieldDef, mut value_for_row: impl FnMut(usize) -> Stored) {
        let mut column = Column::for_field(&field);
        for row in 0..self.rows() {
            column.push(value_for_row(row), &mut self.codes);
        }
        self.index.insert(field.name.clone(), self.fields.len());
        self.fields.push(field);
        self.columns.push(column);
    }

    /// The schema and the ID counters at once, for generating records.
    pub fn fields_and_ids(&mut self) -> (&[FieldDef], &mut IdCounters) {
        (&self.fields, &mut self.ids)
    }

    /// The JSON the portal returns for one field of one record; `None` when the
    /// portal leaves the key out (fields it never returns, empty multi-fields and
    /// empty single file user fields). Empty values: `""` for standard dates and
    /// datetimes, `""` (get) or `null` (list) for user fields, `null` otherwise.
    pub fn render(
        &self,
        row: usize,
        column: usize,
        clock: &PortalClock,
        reader: Reader,
    ) -> Option<Value> {
        let field = &self.fields[column];
        if !field.readable {
            return None;
        }
        let cell = self.cell(row, column);
        let user_field = field.user_field.is_some();
        match (field.value_type, cell) {
            (ValueType::Multifield, Cell::Null) => None,
            (ValueType::File, Cell::Null) if user_field && !field.multiple => None,
            (_, Cell::List(items)) => Some(Value::Array(
                items
                    .iter()
                    .map(|item| self.render_scalar(field, row, item.cell(), clock))
                    .collect(),
            )),
            (_, Cell::Null) if field.multiple => Some(Value::Array(Vec::new())),
            (_, Cell::Null) if user_field => Some(match reader {
                Reader::Get => Value::from(""),
                Reader::List => Value::Null,
            }),
            (ValueType::Date | ValueType::DateTime, Cell::Null) => Some(Value::from("")),
            _ => Some(self.render_scalar(field, row, cell, clock)),
        }
    }

    fn render_scalar(
        &self,
        field: &FieldDef,
        row: usize,
        cell: Cell<'_>,
        clock: &PortalClock,
    ) -> Value {
        match (field.value_type, cell) {
            (_, Cell::Null) => Value::Null,
            (ValueType::Money, Cell::Int(cents)) => Value::String(format_money(cents)),
            (ValueType::File, Cell::Int(file_id)) => self.file_object(field, row, file_id),
            (_, Cell::Int(v)) => Value::String(v.to_string()),
            (_, Cell::Float(v)) => Value::String(v.to_string()),
            (ValueType::Boolean, Cell::Flag(v)) => Value::from(if v { "1" } else { "0" }),
            (_, Cell::Flag(v)) => Value::from(if v { "Y" } else { "N" }),
            (_, Cell::Str(v)) => Value::from(v),
            (_, Cell::Day(v)) => Value::String(clock.format_day(v)),
            (_, Cell::Time(v)) => Value::String(clock.format_secs(v)),
            (_, Cell::List(_)) => Value::Null,
            (_, Cell::Json(v)) => v.clone(),
        }
    }

    fn file_object(&self, field: &FieldDef, row: usize, file_id: i64) -> Value {
        let owner = self.id_at(row);
        let field_name: String = form_urlencoded::byte_serialize(field.name.as_bytes()).collect();
        let page = format!(
            "/bitrix/components/bitrix/crm.{}.show/show_file.php",
            self.entity_name()
        );
        let dynamic = if field.user_field.is_some() { "Y" } else { "N" };
        let query =
            format!("ownerId={owner}&fieldName={field_name}&dynamic={dynamic}&fileId={file_id}");
        json!({
            "id": file_id,
            "showUrl": format!("{page}?{query}"),
            "downloadUrl": format!("{page}?auth=&{query}"),
        })
    }

    /// Parses a client's value for a field. `row` is the record being updated
    /// (multi-fields merge into what it holds).
    pub fn parse_input(
        &mut self,
        column: usize,
        row: Option<usize>,
        input: &Value,
        clock: &PortalClock,
    ) -> Result<Stored, String> {
        let field = &self.fields[column];
        let name = field.name.clone();
        let result = if field.value_type == ValueType::Multifield {
            self.merge_multifield(column, row, input)
        } else if field.multiple
            && field.value_type == ValueType::File
            && file_pair(input).is_some()
        {
            // `["name.ext", "<base64>"]` in a multiple field is one file, not two items.
            self.parse_file(input)
                .map(|file| Stored::List(vec![file].into_boxed_slice()))
        } else if field.multiple {
            let items = list_items(input);
            let mut parsed = Vec::with_capacity(items.len());
            for item in items {
                match self.parse_single(column, item, clock)? {
                    Stored::Null => {}
                    value => parsed.push(value),
                }
            }
            Ok(Stored::List(parsed.into_boxed_slice()))
        } else {
            self.parse_single(column, input, clock)
        };
        result.map_err(|problem| format!("Field '{name}': {problem}"))
    }

    fn parse_single(
        &mut self,
        column: usize,
        input: &Value,
        clock: &PortalClock,
    ) -> Result<Stored, String> {
        let field = &self.fields[column];
        let shown = || compact(input);
        if field.value_type == ValueType::File {
            return self.parse_file(input);
        }
        if is_empty_input(input) {
            return Ok(Stored::Null);
        }
        let stored = match field.value_type {
            ValueType::Integer => parse_int(input)
                .map(Stored::Int)
                .ok_or_else(|| format!("{} is not an integer", shown()))?,
            ValueType::Enumeration => {
                let id =
                    parse_int(input).ok_or_else(|| format!("{} is not a list item ID", shown()))?;
                let items = field
                    .user_field
                    .as_ref()
                    .map(|uf| uf.items.as_slice())
                    .unwrap_or_default();
                if !items.iter().any(|(item, _)| *item == id) {
                    let known: Vec<String> = items.iter().map(|(i, _)| i.to_string()).collect();
                    return Err(format!(
                        "{id} is not one of the list items ({})",
                        known.join(", ")
                    ));
                }
                Stored::Int(id)
            }
            ValueType::Money => parse_money(input)
                .map(Stored::Int)
                .ok_or_else(|| format!("{} is not an amount", shown()))?,
            ValueType::Double => parse_float(input)
                .map(Stored::Float)
                .ok_or_else(|| format!("{} is not a number", shown()))?,
            ValueType::Char | ValueType::Boolean => parse_flag(input)
                .map(Stored::Flag)
                .ok_or_else(|| format!("{} is not Y/N", shown()))?,
            ValueType::Code | ValueType::Text => scalar_text(input)
                .map(|s| Stored::Str(s.into()))
                .ok_or_else(|| format!("{} is not a string", shown()))?,
            ValueType::MoneyUf => scalar_text(input)
                .and_then(|s| parse_money_uf(&s))
                .map(|s| Stored::Str(s.into()))
                .ok_or_else(|| {
                    format!("{} is not an amount|currency pair such as 300|RUB", shown())
                })?,
            ValueType::Date => scalar_text(input)
                .and_then(|s| clock.parse_date(&s))
                .map(Stored::Day)
                .ok_or_else(|| format!("{} is not a date (YYYY-MM-DD)", shown()))?,
            ValueType::DateTime => scalar_text(input)
                .and_then(|s| clock.parse_datetime(&s))
                .map(Stored::Time)
                .ok_or_else(|| {
                    format!("{} is not a datetime (YYYY-MM-DDThh:mm:ss+hh:mm)", shown())
                })?,
            ValueType::File | ValueType::Multifield => Stored::Null,
        };
        Ok(stored)
    }

    /// `{"fileData": ["name.ext", "<base64>"]}` or `["name.ext", "<base64>"]` uploads a
    /// file; `{"id": N}` keeps one; an empty value clears the field.
    fn parse_file(&mut self, input: &Value) -> Result<Stored, String> {
        if is_empty_input(input) {
            return Ok(Stored::Null);
        }
        if let Some(id) = input
            .get("id")
            .or_else(|| input.get("ID"))
            .and_then(parse_int)
        {
            return Ok(Stored::Int(id));
        }
        let upload = input.get("fileData").unwrap_or(input);
        let Some((name, content)) = file_pair(upload) else {
            return Err(
                "expected {\"fileData\": [\"name.ext\", \"<base64 content>\"]}, [\"name.ext\", \"<base64 content>\"] or {\"id\": N}"
                    .to_string(),
            );
        };
        let bytes = decode_base64(content)
            .ok_or_else(|| format!("the content of file '{name}' is not valid base64"))?;
        let id = self.ids.file();
        let name = if name.trim().is_empty() {
            format!("file{id}")
        } else {
            name.to_string()
        };
        self.files.insert(id, StoredFile { name, bytes });
        Ok(Stored::Int(id))
    }

    /// The file `file_id` when the record's field `field_name` holds it. Seeded file
    /// values were never uploaded: their content is generated from the IDs.
    pub fn file_in(&self, row: usize, field_name: &str, file_id: i64) -> Option<StoredFile> {
        let column = self.column(field_name)?;
        if self.fields[column].value_type != ValueType::File || !self.is_live(row) {
            return None;
        }
        let holds = match self.cell(row, column) {
            Cell::Int(id) => id == file_id,
            Cell::List(items) => items
                .iter()
                .any(|item| matches!(item.cell(), Cell::Int(id) if id == file_id)),
            _ => false,
        };
        if !holds {
            return None;
        }
        Some(self.files.get(&file_id).cloned().unwrap_or_else(|| {
            StoredFile {
                name: format!("file{file_id}.txt"),
                bytes: format!(
                    "File {file_id} of {} {} ({field_name})\n",
                    self.entity_name(),
                    self.id_at(row)
                )
                .into_bytes(),
            }
        }))
    }

    /// Applies the documented multi-field update rules: an item with `ID` changes
    /// that item (or deletes it with `DELETE=Y` or an empty `VALUE`), an item
    /// without `ID` is added, items not mentioned stay.
    fn merge_multifield(
        &mut self,
        column: usize,
        row: Option<usize>,
        input: &Value,
    ) -> Result<Stored, String> {
        let code = self.fields[column].name.clone();
        let mut current: Vec<Value> = match row.map(|r| self.cell(r, column)) {
            Some(Cell::Json(Value::Array(items))) => items.clone(),
            _ => Vec::new(),
        };
        if !(input.is_array() || input.is_object()) {
            return Err("expected an array of {VALUE, VALUE_TYPE} items".to_string());
        }
        for item in list_items(input) {
            let Some(item) = item.as_object() else {
                return Err(format!("item {} is not an object", compact(item)));
            };
            let get = |key: &str| {
                item.iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(key))
                    .map(|(_, v)| v)
            };
            let value = get("VALUE").and_then(scalar_text).unwrap_or_default();
            let delete = get("DELETE").and_then(parse_flag).unwrap_or(false);
            let value_type = match get("VALUE_TYPE").and_then(scalar_text) {
                Some(t) => {
                    let t = t.to_ascii_uppercase();
                    if !multifield_value_types(&code).contains(&t.as_str()) {
                        return Err(format!(
                            "VALUE_TYPE '{t}' is not one of {}",
                            multifield_value_types(&code).join(", ")
                        ));
                    }
                    Some(t)
                }
                None => None,
            };
            match get("ID").and_then(parse_int) {
                Some(id) => {
                    let id_text = id.to_string();
                    let position = current
                        .iter()
                        .position(|c| c["ID"].as_str() == Some(id_text.as_str()));
                    match position {
                        Some(p) if delete || value.is_empty() => {
                            current.remove(p);
                        }
                        Some(p) => {
                            current[p]["VALUE"] = Value::String(value);
                            if let Some(t) = value_type {
                                current[p]["VALUE_TYPE"] = Value::String(t);
                            }
                        }
                        None => return Err(format!("item ID {id} does not belong to this record")),
                    }
                }
                None if value.is_empty() || delete => {}
                None => {
                    let id = self.ids.multifield();
                    current.push(json!({
                        "ID": id.to_string(),
                        "VALUE_TYPE": value_type.unwrap_or_else(|| "WORK".to_string()),
                        "VALUE": value,
                        "TYPE_ID": code,
                    }));
                }
            }
        }
        Ok(Stored::Json(Box::new(Value::Array(current))))
    }
}

/// The elements of a list as PHP sees them: a JSON array, the values of an object
/// with numeric keys (form encoding), or a single scalar.
pub(crate) fn list_items(value: &Value) -> Vec<&Value> {
    match value {
        Value::Array(items) => items.iter().collect(),
        Value::Object(map) => map.values().collect(),
        Value::Null => Vec::new(),
        other => vec![other],
    }
}

/// `["name.ext", "<base64>"]` (also as an object keyed 0 and 1, as forms send it).
fn file_pair(value: &Value) -> Option<(&str, &str)> {
    let items = match value {
        Value::Array(_) | Value::Object(_) => list_items(value),
        _ => return None,
    };
    match items.as_slice() {
        [Value::String(name), Value::String(content)] => Some((name, content)),
        _ => None,
    }
}

/// Standard base64 as PHP's `base64_encode` writes it; line breaks are allowed.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    if compact.is_empty() {
        return None;
    }
    base64::engine::general_purpose::STANDARD
        .decode(compact)
        .ok()
}

/// A short rendering of a bad input value for an error message.
fn compact(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 60 {
        format!("{}...", text.chars().take(60).collect::<String>())
    } else {
        text
    }
}

/// The row as an object of the given fields, as `reader` sees it.
pub(crate) fn render_row(
    table: &Table,
    row: usize,
    columns: &[usize],
    clock: &PortalClock,
    reader: Reader,
) -> Map<String, Value> {
    let mut out = Map::with_capacity(columns.len());
    for &column in columns {
        if let Some(value) = table.render(row, column, clock, reader) {
            out.insert(table.fields[column].name.clone(), value);
        }
    }
    out
}
