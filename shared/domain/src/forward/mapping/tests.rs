use serde_json::json;

use super::*;
use crate::forward::route::Stamp;

fn object(value: Value) -> Map<String, Value> {
    value.as_object().unwrap().clone()
}

fn field(kind: &str) -> Value {
    json!({"type": kind, "isRequired": false, "isReadOnly": false, "isImmutable": false, "isMultiple": false, "isDynamic": false, "title": "x"})
}

fn enumeration(items: Value) -> Value {
    json!({"type": "enumeration", "isReadOnly": false, "isMultiple": true, "isDynamic": true, "items": items, "title": "x"})
}

fn source_catalog() -> FieldCatalog {
    FieldCatalog::from_fields_result(&json!({
        "ID": {"type": "integer", "isReadOnly": true, "title": "ID"},
        "TITLE": field("string"),
        "OPPORTUNITY": field("double"),
        "CATEGORY_ID": {"type": "crm_category", "isImmutable": true, "title": "Pipeline"},
        "STAGE_ID": {"type": "crm_status", "statusType": "DEAL_STAGE", "title": "Stage"},
        "SOURCE_ID": {"type": "crm_status", "statusType": "SOURCE", "title": "Source"},
        "ASSIGNED_BY_ID": field("user"),
        "UF_CRM_COLOR": enumeration(json!([{"ID": "79", "VALUE": "Red"}, {"ID": "80", "VALUE": " Blue "}])),
        "UF_CRM_CONTRACT": field("file"),
        "UF_CRM_PHONES": field("crm_multifield"),
    }))
    .unwrap()
}

fn target_catalog() -> FieldCatalog {
    FieldCatalog::from_fields_result(&json!({
        "ID": {"type": "integer", "isReadOnly": true, "title": "ID"},
        "TITLE": field("string"),
        "OPPORTUNITY": field("double"),
        "CATEGORY_ID": {"type": "crm_category", "isImmutable": true, "title": "Pipeline"},
        "STAGE_ID": {"type": "crm_status", "statusType": "DEAL_STAGE", "title": "Stage"},
        "SOURCE_ID": {"type": "crm_status", "statusType": "SOURCE", "title": "Source"},
        "ASSIGNED_BY_ID": field("user"),
        "DATE_CREATE": {"type": "datetime", "isReadOnly": true, "title": "Created"},
        "UF_CRM_COLOUR": enumeration(json!([{"ID": "501", "VALUE": "blue"}, {"ID": "502", "VALUE": "RED"}])),
        "UF_CRM_FROM_PORTAL": field("string"),
        "UF_CRM_FROM_DEAL": field("string"),
        "UF_CRM_FORWARDED_AT": field("datetime"),
        "UF_CRM_CONTRACT": field("file"),
        "UF_CRM_PHONES": field("crm_multifield"),
        "ORIGINATOR_ID": field("string"),
        "ORIGIN_ID": field("string"),
    }))
    .unwrap()
}

fn status(entity: &str, id: &str, name: &str) -> StatusItem {
    StatusItem {
        entity_id: entity.into(),
        status_id: id.into(),
        name: name.into(),
    }
}

fn source_statuses() -> Vec<StatusItem> {
    vec![
        status("DEAL_STAGE_3", "C3:NEW", "Incoming"),
        status("DEAL_STAGE_3", "C3:WON", "Deal won"),
        status("DEAL_STAGE", "NEW", "New"),
        status("SOURCE", "CALLBACK", "Call back"),
    ]
}

fn target_statuses() -> Vec<StatusItem> {
    vec![
        status("DEAL_STAGE", "NEW", "incoming "),
        status("DEAL_STAGE", "WON", "Deal won"),
        status("DEAL_STAGE_5", "C5:NEW", "Incoming"),
        status("SOURCE", "PARTNER", "Partner"),
        status("SOURCE", "CALLBACK", "call back"),
    ]
}

fn plan() -> FieldPlan {
    FieldPlan {
        fields: [
            ("TITLE", "TITLE"),
            ("OPPORTUNITY", "OPPORTUNITY"),
            ("STAGE_ID", "STAGE_ID"),
            ("UF_CRM_COLOR", "UF_CRM_COLOUR"),
            ("UF_CRM_CONTRACT", "UF_CRM_CONTRACT"),
        ]
        .into_iter()
        .map(|(s, t)| (s.to_string(), t.to_string()))
        .collect(),
        values: [
            (
                "STAGE_ID".to_string(),
                ValueMap {
                    by: MatchBy::Id(
                        [("C3:NEW", "NEW"), ("C3:WON", "WON")]
                            .into_iter()
                            .map(|(s, t)| (s.to_string(), t.to_string()))
                            .collect(),
                    ),
                    default: None,
                },
            ),
            (
                "UF_CRM_COLOUR".to_string(),
                ValueMap {
                    by: MatchBy::Label,
                    default: None,
                },
            ),
        ]
        .into_iter()
        .collect(),
        constants: [
            ("CATEGORY_ID".to_string(), json!(0)),
            ("SOURCE_ID".to_string(), json!("PARTNER")),
        ]
        .into_iter()
        .collect(),
        stamp: Stamp {
            source_portal_field: Some("UF_CRM_FROM_PORTAL".into()),
            source_deal_field: Some("UF_CRM_FROM_DEAL".into()),
            transferred_at_field: Some("UF_CRM_FORWARDED_AT".into()),
        },
        files: vec!["UF_CRM_CONTRACT".into()],
    }
}

fn deal() -> Map<String, Value> {
    object(json!({
        "ID": "123", "TITLE": "Big order", "OPPORTUNITY": "1000.00", "CATEGORY_ID": "3",
        "STAGE_ID": "C3:NEW", "SOURCE_ID": "CALLBACK", "ASSIGNED_BY_ID": "7",
        "UF_CRM_COLOR": ["80", "79"],
        "UF_CRM_CONTRACT": {"id": 37375, "showUrl": "/show", "downloadUrl": "/download?fileId=37375"},
        "ORIGINATOR_ID": null, "ORIGIN_ID": null,
    }))
}

struct Fixture {
    plan: FieldPlan,
    source: FieldCatalog,
    target: FieldCatalog,
    source_statuses: Vec<StatusItem>,
    target_statuses: Vec<StatusItem>,
}

impl Fixture {
    fn new(plan: FieldPlan) -> Fixture {
        Fixture {
            plan,
            source: source_catalog(),
            target: target_catalog(),
            source_statuses: source_statuses(),
            target_statuses: target_statuses(),
        }
    }

    fn context(&self) -> ForwardContext<'_> {
        ForwardContext {
            plan: &self.plan,
            source_name: "partner",
            source_domain: "Partner.Bitrix24.com",
            source: PortalSide {
                fields: &self.source,
                statuses: &self.source_statuses,
            },
            target: PortalSide {
                fields: &self.target,
                statuses: &self.target_statuses,
            },
        }
    }

    fn forward(&self, deal: &Map<String, Value>) -> Result<TargetDeal, MappingError> {
        self.context().target_deal(123, deal, at())
    }
}

fn at() -> DateTime<Utc> {
    "2026-12-01T13:05:07.25Z".parse().unwrap()
}

fn with(mut plan: FieldPlan, change: impl FnOnce(&mut FieldPlan)) -> FieldPlan {
    change(&mut plan);
    plan
}

#[test]
fn a_deal_becomes_mapped_fields_constants_stamps_and_its_origin() {
    let target = Fixture::new(plan()).forward(&deal()).unwrap();
    assert_eq!(
        Value::Object(target.fields.clone()),
        json!({
            "TITLE": "Big order",
            "OPPORTUNITY": "1000.00",
            "STAGE_ID": "NEW",
            "UF_CRM_COLOUR": ["501", "502"],
            "CATEGORY_ID": 0,
            "SOURCE_ID": "PARTNER",
            "UF_CRM_FROM_PORTAL": "partner",
            "UF_CRM_FROM_DEAL": "123",
            "UF_CRM_FORWARDED_AT": "2026-12-01T13:05:07+00:00",
            "ORIGINATOR_ID": "b24sync:partner.bitrix24.com",
            "ORIGIN_ID": "123",
        })
    );
    assert_eq!(target.origin, Origin::new("partner.bitrix24.com", 123));
    assert_eq!(
        Value::Object(target.origin.list_filter()),
        json!({"=ORIGINATOR_ID": "b24sync:partner.bitrix24.com", "=ORIGIN_ID": "123"})
    );
}

#[test]
fn an_update_leaves_out_the_fields_settable_only_at_creation() {
    let fixture = Fixture::new(plan());
    let target = fixture.forward(&deal()).unwrap();
    let update = target.update_fields(&fixture.target);
    assert!(!update.contains_key("CATEGORY_ID"));
    assert_eq!(update.len(), target.fields.len() - 1);
}

#[test]
fn empty_source_values_are_not_sent() {
    let mut deal = deal();
    deal.insert("TITLE".into(), Value::Null);
    deal.remove("OPPORTUNITY");
    let target = Fixture::new(plan()).forward(&deal).unwrap();
    assert!(!target.fields.contains_key("TITLE"));
    assert!(!target.fields.contains_key("OPPORTUNITY"));
}

#[test]
fn an_id_map_falls_back_on_its_default_or_names_field_and_value() {
    let mut deal = deal();
    deal.insert("STAGE_ID".into(), json!("C3:LOSE"));
    let error = Fixture::new(plan()).forward(&deal).unwrap_err();
    assert_eq!(
        error,
        MappingError::UnmappedValue {
            field: "STAGE_ID".into(),
            value: "C3:LOSE".into()
        }
    );
    assert!(error.to_string().contains("\"C3:LOSE\""), "{error}");

    let plan = with(plan(), |plan| {
        plan.values.get_mut("STAGE_ID").unwrap().default = Some("NEW".into());
    });
    let target = Fixture::new(plan).forward(&deal).unwrap();
    assert_eq!(target.fields["STAGE_ID"], "NEW");
}

#[test]
fn numbers_are_mapped_by_their_text() {
    let mut deal = deal();
    deal.insert("UF_CRM_COLOR".into(), json!(79));
    let target = Fixture::new(plan()).forward(&deal).unwrap();
    assert_eq!(target.fields["UF_CRM_COLOUR"], "502");
    deal.insert("UF_CRM_COLOR".into(), json!({"x": 1}));
    assert_eq!(
        Fixture::new(plan()).forward(&deal).unwrap_err(),
        MappingError::NotMappable {
            field: "UF_CRM_COLOUR".into(),
            kind: "an object"
        }
    );
}

#[test]
fn stages_match_by_label_in_the_target_funnel() {
    let by_label = |category: Value| {
        with(plan(), |plan| {
            plan.values.insert(
                "STAGE_ID".into(),
                ValueMap {
                    by: MatchBy::Label,
                    default: None,
                },
            );
            plan.constants.insert("CATEGORY_ID".into(), category);
        })
    };
    // "Incoming" on the source (funnel 3) is "incoming " in the general funnel.
    let target = Fixture::new(by_label(json!(0))).forward(&deal()).unwrap();
    assert_eq!(target.fields["STAGE_ID"], "NEW");
    let target = Fixture::new(by_label(json!("5"))).forward(&deal()).unwrap();
    assert_eq!(target.fields["STAGE_ID"], "C5:NEW");

    let mut won = deal();
    won.insert("STAGE_ID".into(), json!("C3:WON"));
    let error = Fixture::new(by_label(json!(5))).forward(&won).unwrap_err();
    assert_eq!(
        error,
        MappingError::NoTargetItem {
            field: "STAGE_ID".into(),
            label: "Deal won".into()
        }
    );
    let mut odd = deal();
    odd.insert("STAGE_ID".into(), json!("C3:ODD"));
    assert_eq!(
        Fixture::new(by_label(json!(0))).forward(&odd).unwrap_err(),
        MappingError::UnknownSourceItem {
            field: "STAGE_ID".into(),
            value: "C3:ODD".into()
        }
    );
}

#[test]
fn other_status_fields_match_by_label_in_their_status_type() {
    let plan = with(plan(), |plan| {
        plan.constants.remove("SOURCE_ID");
        plan.fields.insert("SOURCE_ID".into(), "SOURCE_ID".into());
        plan.values.insert(
            "SOURCE_ID".into(),
            ValueMap {
                by: MatchBy::Label,
                default: None,
            },
        );
    });
    let target = Fixture::new(plan).forward(&deal()).unwrap();
    assert_eq!(target.fields["SOURCE_ID"], "CALLBACK");
}

#[test]
fn a_label_without_a_target_item_takes_the_default_and_duplicates_are_refused() {
    let mut deal = deal();
    deal.insert("UF_CRM_COLOR".into(), json!("80"));
    let mut fixture = Fixture::new(with(plan(), |plan| {
        plan.values.get_mut("UF_CRM_COLOUR").unwrap().default = Some("999".into());
    }));
    fixture.target = FieldCatalog::from_fields_result(&json!({
        "TITLE": field("string"), "OPPORTUNITY": field("double"), "CATEGORY_ID": field("crm_category"),
        "STAGE_ID": field("crm_status"), "SOURCE_ID": field("crm_status"),
        "UF_CRM_FROM_PORTAL": field("string"), "UF_CRM_FROM_DEAL": field("string"),
        "UF_CRM_FORWARDED_AT": field("datetime"), "UF_CRM_CONTRACT": field("file"),
        "UF_CRM_COLOUR": enumeration(json!([{"ID": "1", "VALUE": "green"}])),
    }))
    .unwrap();
    assert_eq!(
        fixture.forward(&deal).unwrap().fields["UF_CRM_COLOUR"],
        "999"
    );

    fixture
        .plan
        .values
        .get_mut("UF_CRM_COLOUR")
        .unwrap()
        .default = None;
    assert_eq!(
        fixture.forward(&deal).unwrap_err(),
        MappingError::NoTargetItem {
            field: "UF_CRM_COLOUR".into(),
            label: " Blue ".into()
        }
    );

    let mut fixture = Fixture::new(plan());
    fixture
        .target_statuses
        .push(status("DEAL_STAGE", "OTHER", "Incoming"));
    fixture.plan.values.insert(
        "STAGE_ID".into(),
        ValueMap {
            by: MatchBy::Label,
            default: None,
        },
    );
    assert_eq!(
        fixture.forward(&deal).unwrap_err(),
        MappingError::AmbiguousTargetItem {
            field: "STAGE_ID".into(),
            label: "Incoming".into()
        }
    );
}

#[test]
fn the_plan_is_checked_against_both_portals() {
    let cases: Vec<(FieldPlan, MappingError)> = vec![
        (
            with(plan(), |p| {
                p.fields.insert("UF_CRM_NOPE".into(), "TITLE".into());
            }),
            MappingError::UnknownSourceField {
                field: "UF_CRM_NOPE".into(),
                key: "fields.UF_CRM_NOPE".into(),
            },
        ),
        (
            with(plan(), |p| {
                p.fields.insert("TITLE".into(), "UF_CRM_MISSING".into());
            }),
            MappingError::UnknownTargetField {
                field: "UF_CRM_MISSING".into(),
                key: "fields.TITLE".into(),
            },
        ),
        (
            with(plan(), |p| {
                p.constants
                    .insert("DATE_CREATE".into(), json!("2026-01-01"));
            }),
            MappingError::ReadOnlyTarget {
                field: "DATE_CREATE".into(),
                key: "constants.DATE_CREATE".into(),
            },
        ),
        (
            with(plan(), |p| p.stamp.source_deal_field = Some("ID".into())),
            MappingError::ReadOnlyTarget {
                field: "ID".into(),
                key: "stamp.source_deal_field".into(),
            },
        ),
        (
            with(plan(), |p| {
                p.fields
                    .insert("ASSIGNED_BY_ID".into(), "ASSIGNED_BY_ID".into());
            }),
            MappingError::NeedsValueMap {
                field: "ASSIGNED_BY_ID".into(),
                kind: "user".into(),
                target: "ASSIGNED_BY_ID".into(),
            },
        ),
        (
            with(plan(), |p| {
                p.values.remove("UF_CRM_COLOUR");
            }),
            MappingError::NeedsValueMap {
                field: "UF_CRM_COLOR".into(),
                kind: "enumeration".into(),
                target: "UF_CRM_COLOUR".into(),
            },
        ),
        (
            with(plan(), |p| {
                p.values.insert(
                    "OPPORTUNITY".into(),
                    ValueMap {
                        by: MatchBy::Label,
                        default: None,
                    },
                );
            }),
            MappingError::NoLabels {
                field: "OPPORTUNITY".into(),
                kind: "double".into(),
            },
        ),
        (
            with(plan(), |p| p.files.clear()),
            MappingError::FileNotListed {
                field: "UF_CRM_CONTRACT".into(),
            },
        ),
        (
            with(plan(), |p| p.files.push("TITLE".into())),
            MappingError::NotAFileField {
                field: "TITLE".into(),
                portal: "source",
            },
        ),
        (
            with(plan(), |p| {
                p.fields
                    .insert("UF_CRM_CONTRACT".into(), "UF_CRM_FROM_DEAL".into());
            }),
            MappingError::NotAFileField {
                field: "UF_CRM_FROM_DEAL".into(),
                portal: "target",
            },
        ),
    ];
    for (plan, expected) in cases {
        let fixture = Fixture::new(plan);
        assert_eq!(fixture.context().check().unwrap_err(), expected);
        assert_eq!(
            fixture.forward(&deal()).unwrap_err(),
            expected,
            "checked before mapping"
        );
        assert!(!expected.to_string().is_empty());
    }
    assert_eq!(Fixture::new(plan()).context().check(), Ok(()));
}

#[test]
fn multifields_lose_their_row_ids_and_empty_rows() {
    let plan = with(plan(), |p| {
        p.fields
            .insert("UF_CRM_PHONES".into(), "UF_CRM_PHONES".into());
    });
    let mut deal = deal();
    deal.insert(
        "UF_CRM_PHONES".into(),
        json!([
            {"ID": "156", "VALUE_TYPE": "WORK", "VALUE": "+13333333555", "TYPE_ID": "PHONE"},
            {"ID": "157", "VALUE_TYPE": "HOME", "VALUE": " "},
            "not a row",
        ]),
    );
    let target = Fixture::new(plan).forward(&deal).unwrap();
    assert_eq!(
        target.fields["UF_CRM_PHONES"],
        json!([{"VALUE": "+13333333555", "VALUE_TYPE": "WORK"}])
    );
    assert_eq!(multifield_for_add(&json!("text")), json!("text"));
}

#[test]
fn files_are_uploaded_as_file_data_and_read_from_the_source_value() {
    assert_eq!(
        file_upload("contract.pdf", b"%PDF-1.4"),
        json!({"fileData": ["contract.pdf", "JVBERi0xLjQ="]})
    );
    let deal = deal();
    assert_eq!(
        source_files(&deal["UF_CRM_CONTRACT"]),
        vec![SourceFile {
            id: 37375,
            download_url: "/download?fileId=37375".into()
        }]
    );
    let several =
        json!([{"id": "1", "downloadUrl": "/a"}, {"id": 2}, {"id": 3, "downloadUrl": "/c"}]);
    assert_eq!(source_files(&several).len(), 2);
    assert!(source_files(&Value::Null).is_empty());
    let plan = plan();
    assert_eq!(
        plan.file_fields().collect::<Vec<_>>(),
        vec![("UF_CRM_CONTRACT", "UF_CRM_CONTRACT")]
    );
}

#[test]
fn the_catalog_reads_immutability_and_status_types() {
    let catalog = source_catalog();
    let category = catalog.get("CATEGORY_ID").unwrap();
    assert!(category.is_immutable);
    assert_eq!(
        catalog.get("SOURCE_ID").unwrap().status_type.as_deref(),
        Some("SOURCE")
    );
    assert!(catalog.get("ID").unwrap().meta.is_read_only);
    assert!(FieldCatalog::from_fields_result(&json!([])).is_err());
}

#[test]
fn an_error_value_is_shortened_to_printable_text() {
    let mut deal = deal();
    deal.insert("STAGE_ID".into(), json!(format!("{}\n", "x".repeat(100))));
    let MappingError::UnmappedValue { value, .. } =
        Fixture::new(plan()).forward(&deal).unwrap_err()
    else {
        panic!("expected an unmapped value");
    };
    assert_eq!(value, format!("{}...", "x".repeat(64)));
}

mod never_panics {
    use proptest::prelude::*;

    use super::*;

    fn any_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
            prop_oneof![
                Just("C3:NEW".to_string()),
                Just("79".to_string()),
                ".{0,12}"
            ]
            .prop_map(Value::from),
        ];
        leaf.prop_recursive(2, 12, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                proptest::collection::btree_map("[A-Z_]{1,6}", inner, 0..3)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn any_source_deal_maps_or_fails_with_an_error(
            values in proptest::collection::vec(any_value(), 8),
            by_label in any::<bool>(),
        ) {
            let mut plan = plan();
            if by_label {
                plan.values.insert("STAGE_ID".into(), ValueMap { by: MatchBy::Label, default: None });
            }
            let fixture = Fixture::new(plan);
            let codes = ["TITLE", "OPPORTUNITY", "CATEGORY_ID", "STAGE_ID", "SOURCE_ID",
                         "UF_CRM_COLOR", "UF_CRM_CONTRACT", "UF_CRM_PHONES"];
            let deal: Map<String, Value> = codes
                .iter()
                .zip(values)
                .map(|(code, value)| (code.to_string(), value))
                .collect();
            if let Ok(target) = fixture.forward(&deal) {
                prop_assert_eq!(&target.fields["ORIGIN_ID"], "123");
            }
            let _ = source_files(&deal["UF_CRM_CONTRACT"]);
            let _ = multifield_for_add(&deal["UF_CRM_PHONES"]);
            let _ = crate::forward::products::rows_for_target(&[deal["TITLE"].clone()]);
        }

        #[test]
        fn any_queue_body_is_a_job_or_an_error(body in ".{0,200}") {
            let _ = crate::forward::job::ForwardJob::from_json(&body);
        }
    }
}
