use super::*;

use proptest::prelude::*;

use crate::forward::route::{FieldPlan, ReplyPlan, RouteSecret};

const SECRET: &str = "s3cr3t-0123456789abcdef";
const WRONG_SECRET: &str = "wrong-0123456789abcdef";
const PARTNER_TOKEN: &str = "partner-app-token-51856fefc1";
const OTHER_TOKEN: &str = "other-app-token-9f8e7d6c5b";
const ACCESS_TOKEN: &str = "access-token-abcdef123456";
const PARTNER_MEMBER: &str = "d897063e1ce7c5eb9f04b9751eef5915";
const FORM: &str = "application/x-www-form-urlencoded";
const JSON: &str = "application/json";

/// No refusal and no Debug output may repeat one of these.
const SECRETS: [&str; 5] = [
    SECRET,
    WRONG_SECRET,
    PARTNER_TOKEN,
    OTHER_TOKEN,
    ACCESS_TOKEN,
];

fn route(name: &str, secret: Option<&str>) -> ForwardRoute {
    ForwardRoute {
        name: name.into(),
        source: "partner".into(),
        target: "central".into(),
        secret: secret.map(|s| RouteSecret::new(s.into())),
        robot_code: format!("forward_{name}"),
        plan: FieldPlan::default(),
        copy_products: true,
        copy_contacts: false,
        copy_company: false,
        reply: ReplyPlan::default(),
    }
}

fn routes() -> Vec<ForwardRoute> {
    vec![route("to-central", Some(SECRET)), route("app-only", None)]
}

fn portals() -> Vec<PortalIdentity> {
    vec![
        PortalIdentity {
            name: "partner".into(),
            domain: "partner.bitrix24.com".into(),
            member_id: Some(PARTNER_MEMBER.into()),
            tokens: vec![PARTNER_TOKEN.into()],
        },
        PortalIdentity {
            name: "other".into(),
            domain: "other.bitrix24.com".into(),
            member_id: None,
            tokens: vec![OTHER_TOKEN.into()],
        },
        PortalIdentity {
            name: "central".into(),
            domain: "central.bitrix24.com".into(),
            member_id: None,
            tokens: vec![],
        },
    ]
}

fn received_at() -> DateTime<Utc> {
    "2026-12-01T13:00:00.5Z".parse().unwrap()
}

fn call(content_type: &str, query: Option<&str>, body: &str) -> Result<ForwardJob, RobotRefusal> {
    let headers = [("Content-Type", content_type.as_bytes())];
    let request = IntakeRequest {
        method: "POST",
        headers: &headers,
        query,
        body: body.as_bytes(),
        body_is_base64: false,
    };
    let result = accept_robot_call(&request, &routes(), &portals(), received_at());
    if let Err(refusal) = &result {
        assert_no_secret(&format!("{refusal} {refusal:?}"));
    }
    result
}

fn assert_no_secret(text: &str) {
    for secret in SECRETS {
        assert!(!text.contains(secret), "{text:?} repeats a secret");
    }
}

/// The built-in Webhook robot's body, brackets percent-encoded as the portal sends it.
fn webhook_body(deal: &str) -> String {
    format!("document_id%5B0%5D=crm&document_id%5B1%5D=CCrmDocumentDeal&document_id%5B2%5D={deal}")
}

fn webhook_query(secret: &str) -> String {
    format!("route=to-central&secret={secret}")
}

/// An application robot's body with every key the portal sends (§2c).
fn app_body(domain: &str, token: &str, subscription: &str) -> String {
    [
        "workflow_id=663a0b2e1c5f75.12345678".to_string(),
        "code=forward_to-central".into(),
        "document_id[0]=crm&document_id[1]=CCrmDocumentDeal&document_id[2]=DEAL_123".into(),
        "document_type[0]=crm&document_type[1]=CCrmDocumentDeal&document_type[2]=DEAL".into(),
        "event_token=55c1dc1c3f0d75.78875596%7CA51601_82584%7ChsyUws1j4".into(),
        "properties[comment]=urgent&properties[tags][0]=a&properties[tags][1]=b".into(),
        format!("use_subscription={subscription}&timeout_duration=0&ts=1733058000"),
        format!("auth[access_token]={ACCESS_TOKEN}&auth[refresh_token]=r&auth[expires]=1733061600"),
        "auth[expires_in]=3600&auth[scope]=crm%2Cbizproc&auth[status]=L".into(),
        format!("auth[domain]={domain}&auth[member_id]=&auth[user_id]=1"),
        "auth[server_endpoint]=https%3A%2F%2Foauth.bitrix.info%2Frest%2F".into(),
        format!(
            "auth[client_endpoint]=https%3A%2F%2F{domain}%2Frest%2F&auth[application_token]={token}"
        ),
    ]
    .join("&")
}

#[test]
fn a_webhook_robot_call_becomes_a_job_for_the_routes_source() {
    let job = call(
        FORM,
        Some(&webhook_query(SECRET)),
        &webhook_body("DEAL_123"),
    )
    .unwrap();
    assert_eq!(
        job,
        ForwardJob {
            route: "to-central".into(),
            source: "partner".into(),
            deal_id: 123,
            received_at: received_at(),
            event_token: None,
            waits_for_reply: false,
            properties: Map::new(),
        }
    );
}

#[test]
fn a_webhook_robot_call_in_json_or_with_plain_brackets_is_the_same() {
    let query = webhook_query(SECRET);
    let plain = "document_id[0]=crm&document_id[1]=CCrmDocumentDeal&document_id[2]=DEAL_7";
    let json = r#"{"document_id":["crm","CCrmDocumentDeal","DEAL_7"]}"#;
    let pushed = "document_id[]=crm&document_id[]=CCrmDocumentDeal&document_id[]=DEAL_7";
    for (content_type, body) in [(FORM, plain), (JSON, json), (FORM, pushed)] {
        let job = call(content_type, Some(&query), body).unwrap();
        assert_eq!(job.deal_id, 7, "{body}");
    }
}

#[test]
fn an_application_robot_call_carries_token_subscription_and_properties() {
    let body = app_body("partner.bitrix24.com", PARTNER_TOKEN, "Y");
    let job = call(FORM, None, &body).unwrap();
    assert_eq!(
        job.route, "to-central",
        "the route is the one with robot code `code`"
    );
    assert_eq!(job.source, "partner");
    assert_eq!(job.deal_id, 123);
    assert_eq!(
        job.event_token.as_deref(),
        Some("55c1dc1c3f0d75.78875596|A51601_82584|hsyUws1j4")
    );
    assert!(job.waits_for_reply);
    assert_eq!(
        Value::Object(job.properties.clone()),
        serde_json::json!({"comment": "urgent", "tags": ["a", "b"]})
    );
    let shown = format!("{job:?}");
    assert_no_secret(&shown);
    assert!(!shown.contains("hsyUws1j4"), "{shown}");

    let job = call(
        FORM,
        None,
        &app_body("partner.bitrix24.com", PARTNER_TOKEN, "N"),
    )
    .unwrap();
    assert!(!job.waits_for_reply && job.event_token.is_some());
}

#[test]
fn an_application_robot_is_recognised_by_member_id_and_in_json() {
    let body = serde_json::json!({
        "code": "forward_app-only",
        "document_id": ["crm", "CCrmDocumentDeal", "DEAL_9"],
        "document_type": ["crm", "CCrmDocumentDeal", "DEAL"],
        "use_subscription": "Y",
        "auth": {"member_id": PARTNER_MEMBER, "application_token": PARTNER_TOKEN},
    });
    let job = call(JSON, None, &body.to_string()).unwrap();
    assert_eq!((job.route.as_str(), job.deal_id), ("app-only", 9));
    assert!(!job.waits_for_reply, "no event_token: nothing to answer");
}

#[test]
fn the_url_route_wins_over_the_robot_code_and_a_url_secret_must_be_right() {
    let body = app_body("partner.bitrix24.com", PARTNER_TOKEN, "Y");
    let job = call(FORM, Some("route=app-only"), &body).unwrap();
    assert_eq!(job.route, "app-only");
    let job = call(FORM, Some(&webhook_query(SECRET)), &body).unwrap();
    assert_eq!(job.route, "to-central");
    let refused = call(FORM, Some(&webhook_query(WRONG_SECRET)), &body).unwrap_err();
    assert_eq!(
        refused,
        RobotRefusal::Unauthorized(RobotAuthFailure::WrongSecret)
    );
}

#[test]
fn wrong_or_missing_secrets_and_tokens_are_refused_with_401() {
    let deal = webhook_body("DEAL_1");
    let cases = [
        (
            Some(webhook_query(WRONG_SECRET)),
            deal.clone(),
            "bad_secret",
        ),
        (
            Some("route=to-central".into()),
            deal.clone(),
            "missing_secret",
        ),
        (
            Some("route=to-central&secret=".into()),
            deal.clone(),
            "missing_secret",
        ),
        (
            Some(format!(
                "route=to-central&secret={SECRET}&secret={WRONG_SECRET}"
            )),
            deal.clone(),
            "conflicting_secrets",
        ),
        (
            Some(format!("route=app-only&secret={SECRET}")),
            deal.clone(),
            "no_secret_configured",
        ),
        (
            Some("route=app-only".into()),
            deal.clone(),
            "no_secret_configured",
        ),
        // A prefix of the secret is as wrong as any other.
        (
            Some(webhook_query(&SECRET[..10])),
            deal.clone(),
            "bad_secret",
        ),
        (
            None,
            app_body("partner.bitrix24.com", OTHER_TOKEN, "Y"),
            "bad_token",
        ),
        (
            None,
            app_body("partner.bitrix24.com", "", "Y"),
            "missing_token",
        ),
        (
            None,
            app_body("unknown.bitrix24.com", PARTNER_TOKEN, "Y"),
            "unknown_portal",
        ),
        (None, app_body("", PARTNER_TOKEN, "Y"), "no_portal"),
        (
            None,
            app_body("central.bitrix24.com", PARTNER_TOKEN, "Y"),
            "no_token_configured",
        ),
    ];
    for (query, body, code) in cases {
        let refused = call(FORM, query.as_deref(), &body).unwrap_err();
        assert_eq!(
            (refused.status(), refused.code()),
            (401, code),
            "{query:?}: {refused}"
        );
    }
    let both = app_body("partner.bitrix24.com", PARTNER_TOKEN, "Y")
        + &format!("&auth[member_id]=0000&auth[member_id]={PARTNER_MEMBER}");
    assert_eq!(
        call(FORM, None, &both).unwrap_err().code(),
        "conflicting_portal"
    );
}

#[test]
fn a_portal_that_is_not_the_routes_source_is_refused_with_403() {
    let body = app_body("other.bitrix24.com", OTHER_TOKEN, "Y");
    let refused = call(FORM, None, &body).unwrap_err();
    assert_eq!(
        refused,
        RobotRefusal::PortalNotAllowed {
            route: "to-central".into()
        }
    );
    assert_eq!(
        (refused.status(), refused.code()),
        (403, "portal_not_allowed")
    );
}

#[test]
fn an_unknown_route_is_404_and_no_route_at_all_is_400() {
    let refused = call(
        FORM,
        Some(&format!("route=nope&secret={SECRET}")),
        &webhook_body("DEAL_1"),
    )
    .unwrap_err();
    assert_eq!((refused.status(), refused.code()), (404, "unknown_route"));
    let body = app_body("partner.bitrix24.com", PARTNER_TOKEN, "Y")
        .replace("code=forward_to-central", "code=unknown");
    assert_eq!(
        call(FORM, None, &body).unwrap_err(),
        RobotRefusal::UnknownRoute
    );
    let refused = call(FORM, None, &webhook_body("DEAL_1")).unwrap_err();
    assert_eq!(refused.status(), 400);
    assert!(refused.to_string().contains("add ?route=NAME"), "{refused}");
    let refused = call(FORM, Some("route=a&route=b"), &webhook_body("DEAL_1")).unwrap_err();
    assert_eq!(refused.status(), 400);
}

#[test]
fn documents_that_are_not_deals_or_carry_bad_ids_are_refused_with_400() {
    let query = webhook_query(SECRET);
    let cases = [
        (webhook_body("LEAD_5"), "not_a_deal"),
        (
            "document_id[0]=crm&document_id[1]=CCrmDocumentLead&document_id[2]=DEAL_5".into(),
            "not_a_deal",
        ),
        (
            "document_id[0]=lists&document_id[1]=CCrmDocumentDeal&document_id[2]=DEAL_5".into(),
            "not_a_deal",
        ),
        (webhook_body("DEAL_0"), "bad_deal_id"),
        (webhook_body("DEAL_"), "bad_deal_id"),
        (webhook_body("DEAL_%2B5"), "bad_deal_id"),
        (webhook_body("DEAL_9223372036854775808"), "bad_deal_id"),
        (webhook_body("DEAL_12a"), "bad_deal_id"),
        (
            "document_id[0]=crm&document_id[1]=CCrmDocumentDeal".into(),
            "malformed",
        ),
        ("document_id=DEAL_5".into(), "malformed"),
        (
            "document_id[0]=crm&document_id[1]=CCrmDocumentDeal&document_id[7]=DEAL_5".into(),
            "malformed",
        ),
        ("other=1".into(), "malformed"),
        (
            webhook_body("DEAL_5")
                + "&document_type[0]=crm&document_type[1]=CCrmDocumentLead&document_type[2]=LEAD",
            "not_a_deal",
        ),
    ];
    for (body, code) in cases {
        let refused = call(FORM, Some(&query), &body).unwrap_err();
        assert_eq!(
            (refused.status(), refused.code()),
            (400, code),
            "{body}: {refused}"
        );
    }
    let largest = format!("DEAL_{MAX_RECORD_ID}");
    assert_eq!(
        call(FORM, Some(&query), &webhook_body(&largest))
            .unwrap()
            .deal_id,
        MAX_RECORD_ID
    );
}

#[test]
fn method_content_type_size_and_syntax_are_checked_as_in_the_intake() {
    let query = webhook_query(SECRET);
    let body = webhook_body("DEAL_1");
    let headers = [("content-type", FORM.as_bytes())];
    let get = IntakeRequest {
        method: "GET",
        headers: &headers,
        query: Some(&query),
        body: body.as_bytes(),
        body_is_base64: false,
    };
    let refused = accept_robot_call(&get, &routes(), &portals(), received_at()).unwrap_err();
    assert_eq!(
        (refused.status(), refused.code()),
        (405, "method_not_allowed")
    );

    let refused = call("text/plain", Some(&query), &body).unwrap_err();
    assert_eq!(
        (refused.status(), refused.code()),
        (415, "unsupported_media_type")
    );

    let huge = format!("{body}&pad={}", "x".repeat(MAX_ROBOT_BODY_BYTES));
    let refused = call(FORM, Some(&query), &huge).unwrap_err();
    assert_eq!(
        (refused.status(), refused.code()),
        (413, "payload_too_large")
    );

    for bad in ["[1,2]", "{\"document_id\": {\"a\": 1}}", "{"] {
        let refused = call(JSON, Some(&query), bad).unwrap_err();
        assert_eq!(refused.status(), 400, "{bad}: {refused}");
    }

    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(&body);
    let base64_request = IntakeRequest {
        method: "POST",
        headers: &headers,
        query: Some(&query),
        body: encoded.as_bytes(),
        body_is_base64: true,
    };
    let job = accept_robot_call(&base64_request, &routes(), &portals(), received_at()).unwrap();
    assert_eq!(job.deal_id, 1);
}

#[test]
fn every_refusal_has_its_own_stable_code() {
    let refusals = [
        (RobotRefusal::MethodNotAllowed, "method_not_allowed"),
        (
            RobotRefusal::UnsupportedMediaType { found: "x".into() },
            "unsupported_media_type",
        ),
        (
            RobotRefusal::PayloadTooLarge { limit: 1 },
            "payload_too_large",
        ),
        (RobotRefusal::Malformed("x".into()), "malformed"),
        (RobotRefusal::UnknownRoute, "unknown_route"),
        (
            RobotRefusal::PortalNotAllowed { route: "r".into() },
            "portal_not_allowed",
        ),
        (
            RobotRefusal::NotADeal {
                document: "x".into(),
            },
            "not_a_deal",
        ),
        (RobotRefusal::BadDealId, "bad_deal_id"),
        (
            RobotRefusal::Unauthorized(RobotAuthFailure::MissingSecret),
            "missing_secret",
        ),
        (
            RobotRefusal::Unauthorized(RobotAuthFailure::ConflictingSecrets),
            "conflicting_secrets",
        ),
        (
            RobotRefusal::Unauthorized(RobotAuthFailure::WrongSecret),
            "bad_secret",
        ),
        (
            RobotRefusal::Unauthorized(RobotAuthFailure::NoSecretConfigured),
            "no_secret_configured",
        ),
        (
            RobotRefusal::Unauthorized(RobotAuthFailure::Application(AuthFailure::WrongToken)),
            "bad_token",
        ),
    ];
    for (refusal, code) in refusals {
        assert_eq!(refusal.code(), code);
    }
}

fn any_query() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        Just(Some(webhook_query(SECRET))),
        "[a-z=&%0-9]{0,40}".prop_map(Some),
    ]
}

proptest! {
    #[test]
    fn any_form_body_is_accepted_or_refused_with_a_4xx(
        body in proptest::collection::vec(any::<u8>(), 0..300),
        query in any_query(),
        json in any::<bool>(),
        base64 in any::<bool>(),
    ) {
        let content_type = if json { JSON } else { FORM };
        let headers = [("Content-Type", content_type.as_bytes())];
        let request = IntakeRequest {
            method: "POST",
            headers: &headers,
            query: query.as_deref(),
            body: &body,
            body_is_base64: base64,
        };
        if let Err(refusal) = accept_robot_call(&request, &routes(), &portals(), received_at()) {
            prop_assert!((400..500).contains(&refusal.status()));
            assert_no_secret(&refusal.to_string());
        }
    }

    #[test]
    fn bodies_shaped_like_robot_calls_never_panic(
        keys in proptest::collection::vec(
            prop_oneof![
                Just("document_id[0]"), Just("document_id[1]"), Just("document_id[2]"),
                Just("document_id[]"), Just("document_type[2]"), Just("code"),
                Just("auth[domain]"), Just("auth[application_token]"), Just("auth"),
                Just("properties[a]"), Just("properties[a][b]"), Just("event_token"),
                Just("use_subscription"), Just("document_id[x]"), Just("document_id"),
            ],
            0..8,
        ),
        values in proptest::collection::vec("[A-Za-z0-9_.%\\[\\]]{0,12}", 8),
    ) {
        let body = keys
            .iter()
            .zip(&values)
            .map(|(key, value)| format!("{key}={value}"))
            .collect::<Vec<_>>()
            .join("&");
        if let Err(refusal) = call(FORM, Some(&webhook_query(SECRET)), &body) {
            prop_assert!((400..500).contains(&refusal.status()));
        }
    }
}
