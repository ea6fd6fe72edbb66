//! The REST methods, the operating-time cost model and the `time` block.

use serde_json::{Map, Value, json};

use crate::answer::Answer;
use crate::batch;
use crate::error::ApiError;
use crate::items;
use crate::limits::Operating;
use crate::list::ListQuery;
use crate::params::param;
use crate::portal::WriteMode;
use crate::reference;
use crate::robots::{Caller, require_application};
use crate::schema::{Change, Entity, Kind};
use crate::shared::Shared;
use crate::table::list_items;
use crate::values::{PortalClock, parse_int, scalar_text};

/// Cost model (see README): seconds charged per call.
pub(crate) mod cost {
    /// Every executed call.
    pub const BASE: f64 = 0.004;
    /// Per row returned and field in it.
    pub const PER_ROW_FIELD: f64 = 2e-6;
    /// Per row in the table when a list counts (`start >= 0`): 49.9 s / 2,387,743 rows.
    pub const PER_COUNTED_ROW: f64 = 20.9e-6;
    /// Per row a filter not on ID was evaluated on.
    pub const PER_SCANNED_ROW: f64 = 1e-6;
    /// The batch's own overhead.
    pub const BATCH: f64 = 0.001;

    /// One list call: `rows` returned of `fields` each, the table's `live_rows` when
    /// the page was counted, and the rows a non-ID filter `scanned`.
    pub fn list(
        rows: usize,
        fields: usize,
        counted: bool,
        live_rows: usize,
        scanned: usize,
    ) -> f64 {
        let counting = if counted {
            PER_COUNTED_ROW * live_rows as f64
        } else {
            0.0
        };
        BASE + PER_ROW_FIELD * (rows * fields) as f64 + counting + PER_SCANNED_ROW * scanned as f64
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Method {
    Fields(Entity),
    List(Entity),
    Get(Entity),
    Add(Entity),
    Update(Entity),
    Delete(Entity),
    UserFieldList(Entity),
    ProductRowsGet,
    ProductRowsSet,
    TimelineCommentAdd,
    NotifySystemAdd,
    BizprocEventSend,
    RobotAdd,
    RobotUpdate,
    RobotList,
    RobotDelete,
    StatusList,
    ItemFields,
    ItemList,
    ItemGet,
    ItemAdd,
    ItemUpdate,
    ItemDelete,
    ItemProductRowList,
    ItemProductRowSet,
    TypeList,
    TypeGet,
    TypeGetByEntityTypeId,
    CategoryList,
    CategoryGet,
    CurrencyList,
    UserGet,
    StageHistoryList,
    Batch,
}

impl Method {
    fn parse(name: &str) -> Option<Method> {
        match name {
            "crm.deal.productrows.get" => return Some(Method::ProductRowsGet),
            "crm.deal.productrows.set" => return Some(Method::ProductRowsSet),
            "crm.timeline.comment.add" => return Some(Method::TimelineCommentAdd),
            "im.notify.system.add" => return Some(Method::NotifySystemAdd),
            "bizproc.event.send" => return Some(Method::BizprocEventSend),
            "bizproc.robot.add" => return Some(Method::RobotAdd),
            "bizproc.robot.update" => return Some(Method::RobotUpdate),
            "bizproc.robot.list" => return Some(Method::RobotList),
            "bizproc.robot.delete" => return Some(Method::RobotDelete),
            "crm.status.list" => return Some(Method::StatusList),
            "crm.item.fields" => return Some(Method::ItemFields),
            "crm.item.list" => return Some(Method::ItemList),
            "crm.item.get" => return Some(Method::ItemGet),
            "crm.item.add" => return Some(Method::ItemAdd),
            "crm.item.update" => return Some(Method::ItemUpdate),
            "crm.item.delete" => return Some(Method::ItemDelete),
            "crm.item.productrow.list" => return Some(Method::ItemProductRowList),
            "crm.item.productrow.set" => return Some(Method::ItemProductRowSet),
            "crm.type.list" => return Some(Method::TypeList),
            "crm.type.get" => return Some(Method::TypeGet),
            "crm.type.getbyentitytypeid" => return Some(Method::TypeGetByEntityTypeId),
            "crm.category.list" => return Some(Method::CategoryList),
            "crm.category.get" => return Some(Method::CategoryGet),
            "crm.currency.list" => return Some(Method::CurrencyList),
            "user.get" => return Some(Method::UserGet),
            "crm.stagehistory.list" => return Some(Method::StageHistoryList),
            "batch" => return Some(Method::Batch),
            _ => {}
        }
        let rest = name.strip_prefix("crm.")?;
        let (entity, op) = rest.split_once('.')?;
        let entity: Entity = entity.parse().ok()?;
        Some(match op {
            "fields" => Method::Fields(entity),
            "list" => Method::List(entity),
            "get" => Method::Get(entity),
            "add" => Method::Add(entity),
            "update" => Method::Update(entity),
            "delete" => Method::Delete(entity),
            "userfield.list" => Method::UserFieldList(entity),
            _ => return None,
        })
    }
}

/// `crm.Deal.List.json/` -> `crm.deal.list`.
pub(crate) fn normalize_method(raw: &str) -> String {
    let lower = raw.trim().trim_end_matches('/').to_ascii_lowercase();
    lower
        .strip_suffix(".json")
        .map(str::to_string)
        .unwrap_or(lower)
}

/// What a method did.
pub(crate) struct Done {
    pub result: Value,
    pub total: Option<usize>,
    pub next: Option<usize>,
    pub rows_returned: usize,
    pub cost: f64,
    /// The changes to announce as outgoing events.
    pub changes: Vec<(Kind, Change, u64)>,
}

impl Done {
    pub fn plain(result: Value) -> Done {
        Done {
            result,
            total: None,
            next: None,
            rows_returned: 0,
            cost: cost::BASE,
            changes: Vec::new(),
        }
    }
}

/// Runs one method call by `caller`: the operating-time check, the method, the
/// charge, the statistics and the outgoing events.
pub(crate) fn execute(
    shared: &Shared,
    raw_name: &str,
    params: &Map<String, Value>,
    inside_batch: bool,
    caller: Caller,
) -> Result<Answer, ApiError> {
    let name = normalize_method(raw_name);
    let method = Method::parse(&name).ok_or_else(ApiError::method_not_found)?;
    if method == Method::Batch && inside_batch {
        return Err(ApiError::new(
            405,
            "ERROR_BATCH_METHOD_NOT_ALLOWED",
            "Method is not allowed for batch usage",
        ));
    }
    let start = shared.clock.now_f64();
    if shared.limiter.lock().blocked(&name, start) {
        return Err(ApiError::operation_time_limit());
    }
    let outcome = if method == Method::Batch {
        batch::run(params, |method, params| {
            execute(shared, method, params, true, caller)
        })
        .map(|result| Done {
            cost: cost::BATCH,
            ..Done::plain(result)
        })
    } else {
        run(shared, method, params, caller)
    };
    let finish = shared.clock.now_f64();
    let charged = outcome.as_ref().map_or(cost::BASE, |done| done.cost);
    let operating = shared.limiter.lock().charge(&name, finish, charged);
    {
        let mut stats = shared.stats.lock();
        *stats.requests_by_method.entry(name.clone()).or_default() += 1;
        *stats.operating_seconds_by_method.entry(name).or_default() += charged;
        if let Ok(done) = &outcome {
            stats.rows_returned += done.rows_returned as u64;
        }
    }
    let done = outcome?;
    if let Some(events) = &shared.events {
        events.publish(&done.changes);
    }
    Ok(Answer {
        result: done.result,
        total: done.total,
        next: done.next,
        time: time_block(&shared.clock, start, finish, operating),
    })
}

/// The `time` block every answer carries; `operating` is the method's running
/// total in the window, and both operating keys are absent without the limiter.
fn time_block(clock: &PortalClock, start: f64, finish: f64, operating: Option<Operating>) -> Value {
    let duration = (finish - start).max(0.0);
    let mut time = json!({
        "start": start,
        "finish": finish,
        "duration": duration,
        "processing": duration,
        "date_start": clock.format_secs(start.floor() as i64),
        "date_finish": clock.format_secs(finish.floor() as i64),
    });
    if let Some(operating) = operating {
        time["operating_reset_at"] = json!(operating.reset_at);
        time["operating"] = json!(operating.total);
    }
    time
}

fn required_id(params: &Map<String, Value>) -> Result<u64, ApiError> {
    param(params, "id")
        .and_then(parse_int)
        .and_then(|id| u64::try_from(id).ok())
        .filter(|id| *id > 0)
        .ok_or_else(|| ApiError::crm("ID is not defined or invalid."))
}

fn fields_param(params: &Map<String, Value>) -> Result<Map<String, Value>, ApiError> {
    match param(params, "fields") {
        Some(Value::Object(map)) => Ok(map.clone()),
        Some(Value::Array(items)) if items.is_empty() => Ok(Map::new()),
        _ => Err(ApiError::crm("Parameter 'fields' must be array.")),
    }
}

fn run(
    shared: &Shared,
    method: Method,
    params: &Map<String, Value>,
    caller: Caller,
) -> Result<Done, ApiError> {
    let clock = &shared.clock;
    let user = shared.user_id as i64;
    match method {
        Method::Fields(entity) => {
            let portal = shared.portal.read();
            Ok(Done::plain(fields_description(
                &portal.table(entity).fields,
            )))
        }
        Method::UserFieldList(entity) => {
            let portal = shared.portal.read();
            let list: Vec<Value> = portal
                .table(entity)
                .fields
                .iter()
                .filter_map(|f| user_field_row(entity, f))
                .collect();
            let count = list.len();
            Ok(Done {
                total: Some(count),
                ..Done::plain(Value::Array(list))
            })
        }
        Method::List(entity) => {
            let portal = shared.portal.read();
            let table = portal.table(entity);
            let query = ListQuery::parse(table, params, clock)?;
            let page = query.run(table, clock);
            let cost = cost::list(
                page.rows.len(),
                page.fields_per_row,
                page.counted,
                table.live_count(),
                page.scanned,
            );
            let rows_returned = page.rows.len();
            Ok(Done {
                result: Value::Array(page.rows),
                total: page.total,
                next: page.next,
                rows_returned,
                cost,
                changes: Vec::new(),
            })
        }
        Method::Get(entity) => {
            let id = required_id(params)?;
            let portal = shared.portal.read();
            let record = portal.get(entity, id, clock)?;
            let cost = cost::BASE + cost::PER_ROW_FIELD * record.len() as f64;
            Ok(Done {
                cost,
                ..Done::plain(Value::Object(record))
            })
        }
        Method::Add(entity) => {
            let fields = fields_param(params)?;
            let id = shared.portal.write().add(
                entity.into(),
                &fields,
                clock.now_secs(),
                user,
                clock,
                WriteMode::Classic,
            )?;
            Ok(Done {
                changes: vec![(entity.into(), Change::Add, id)],
                ..Done::plain(json!(id))
            })
        }
        Method::Update(entity) => {
            let id = required_id(params)?;
            let fields = fields_param(params)?;
            shared
                .portal
                .write()
                .update(entity, id, &fields, clock.now_secs(), user, clock)?;
            Ok(Done {
                changes: vec![(entity.into(), Change::Update, id)],
                ..Done::plain(json!(true))
            })
        }
        Method::Delete(entity) => {
            let id = required_id(params)?;
            shared.portal.write().delete(entity, id)?;
            Ok(Done {
                changes: vec![(entity.into(), Change::Delete, id)],
                ..Done::plain(json!(true))
            })
        }
        Method::ProductRowsGet => {
            let id = required_id(params)?;
            let portal = shared.portal.read();
            portal.check_readable(Entity::Deal, id)?;
            let rows = portal.product_rows(id);
            let count = rows.len();
            Ok(Done {
                rows_returned: count,
                ..Done::plain(Value::Array(rows))
            })
        }
        Method::ProductRowsSet => {
            let id = required_id(params)?;
            let rows = match param(params, "rows") {
                None | Some(Value::Null) => Vec::new(),
                Some(v @ (Value::Array(_) | Value::Object(_))) => list_items(v),
                Some(Value::String(s)) if s.is_empty() => Vec::new(),
                Some(_) => return Err(ApiError::crm("Parameter 'rows' must be array.")),
            };
            let mut portal = shared.portal.write();
            portal.check_readable(Entity::Deal, id)?;
            portal.set_product_rows(id, &rows)?;
            Ok(Done::plain(json!(true)))
        }
        Method::TimelineCommentAdd => timeline_comment_add(shared, params),
        Method::NotifySystemAdd => notify_system_add(shared, params),
        Method::BizprocEventSend => bizproc_event_send(shared, params),
        Method::RobotAdd => {
            require_application(caller)?;
            let mut portal = shared.portal.write();
            portal.robots.add(params, &shared.application)?;
            Ok(Done::plain(json!(true)))
        }
        Method::RobotUpdate => {
            require_application(caller)?;
            let mut portal = shared.portal.write();
            portal.robots.update(params, &shared.application)?;
            Ok(Done::plain(json!(true)))
        }
        Method::RobotList => {
            require_application(caller)?;
            let codes = shared.portal.read().robots.codes();
            Ok(Done::plain(json!(codes)))
        }
        Method::RobotDelete => {
            require_application(caller)?;
            shared.portal.write().robots.delete(params)?;
            Ok(Done::plain(json!(true)))
        }
        Method::StatusList => {
            let rows = shared.portal.read().statuses.list(params)?;
            let count = rows.len();
            Ok(Done {
                total: Some(count),
                rows_returned: count,
                ..Done::plain(Value::Array(rows))
            })
        }
        Method::ItemFields => items::fields(&shared.portal.read(), params),
        Method::ItemList => items::list(&shared.portal.read(), params, clock),
        Method::ItemGet => items::get(&shared.portal.read(), params, clock),
        Method::ItemAdd => items::add(shared, params, user),
        Method::ItemUpdate => items::update(shared, params, user),
        Method::ItemDelete => items::delete(shared, params),
        Method::ItemProductRowList => items::productrow_list(&shared.portal.read(), params),
        Method::ItemProductRowSet => items::productrow_set(shared, params),
        Method::TypeList => items::type_list(&shared.portal.read(), params, clock),
        Method::TypeGet => items::type_get(&shared.portal.read(), params, clock, false),
        Method::TypeGetByEntityTypeId => {
            items::type_get(&shared.portal.read(), params, clock, true)
        }
        Method::CategoryList => {
            let portal = shared.portal.read();
            let kind = entity_type_param(params).and_then(|id| {
                portal
                    .kind(id)
                    .ok_or_else(|| ApiError::new(400, "NOT_FOUND", "Smart process not found"))
            });
            let (result, count) = reference::category_list(&portal.categories, kind)?;
            Ok(Done {
                total: Some(count),
                rows_returned: count,
                ..Done::plain(result)
            })
        }
        Method::CategoryGet => {
            let portal = shared.portal.read();
            let entity_type_id = entity_type_param(params)?;
            if portal.kind(entity_type_id).is_none() {
                return Err(ApiError::new(400, "NOT_FOUND", "Smart process not found"));
            }
            let id = param(params, "id").and_then(parse_int).unwrap_or(-1);
            let category = portal
                .categories
                .get(entity_type_id, id)
                .ok_or_else(|| ApiError::new(400, "NOT_FOUND", "Category not found"))?;
            Ok(Done::plain(json!({ "category": category.render() })))
        }
        Method::CurrencyList => {
            let rows = reference::currency_list(&shared.portal.read().currencies, params, clock);
            let count = rows.len();
            Ok(Done {
                // "Currently always has a value of 0" (crm-currency-list.md).
                total: Some(0),
                rows_returned: count,
                ..Done::plain(Value::Array(rows))
            })
        }
        Method::UserGet => {
            let portal = shared.portal.read();
            let (rows, total, next) = reference::user_get(&portal.users, params, clock)?;
            let count = rows.len();
            Ok(Done {
                total,
                next,
                rows_returned: count,
                cost: cost::BASE + cost::PER_ROW_FIELD * (count * portal.users.fields.len()) as f64,
                ..Done::plain(Value::Array(rows))
            })
        }
        Method::StageHistoryList => {
            let portal = shared.portal.read();
            let kind = crate::stagehistory::history_kind(params, |id| portal.kind(id))?;
            crate::stagehistory::list(&portal.history, kind, params, clock)
        }
        Method::Batch => Err(ApiError::method_not_found()),
    }
}

/// The `entityTypeId` parameter (`NOT_FOUND` when it names no type).
fn entity_type_param(params: &Map<String, Value>) -> Result<u32, ApiError> {
    param(params, "entityTypeId")
        .and_then(parse_int)
        .and_then(|id| u32::try_from(id).ok())
        .ok_or_else(|| ApiError::new(400, "NOT_FOUND", "Smart process not found"))
}

fn fields_description(fields: &[crate::schema::FieldDef]) -> Value {
    let mut out = Map::new();
    for field in fields {
        let mut d = Map::new();
        d.insert("type".into(), json!(field.api_type));
        d.insert("isRequired".into(), json!(field.required));
        d.insert("isReadOnly".into(), json!(field.read_only));
        d.insert("isImmutable".into(), json!(field.immutable));
        d.insert("isMultiple".into(), json!(field.multiple));
        d.insert("isDynamic".into(), json!(field.user_field.is_some()));
        if field.deprecated {
            d.insert("isDeprecated".into(), json!(true));
        }
        if let Some(uf) = &field.user_field
            && !uf.items.is_empty()
        {
            let items: Vec<Value> = uf
                .items
                .iter()
                .map(|(id, v)| json!({"ID": id.to_string(), "VALUE": v}))
                .collect();
            d.insert("items".into(), Value::Array(items));
        }
        d.insert("title".into(), json!(field.title));
        if let Some(status_type) = field.status_type {
            d.insert("statusType".into(), json!(status_type));
        }
        if let Some(uf) = &field.user_field {
            d.insert("listLabel".into(), json!(uf.label));
            d.insert("formLabel".into(), json!(uf.label));
            d.insert("filterLabel".into(), json!(uf.label));
            d.insert("settings".into(), uf_settings(uf.user_type));
        }
        out.insert(field.name.clone(), Value::Object(d));
    }
    Value::Object(out)
}

pub(crate) fn uf_settings(user_type: crate::schema::UserFieldType) -> Value {
    use crate::schema::UserFieldType as T;
    match user_type {
        T::String => {
            json!({"SIZE": 20, "ROWS": 1, "REGEXP": "", "MIN_LENGTH": 0, "MAX_LENGTH": 0, "DEFAULT_VALUE": ""})
        }
        T::Double => {
            json!({"PRECISION": 2, "SIZE": 20, "MIN_VALUE": 0, "MAX_VALUE": 0, "DEFAULT_VALUE": null})
        }
        T::Boolean => {
            json!({"DEFAULT_VALUE": 0, "DISPLAY": "CHECKBOX", "LABEL": ["", ""], "LABEL_CHECKBOX": ""})
        }
        T::Enumeration => {
            json!({"DISPLAY": "LIST", "LIST_HEIGHT": 1, "CAPTION_NO_VALUE": "", "SHOW_NO_VALUE": "Y"})
        }
        T::Date | T::Datetime => json!({"DEFAULT_VALUE": {"TYPE": "NONE", "VALUE": ""}}),
        _ => json!({"DEFAULT_VALUE": null}),
    }
}

fn user_field_row(entity: Entity, field: &crate::schema::FieldDef) -> Option<Value> {
    let uf = field.user_field.as_ref()?;
    let yn = |b: bool| if b { "Y" } else { "N" };
    let mut row = json!({
        "ID": uf.id.to_string(),
        "ENTITY_ID": entity.uf_entity_id(),
        "FIELD_NAME": field.name,
        "USER_TYPE_ID": uf.user_type.as_str(),
        "XML_ID": null,
        "SORT": "100",
        "MULTIPLE": yn(field.multiple),
        "MANDATORY": "N",
        "SHOW_FILTER": "E",
        "SHOW_IN_LIST": "Y",
        "EDIT_IN_LIST": "Y",
        "IS_SEARCHABLE": "N",
        "SETTINGS": uf_settings(uf.user_type),
        "EDIT_FORM_LABEL": uf.label,
        "LIST_COLUMN_LABEL": uf.label,
        "LIST_FILTER_LABEL": uf.label,
    });
    if !uf.items.is_empty() {
        row["LIST"] = uf
            .items
            .iter()
            .enumerate()
            .map(|(i, (id, value))| {
                json!({"ID": id.to_string(), "SORT": ((i + 1) * 10).to_string(), "VALUE": value, "DEF": "N", "XML_ID": format!("ITEM_{id}")})
            })
            .collect();
    }
    Some(row)
}

fn text_param(map: &Map<String, Value>, name: &str) -> Option<String> {
    param(map, name)
        .and_then(scalar_text)
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn timeline_comment_add(shared: &Shared, params: &Map<String, Value>) -> Result<Done, ApiError> {
    let invalid = |what: &str| ApiError::new(400, "INVALID_ARG_VALUE", what.to_string());
    let Some(Value::Object(fields)) = param(params, "fields") else {
        return Err(invalid(
            "Parameter 'fields' must be an object with ENTITY_ID, ENTITY_TYPE and COMMENT",
        ));
    };
    let entity_type =
        text_param(fields, "ENTITY_TYPE").ok_or_else(|| invalid("ENTITY_TYPE is required"))?;
    let entity: Entity = entity_type.parse().map_err(|_| {
        invalid(&format!(
            "ENTITY_TYPE '{entity_type}' is not deal, lead, contact or company"
        ))
    })?;
    let entity_id = param(fields, "ENTITY_ID")
        .and_then(parse_int)
        .and_then(|id| u64::try_from(id).ok())
        .ok_or_else(|| invalid("ENTITY_ID must be a positive integer"))?;
    let comment = text_param(fields, "COMMENT").ok_or_else(|| invalid("COMMENT is required"))?;
    let files = param(fields, "FILES")
        .map(list_items)
        .unwrap_or_default()
        .len();
    let mut portal = shared.portal.write();
    if !portal.exists(entity, entity_id) {
        return Err(ApiError::new(
            400,
            "OWNER_NOT_FOUND",
            format!("The {entity} {entity_id} was not found"),
        ));
    }
    let id = portal.comments.len() as u64 + 1;
    portal.comments.push(json!({
        "ID": id,
        "ENTITY_TYPE": entity.as_str(),
        "ENTITY_ID": entity_id,
        "COMMENT": comment,
        "FILES": files,
        "CREATED": shared.clock.format_secs(shared.clock.now_secs()),
    }));
    Ok(Done::plain(json!(id)))
}

fn notify_system_add(shared: &Shared, params: &Map<String, Value>) -> Result<Done, ApiError> {
    let user_id = param(params, "USER_ID")
        .and_then(parse_int)
        .filter(|id| *id > 0)
        .ok_or_else(|| ApiError::new(400, "USER_ID_EMPTY", "User ID can't be empty"))?;
    let message = text_param(params, "MESSAGE")
        .ok_or_else(|| ApiError::new(400, "MESSAGE_EMPTY", "Message can't be empty"))?;
    let attach = param(params, "ATTACH")
        .map(|a| a.to_string().len())
        .unwrap_or(0);
    if attach > 60_000 {
        return Err(ApiError::new(
            400,
            "ATTACH_OVERSIZE",
            "You have exceeded the maximum allowable size of attachments",
        ));
    }
    let mut portal = shared.portal.write();
    let id = portal.notifications.len() as u64 + 1;
    portal.notifications.push(json!({
        "ID": id,
        "USER_ID": user_id,
        "MESSAGE": message,
        "MESSAGE_OUT": text_param(params, "MESSAGE_OUT"),
        "TAG": text_param(params, "TAG"),
        "SUB_TAG": text_param(params, "SUB_TAG"),
    }));
    Ok(Done::plain(json!(id)))
}

/// Accepts only a token this portal issued to a robot call that waits, once.
fn bizproc_event_send(shared: &Shared, params: &Map<String, Value>) -> Result<Done, ApiError> {
    let token = text_param(params, "EVENT_TOKEN")
        .ok_or_else(|| ApiError::new(403, "ACCESS_DENIED", "Access denied!"))?;
    let mut portal = shared.portal.write();
    let reply = portal.robots.accept_reply(
        &token,
        param(params, "RETURN_VALUES"),
        text_param(params, "LOG_MESSAGE"),
    )?;
    portal.workflow_replies.push(reply);
    Ok(Done::plain(json!(true)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_names_normalize() {
        assert_eq!(normalize_method("crm.Deal.List.json"), "crm.deal.list");
        assert_eq!(normalize_method("crm.deal.list/"), "crm.deal.list");
        assert_eq!(
            Method::parse("crm.contact.userfield.list"),
            Some(Method::UserFieldList(Entity::Contact))
        );
        assert_eq!(Method::parse("crm.quote.list"), None);
        assert_eq!(Method::parse("crm.deal.contact.items.get"), None);
    }
}
