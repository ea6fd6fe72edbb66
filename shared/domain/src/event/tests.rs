use super::*;

use proptest::prelude::*;

const ACME_APP_TOKEN: &str = "51856fefc120afa4b628cc82d3935cce";
const ACME_HOOK_TOKEN: &str = "jvh9y1ulvt2m6k5or90v9mg8nn32ozas";
const EXAMPLE_TOKEN: &str = "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";
const SDK_TOKEN: &str = "sdk-playground-token-7f3a";
const SDK_MEMBER: &str = "010b6886ebc205e43ae65000ee00addb";
const WRONG_TOKEN: &str = "not-the-token-0000";
const FORM: &str = "application/x-www-form-urlencoded";
const JSON: &str = "application/json";

/// Every secret these tests use: no refusal may repeat one.
const SECRETS: [&str; 5] = [
    ACME_APP_TOKEN,
    ACME_HOOK_TOKEN,
    EXAMPLE_TOKEN,
    SDK_TOKEN,
    WRONG_TOKEN,
];

fn portals() -> Vec<PortalIdentity> {
    vec![
        PortalIdentity {
            name: "acme".into(),
            domain: "some-domain.bitrix24.com".into(),
            member_id: None,
            // The application's token and the outgoing webhook's (a rotation pair).
            tokens: vec![ACME_APP_TOKEN.into(), ACME_HOOK_TOKEN.into()],
        },
        PortalIdentity {
            name: "example".into(),
            domain: "example.bitrix24.com".into(),
            member_id: None,
            tokens: vec![EXAMPLE_TOKEN.into()],
        },
        PortalIdentity {
            name: "sdk".into(),
            domain: "bitrix24-php-sdk-playground.bitrix24.com".into(),
            member_id: Some(SDK_MEMBER.into()),
            tokens: vec![SDK_TOKEN.into()],
        },
        PortalIdentity {
            name: "tokenless".into(),
            domain: "tokenless.bitrix24.com".into(),
            member_id: None,
            tokens: vec![],
        },
    ]
}

fn received_at() -> DateTime<Utc> {
    "2026-12-01T13:00:00.5Z".parse().unwrap()
}

struct Post<'a> {
    method: &'a str,
    headers: Vec<(&'a str, &'a [u8])>,
    query: Option<&'a str>,
    body: Vec<u8>,
    base64: bool,
}

fn post(content_type: &'static str, body: impl Into<Vec<u8>>) -> Post<'static> {
    Post {
        method: "POST",
        headers: vec![("content-type", content_type.as_bytes())],
        query: None,
        body: body.into(),
        base64: false,
    }
}

impl<'a> Post<'a> {
    fn header(mut self, name: &'a str, value: &'a str) -> Self {
        self.headers.push((name, value.as_bytes()));
        self
    }

    fn query(mut self, query: &'a str) -> Self {
        self.query = Some(query);
        self
    }

    fn send(&self) -> Result<ChangeMessage, Rejection> {
        let request = IntakeRequest {
            method: self.method,
            headers: &self.headers,
            query: self.query,
            body: &self.body,
            body_is_base64: self.base64,
        };
        accept(&request, &portals(), received_at())
    }

    /// Refused with `status`, and the refusal repeats no secret.
    fn refused(&self, status: u16) -> Rejection {
        let rejection = self.send().expect_err("the request must be refused");
        assert_eq!(rejection.status(), status, "{rejection}");
        let shown = format!("{rejection} {rejection:?}");
        for secret in SECRETS {
            assert!(!shown.contains(secret), "{shown} shows a token");
        }
        rejection
    }
}

/// A JSON document as PHP's `http_build_query` sends it: nested keys in brackets,
/// brackets and every other reserved byte percent-encoded, scalars as strings.
fn http_build_query(document: &serde_json::Value) -> String {
    fn walk(prefix: &str, value: &serde_json::Value, out: &mut Vec<(String, String)>) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, value) in map {
                    let key = if prefix.is_empty() {
                        key.clone()
                    } else {
                        format!("{prefix}[{key}]")
                    };
                    walk(&key, value, out);
                }
            }
            serde_json::Value::String(text) => out.push((prefix.into(), text.clone())),
            other => out.push((prefix.into(), other.to_string())),
        }
    }
    let mut pairs = Vec::new();
    walk("", document, &mut pairs);
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

fn message(portal: &str, entity: Entity, id: u64, action: ChangeAction, ts: i64) -> ChangeMessage {
    ChangeMessage {
        portal: portal.into(),
        entity,
        id,
        action,
        event_time: DateTime::from_timestamp(ts, 0),
        received_at: received_at(),
    }
}

// --- every event example of the reference sheet, section 1 ---

/// [D] api-reference/events/index.md, application handler.
fn application_handler_example() -> serde_json::Value {
    serde_json::json!({
        "event": "ONCRMDEALADD",
        "event_handler_id": "185",
        "data": {"FIELDS": {"ID": "7405"}},
        "ts": "1766047124",
        "auth": {
            "access_token": "s6p6eclrvim6da22ft9ch94ekreb52lv",
            "expires_in": "3600",
            "scope": "crm",
            "domain": "some-domain.bitrix24.com",
            "server_endpoint": "https://oauth.bitrix.info/rest/",
            "status": "L",
            "client_endpoint": "https://some-domain.bitrix24.com/rest/",
            "member_id": "d897063e1ce7c5eb9f04b9751eef5915",
            "application_token": ACME_APP_TOKEN
        }
    })
}

#[test]
fn accepts_the_application_handler_example_as_a_real_form_body() {
    let body = http_build_query(&application_handler_example());
    assert!(body.contains("data%5BFIELDS%5D%5BID%5D=7405"), "{body}");
    let accepted = post(FORM, body).send().unwrap();
    assert_eq!(
        accepted,
        message("acme", Entity::Deal, 7405, ChangeAction::Add, 1766047124)
    );
}

#[test]
fn accepts_the_outgoing_webhook_example_with_the_second_configured_token() {
    let document = serde_json::json!({
        "event": "ONCRMDEALADD",
        "event_handler_id": "975",
        "data": {"FIELDS": {"ID": "7405"}},
        "ts": "1766047124",
        "auth": {
            "domain": "some-domain.bitrix24.com",
            "client_endpoint": "https://some-domain.bitrix24.com/rest/",
            "server_endpoint": "https://oauth.bitrix.info/rest/",
            "member_id": "d897063e1ce7c5eb9f04b9751eef5915",
            "application_token": ACME_HOOK_TOKEN
        }
    });
    let accepted = post(FORM, http_build_query(&document)).send().unwrap();
    assert_eq!(
        accepted,
        message("acme", Entity::Deal, 7405, ChangeAction::Add, 1766047124)
    );
}

#[test]
fn accepts_the_request_dump_of_the_local_webhooks_page() {
    // `$_REQUEST` from [D] local-integrations/local-webhooks.md, as it was posted.
    let body = format!(
        "event=ONCRMDEALUPDATE&data%5BFIELDS%5D%5BID%5D=662&ts=1724140800\
         &auth%5Bdomain%5D=example.bitrix24.com\
         &auth%5Bmember_id%5D=xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\
         &auth%5Bapplication_token%5D={EXAMPLE_TOKEN}"
    );
    let accepted = post(FORM, body).send().unwrap();
    assert_eq!(
        accepted,
        message(
            "example",
            Entity::Deal,
            662,
            ChangeAction::Update,
            1724140800
        )
    );
}

/// The real captured body of the PHP SDK's test, verbatim, with the token appended
/// as that test does.
fn captured_sdk_body(token: &str) -> String {
    format!(
        "event=ONCRMCONTACTADD&event_handler_id=58&data%5BFIELDS%5D%5BID%5D=134806&ts=1727018926&auth%5Baccess_token%5D=be45f0660071849a0058f18a000000010000077261ef50fc26f1357adbd86a052c9e48&auth%5Bexpires%5D=1727022526&auth%5Bexpires_in%5D=3600&auth%5Bscope%5D=crm%2Cplacement%2Cuser_brief&auth%5Bdomain%5D=bitrix24-php-sdk-playground.bitrix24.com&auth%5Bserver_endpoint%5D=https%3A%2F%2Foauth.bitrix.info%2Frest%2F&auth%5Bstatus%5D=L&auth%5Bclient_endpoint%5D=https%3A%2F%2Fbitrix24-php-sdk-playground.bitrix24.com%2Frest%2F&auth%5Bmember_id%5D=010b6886ebc205e43ae65000ee00addb&auth%5Buser_id%5D=1&auth%5Bapplication_token%5D={token}"
    )
}

#[test]
fn accepts_the_real_captured_sdk_body() {
    let accepted = post(FORM, captured_sdk_body(SDK_TOKEN)).send().unwrap();
    assert_eq!(
        accepted,
        message(
            "sdk",
            Entity::Contact,
            134806,
            ChangeAction::Add,
            1727018926
        )
    );
    // The same body with a token of another portal is not that portal's event.
    post(FORM, captured_sdk_body(ACME_APP_TOKEN)).refused(401);
}

#[test]
fn accepts_the_deal_update_example_as_form_and_as_json() {
    // [D] api-reference/crm/deals/crm-deal-update.md, verbatim but for the token.
    let json = format!(
        r#"{{"event":"ONCRMDEALUPDATE","event_handler_id":"201","data":{{"FIELDS":{{"ID":"759"}}}},"ts":"1736405807","auth":{{"access_token":"s6p6eclrvim6da22ft9ch94ekreb52lv","expires_in":"3600","scope":"crm","domain":"some-domain.bitrix24.com","server_endpoint":"https://oauth.bitrix.info/rest/","status":"F","client_endpoint":"https://some-domain.bitrix24.com/rest/","member_id":"a223c6b3710f85df22e9377d6c4f7553","refresh_token":"4s386p3q0tr8dy89xvmt96234v3dljg8","application_token":"{ACME_APP_TOKEN}"}}}}"#
    );
    let expected = message("acme", Entity::Deal, 759, ChangeAction::Update, 1736405807);
    assert_eq!(post(JSON, json.clone()).send().unwrap(), expected);
    let document: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        post(FORM, http_build_query(&document)).send().unwrap(),
        expected
    );
}

#[test]
fn a_funnel_change_is_a_deal_update() {
    let mut document = application_handler_example();
    document["event"] = "ONCRMDEALMOVETOCATEGORY".into();
    document["data"] =
        serde_json::json!({"FIELDS": {"ID": "6675", "CATEGORY_ID": "1", "STAGE_ID": "C1:NEW"}});
    let accepted = post(FORM, http_build_query(&document)).send().unwrap();
    assert_eq!(
        (accepted.entity, accepted.id, accepted.action),
        (Entity::Deal, 6675, ChangeAction::Update)
    );
}

#[test]
fn maps_every_crm_event_code_in_any_case() {
    let cases = [
        ("ONCRMDEALADD", Entity::Deal, ChangeAction::Add),
        ("ONCRMDEALUPDATE", Entity::Deal, ChangeAction::Update),
        ("ONCRMDEALDELETE", Entity::Deal, ChangeAction::Delete),
        ("ONCRMCONTACTADD", Entity::Contact, ChangeAction::Add),
        ("ONCRMCONTACTUPDATE", Entity::Contact, ChangeAction::Update),
        ("ONCRMCONTACTDELETE", Entity::Contact, ChangeAction::Delete),
        ("ONCRMLEADADD", Entity::Lead, ChangeAction::Add),
        ("ONCRMLEADUPDATE", Entity::Lead, ChangeAction::Update),
        ("ONCRMLEADDELETE", Entity::Lead, ChangeAction::Delete),
        ("ONCRMCOMPANYADD", Entity::Company, ChangeAction::Add),
        ("ONCRMCOMPANYUPDATE", Entity::Company, ChangeAction::Update),
        ("ONCRMCOMPANYDELETE", Entity::Company, ChangeAction::Delete),
        ("onCrmCompanyDelete", Entity::Company, ChangeAction::Delete),
        (
            "onCrmDealMoveToCategory",
            Entity::Deal,
            ChangeAction::Update,
        ),
    ];
    for (code, entity, action) in cases {
        let mut document = application_handler_example();
        document["event"] = code.into();
        let accepted = post(FORM, http_build_query(&document)).send().unwrap();
        assert_eq!(
            (accepted.entity, accepted.action),
            (entity, action),
            "{code}"
        );
    }
}

/// [D] api-reference/crm/universal/events/on-crm-dynamic-item-update.md, with the
/// acme portal's token: item 24 of the smart process 1220.
#[test]
fn a_smart_process_event_names_its_type() {
    let mut document = application_handler_example();
    for (code, action) in [
        ("ONCRMDYNAMICITEMADD", ChangeAction::Add),
        ("ONCRMDYNAMICITEMUPDATE", ChangeAction::Update),
        ("onCrmDynamicItemDelete", ChangeAction::Delete),
    ] {
        document["event"] = code.into();
        document["data"] = serde_json::json!({"FIELDS": {"ID": "24", "ENTITY_TYPE_ID": "1220"}});
        let accepted = post(FORM, http_build_query(&document)).send().unwrap();
        assert_eq!(
            (accepted.entity, accepted.id, accepted.action),
            (Entity::Smart(1220), 24, action),
            "{code}"
        );
        assert!(accepted.to_json().contains("\"sp_1220\""));
    }
    for (fields, named) in [
        (
            serde_json::json!({"ID": "24"}),
            "ENTITY_TYPE_ID] is missing",
        ),
        (
            serde_json::json!({"ID": "24", "ENTITY_TYPE_ID": "31"}),
            "smart process's entity type ID",
        ),
        (
            serde_json::json!({"ID": "24", "ENTITY_TYPE_ID": "12x"}),
            "smart process's entity type ID",
        ),
    ] {
        document["data"] = serde_json::json!({"FIELDS": fields});
        let refused = post(FORM, http_build_query(&document)).refused(400);
        assert!(refused.to_string().contains(named), "{refused}");
    }
}

// --- where the token may be ---

fn without_token() -> serde_json::Value {
    let mut document = application_handler_example();
    document["auth"]
        .as_object_mut()
        .unwrap()
        .remove("application_token");
    document
}

#[test]
fn finds_the_token_in_every_json_place() {
    let places = [
        serde_json::json!({"token": ACME_APP_TOKEN}),
        serde_json::json!({"auth": {"token": ACME_APP_TOKEN}}),
        serde_json::json!({"auth": {"application_token": ACME_APP_TOKEN}}),
        serde_json::json!({"data": {"token": ACME_APP_TOKEN}}),
        serde_json::json!({"data": {"auth": {"token": ACME_APP_TOKEN}}}),
    ];
    for place in places {
        // A custom hook: numbers where Bitrix24 sends strings, a minimal auth block.
        let mut document = serde_json::json!({
            "event": "ONCRMLEADUPDATE",
            "data": {"FIELDS": {"ID": 42}},
            "ts": 1766047124,
            "auth": {"domain": "Some-Domain.Bitrix24.com"}
        });
        merge(&mut document, &place);
        let accepted = post(JSON, document.to_string()).send();
        assert_eq!(
            accepted,
            Ok(message(
                "acme",
                Entity::Lead,
                42,
                ChangeAction::Update,
                1766047124
            )),
            "{place}"
        );
        // The same places in a form body.
        let accepted = post(FORM, http_build_query(&document)).send();
        assert_eq!(accepted.map(|m| m.id), Ok(42), "{place} as a form");
    }
}

fn merge(target: &mut serde_json::Value, patch: &serde_json::Value) {
    match (target, patch) {
        (serde_json::Value::Object(target), serde_json::Value::Object(patch)) => {
            for (key, value) in patch {
                merge(target.entry(key).or_insert(serde_json::Value::Null), value);
            }
        }
        (target, patch) => *target = patch.clone(),
    }
}

#[test]
fn finds_the_token_in_headers_and_the_query() {
    let body = http_build_query(&without_token());
    let bearer = format!("bEaReR {ACME_HOOK_TOKEN}");
    let query = format!("x=1&token={ACME_HOOK_TOKEN}");
    let ways = [
        post(FORM, body.clone()).header("X-Bitrix-Token", ACME_HOOK_TOKEN),
        post(FORM, body.clone()).header("x-webhook-token", ACME_HOOK_TOKEN),
        post(FORM, body.clone()).header("Authorization", &bearer),
        post(FORM, body.clone()).query(&query),
    ];
    for way in ways {
        assert_eq!(way.send().map(|m| m.id), Ok(7405));
    }
    // The same token twice is one token; a Basic authorization is not a token source.
    let agreeing = post(FORM, http_build_query(&application_handler_example()))
        .header("X-Webhook-Token", ACME_APP_TOKEN)
        .header("Authorization", "Basic dXNlcjpwYXNz");
    assert_eq!(agreeing.send().map(|m| m.id), Ok(7405));
}

#[test]
fn reads_base64_bodies_and_charset_parameters() {
    use base64::Engine;
    let body = captured_sdk_body(SDK_TOKEN);
    let mut request = post(
        "Application/X-WWW-Form-Urlencoded; charset=UTF-8",
        base64::engine::general_purpose::STANDARD.encode(&body),
    );
    request.base64 = true;
    assert_eq!(request.send().map(|m| m.id), Ok(134806));

    let json = serde_json::json!({
        "event": "ONCRMDEALDELETE", "data": {"FIELDS": {"ID": "9"}},
        "auth": {"member_id": SDK_MEMBER, "application_token": SDK_TOKEN}
    });
    let accepted = post("application/json;charset=utf-8", json.to_string()).send();
    assert_eq!(
        accepted.map(|m| (m.portal, m.action, m.event_time)),
        Ok(("sdk".into(), ChangeAction::Delete, None))
    );
}

#[test]
fn an_odd_ts_leaves_the_event_time_unknown() {
    for ts in ["", "soon", "-5", "0", "99999999999999999999", "1.5"] {
        let mut document = application_handler_example();
        document["ts"] = ts.into();
        let accepted = post(FORM, http_build_query(&document)).send().unwrap();
        assert_eq!(accepted.event_time, None, "{ts}");
    }
}

// --- every refusal ---

#[test]
fn refuses_other_methods_with_405() {
    for method in ["GET", "PUT", "post", "OPTIONS", ""] {
        let mut request = post(FORM, captured_sdk_body(SDK_TOKEN));
        request.method = method;
        assert_eq!(request.refused(405), Rejection::MethodNotAllowed);
    }
}

#[test]
fn refuses_other_content_types_with_415() {
    let body = captured_sdk_body(SDK_TOKEN);
    for content_type in [
        "text/plain",
        "multipart/form-data; boundary=x",
        "application/xml",
        "json",
        "",
    ] {
        let rejection = post("x", body.clone());
        let mut rejection = rejection;
        rejection.headers = vec![("Content-Type", content_type.as_bytes())];
        rejection.refused(415);
    }
    let mut missing = post(FORM, body.clone());
    missing.headers.clear();
    assert!(missing.refused(415).to_string().contains("no Content-Type"));
    let twice = post(FORM, body.clone()).header("content-type", JSON);
    assert!(twice.refused(415).to_string().contains("several"));
    let named = post("text/plain; charset=utf-8", body);
    assert!(named.refused(415).to_string().contains("text/plain"));
}

#[test]
fn refuses_bodies_above_the_limit_with_413() {
    let padding = "a".repeat(MAX_BODY_BYTES);
    let body = format!("{}&pad={padding}", captured_sdk_body(SDK_TOKEN));
    post(FORM, body.clone()).refused(413);
    use base64::Engine;
    let mut encoded = post(
        FORM,
        base64::engine::general_purpose::STANDARD.encode(&body),
    );
    encoded.base64 = true;
    encoded.refused(413);
    // Just under the limit is still an event.
    let fits = format!("{}&pad=", captured_sdk_body(SDK_TOKEN));
    let fits = format!("{fits}{}", "a".repeat(MAX_BODY_BYTES - fits.len()));
    assert_eq!(post(FORM, fits).send().map(|m| m.id), Ok(134806));
}

#[test]
fn refuses_malformed_bodies_with_400_naming_the_problem() {
    let cases: [(&str, &[u8], &str); 8] = [
        (JSON, b"{\"event\":", "bad JSON body"),
        (JSON, b"{} trailing", "bad JSON body"),
        (JSON, b"[1,2]", "expected an object"),
        (JSON, b"null", "expected an object"),
        (FORM, b"data[FIELDS]=1&data[FIELDS][ID]=2", "bad form body"),
        (FORM, b"auth[domain]=\xff\xfe", "bad form body"),
        (JSON, b"\xff{}", "bad JSON body"),
        (
            JSON,
            b"{\"auth\":{\"domain\":{\"x\":1}}}",
            "at `auth.domain`",
        ),
    ];
    for (content_type, body, expected) in cases {
        let rejection = post(content_type, body).refused(400);
        assert!(rejection.to_string().contains(expected), "{rejection}");
    }
    let mut bad_base64 = post(FORM, "not base64!");
    bad_base64.base64 = true;
    assert!(bad_base64.refused(400).to_string().contains("base64"));
}

#[test]
fn a_misplaced_token_is_refused_without_being_repeated() {
    for json in [
        format!(r#""{ACME_APP_TOKEN}""#),
        format!(r#"{{"auth":"{ACME_APP_TOKEN}"}}"#),
        format!(r#"{{"data":{{"FIELDS":"{ACME_APP_TOKEN}"}}}}"#),
        format!(r#"{{"auth":{{"token":{{"{ACME_APP_TOKEN}":1}}}}}}"#),
        format!(r#"{{"auth":{{"token":["{ACME_APP_TOKEN}",true]}}}}"#),
    ] {
        post(JSON, json).refused(400);
    }
    post(FORM, format!("auth[token][x]={ACME_APP_TOKEN}")).refused(400);
}

#[test]
fn refuses_missing_or_invalid_ids_with_400() {
    for id in [
        None,
        Some("0"),
        Some("-1"),
        Some("+5"),
        Some("1.5"),
        Some("abc"),
        Some(" 7"),
        Some("9223372036854775808"),
        Some("99999999999999999999999"),
    ] {
        let mut document = application_handler_example();
        match id {
            Some(id) => document["data"]["FIELDS"]["ID"] = id.into(),
            None => document["data"] = serde_json::json!({"FIELDS": {"TITLE": "x"}}),
        }
        let rejection = post(FORM, http_build_query(&document)).refused(400);
        assert!(
            rejection.to_string().contains("data[FIELDS][ID]"),
            "{rejection}"
        );
    }
    let mut largest = application_handler_example();
    largest["data"]["FIELDS"]["ID"] = MAX_RECORD_ID.to_string().into();
    assert_eq!(
        post(FORM, http_build_query(&largest)).send().map(|m| m.id),
        Ok(MAX_RECORD_ID)
    );
    let body = http_build_query(&application_handler_example());
    post(FORM, format!("{body}&data%5BFIELDS%5D%5BID%5D=8")).refused(400);
    let mut no_event = application_handler_example();
    no_event.as_object_mut().unwrap().remove("event");
    assert!(
        post(FORM, http_build_query(&no_event))
            .refused(400)
            .to_string()
            .contains("no `event`")
    );
}

fn unauthorized(request: Post<'_>) -> AuthFailure {
    match request.refused(401) {
        Rejection::Unauthorized(failure) => failure,
        other => panic!("expected 401, got {other:?}"),
    }
}

#[test]
fn refuses_unknown_portals_and_missing_or_wrong_tokens_with_401() {
    let with_auth = |auth: serde_json::Value| {
        let mut document = application_handler_example();
        document["auth"] = auth;
        post(FORM, http_build_query(&document))
    };
    let cases = [
        (
            with_auth(serde_json::json!({"application_token": ACME_APP_TOKEN})),
            AuthFailure::NoPortal,
        ),
        (
            with_auth(
                serde_json::json!({"domain": "other.bitrix24.com", "application_token": ACME_APP_TOKEN}),
            ),
            AuthFailure::UnknownPortal,
        ),
        (
            with_auth(serde_json::json!({"member_id": "ffff", "application_token": SDK_TOKEN})),
            AuthFailure::UnknownPortal,
        ),
        (
            with_auth(serde_json::json!({"domain": "some-domain.bitrix24.com"})),
            AuthFailure::MissingToken,
        ),
        (
            with_auth(
                serde_json::json!({"domain": "some-domain.bitrix24.com", "application_token": ""}),
            ),
            AuthFailure::MissingToken,
        ),
        (
            with_auth(
                serde_json::json!({"domain": "some-domain.bitrix24.com", "application_token": WRONG_TOKEN}),
            ),
            AuthFailure::WrongToken,
        ),
        (
            // A prefix of the right token is a wrong token.
            with_auth(
                serde_json::json!({"domain": "some-domain.bitrix24.com", "application_token": &ACME_APP_TOKEN[..8]}),
            ),
            AuthFailure::WrongToken,
        ),
        (
            with_auth(
                serde_json::json!({"domain": "tokenless.bitrix24.com", "application_token": WRONG_TOKEN}),
            ),
            AuthFailure::NoTokenConfigured,
        ),
    ];
    for (request, expected) in cases {
        assert_eq!(unauthorized(request), expected);
    }
}

#[test]
fn refuses_conflicting_duplicates_with_401() {
    let body = http_build_query(&application_handler_example());
    let query = format!("token={ACME_HOOK_TOKEN}");
    let conflicts = [
        (
            post(
                FORM,
                format!("{body}&auth%5Bapplication_token%5D={ACME_HOOK_TOKEN}"),
            ),
            AuthFailure::ConflictingTokens,
        ),
        (
            post(FORM, body.clone()).header("X-Bitrix-Token", ACME_HOOK_TOKEN),
            AuthFailure::ConflictingTokens,
        ),
        (
            post(FORM, body.clone()).query(&query),
            AuthFailure::ConflictingTokens,
        ),
        (
            post(FORM, format!("{body}&data%5Btoken%5D={WRONG_TOKEN}")),
            AuthFailure::ConflictingTokens,
        ),
        (
            post(
                FORM,
                format!("{body}&auth%5Bdomain%5D=example.bitrix24.com"),
            ),
            AuthFailure::ConflictingPortal,
        ),
        (
            post(FORM, format!("{body}&auth%5Bmember_id%5D=eeee")),
            AuthFailure::ConflictingPortal,
        ),
    ];
    for (request, expected) in conflicts {
        assert_eq!(unauthorized(request), expected);
    }
    // The same domain twice in another case is one domain.
    let repeated = post(
        FORM,
        format!("{body}&auth%5Bdomain%5D=SOME-DOMAIN.bitrix24.com"),
    );
    assert_eq!(repeated.send().map(|m| m.id), Ok(7405));

    // auth[domain] names one portal and auth[member_id] another.
    let crossed = serde_json::json!({
        "event": "ONCRMDEALADD", "data": {"FIELDS": {"ID": "1"}},
        "auth": {"domain": "some-domain.bitrix24.com", "member_id": SDK_MEMBER, "application_token": ACME_APP_TOKEN}
    });
    assert_eq!(
        unauthorized(post(JSON, crossed.to_string())),
        AuthFailure::ConflictingPortal
    );
    // The right domain with another member_id than the configured one.
    let body = captured_sdk_body(SDK_TOKEN).replace(SDK_MEMBER, "0123456789abcdef");
    assert_eq!(
        unauthorized(post(FORM, body)),
        AuthFailure::ConflictingPortal
    );
    // A renamed portal is still found by its member_id.
    let body = captured_sdk_body(SDK_TOKEN).replace("bitrix24-php-sdk-playground", "renamed");
    assert_eq!(post(FORM, body).send().map(|m| m.portal), Ok("sdk".into()));
}

#[test]
fn names_authentic_events_it_does_not_handle_with_422() {
    for event in [
        "ONAPPINSTALL",
        "ONCRMINVOICEADD",
        "ONCRMDEALADDX",
        "ONCRMDEAL",
    ] {
        let mut document = application_handler_example();
        document["event"] = event.into();
        document["data"] = serde_json::json!({"VERSION": "1"});
        let rejection = post(FORM, http_build_query(&document)).refused(422);
        assert!(rejection.to_string().contains(event), "{rejection}");
        // Not authentic: 401 first, whatever the event.
        document["auth"]["application_token"] = WRONG_TOKEN.into();
        post(FORM, http_build_query(&document)).refused(401);
    }
    let mut long = application_handler_example();
    long["event"] = format!("ONX\u{7}{}", "Y".repeat(100)).into();
    let shown = post(FORM, http_build_query(&long)).refused(422).to_string();
    assert!(
        shown.contains("ONX?YYY") && shown.contains("...") && !shown.contains(&"Y".repeat(65)),
        "{shown}"
    );
}

#[test]
fn portal_debug_output_hides_tokens() {
    let shown = format!("{:?}", portals());
    assert!(shown.contains("[2 redacted]"), "{shown}");
    for secret in SECRETS {
        assert!(!shown.contains(secret));
    }
}

// --- arbitrary input ---

fn content_types() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(FORM.to_string()),
        Just(JSON.to_string()),
        Just("application/json; charset=windows-1251".to_string()),
        "[ -~]{0,40}",
    ]
}

/// Bytes that look like the bodies senders post, so the parsers get past the first byte.
fn bodies() -> impl Strategy<Value = Vec<u8>> {
    let form_alphabet = prop::sample::select(
        b"[]%5B5D&=+auth_domain_token_event_data_FIELDS_ID0123456789abcXYZ\xff.-".to_vec(),
    );
    let json_alphabet =
        prop::sample::select(b"{}[]\":,0123456789 -.eE+authdomainID\\unlltrfs".to_vec());
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..300),
        prop::collection::vec(form_alphabet, 0..300),
        prop::collection::vec(json_alphabet, 0..300),
        (0..captured_sdk_body(SDK_TOKEN).len(), any::<u8>()).prop_map(|(at, byte)| {
            let mut body = captured_sdk_body(SDK_TOKEN).into_bytes();
            body[at] = byte;
            body
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(20_000))]

    #[test]
    fn any_input_is_accepted_or_refused_with_a_4xx(
        method in prop_oneof![Just("POST".to_string()), "[A-Z]{0,8}"],
        content_type in content_types(),
        body in bodies(),
        base64 in any::<bool>(),
        token_header in proptest::option::of("[ -~]{0,40}"),
        query in proptest::option::of("[ -~]{0,60}"),
    ) {
        let mut headers: Vec<(&str, &[u8])> = vec![("content-type", content_type.as_bytes())];
        if let Some(token) = &token_header {
            headers.push(("authorization", token.as_bytes()));
        }
        let request = IntakeRequest {
            method: &method,
            headers: &headers,
            query: query.as_deref(),
            body: &body,
            body_is_base64: base64,
        };
        if let Err(rejection) = accept(&request, &portals(), received_at()) {
            prop_assert!((400..500).contains(&rejection.status()));
            let shown = rejection.to_string();
            prop_assert!(!shown.contains(SDK_TOKEN), "{}", shown);
        }
    }

    #[test]
    fn every_id_a_mirror_can_hold_passes_and_no_other(id in any::<u64>()) {
        let body = captured_sdk_body(SDK_TOKEN).replace("134806", &id.to_string());
        let result = post(FORM, body).send().map(|m| m.id);
        if (1..=MAX_RECORD_ID).contains(&id) {
            prop_assert_eq!(result, Ok(id));
        } else {
            prop_assert_eq!(result.map_err(|r| r.status()), Err(400));
        }
    }
}

/// Metrics and alarms key on these codes: each refusal has its own, and they never
/// change (a renamed code would silently empty an alarm's metric).
#[test]
fn every_refusal_has_its_own_stable_code() {
    let refusals = [
        (Rejection::MethodNotAllowed, "method_not_allowed"),
        (
            Rejection::UnsupportedMediaType {
                found: "text/plain".into(),
            },
            "unsupported_media_type",
        ),
        (
            Rejection::PayloadTooLarge {
                limit: MAX_BODY_BYTES,
            },
            "payload_too_large",
        ),
        (Rejection::Malformed("no data".into()), "malformed"),
        (
            Rejection::UnsupportedEvent {
                event: "ONCRMINVOICEADD".into(),
            },
            "unsupported_event",
        ),
        (Rejection::Unauthorized(AuthFailure::NoPortal), "no_portal"),
        (
            Rejection::Unauthorized(AuthFailure::UnknownPortal),
            "unknown_portal",
        ),
        (
            Rejection::Unauthorized(AuthFailure::ConflictingPortal),
            "conflicting_portal",
        ),
        (
            Rejection::Unauthorized(AuthFailure::MissingToken),
            "missing_token",
        ),
        (
            Rejection::Unauthorized(AuthFailure::ConflictingTokens),
            "conflicting_tokens",
        ),
        (
            Rejection::Unauthorized(AuthFailure::WrongToken),
            "bad_token",
        ),
        (
            Rejection::Unauthorized(AuthFailure::NoTokenConfigured),
            "no_token_configured",
        ),
    ];
    let mut codes: Vec<&str> = refusals
        .iter()
        .map(|(rejection, expected)| {
            assert_eq!(rejection.code(), *expected, "{rejection:?}");
            rejection.code()
        })
        .collect();
    codes.sort_unstable();
    codes.dedup();
    assert_eq!(codes.len(), refusals.len());
}
