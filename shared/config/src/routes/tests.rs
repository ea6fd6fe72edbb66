use serde_json::json;

use super::*;
use crate::Config;

const SECRET: &str = "Route-Secret_0123456789";
const HOOK: &str = "zz9secretcode77";

/// Three portals: `partner` has an application, `webshop` only a webhook.
fn portals() -> String {
    format!(
        r#"
[portals.central]
webhook_url = "https://central.bitrix24.com/rest/1/{HOOK}/"
[portals.partner]
webhook_url = "https://partner.bitrix24.com/rest/1/{HOOK}/"
application_tokens = ["partner-app-token-0001"]
[portals.webshop]
webhook_url = "https://webshop.bitrix24.com/rest/1/{HOOK}/"
"#
    )
}

const COMPLETE_TOML: &str = r#"
[routes.partner-to-central]
source = "partner"
target = "central"
secret = "Route-Secret_0123456789"
robot_code = "b24sync.forward"
copy_products = false
copy_contacts = true
copy_company = true
copy_files = ["UF_CRM_CONTRACT"]
wait_for_reply = true

[routes.partner-to-central.fields]
TITLE = "TITLE"
OPPORTUNITY = "OPPORTUNITY"
STAGE_ID = "STAGE_ID"
UF_CRM_COLOR = "UF_CRM_COLOUR"
UF_CRM_CONTRACT = "UF_CRM_CONTRACT"

[routes.partner-to-central.values]
STAGE_ID = { by = "id", map = { "C3:NEW" = "NEW", "C3:WON" = "WON" }, default = "NEW" }
UF_CRM_COLOUR = { by = "label", default = 501 }

[routes.partner-to-central.constants]
CATEGORY_ID = 0
SOURCE_ID = "PARTNER"
UF_CRM_TAGS = ["a", 2]

[routes.partner-to-central.stamp]
source_portal_field = "UF_CRM_FROM_PORTAL"
source_deal_field = "UF_CRM_FROM_DEAL"
transferred_at_field = "UF_CRM_FORWARDED_AT"

[routes.partner-to-central.return_values]
targetDealId = "target_deal_id"
targetDealUrl = "target_deal_url"

[routes.webshop-to-central]
source = "webshop"
target = "central"
secret = "Webshop-Secret-abcdef"
fields = { TITLE = "TITLE" }
"#;

fn complete_json() -> String {
    let routes = json!({
        "partner-to-central": {
            "source": "partner", "target": "central", "secret": SECRET,
            "robot_code": "b24sync.forward",
            "copy_products": false, "copy_contacts": true, "copy_company": true,
            "copy_files": ["UF_CRM_CONTRACT"], "wait_for_reply": true,
            "fields": {"TITLE": "TITLE", "OPPORTUNITY": "OPPORTUNITY", "STAGE_ID": "STAGE_ID",
                       "UF_CRM_COLOR": "UF_CRM_COLOUR", "UF_CRM_CONTRACT": "UF_CRM_CONTRACT"},
            "values": {
                "STAGE_ID": {"by": "id", "map": {"C3:NEW": "NEW", "C3:WON": "WON"}, "default": "NEW"},
                "UF_CRM_COLOUR": {"by": "label", "default": "501"}
            },
            "constants": {"CATEGORY_ID": 0, "SOURCE_ID": "PARTNER", "UF_CRM_TAGS": ["a", 2]},
            "stamp": {"source_portal_field": "UF_CRM_FROM_PORTAL", "source_deal_field": "UF_CRM_FROM_DEAL",
                      "transferred_at_field": "UF_CRM_FORWARDED_AT"},
            "return_values": {"targetDealId": "target_deal_id", "targetDealUrl": "target_deal_url"}
        },
        "webshop-to-central": {
            "source": "webshop", "target": "central", "secret": "Webshop-Secret-abcdef",
            "fields": {"TITLE": "TITLE"}
        }
    });
    let portals = json!({
        "central": {"webhook_url": format!("https://central.bitrix24.com/rest/1/{HOOK}/")},
        "partner": {"webhook_url": format!("https://partner.bitrix24.com/rest/1/{HOOK}/"),
                    "application_tokens": ["partner-app-token-0001"]},
        "webshop": {"webhook_url": format!("https://webshop.bitrix24.com/rest/1/{HOOK}/")}
    });
    json!({"portals": portals, "routes": routes}).to_string()
}

fn strings<const N: usize>(pairs: [(&str, &str); N]) -> BTreeMap<String, String> {
    pairs
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[test]
fn a_complete_route_reads_the_same_from_toml_and_json() {
    let config = Config::from_toml_str(&(portals() + COMPLETE_TOML)).unwrap();
    let from_json = Config::from_json_str(&complete_json()).unwrap();
    assert_eq!(config.routes, from_json.routes);

    let route = config.route("partner-to-central").unwrap();
    let expected = ForwardRoute {
        name: "partner-to-central".into(),
        source: "partner".into(),
        target: "central".into(),
        secret: Some(RouteSecret::new(SECRET.into())),
        robot_code: "b24sync.forward".into(),
        plan: FieldPlan {
            fields: strings([
                ("TITLE", "TITLE"),
                ("OPPORTUNITY", "OPPORTUNITY"),
                ("STAGE_ID", "STAGE_ID"),
                ("UF_CRM_COLOR", "UF_CRM_COLOUR"),
                ("UF_CRM_CONTRACT", "UF_CRM_CONTRACT"),
            ]),
            values: BTreeMap::from([
                (
                    "STAGE_ID".to_string(),
                    ValueMap {
                        by: MatchBy::Id(strings([("C3:NEW", "NEW"), ("C3:WON", "WON")])),
                        default: Some("NEW".into()),
                    },
                ),
                (
                    "UF_CRM_COLOUR".to_string(),
                    ValueMap {
                        by: MatchBy::Label,
                        default: Some("501".into()),
                    },
                ),
            ]),
            constants: BTreeMap::from([
                ("CATEGORY_ID".to_string(), json!(0)),
                ("SOURCE_ID".to_string(), json!("PARTNER")),
                ("UF_CRM_TAGS".to_string(), json!(["a", 2])),
            ]),
            stamp: Stamp {
                source_portal_field: Some("UF_CRM_FROM_PORTAL".into()),
                source_deal_field: Some("UF_CRM_FROM_DEAL".into()),
                transferred_at_field: Some("UF_CRM_FORWARDED_AT".into()),
            },
            files: vec!["UF_CRM_CONTRACT".into()],
        },
        copy_products: false,
        copy_contacts: true,
        copy_company: true,
        reply: ReplyPlan {
            wait_for_reply: true,
            return_values: BTreeMap::from([
                ("targetDealId".to_string(), ReturnValue::TargetDealId),
                ("targetDealUrl".to_string(), ReturnValue::TargetDealUrl),
            ]),
        },
    };
    assert_eq!(*route, expected);
    assert_eq!(
        route.reply.return_values(42, "https://central.bitrix24.com/crm/deal/details/42/"),
        json!({"targetDealId": "42", "targetDealUrl": "https://central.bitrix24.com/crm/deal/details/42/"})
            .as_object()
            .unwrap()
            .clone()
    );
}

#[test]
fn optional_keys_have_their_defaults() {
    let text = portals() + "[routes.r]\nsource = \"partner\"\ntarget = \"central\"\n";
    let config = Config::from_toml_str(&text).unwrap();
    let route = config.route("r").unwrap();
    assert_eq!(route.secret, None, "an application robot needs no secret");
    assert_eq!(route.robot_code, "r");
    assert_eq!(route.plan, FieldPlan::default());
    assert!(route.copy_products && !route.copy_contacts && !route.copy_company);
    assert_eq!(route.reply, ReplyPlan::default());
    assert!(Config::from_toml_str(&portals()).unwrap().routes.is_empty());
}

#[test]
fn debug_output_hides_route_secrets() {
    let config = Config::from_toml_str(&(portals() + COMPLETE_TOML)).unwrap();
    let shown = format!("{config:?}");
    assert!(
        !shown.contains(SECRET) && !shown.contains("Webshop-Secret"),
        "{shown}"
    );
    assert!(shown.contains("RouteSecret(***)"), "{shown}");
}

#[test]
fn an_unknown_route_lists_the_configured_ones() {
    let config = Config::from_toml_str(&(portals() + COMPLETE_TOML)).unwrap();
    let error = config.route("nope").unwrap_err();
    assert_eq!(
        error.to_string(),
        "unknown route \"nope\": configured routes are [partner-to-central, webshop-to-central]"
    );
}

/// A route `r` from `partner` (with an application) to `central`, plus `lines`.
fn route_with(lines: &str) -> String {
    format!(
        "{}[routes.r]\nsource = \"partner\"\ntarget = \"central\"\n{lines}\n",
        portals()
    )
}

/// Every rule, the key its error names and a part of the message. No error may repeat
/// a secret.
#[test]
fn every_rule_names_the_bad_key() {
    let webshop = |lines: &str| {
        format!(
            "{}[routes.w]\nsource = \"webshop\"\ntarget = \"central\"\n{lines}\n",
            portals()
        )
    };
    let cases: Vec<(String, &str, &str)> = vec![
        (
            portals() + "[routes.\"bad name\"]\nsource = \"partner\"\ntarget = \"central\"\n",
            "routes.bad name",
            "route names may use only",
        ),
        (
            portals() + "[routes.r]\ntarget = \"central\"\n",
            "routes.r.source",
            "required key is missing",
        ),
        (
            portals() + "[routes.r]\nsource = \"partner\"\n",
            "routes.r.target",
            "required key is missing",
        ),
        (
            portals() + "[routes.r]\nsource = \"nope\"\ntarget = \"central\"\n",
            "routes.r.source",
            "configured portals are [central, partner, webshop]",
        ),
        (
            portals() + "[routes.r]\nsource = \"partner\"\ntarget = \"nope\"\n",
            "routes.r.target",
            "no portal of that name",
        ),
        (
            portals() + "[routes.r]\nsource = \"partner\"\ntarget = \"partner\"\n",
            "routes.r.target",
            "another portal than the source",
        ),
        (route_with("colour = 1"), "routes.r.colour", "unknown key"),
        (
            webshop(""),
            "routes.w.secret",
            "required: portal webshop has no application_tokens",
        ),
        (
            route_with(&format!("secret = \"{}\"", &SECRET[..15])),
            "routes.r.secret",
            "at least 16 characters",
        ),
        (
            route_with(&format!("secret = \"{SECRET}/?&\"")),
            "routes.r.secret",
            "at least 16 characters",
        ),
        (
            route_with("secret = 12345678901234567"),
            "routes.r.secret",
            "expected a string",
        ),
        (
            route_with("robot_code = \"has space\""),
            "routes.r.robot_code",
            "bizproc.robot.add",
        ),
        (
            route_with("")
                + "[routes.s]\nsource = \"partner\"\ntarget = \"central\"\nrobot_code = \"r\"\n",
            "routes.s.robot_code",
            "route r has the same robot code",
        ),
        (
            route_with("fields = { title = \"TITLE\" }"),
            "routes.r.fields.title",
            "source expected a field code",
        ),
        (
            route_with("fields = { TITLE = \"UF-CRM\" }"),
            "routes.r.fields.TITLE",
            "expected a field code",
        ),
        (
            route_with(&format!(
                "fields = {{ TITLE = \"UF_CRM_{}\" }}",
                "X".repeat(44)
            )),
            "routes.r.fields.TITLE",
            "at most 50",
        ),
        (
            route_with("fields = { TITLE = \"ORIGIN_ID\" }"),
            "routes.r.fields.TITLE",
            "set by the forwarder",
        ),
        (
            route_with("fields = { TITLE = \"TITLE\", NAME = \"TITLE\" }"),
            "routes.r.fields.TITLE",
            "TITLE is already written by routes.r.fields.NAME",
        ),
        (
            route_with("values.TITLE = { by = \"label\" }"),
            "routes.r.values.TITLE",
            "is not a target of routes.r.fields",
        ),
        (
            route_with("fields = { STAGE_ID = \"STAGE_ID\" }\nvalues.STAGE_ID = { by = \"id\" }"),
            "routes.r.values.STAGE_ID.map",
            "needs a map",
        ),
        (
            route_with(
                "fields = { STAGE_ID = \"STAGE_ID\" }\nvalues.STAGE_ID = { by = \"id\", map = {} }",
            ),
            "routes.r.values.STAGE_ID.map",
            "needs a map",
        ),
        (
            route_with(
                "fields = { STAGE_ID = \"STAGE_ID\" }\nvalues.STAGE_ID = { by = \"label\", map = { A = \"B\" } }",
            ),
            "routes.r.values.STAGE_ID.map",
            "takes no map",
        ),
        (
            route_with(
                "fields = { STAGE_ID = \"STAGE_ID\" }\nvalues.STAGE_ID = { by = \"id\", map = { A = \" \" } }",
            ),
            "routes.r.values.STAGE_ID.map",
            "must not be empty",
        ),
        (
            route_with("fields = { STAGE_ID = \"STAGE_ID\" }\nvalues.STAGE_ID = { by = \"name\" }"),
            "routes.r.values.STAGE_ID.by",
            "expected id or label",
        ),
        (
            route_with(
                "fields = { STAGE_ID = \"STAGE_ID\" }\nvalues.STAGE_ID = { by = \"label\", default = \"\" }",
            ),
            "routes.r.values.STAGE_ID.default",
            "must not be empty",
        ),
        (
            route_with(
                "fields = { STAGE_ID = \"STAGE_ID\" }\nvalues.STAGE_ID = { by = \"label\", default = 1.5 }",
            ),
            "routes.r.values.STAGE_ID.default",
            "expected text or a whole number",
        ),
        (
            route_with("constants = { category = 0 }"),
            "routes.r.constants.category",
            "expected a field code",
        ),
        (
            route_with("constants = { ORIGINATOR_ID = \"x\" }"),
            "routes.r.constants.ORIGINATOR_ID",
            "set by the forwarder",
        ),
        (
            route_with("constants = { OPENED = true }"),
            "routes.r.constants.OPENED",
            "\"Y\" / \"N\"",
        ),
        (
            route_with("constants = { TITLE = { a = 1 } }"),
            "routes.r.constants.TITLE",
            "expected text, a number",
        ),
        (
            route_with("fields = { TITLE = \"TITLE\" }\nconstants = { TITLE = \"x\" }"),
            "routes.r.constants.TITLE",
            "already written by routes.r.fields.TITLE",
        ),
        (
            route_with("stamp = { source_deal_field = \"uf\" }"),
            "routes.r.stamp.source_deal_field",
            "expected a field code",
        ),
        (
            route_with("stamp = { source_deal_field = \"ID\" }"),
            "routes.r.stamp.source_deal_field",
            "set by the forwarder",
        ),
        (
            route_with(
                "constants = { UF_CRM_X = \"x\" }\nstamp = { transferred_at_field = \"UF_CRM_X\" }",
            ),
            "routes.r.stamp.transferred_at_field",
            "already written by routes.r.constants.UF_CRM_X",
        ),
        (
            route_with("stamp = { source = \"UF_CRM_X\" }"),
            "routes.r.stamp.source",
            "unknown key",
        ),
        (
            route_with("copy_files = [\"UF_CRM_FILE\"]"),
            "routes.r.copy_files[0]",
            "also in fields",
        ),
        (
            route_with(
                "fields = { UF_CRM_FILE = \"UF_CRM_FILE\" }\ncopy_files = [\"UF_CRM_FILE\", \"UF_CRM_FILE\"]",
            ),
            "routes.r.copy_files[1]",
            "listed twice",
        ),
        (
            route_with(
                "fields = { UF_CRM_FILE = \"UF_CRM_FILE\" }\ncopy_files = [\"UF_CRM_FILE\"]\nvalues.UF_CRM_FILE = { by = \"label\" }",
            ),
            "routes.r.copy_files[0]",
            "uploaded, not mapped",
        ),
        (
            route_with("copy_products = \"yes\""),
            "routes.r.copy_products",
            "expected a boolean",
        ),
        (
            webshop(&format!("secret = \"{SECRET}\"\nwait_for_reply = true")),
            "routes.w.wait_for_reply",
            "only an application robot can wait",
        ),
        (
            route_with("return_values = { targetDealId = \"target_deal_id\" }"),
            "routes.r.return_values",
            "set wait_for_reply = true",
        ),
        (
            route_with("wait_for_reply = true\nreturn_values = { \"1st\" = \"target_deal_id\" }"),
            "routes.r.return_values.1st",
            "expected a return property name",
        ),
        (
            route_with("wait_for_reply = true\nreturn_values = { id = \"deal_id\" }"),
            "routes.r.return_values.id",
            "target_deal_id",
        ),
    ];
    for (text, key, fragment) in cases {
        let (found_key, message) = match Config::from_toml_str(&text) {
            Err(ConfigError::Invalid { key, message }) => (key, message),
            other => panic!("{key}: expected an invalid-key error, got {other:?}"),
        };
        assert_eq!(found_key, key, "{message}");
        assert!(message.contains(fragment), "{key}: {message}");
        assert!(
            !message.contains(SECRET) && !message.contains(&SECRET[..15]),
            "{message}"
        );
        assert!(!message.contains(HOOK), "{message}");
    }
}

#[test]
fn json_errors_name_the_same_keys() {
    let mut document: Value = serde_json::from_str(&complete_json()).unwrap();
    document["routes"]["partner-to-central"]["secret"] = json!("short");
    let error = Config::from_json_str(&document.to_string()).unwrap_err();
    assert_eq!(
        error.to_string(),
        "routes.partner-to-central.secret: expected at least 16 characters of A-Z, a-z, 0-9, '-', '.', '_', '~'"
    );
    document["routes"]["partner-to-central"]["secret"] = json!(SECRET);
    document["routes"]["partner-to-central"]["values"]["STAGE_ID"]["map"] = json!({"C3:NEW": true});
    let error = Config::from_json_str(&document.to_string()).unwrap_err();
    assert!(
        error.to_string().starts_with(
            "routes.partner-to-central.values.STAGE_ID.map.C3:NEW: expected text or a whole number"
        ),
        "{error}"
    );
}

#[test]
fn the_shipped_example_has_a_valid_route() {
    let config = Config::from_toml_str(include_str!("../../../../config.example.toml")).unwrap();
    let route = config.route("partner-to-acme").unwrap();
    assert_eq!(
        (route.source.as_str(), route.target.as_str()),
        ("partner", "acme")
    );
    assert_eq!(route.robot_code, "b24sync_partner_to_acme");
    assert_eq!(
        route.plan.file_fields().collect::<Vec<_>>(),
        vec![("UF_CRM_CONTRACT", "UF_CRM_CONTRACT")]
    );
    assert_eq!(
        route.plan.values["STAGE_ID"].default.as_deref(),
        Some("NEW")
    );
    assert_eq!(route.plan.values["UF_CRM_COLOUR"].by, MatchBy::Label);
}
