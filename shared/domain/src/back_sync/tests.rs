use super::*;

fn entry(id: i64, record_id: i64, op: OutboxOp, changes: Value) -> OutboxEntry {
    OutboxEntry {
        id,
        record_id,
        op,
        changes: changes.as_object().cloned().unwrap_or_default(),
        seen_date_modify: Some(at(id)),
        attempts: 1,
    }
}

fn at(minute: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_725_000_000 + minute * 60, 0).unwrap()
}

fn field(code: &str, bitrix_type: &str) -> FieldMeta {
    FieldMeta {
        code: code.into(),
        title: code.into(),
        label: None,
        bitrix_type: bitrix_type.into(),
        is_multiple: false,
        is_dynamic: code.starts_with("UF_"),
        is_read_only: false,
        items: vec![],
    }
}

fn moscow() -> FixedOffset {
    FixedOffset::east_opt(3 * 3600).unwrap()
}

#[test]
fn later_edits_of_a_record_replace_earlier_ones_and_keep_the_first_version_seen() {
    let pushes = fold(&[
        entry(
            1,
            7,
            OutboxOp::Update,
            json!({"TITLE": {"title": "a"}, "OPPORTUNITY": {"opportunity": "1"}}),
        ),
        entry(2, 8, OutboxOp::Update, json!({"TITLE": {"title": "other"}})),
        entry(3, 7, OutboxOp::Update, json!({"TITLE": {"title": "b"}})),
    ]);
    assert_eq!(pushes.len(), 2);
    assert_eq!(pushes[0].entries, [1, 3]);
    assert_eq!(
        pushes[0].action,
        PushAction::Update {
            id: 7,
            changes: json!({"TITLE": {"title": "b"}, "OPPORTUNITY": {"opportunity": "1"}})
                .as_object()
                .cloned()
                .unwrap(),
            seen: Some(at(1)),
            retried: false,
        }
    );
    assert_eq!(pushes[1].entries, [2]);
}

#[test]
fn a_create_absorbs_its_edits_and_a_delete_before_it_cancels_it() {
    let mut created = entry(4, -1, OutboxOp::Create, json!({"TITLE": {"title": "new"}}));
    created.attempts = 2;
    let pushes = fold(&[
        created,
        entry(
            5,
            -1,
            OutboxOp::Update,
            json!({"OPPORTUNITY": {"opportunity": "9"}}),
        ),
        entry(6, -2, OutboxOp::Create, json!({})),
        entry(7, -2, OutboxOp::Delete, json!({})),
        entry(8, -3, OutboxOp::Update, json!({"TITLE": {"title": "x"}})),
    ]);
    assert_eq!(
        pushes[0].action,
        PushAction::Create {
            local_id: -1,
            key: 4,
            changes: json!({"TITLE": {"title": "new"}, "OPPORTUNITY": {"opportunity": "9"}})
                .as_object()
                .cloned()
                .unwrap(),
            look_up_first: true,
        }
    );
    assert_eq!(pushes[1].action, PushAction::Cancelled);
    assert_eq!(pushes[1].entries, [6, 7]);
    // Edits of a local row whose create is not among them (it failed for good).
    assert_eq!(pushes[2].action, PushAction::Orphaned);
}

#[test]
fn a_delete_ends_the_edits_before_it() {
    let pushes = fold(&[
        entry(1, 7, OutboxOp::Update, json!({"TITLE": {"title": "a"}})),
        entry(2, 7, OutboxOp::Delete, json!({})),
    ]);
    assert_eq!(
        pushes[0].action,
        PushAction::Delete {
            id: 7,
            seen: Some(at(1))
        }
    );
}

#[test]
fn a_conflict_is_a_portal_version_later_than_the_one_seen() {
    let record = |modified: &str| {
        json!({"ID": "7", "DATE_MODIFY": modified})
            .as_object()
            .cloned()
            .unwrap()
    };
    let seen = DateTime::parse_from_rfc3339("2024-08-30T14:29:00+03:00")
        .unwrap()
        .with_timezone(&Utc);
    assert!(!is_conflict(
        Some(seen),
        &record("2024-08-30T11:29:00+00:00")
    ));
    assert!(is_conflict(
        Some(seen),
        &record("2024-08-30T14:29:01+03:00")
    ));
    assert!(!is_conflict(None, &record("2024-08-30T14:29:01+03:00")));
    assert!(!is_conflict(Some(seen), &record("")));
    assert_eq!(
        portal_offset(&record("2024-08-30T14:29:00-05:00")),
        FixedOffset::west_opt(5 * 3600)
    );
}

#[test]
fn values_become_what_bitrix24_takes() {
    let mut flag = field("OPENED", "char");
    flag.code = "OPENED".into();
    let mut uf_money = field("UF_CRM_PRICE", "money");
    uf_money.is_dynamic = true;
    let mut days = field("UF_CRM_DAYS", "date");
    days.is_multiple = true;
    let mut colours = field("UF_CRM_COLOURS", "enumeration");
    colours.is_multiple = true;
    let fields = [
        field("TITLE", "string"),
        field("OPPORTUNITY", "double"),
        field("ASSIGNED_BY_ID", "user"),
        flag,
        field("UF_CRM_OK", "boolean"),
        field("BEGINDATE", "date"),
        field("UF_CRM_SEEN_AT", "datetime"),
        uf_money,
        days,
        colours,
        field("UF_CRM_LIST", "enumeration"),
    ];
    let writable = WritableFields::new(&fields);
    let changes = json!({
        "TITLE": {"title": "Wind farm"},
        "OPPORTUNITY": {"opportunity": "12345678901234567890.125"},
        "ASSIGNED_BY_ID": {"assigned_by_id": "5"},
        "OPENED": {"opened": "false"},
        "UF_CRM_OK": {"uf_crm_ok": "true"},
        "BEGINDATE": {"begindate": "2024-08-30"},
        "UF_CRM_SEEN_AT": {"uf_crm_seen_at": "2024-08-30T11:29:00+00:00"},
        "UF_CRM_PRICE": {"uf_crm_price": "300.50", "uf_crm_price_currency": "EUR"},
        "UF_CRM_DAYS": {"uf_crm_days": ["2024-08-30", "2024-09-01"]},
        "UF_CRM_COLOURS": {"uf_crm_colours": ["81", "82"]},
        "UF_CRM_LIST": {"uf_crm_list": null},
    });
    let pushed = bitrix_fields(changes.as_object().unwrap(), &writable, None, moscow()).unwrap();
    assert_eq!(
        Value::Object(pushed),
        json!({
            "TITLE": "Wind farm",
            "OPPORTUNITY": "12345678901234567890.125",
            "ASSIGNED_BY_ID": "5",
            "OPENED": "N",
            "UF_CRM_OK": "1",
            "BEGINDATE": "2024-08-30",
            "UF_CRM_SEEN_AT": "2024-08-30T14:29:00+03:00",
            "UF_CRM_PRICE": "300.50|EUR",
            "UF_CRM_DAYS": ["2024-08-30", "2024-09-01"],
            "UF_CRM_COLOURS": ["81", "82"],
            "UF_CRM_LIST": "",
        })
    );
}

#[test]
fn bad_values_and_unwritable_fields_are_named_without_the_value() {
    let mut read_only = field("DATE_CREATE", "datetime");
    read_only.is_read_only = true;
    let fields = [
        field("OPPORTUNITY", "double"),
        read_only,
        field("UF_CRM_FILE", "file"),
    ];
    let writable = WritableFields::new(&fields);
    let error = bitrix_fields(
        json!({"OPPORTUNITY": {"opportunity": "twelve secret"}})
            .as_object()
            .unwrap(),
        &writable,
        None,
        moscow(),
    )
    .unwrap_err();
    assert!(error.to_string().contains("OPPORTUNITY"), "{error}");
    assert!(!error.to_string().contains("secret"), "{error}");
    for code in ["DATE_CREATE", "UF_CRM_FILE", "NO_SUCH_FIELD"] {
        let changes = json!({(code): {"x": "1"}});
        let error =
            bitrix_fields(changes.as_object().unwrap(), &writable, None, moscow()).unwrap_err();
        assert!(error.to_string().contains(code), "{error}");
    }
    assert_eq!(write_refusal(&fields[1]), Some("read-only in Bitrix24"));
    assert!(write_refusal(&fields[2]).unwrap().contains("files"));
    assert!(write_refusal(&field("ORIGIN_ID", "string")).is_some());
}

#[test]
fn multifields_are_sent_as_the_difference_by_item_id() {
    let fields = [field("PHONE", "crm_multifield")];
    let writable = WritableFields::new(&fields);
    let portal = json!({"PHONE": [
        {"ID": "156", "VALUE_TYPE": "WORK", "VALUE": "+13333333555", "TYPE_ID": "PHONE"},
        {"ID": "157", "VALUE_TYPE": "HOME", "VALUE": "+15599888666", "TYPE_ID": "PHONE"},
        {"ID": "158", "VALUE_TYPE": "HOME", "VALUE": "+100", "TYPE_ID": "PHONE"},
    ]});
    // 156 kept as is, 157 changed, 158 removed, one new.
    let wanted = json!({"PHONE": {"phone": [
        {"ID": "156", "VALUE_TYPE": "WORK", "VALUE": "+13333333555", "TYPE_ID": "PHONE"},
        {"ID": "157", "VALUE_TYPE": "MOBILE", "VALUE": "+15599888666"},
        {"VALUE": "+4930123", "VALUE_TYPE": "WORK"},
    ]}});
    let pushed = bitrix_fields(
        wanted.as_object().unwrap(),
        &writable,
        portal.as_object(),
        moscow(),
    )
    .unwrap();
    assert_eq!(
        pushed["PHONE"],
        json!([
            {"ID": "157", "VALUE": "+15599888666", "VALUE_TYPE": "MOBILE"},
            {"VALUE": "+4930123", "VALUE_TYPE": "WORK"},
            {"ID": "158", "DELETE": "Y"},
        ])
    );
    // Nothing differs: nothing to send, and the portal already holds it.
    let same = json!({"PHONE": {"phone": portal["PHONE"]}});
    let pushed = bitrix_fields(
        same.as_object().unwrap(),
        &writable,
        portal.as_object(),
        moscow(),
    )
    .unwrap();
    assert_eq!(pushed["PHONE"], json!([]));
    assert!(already_applied(
        &pushed,
        &writable,
        portal.as_object().unwrap()
    ));
    let error = bitrix_fields(
        json!({"PHONE": {"phone": [{"VALUE_TYPE": "WORK"}]}})
            .as_object()
            .unwrap(),
        &writable,
        portal.as_object(),
        moscow(),
    )
    .unwrap_err();
    assert!(error.to_string().contains("PHONE"), "{error}");
}

#[test]
fn a_portal_holding_the_pushed_values_already_applied_them() {
    let fields = [
        field("TITLE", "string"),
        field("OPPORTUNITY", "double"),
        field("UF_CRM_SEEN_AT", "datetime"),
    ];
    let writable = WritableFields::new(&fields);
    let pushed =
        json!({"TITLE": "A", "OPPORTUNITY": "100", "UF_CRM_SEEN_AT": "2024-08-30T14:29:00+03:00"});
    let pushed = pushed.as_object().unwrap();
    let portal =
        json!({"TITLE": "A", "OPPORTUNITY": "100", "UF_CRM_SEEN_AT": "2024-08-30T11:29:00+00:00"});
    assert!(already_applied(
        pushed,
        &writable,
        portal.as_object().unwrap()
    ));
    let portal =
        json!({"TITLE": "B", "OPPORTUNITY": "100", "UF_CRM_SEEN_AT": "2024-08-30T11:29:00+00:00"});
    assert!(!already_applied(
        pushed,
        &writable,
        portal.as_object().unwrap()
    ));
}

#[test]
fn created_records_carry_an_origin_per_outbox_row() {
    assert_eq!(create_origin("b24", 42), "b24:outbox:42");
    assert_ne!(create_origin("b24", 42), create_origin("b24", 43));
    assert_eq!(OutboxOp::parse("create"), Some(OutboxOp::Create));
    assert_eq!(
        OutboxOp::parse(OutboxOp::Delete.as_str()),
        Some(OutboxOp::Delete)
    );
    assert_eq!(OutboxOp::parse("upsert"), None);
}
