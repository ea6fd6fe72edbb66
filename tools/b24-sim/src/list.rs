//! `crm.*.list`: select masks, filter operators, order and the two paging modes
//! (`start >= 0` with a count, `start = -1` without).

use std::cmp::Ordering;

use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::params::param;
use crate::schema::FieldDef;
use crate::schema::ValueType;
use crate::table::{Cell, ID_COLUMN, Reader, Table, list_items, render_row};
use crate::values::{
    PortalClock, is_empty_input, parse_flag, parse_float, parse_int, parse_money, scalar_text,
};

/// Rows in one page, as on the portal.
pub(crate) const PAGE: usize = 50;

/// One page of a list answer: the rows, `total` and `next`.
pub(crate) type Paged = (Vec<Value>, Option<usize>, Option<usize>);

#[derive(Clone, Copy, Debug, PartialEq)]
enum Op {
    Eq,
    NotEq,
    Gt,
    Ge,
    Lt,
    Le,
    /// `%`: contains, case-insensitive.
    Contains,
    NotContains,
    /// `=%` / `%=`: SQL LIKE with the client's own `%` and `_`.
    Like,
    NotLike,
}

/// Filter prefixes, longest first so `>=` is not read as `>`.
const PREFIXES: &[(&str, Op, bool)] = &[
    ("!=%", Op::NotLike, false),
    ("!%=", Op::NotLike, false),
    ("!@", Op::NotEq, true),
    ("!%", Op::NotContains, false),
    ("!=", Op::NotEq, false),
    (">=", Op::Ge, false),
    ("<=", Op::Le, false),
    ("=%", Op::Like, false),
    ("%=", Op::Like, false),
    ("@", Op::Eq, true),
    ("%", Op::Contains, false),
    (">", Op::Gt, false),
    ("<", Op::Lt, false),
    ("=", Op::Eq, false),
    ("!", Op::NotEq, false),
];

/// An operand parsed for the field's type. `Unusable` (an object where a value
/// was expected, e.g. an unresolved batch reference) matches nothing.
#[derive(Clone, Debug, PartialEq)]
enum Operand {
    Null,
    Int(i64),
    Float(f64),
    Flag(bool),
    Text(String),
    Day(i32),
    Time(i64),
    Unusable,
}

#[derive(Debug)]
struct Condition {
    column: usize,
    op: Op,
    /// Any operand matching satisfies the condition (all must fail for the negations).
    operands: Vec<Operand>,
}

/// A filter: conditions and nested `logic` groups (`crm.item.list`, `{"logic": "OR",
/// "0": {...}, "1": {...}}`).
#[derive(Debug)]
enum Node {
    Leaf(Condition),
    Group { any: bool, nodes: Vec<Node> },
}

impl Node {
    fn matches(&self, table: &Table, row: usize) -> bool {
        match self {
            Node::Leaf(condition) => condition.matches(table, row),
            Node::Group { any: true, nodes } => nodes.iter().any(|n| n.matches(table, row)),
            Node::Group { any: false, nodes } => nodes.iter().all(|n| n.matches(table, row)),
        }
    }

    fn only_on_id(&self) -> bool {
        match self {
            Node::Leaf(condition) => condition.column == ID_COLUMN,
            Node::Group { nodes, .. } => nodes.iter().all(Node::only_on_id),
        }
    }
}

/// How a list method names fields and answers mistakes: the old `crm.*.list` methods
/// ignore unknown fields, `crm.item.list` refuses them.
pub(crate) trait Dialect {
    /// The column a `filter` key (prefix removed) names; `Ok(None)` drops the condition.
    fn filter_column(&self, table: &Table, name: &str) -> Result<Option<usize>, ApiError>;
    /// The column an `order` key names; `Ok(None)` drops it.
    fn order_column(&self, table: &Table, name: &str) -> Result<Option<usize>, ApiError>;
    /// `true` for a descending direction.
    fn descending(&self, field: &str, direction: &Value) -> Result<bool, ApiError>;
    /// The answer to a filter value the field cannot hold.
    fn bad_value(&self, key: &str, value: &Value, value_type: ValueType) -> ApiError;
    /// Whether objects under keys that name no field are nested `logic` groups.
    fn groups(&self) -> bool;
    /// Whether a name (no prefix) names a field.
    fn is_field(&self, table: &Table, name: &str) -> bool {
        table.column(name.trim()).is_some()
    }
}

/// The old `crm.<entity>.list` methods (and `user.get`): field names exactly as the
/// portal spells them, unknown ones dropped silently, any direction but `DESC` ascends.
pub(crate) struct Classic;

impl Dialect for Classic {
    fn filter_column(&self, table: &Table, name: &str) -> Result<Option<usize>, ApiError> {
        // Unknown fields (names are case-sensitive) are ignored, as the old
        // crm.*.list methods do.
        Ok(table.column(name.trim()))
    }

    fn order_column(&self, table: &Table, name: &str) -> Result<Option<usize>, ApiError> {
        Ok(table.column(name))
    }

    fn descending(&self, _field: &str, direction: &Value) -> Result<bool, ApiError> {
        Ok(scalar_text(direction).is_some_and(|d| d.trim().eq_ignore_ascii_case("desc")))
    }

    fn bad_value(&self, key: &str, value: &Value, value_type: ValueType) -> ApiError {
        ApiError::crm(format!(
            "Filter '{key}': {value} is not a valid value for a {} field",
            type_word(value_type)
        ))
    }

    fn groups(&self) -> bool {
        false
    }
}

/// Filter, order and paging of one list request, for any table and dialect.
pub(crate) struct Query {
    nodes: Vec<Node>,
    /// The top level is a `logic: OR` group.
    any: bool,
    order: Vec<(usize, bool)>,
    pub start: Option<usize>,
}

/// The rows a query picked for one page, and what finding them cost.
pub(crate) struct Picked {
    pub rows: Vec<usize>,
    pub total: Option<usize>,
    pub next: Option<usize>,
    /// Rows a non-ID filter was evaluated on.
    pub scanned: usize,
    /// Whether the page was counted (`start >= 0`).
    pub counted: bool,
}

/// `filter`/`order` as a map: absent, `null`, `[]` and `""` are empty; anything else
/// that is no object is refused with `refusal`.
pub(crate) fn object_param(
    params: &Map<String, Value>,
    name: &str,
    refusal: impl FnOnce() -> ApiError,
) -> Result<Map<String, Value>, ApiError> {
    match param(params, name) {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(map)) => Ok(map.clone()),
        Some(Value::Array(items)) if items.is_empty() => Ok(Map::new()),
        Some(Value::String(s)) if s.is_empty() => Ok(Map::new()),
        Some(_) => Err(refusal()),
    }
}

impl Query {
    /// A query from its parts; `start` < 0 pages without counting.
    pub fn new(
        table: &Table,
        filter: &Map<String, Value>,
        order: &Map<String, Value>,
        start: i64,
        clock: &PortalClock,
        dialect: &dyn Dialect,
    ) -> Result<Query, ApiError> {
        let (nodes, any) = parse_nodes(table, filter, clock, dialect)?;
        Ok(Query {
            nodes,
            any,
            order: parse_order(table, order, dialect)?,
            // The portal pages by 50: `start=75` answers the page at 50.
            start: usize::try_from(start).ok().map(|s| s / PAGE * PAGE),
        })
    }

    /// The page of rows the query selects.
    pub fn pick(&self, table: &Table) -> Picked {
        let (from, to) = self.id_window(table);
        let filters_beyond_id = !self.nodes.iter().all(Node::only_on_id);
        let mut scanned = 0;
        let mut matches = |row: usize| {
            if !table.is_visible(row) {
                return false;
            }
            if filters_beyond_id {
                scanned += 1;
            }
            if self.any && !self.nodes.is_empty() {
                self.nodes.iter().any(|n| n.matches(table, row))
            } else {
                self.nodes.iter().all(|n| n.matches(table, row))
            }
        };
        let by_id_only = self.order.len() == 1 && self.order[0].0 == ID_COLUMN;
        let descending = by_id_only && self.order[0].1;
        let mut picked = Vec::with_capacity(PAGE);
        let mut total = 0;
        if by_id_only {
            let rows: Box<dyn Iterator<Item = usize>> = if descending {
                Box::new((from..to).rev())
            } else {
                Box::new(from..to)
            };
            let offset = self.start.unwrap_or(0);
            for row in rows {
                if !matches(row) {
                    continue;
                }
                if total >= offset && picked.len() < PAGE {
                    picked.push(row);
                }
                total += 1;
                if self.start.is_none() && picked.len() == PAGE {
                    break; // no count: stop at a full page
                }
            }
        } else {
            let mut all: Vec<usize> = (from..to).filter(|&row| matches(row)).collect();
            all.sort_by(|&a, &b| self.compare_rows(table, a, b));
            total = all.len();
            let offset = self.start.unwrap_or(0).min(total);
            picked.extend(all.into_iter().skip(offset).take(PAGE));
        }
        let next = self.start.map(|s| s + PAGE).filter(|&n| n < total);
        Picked {
            rows: picked,
            // Without a count the portal answers `"total": 0`.
            total: Some(self.start.map_or(0, |_| total)),
            next,
            scanned,
            counted: self.start.is_some(),
        }
    }

    /// Rows that top-level ID conditions allow, found by binary search on the sorted IDs.
    fn id_window(&self, table: &Table) -> (usize, usize) {
        let (mut from, mut to) = (0, table.rows());
        if self.any && self.nodes.len() > 1 {
            return (from, to);
        }
        for node in &self.nodes {
            let Node::Leaf(c) = node else { continue };
            if c.column != ID_COLUMN {
                continue;
            }
            let [Operand::Int(id)] = c.operands.as_slice() else {
                continue;
            };
            match c.op {
                Op::Gt => from = from.max(table.first_row_after(*id, false)),
                Op::Ge => from = from.max(table.first_row_after(*id, true)),
                Op::Lt => to = to.min(table.first_row_after(*id, true)),
                Op::Le => to = to.min(table.first_row_after(*id, false)),
                Op::Eq => {
                    from = from.max(table.first_row_after(*id, true));
                    to = to.min(table.first_row_after(*id, false));
                }
                _ => {}
            }
        }
        (from, to.max(from))
    }

    fn compare_rows(&self, table: &Table, a: usize, b: usize) -> Ordering {
        for &(column, descending) in &self.order {
            let ordering = compare_cells(table.cell(a, column), table.cell(b, column));
            if ordering != Ordering::Equal {
                return if descending {
                    ordering.reverse()
                } else {
                    ordering
                };
            }
        }
        a.cmp(&b)
    }
}

/// A parsed `crm.<entity>.list` request: the query and the selected columns.
pub(crate) struct ListQuery {
    query: Query,
    select: Vec<usize>,
}

/// What a list call produced and what it cost to produce.
pub(crate) struct ListPage {
    pub rows: Vec<Value>,
    pub total: Option<usize>,
    pub next: Option<usize>,
    pub fields_per_row: usize,
    /// Rows a non-ID filter was evaluated on.
    pub scanned: usize,
    /// Whether the page was counted (`start >= 0`).
    pub counted: bool,
}

impl ListQuery {
    pub fn parse(
        table: &Table,
        params: &Map<String, Value>,
        clock: &PortalClock,
    ) -> Result<ListQuery, ApiError> {
        let filter = object_param(params, "filter", || {
            ApiError::crm("Parameter 'filter' must be array.")
        })?;
        let order = object_param(params, "order", || {
            ApiError::crm("Parameter 'order' must be array.")
        })?;
        let start = param(params, "start").and_then(parse_int).unwrap_or(0);
        Ok(ListQuery {
            query: Query::new(table, &filter, &order, start, clock, &Classic)?,
            select: parse_select(table, param(params, "select")),
        })
    }

    pub fn run(&self, table: &Table, clock: &PortalClock) -> ListPage {
        let picked = self.query.pick(table);
        let rows = picked
            .rows
            .iter()
            .map(|&row| Value::Object(render_row(table, row, &self.select, clock, Reader::List)))
            .collect();
        ListPage {
            rows,
            total: picked.total,
            next: picked.next,
            fields_per_row: self.select.len(),
            scanned: picked.scanned,
            counted: picked.counted,
        }
    }
}

fn parse_select(table: &Table, select: Option<&Value>) -> Vec<usize> {
    let names: Vec<String> = select
        .map(list_items)
        .unwrap_or_default()
        .into_iter()
        .filter_map(scalar_text)
        .collect();
    let names = if names.is_empty() {
        vec!["*".to_string(), "UF_*".to_string()]
    } else {
        names
    };
    let mut wanted = vec![false; table.fields.len()];
    wanted[ID_COLUMN] = true;
    for name in &names {
        match name.trim() {
            "*" => table
                .fields
                .iter()
                .enumerate()
                .filter(|(_, f)| f.in_star())
                .for_each(|(i, _)| wanted[i] = true),
            "UF_*" => table
                .fields
                .iter()
                .enumerate()
                .filter(|(_, f)| f.in_uf_star())
                .for_each(|(i, _)| wanted[i] = true),
            // Fields the portal never returns are not selected (nor charged).
            other => {
                if let Some(column) = table.column(other).filter(|&c| table.fields[c].readable) {
                    wanted[column] = true;
                }
            }
        }
    }
    wanted
        .iter()
        .enumerate()
        .filter(|(_, w)| **w)
        .map(|(i, _)| i)
        .collect()
}

fn parse_order(
    table: &Table,
    order: &Map<String, Value>,
    dialect: &dyn Dialect,
) -> Result<Vec<(usize, bool)>, ApiError> {
    let mut keys = Vec::with_capacity(order.len() + 1);
    for (name, direction) in order {
        let Some(column) = dialect.order_column(table, name)? else {
            continue;
        };
        keys.push((column, dialect.descending(name, direction)?));
    }
    if !keys.iter().any(|(c, _)| *c == ID_COLUMN) {
        keys.push((ID_COLUMN, false));
    }
    Ok(keys)
}

/// The prefix of a filter key and the field name after it.
fn split_key(key: &str) -> (Op, bool, &str) {
    PREFIXES
        .iter()
        .find_map(|(prefix, op, listed)| key.strip_prefix(prefix).map(|name| (*op, *listed, name)))
        .unwrap_or((Op::Eq, false, key))
}

/// The conditions and groups of a filter object, and whether its `logic` is `OR`.
fn parse_nodes(
    table: &Table,
    filter: &Map<String, Value>,
    clock: &PortalClock,
    dialect: &dyn Dialect,
) -> Result<(Vec<Node>, bool), ApiError> {
    let mut nodes = Vec::new();
    let mut any = false;
    for (key, value) in filter {
        if dialect.groups() && key.eq_ignore_ascii_case("logic") {
            any = scalar_text(value).is_some_and(|l| l.trim().eq_ignore_ascii_case("or"));
            continue;
        }
        let (op, listed, name) = split_key(key);
        // `{"0": {"logic": "OR", ...}}`: an object under an index, or under a key that
        // is no field and has no prefix, is a nested group.
        let group = dialect.groups()
            && value.is_object()
            && (key.bytes().all(|b| b.is_ascii_digit())
                || (name.len() == key.len() && !dialect.is_field(table, name)));
        if group {
            if let Value::Object(inner) = value {
                let (children, inner_any) = parse_nodes(table, inner, clock, dialect)?;
                nodes.push(Node::Group {
                    any: inner_any,
                    nodes: children,
                });
            }
            continue;
        }
        let Some(column) = dialect.filter_column(table, name)? else {
            continue;
        };
        let op = effective_op(&table.fields[column], op);
        let value_type = table.fields[column].value_type;
        let raw: Vec<&Value> = match value {
            Value::Array(_) | Value::Object(_) => list_items(value),
            _ if listed => list_items(value),
            other => vec![other],
        };
        let operands = raw
            .into_iter()
            .map(|v| parse_operand(value_type, v, clock))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| dialect.bad_value(key, value, value_type))?;
        nodes.push(Node::Leaf(Condition {
            column,
            op,
            operands,
        }));
    }
    Ok((nodes, any))
}

/// The portal matches links, statuses and multi-fields by exact value only: `%`
/// and LIKE act as `=` on them (and their negations as `!=`).
fn effective_op(field: &FieldDef, op: Op) -> Op {
    let exact_only = field.value_type == ValueType::Multifield
        || matches!(field.api_type, "crm_status" | "crm_company" | "crm_contact");
    match op {
        Op::Contains | Op::Like if exact_only => Op::Eq,
        Op::NotContains | Op::NotLike if exact_only => Op::NotEq,
        other => other,
    }
}

fn type_word(value_type: ValueType) -> &'static str {
    match value_type {
        ValueType::Integer | ValueType::Enumeration | ValueType::File => "integer",
        ValueType::Money | ValueType::Double => "number",
        ValueType::Char | ValueType::Boolean => "Y/N",
        ValueType::Date => "date",
        ValueType::DateTime => "datetime",
        _ => "text",
    }
}

/// `None` when a scalar cannot be read as the field's type (a clear 400);
/// objects and arrays become `Unusable`.
fn parse_operand(value_type: ValueType, value: &Value, clock: &PortalClock) -> Option<Operand> {
    if value.is_object() || value.is_array() {
        return Some(Operand::Unusable);
    }
    if is_empty_input(value) {
        return Some(Operand::Null);
    }
    let text = scalar_text(value).unwrap_or_default();
    match value_type {
        ValueType::Integer | ValueType::Enumeration | ValueType::File => {
            parse_int(value).map(Operand::Int)
        }
        ValueType::Money => parse_money(value).map(Operand::Int),
        ValueType::Double => parse_float(value).map(Operand::Float),
        ValueType::Char => parse_flag(value).map(Operand::Flag),
        // Boolean user fields filter by 1/0 only; `Y`/`N` match nothing.
        ValueType::Boolean => Some(match parse_int(value) {
            Some(1) => Operand::Flag(true),
            Some(0) => Operand::Flag(false),
            _ => Operand::Unusable,
        }),
        ValueType::Date => clock.parse_date(&text).map(Operand::Day),
        ValueType::DateTime => clock.parse_datetime(&text).map(Operand::Time),
        ValueType::Code | ValueType::Text | ValueType::MoneyUf | ValueType::Multifield => {
            Some(Operand::Text(text))
        }
    }
}

impl Condition {
    fn matches(&self, table: &Table, row: usize) -> bool {
        let cell = table.cell(row, self.column);
        let any = |op: Op| {
            self.operands
                .iter()
                .any(|operand| cell_matches(cell, op, operand))
        };
        match self.op {
            Op::NotEq => !any(Op::Eq),
            Op::NotContains => !any(Op::Contains),
            Op::NotLike => !any(Op::Like),
            op => any(op),
        }
    }
}

fn cell_matches(cell: Cell<'_>, op: Op, operand: &Operand) -> bool {
    match cell {
        Cell::List(items) => {
            return items
                .iter()
                .any(|item| cell_matches(item.cell(), op, operand));
        }
        Cell::Json(Value::Array(items)) => {
            return items.iter().any(|item| {
                item.get("VALUE")
                    .and_then(Value::as_str)
                    .is_some_and(|v| cell_matches(Cell::Str(v), op, operand))
            });
        }
        _ => {}
    }
    if *operand == Operand::Unusable {
        return false;
    }
    if let (Op::Contains | Op::Like, Operand::Text(pattern)) = (op, operand) {
        let Cell::Str(text) = cell else { return false };
        let (text, pattern) = (text.to_lowercase(), pattern.to_lowercase());
        return if op == Op::Contains {
            text.contains(&pattern)
        } else {
            like(&text, &pattern)
        };
    }
    if matches!(op, Op::Contains | Op::Like) {
        return false;
    }
    let Some(ordering) = compare_operand(cell, operand) else {
        return false;
    };
    match op {
        Op::Eq => ordering == Ordering::Equal,
        Op::Gt => ordering == Ordering::Greater,
        Op::Ge => ordering != Ordering::Less,
        Op::Lt => ordering == Ordering::Less,
        Op::Le => ordering != Ordering::Greater,
        _ => false,
    }
}

/// How a cell compares with an operand; `None` when they cannot be compared.
/// An empty cell equals only the empty operand and is neither above nor below anything.
fn compare_operand(cell: Cell<'_>, operand: &Operand) -> Option<Ordering> {
    match (cell, operand) {
        (Cell::Null, Operand::Null) => Some(Ordering::Equal),
        (Cell::Str(""), Operand::Null) => Some(Ordering::Equal),
        (Cell::Null, _) | (_, Operand::Null) => None,
        (Cell::Int(a), Operand::Int(b)) | (Cell::Time(a), Operand::Time(b)) => Some(a.cmp(b)),
        (Cell::Float(a), Operand::Float(b)) => a.partial_cmp(b),
        (Cell::Flag(a), Operand::Flag(b)) => Some(a.cmp(b)),
        (Cell::Day(a), Operand::Day(b)) => Some(a.cmp(b)),
        (Cell::Str(a), Operand::Text(b)) => Some(a.to_lowercase().cmp(&b.to_lowercase())),
        _ => None,
    }
}

fn compare_cells(a: Cell<'_>, b: Cell<'_>) -> Ordering {
    match (a, b) {
        (Cell::Null, Cell::Null) => Ordering::Equal,
        (Cell::Null, _) => Ordering::Less,
        (_, Cell::Null) => Ordering::Greater,
        (Cell::Int(a), Cell::Int(b)) | (Cell::Time(a), Cell::Time(b)) => a.cmp(&b),
        (Cell::Float(a), Cell::Float(b)) => a.total_cmp(&b),
        (Cell::Flag(a), Cell::Flag(b)) => a.cmp(&b),
        (Cell::Day(a), Cell::Day(b)) => a.cmp(&b),
        (Cell::Str(a), Cell::Str(b)) => a.to_lowercase().cmp(&b.to_lowercase()),
        (Cell::List(a), Cell::List(b)) => a.len().cmp(&b.len()),
        _ => Ordering::Equal,
    }
}

/// SQL LIKE: `%` any run, `_` any one character.
fn like(text: &str, pattern: &str) -> bool {
    let text: Vec<char> = text.chars().collect();
    let pattern: Vec<char> = pattern.chars().collect();
    // Classic two-pointer wildcard match with backtracking to the last `%`.
    let (mut t, mut p) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == '_' || pattern[p] == text[t]) {
            t += 1;
            p += 1;
        } else if p < pattern.len() && pattern[p] == '%' {
            star = Some((p, t));
            p += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == '%')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::Stored;

    fn stored_matches(stored: &Stored, op: Op, operand: &Operand) -> bool {
        cell_matches(stored.cell(), op, operand)
    }

    #[test]
    fn like_patterns() {
        assert!(like("big idea", "%a"));
        assert!(!like("[a] deal", "%a"));
        assert!(like("[a] deal", "[a]%"));
        assert!(like("abc", "a_c"));
        assert!(like("abc", "%"));
        assert!(like("abcabc", "%bc%bc"));
        assert!(!like("ab", "abc"));
    }

    #[test]
    fn null_cells_match_only_empty_operands() {
        assert!(stored_matches(&Stored::Null, Op::Eq, &Operand::Null));
        assert!(!stored_matches(&Stored::Null, Op::Gt, &Operand::Int(1)));
        assert!(!stored_matches(&Stored::Int(5), Op::Eq, &Operand::Null));
        assert!(stored_matches(&Stored::Int(5), Op::Ge, &Operand::Int(5)));
        assert!(!stored_matches(&Stored::Int(5), Op::Gt, &Operand::Unusable));
    }

    #[test]
    fn multiple_values_match_when_any_element_does() {
        let list = Stored::List(vec![Stored::Int(3), Stored::Int(9)].into_boxed_slice());
        assert!(stored_matches(&list, Op::Eq, &Operand::Int(9)));
        assert!(!stored_matches(&list, Op::Eq, &Operand::Int(4)));
    }
}
