//! Routing, authentication, parameter encodings and every non-list method, over plain HTTP.

mod common;

use b24_sim::{Entity, MutateRequest, SimConfig, UserFieldRequest, UserFieldType};
use common::*;
use serde_json::{Value, json};

#[tokio::test]
async fn method_names_route_with_or_without_json_suffix_slash_and_case() {
    let sim = sim_with(3, 0).await;
    for method in [
        "crm.deal.get",
        "crm.deal.get.json",
        "CRM.Deal.Get",
        "crm.deal.get/",
        "crm.deal.get.json/",
    ] {
        let (status, answer) = get_query(&sim, method, "ID=2").await;
        assert_eq!(status, 200, "{method}: {answer}");
        assert_eq!(answer["result"]["ID"], "2", "{method}");
        assert_time_block(&answer["time"]);
    }
}

#[tokio::test]
async fn wrong_secret_or_user_gets_401_and_unknown_methods_404() {
    let sim = sim_with(1, 0).await;
    let client = http();
    // A wrong webhook code or user: 401 INVALID_CREDENTIALS, as a real portal
    // answers (crm-item-import.md error table); no credentials at all: NO_AUTH_FOUND.
    for (path, expected) in [
        (
            "/rest/1/wrongsecret/crm.deal.list",
            json!({"error":"INVALID_CREDENTIALS","error_description":"Invalid request credentials"}),
        ),
        (
            "/rest/2/simsecret0123456/crm.deal.list",
            json!({"error":"INVALID_CREDENTIALS","error_description":"Invalid request credentials"}),
        ),
        (
            "/rest/crm.deal.list",
            json!({"error":"NO_AUTH_FOUND","error_description":"Wrong authorization data"}),
        ),
    ] {
        let response = client
            .get(format!("{}{path}", sim.base_url()))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body, expected, "{path}");
    }
    for method in [
        "crm.quote.list",
        "crm.deal.contact.items.get",
        "user.current",
        "crm.deal.fields.extra",
    ] {
        let (status, body) = call(&sim, method, json!({})).await;
        assert_eq!(status, 404, "{method}");
        assert_eq!(
            body,
            json!({"error":"ERROR_METHOD_NOT_FOUND","error_description":"Method not found!"})
        );
    }
    let response = client
        .get(format!("{}crm.deal.list", sim.webhook_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["content-type"],
        "application/json; charset=utf-8"
    );
}

#[tokio::test]
async fn parameters_arrive_as_json_form_or_query() {
    let sim = sim_with(0, 0).await;
    // Form body with PHP-style keys, verbatim from the data-encoding page.
    let form = "fields[TITLE]=My%20company&fields[PHONE][0][VALUE]=112233&fields[PHONE][0][VALUE_TYPE]=WORK\
                &fields[PHONE][1][VALUE]=555888112&fields[PHONE][1][VALUE_TYPE]=OTHER";
    let response = http()
        .post(format!("{}crm.company.add", sim.webhook_url()))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let id = response.json::<Value>().await.unwrap()["result"]
        .as_u64()
        .unwrap();
    let (_, got) = get_query(&sim, "crm.company.get", &format!("id={id}")).await;
    assert_eq!(got["result"]["TITLE"], "My company");
    let phones = got["result"]["PHONE"].as_array().unwrap();
    assert_eq!(phones.len(), 2);
    assert_eq!(phones[1]["VALUE"], "555888112");
    assert_eq!(phones[1]["VALUE_TYPE"], "OTHER");
    assert_eq!(phones[1]["TYPE_ID"], "PHONE");
    assert_eq!(got["result"]["HAS_PHONE"], "Y");
    // Query string on a POST with a JSON body: both are read.
    let response = http()
        .post(format!("{}crm.company.update?id={id}", sim.webhook_url()))
        .json(&json!({"fields": {"COMMENTS": "from json"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let record = ok(&sim, "crm.company.get", json!({"ID": id})).await;
    assert_eq!(record["result"]["COMMENTS"], "from json");
    // A body that is not JSON gets a clear 400.
    let (status, body) =
        post_raw_json(format!("{}crm.deal.list", sim.webhook_url()), "{not json").await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "INVALID_REQUEST");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("not valid JSON")
    );
}

#[tokio::test]
async fn fields_describe_standard_multi_and_user_fields() {
    let sim = sim_with(0, 20).await;
    let deal = fields_of(&sim, "deal").await;
    assert_eq!(
        deal["ID"],
        json!({"type":"integer","isRequired":false,"isReadOnly":true,"isImmutable":false,"isMultiple":false,"isDynamic":false,"title":"ID"})
    );
    assert_eq!(deal["STAGE_ID"]["statusType"], "DEAL_STAGE");
    assert_eq!(deal["CATEGORY_ID"]["isImmutable"], true);
    assert_eq!(deal["OPPORTUNITY"]["type"], "double");
    assert!(deal.get("PHONE").is_none(), "deals have no multi-fields");
    let ufs: Vec<(&String, &Value)> = deal
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| k.starts_with("UF_CRM_"))
        .collect();
    assert_eq!(ufs.len(), 20);
    let types: Vec<&str> = ufs
        .iter()
        .map(|(_, d)| d["type"].as_str().unwrap())
        .collect();
    for t in [
        "string",
        "integer",
        "double",
        "boolean",
        "date",
        "datetime",
        "enumeration",
        "money",
        "employee",
        "file",
    ] {
        assert!(types.contains(&t), "no {t} user field in {types:?}");
    }
    for (code, d) in &ufs {
        assert_eq!(d["isDynamic"], true);
        assert_eq!(d["title"], json!(code), "title of a UF is its code");
        assert!(d["listLabel"].is_string() && d["settings"].is_object());
    }
    let enumeration = ufs
        .iter()
        .find(|(_, d)| d["type"] == "enumeration")
        .unwrap()
        .1;
    assert_eq!(enumeration["items"][0]["VALUE"], "List item #1");
    // The first round of types is single-valued, the second multiple but boolean.
    let multiple = ufs.iter().filter(|(_, d)| d["isMultiple"] == true).count();
    assert_eq!(multiple, 9);
    let contact = fields_of(&sim, "contact").await;
    for code in ["PHONE", "EMAIL", "WEB", "IM"] {
        assert_eq!(contact[code]["type"], "crm_multifield");
        assert_eq!(contact[code]["isMultiple"], true);
    }
    for entity in ["lead", "company"] {
        let fields = ok(&sim, &format!("crm.{entity}.fields"), json!({})).await["result"].clone();
        assert_eq!(fields["EMAIL"]["type"], "crm_multifield", "{entity}");
        assert_eq!(fields["DATE_MODIFY"]["type"], "datetime", "{entity}");
    }
}

#[tokio::test]
async fn userfield_list_describes_each_entity_user_fields() {
    let sim = sim_with(0, 12).await;
    for entity in ["deal", "contact", "lead", "company"] {
        let answer = ok(&sim, &format!("crm.{entity}.userfield.list"), json!({})).await;
        let list = answer["result"].as_array().unwrap();
        assert_eq!(list.len(), 12, "{entity}");
        assert_eq!(answer["total"], 12);
        assert_eq!(
            list[0]["ENTITY_ID"],
            format!("CRM_{}", entity.to_uppercase())
        );
        assert!(
            list[0]["FIELD_NAME"]
                .as_str()
                .unwrap()
                .starts_with("UF_CRM_")
        );
        let enumeration = list
            .iter()
            .find(|f| f["USER_TYPE_ID"] == "enumeration")
            .unwrap();
        assert_eq!(enumeration["LIST"].as_array().unwrap().len(), 4);
        assert!(list.iter().any(|f| f["MULTIPLE"] == "Y"));
    }
}

#[tokio::test]
async fn get_renders_values_as_the_old_crm_api_does() {
    let sim = sim_with(5, 20).await;
    let deal = ok(&sim, "crm.deal.get", json!({"id": 1})).await["result"].clone();
    assert_eq!(deal["ID"], "1");
    assert!(
        deal["OPPORTUNITY"]
            .as_str()
            .unwrap()
            .split('.')
            .nth(1)
            .unwrap()
            .len()
            == 2,
        "{}",
        deal["OPPORTUNITY"]
    );
    assert_eq!(deal["TAX_VALUE"], "0.00");
    assert!(["Y", "N"].contains(&deal["OPENED"].as_str().unwrap()));
    assert!(deal["DATE_CREATE"].as_str().unwrap().ends_with("+03:00"));
    assert!(
        deal["BEGINDATE"]
            .as_str()
            .unwrap()
            .ends_with("T03:00:00+03:00"),
        "a date is midnight UTC in the portal's offset: {}",
        deal["BEGINDATE"]
    );
    assert!(deal["CATEGORY_ID"].is_string());
    assert!(deal.get("CONTACT_IDS").is_none());
    let fields = fields_of(&sim, "deal").await;
    let uf_of = |t: &str, multiple: bool| user_field(&fields, Some(t), multiple);
    // Write one value of each type and read it back.
    let enum_item = fields[uf_of("enumeration", false)]["items"][1]["ID"]
        .as_str()
        .unwrap()
        .to_string();
    let input = json!({
        uf_of("string", false): "Hello world!",
        uf_of("integer", false): 42,
        uf_of("double", false): 9999.9,
        uf_of("boolean", false): "Y",
        uf_of("datetime", false): "2024-08-30T14:29:00+02:00",
        uf_of("enumeration", false): enum_item,
        uf_of("money", false): "300|RUB",
        uf_of("employee", false): 7,
        uf_of("file", true): [{"fileData": ["a.png", "R0lGODlhAQABAIAAAP///wAAACH5BAEAAAAALAAAAAABAAEAAAICRAEAOw=="]}],
        uf_of("date", true): ["2024-01-02", "2024-03-04"],
    });
    ok(&sim, "crm.deal.update", json!({"id": 2, "fields": input})).await;
    let deal = ok(&sim, "crm.deal.get", json!({"id": 2})).await["result"].clone();
    assert_eq!(deal[uf_of("string", false)], "Hello world!");
    assert_eq!(deal[uf_of("integer", false)], "42");
    assert_eq!(deal[uf_of("double", false)], "9999.9");
    assert_eq!(deal[uf_of("boolean", false)], "1");
    assert_eq!(deal[uf_of("datetime", false)], "2024-08-30T15:29:00+03:00");
    assert_eq!(deal[uf_of("enumeration", false)], json!(enum_item));
    assert_eq!(deal[uf_of("money", false)], "300|RUB");
    assert_eq!(deal[uf_of("employee", false)], "7");
    let files = deal[uf_of("file", true)].as_array().unwrap();
    assert_eq!(files.len(), 1);
    assert!(files[0]["id"].is_u64());
    assert!(
        files[0]["downloadUrl"]
            .as_str()
            .unwrap()
            .contains("ownerId=2")
    );
    assert_eq!(
        deal[uf_of("date", true)],
        json!(["2024-01-02T03:00:00+03:00", "2024-03-04T03:00:00+03:00"])
    );
    // A value the field cannot take is refused with the field's name.
    let (status, body) = call(
        &sim,
        "crm.deal.update",
        json!({"id": 2, "fields": {uf_of("enumeration", false): 999_999}}),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains(&uf_of("enumeration", false)),
        "{body}"
    );
    let (status, body) = call(
        &sim,
        "crm.deal.update",
        json!({"id": 2, "fields": {"OPPORTUNITY": "lots"}}),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("OPPORTUNITY"),
        "{body}"
    );
}

#[tokio::test]
async fn add_update_delete_follow_the_old_api() {
    let sim = sim_with(3, 0).await;
    // Verbatim crm.deal.add body (the doc's date substitutions filled in).
    let add = json!({"FIELDS":{"TITLE":"New Deal #1","TYPE_ID":"COMPLEX","CATEGORY_ID":0,"STAGE_ID":"PREPARATION","IS_RECURRING":"N","IS_RETURN_CUSTOMER":"Y","IS_REPEATED_APPROACH":"Y","PROBABILITY":99,"CURRENCY_ID":"EUR","OPPORTUNITY":1000000,"IS_MANUAL_OPPORTUNITY":"Y","TAX_VALUE":0.10,"COMPANY_ID":9,"CONTACT_IDS":[84,83],"BEGINDATE":"2024-08-30T14:29:00+03:00","CLOSEDATE":"2024-09-09T14:29:00+03:00","OPENED":"Y","CLOSED":"N","COMMENTS":"Example comment","SOURCE_ID":"CALLBACK","SOURCE_DESCRIPTION":"Additional information about the source","ADDITIONAL_INFO":"Additional information","UTM_SOURCE":"google","UTM_MEDIUM":"CPC","PARENT_ID_1220":22,"UF_CRM_1721244482250":"Hello World!"},"PARAMS":{"REGISTER_SONET_EVENT":"N"}});
    let answer = ok(&sim, "crm.deal.add", add).await;
    assert_eq!(answer["result"], json!(4), "the new ID is a JSON number");
    let deal = ok(&sim, "crm.deal.get", json!({"id": 4})).await["result"].clone();
    assert_eq!(deal["TITLE"], "New Deal #1");
    assert_eq!(deal["OPPORTUNITY"], "1000000.00");
    assert_eq!(deal["TAX_VALUE"], "0.10");
    assert_eq!(deal["PROBABILITY"], "99");
    assert_eq!(deal["COMPANY_ID"], "9");
    assert_eq!(deal["STAGE_SEMANTIC_ID"], "P");
    assert_eq!(deal["BEGINDATE"], "2024-08-30T03:00:00+03:00");
    assert_eq!(
        deal["CONTACT_ID"], "84",
        "CONTACT_IDS sets the deprecated CONTACT_ID to its first item"
    );
    assert!(
        deal.get("CONTACT_IDS").is_none(),
        "CONTACT_IDS is never returned"
    );
    assert_eq!(deal["ASSIGNED_BY_ID"], "1");
    assert_eq!(deal["CREATED_BY_ID"], "1");
    // Defaults when fields are left out.
    let id = ok(&sim, "crm.deal.add", json!({"fields": {}})).await["result"]
        .as_u64()
        .unwrap();
    let deal = ok(&sim, "crm.deal.get", json!({"id": id})).await["result"].clone();
    assert_eq!(deal["TITLE"], format!("Deal #{id}"));
    assert_eq!(deal["STAGE_ID"], "NEW");
    assert_eq!(deal["OPPORTUNITY"], "0.00");
    assert_eq!(deal["OPENED"], "Y");
    // Verbatim crm.deal.update body.
    let before = ok(&sim, "crm.deal.get", json!({"id": 1})).await["result"]["DATE_MODIFY"].clone();
    let update = json!({"ID":1,"FIELDS":{"TITLE":"New Deal Title!","TYPE_ID":"GOODS","STAGE_ID":"WON","IS_RECCURING":"Y","IS_RETURN_CUSTOMER":"Y","OPPORTUNITY":9999.99,"IS_MANUAL_OPPORTUNITY":"Y","ASSIGNED_BY_ID":1,"UF_CRM_1725365197310":"String","PARENT_ID_1032":1},"PARAMS":{"REGISTER_SONET_EVENT":"N","REGISTER_HISTORY_EVENT":"N"}});
    assert_eq!(
        ok(&sim, "crm.deal.update", update).await["result"],
        json!(true)
    );
    let deal = ok(&sim, "crm.deal.get", json!({"id": 1})).await["result"].clone();
    assert_eq!(deal["TITLE"], "New Deal Title!");
    assert_eq!(deal["OPPORTUNITY"], "9999.99");
    assert_eq!(deal["STAGE_SEMANTIC_ID"], "S");
    assert_eq!(deal["CLOSED"], "Y");
    assert_ne!(deal["DATE_MODIFY"], before);
    // DATE_MODIFY is the update's second (one-second resolution, never backwards);
    // read-only fields are ignored.
    let mut previous = deal["DATE_MODIFY"].as_str().unwrap().to_string();
    for n in 0..3 {
        let before = chrono::Utc::now().timestamp();
        ok(&sim, "crm.deal.update", json!({"id": 1, "fields": {"COMMENTS": format!("n{n}"), "ID": 99, "DATE_MODIFY": "2000-01-01"}})).await;
        let after = chrono::Utc::now().timestamp();
        let now = ok(&sim, "crm.deal.get", json!({"id": 1})).await["result"]["DATE_MODIFY"]
            .as_str()
            .unwrap()
            .to_string();
        let stamp = chrono::DateTime::parse_from_rfc3339(&now).unwrap();
        assert!(stamp >= chrono::DateTime::parse_from_rfc3339(&previous).unwrap());
        assert!((before..=after).contains(&stamp.timestamp()), "{now}");
        previous = now;
    }
    assert!(ok(&sim, "crm.deal.get", json!({"id": 1})).await["result"]["ID"] == "1");
    // Delete; the record is gone from get, update, delete and list.
    assert_eq!(
        ok(&sim, "crm.deal.delete", json!({"id": 2})).await["result"],
        json!(true)
    );
    let not_found = json!({"error":"","error_description":"Not found"});
    for method in [
        "crm.deal.get",
        "crm.deal.delete",
        "crm.deal.productrows.get",
    ] {
        let (status, body) = call(&sim, method, json!({"id": 2})).await;
        assert_eq!((status, body), (400, not_found.clone()), "{method}");
    }
    let (status, body) = call(
        &sim,
        "crm.deal.update",
        json!({"id": 2, "fields": {"TITLE": "x"}}),
    )
    .await;
    assert_eq!((status, body), (400, not_found));
    let listed = ok(&sim, "crm.deal.list", json!({"select": ["ID"]})).await;
    assert!(!ids(&listed["result"]).contains(&2));
    // Missing or bad parameters.
    let (status, body) = call(&sim, "crm.deal.get", json!({})).await;
    assert_eq!(
        (status, body),
        (
            400,
            json!({"error":"","error_description":"ID is not defined or invalid."})
        )
    );
    let (status, body) = call(&sim, "crm.deal.add", json!({"fields": "TITLE"})).await;
    assert_eq!(
        (status, body["error_description"].clone()),
        (400, json!("Parameter 'fields' must be array."))
    );
    let (status, body) = call(
        &sim,
        "crm.company.add",
        json!({"fields": {"COMMENTS": "no title"}}),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("Company name"),
        "{body}"
    );
}

#[tokio::test]
async fn multifield_updates_change_delete_and_add_items() {
    let sim = sim_with(0, 0).await;
    let id = ok(
        &sim,
        "crm.contact.add",
        json!({"fields": {"NAME": "Ann", "PHONE": [{"VALUE": "+111", "VALUE_TYPE": "WORK"}, {"VALUE": "+222", "VALUE_TYPE": "HOME"}], "EMAIL": [{"VALUE": "a@example.com"}]}}),
    )
    .await["result"]
        .as_u64()
        .unwrap();
    let contact = ok(&sim, "crm.contact.get", json!({"id": id})).await["result"].clone();
    let phone_ids: Vec<String> = contact["PHONE"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["ID"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(contact["EMAIL"][0]["VALUE_TYPE"], "WORK");
    let update = json!({"id": id, "fields": {"PHONE": [
        {"ID": phone_ids[0], "VALUE": "+333", "VALUE_TYPE": "MOBILE"},
        {"ID": phone_ids[1], "DELETE": "Y"},
        {"VALUE": "+444", "VALUE_TYPE": "OTHER"}
    ]}});
    ok(&sim, "crm.contact.update", update).await;
    let contact = ok(&sim, "crm.contact.get", json!({"id": id})).await["result"].clone();
    let phones: Vec<(&str, &str)> = contact["PHONE"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["VALUE"].as_str().unwrap(),
                p["VALUE_TYPE"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(phones, vec![("+333", "MOBILE"), ("+444", "OTHER")]);
    assert_eq!(
        contact["EMAIL"][0]["VALUE"], "a@example.com",
        "fields not mentioned stay"
    );
    // Removing every e-mail clears the key and HAS_EMAIL.
    let email_id = contact["EMAIL"][0]["ID"].clone();
    ok(
        &sim,
        "crm.contact.update",
        json!({"id": id, "fields": {"EMAIL": [{"ID": email_id, "VALUE": ""}]}}),
    )
    .await;
    let contact = ok(&sim, "crm.contact.get", json!({"id": id})).await["result"].clone();
    assert!(contact.get("EMAIL").is_none());
    assert_eq!(contact["HAS_EMAIL"], "N");
    let (status, body) = call(
        &sim,
        "crm.contact.update",
        json!({"id": id, "fields": {"PHONE": [{"VALUE": "+5", "VALUE_TYPE": "PIGEON"}]}}),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("VALUE_TYPE"),
        "{body}"
    );
}

#[tokio::test]
async fn product_rows_replace_and_read_back() {
    let sim = sim_with(5, 0).await;
    let set = json!({"id":5,"rows":[{"PRODUCT_ID":456,"PRICE":1000,"QUANTITY":10,"DISCOUNT_TYPE_ID":1,"DISCOUNT_SUM":100,"TAX_RATE":13,"MEASURE_CODE":796,"MEASURE_NAME":"pcs","SORT":10},{"PRODUCT_NAME":"Product #2","PRICE":500,"QUANTITY":5,"DISCOUNT_TYPE_ID":2,"DISCOUNT_RATE":10,"TAX_RATE":10,"MEASURE_CODE":166,"MEASURE_NAME":"kg","SORT":20}]});
    assert_eq!(
        ok(&sim, "crm.deal.productrows.set", set).await["result"],
        json!(true)
    );
    let rows = ok(&sim, "crm.deal.productrows.get", json!({"id": 5})).await["result"].clone();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["OWNER_ID"], "5");
    assert_eq!(rows[0]["OWNER_TYPE"], "D");
    assert_eq!(rows[0]["PRODUCT_ID"], 456);
    assert_eq!(rows[0]["PRODUCT_NAME"], "[456]");
    assert_eq!(rows[0]["DISCOUNT_SUM"], 100.0);
    assert_eq!(rows[1]["PRODUCT_NAME"], "Product #2");
    assert_eq!(rows[1]["MEASURE_NAME"], "kg");
    // set replaces every row.
    ok(
        &sim,
        "crm.deal.productrows.set",
        json!({"id": 5, "rows": [{"PRODUCT_NAME": "Only", "PRICE": 1}]}),
    )
    .await;
    let rows = ok(&sim, "crm.deal.productrows.get", json!({"id": 5})).await["result"].clone();
    assert_eq!(rows.as_array().unwrap().len(), 1);
    assert_eq!(rows[0]["QUANTITY"], 1.0);
    let (status, body) = call(
        &sim,
        "crm.deal.productrows.set",
        json!({"id": 99, "rows": []}),
    )
    .await;
    assert_eq!(
        (status, body),
        (400, json!({"error":"","error_description":"Not found"}))
    );
    let (status, body) = call(
        &sim,
        "crm.deal.productrows.set",
        json!({"id": 5, "rows": [{"PRICE": 1, "DISCOUNT_TYPE_ID": 2, "DISCOUNT_RATE": 100}]}),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "ERROR_CORE");
}

#[tokio::test]
async fn timeline_notifications_and_workflow_replies() {
    let sim = sim_with(10, 0).await;
    let comment = json!({"fields":{"ENTITY_ID":10,"ENTITY_TYPE":"deal","COMMENT":"New comment was added","FILES":[["1.gif","R0lGODlhAQABAIAAAP///wAAACH5BAEAAAAALAAAAAABAAEAAAICRAEAOw=="],["2.gif","R0lGODlhAQABAIAAAP///wAAACH5BAEAAAAALAAAAAABAAEAAAICRAEAOw=="]]}});
    let id = ok(&sim, "crm.timeline.comment.add", comment).await["result"].clone();
    assert!(id.is_u64());
    let comments = sim.timeline_comments().await.unwrap();
    assert_eq!(comments.len(), 1);
    assert_eq!(comments[0]["ENTITY_ID"], 10);
    assert_eq!(comments[0]["COMMENT"], "New comment was added");
    assert_eq!(comments[0]["FILES"], 2);
    let (status, body) = call(
        &sim,
        "crm.timeline.comment.add",
        json!({"fields": {"ENTITY_ID": 999, "ENTITY_TYPE": "deal", "COMMENT": "x"}}),
    )
    .await;
    assert_eq!(
        (status, body["error"].clone()),
        (400, json!("OWNER_NOT_FOUND"))
    );
    let (status, body) = call(
        &sim,
        "crm.timeline.comment.add",
        json!({"fields": {"ENTITY_ID": 1, "ENTITY_TYPE": "deal"}}),
    )
    .await;
    assert_eq!(
        (status, body["error"].clone()),
        (400, json!("INVALID_ARG_VALUE"))
    );

    let notify = json!({"USER_ID":5,"MESSAGE":"System notification","MESSAGE_OUT":"System notification for email","TAG":"SYSTEM_EVENT_42","SUB_TAG":"SYSTEM_EVENT|42"});
    assert!(ok(&sim, "im.notify.system.add", notify).await["result"].is_u64());
    let sent = sim.notifications().await.unwrap();
    assert_eq!(sent[0]["USER_ID"], 5);
    assert_eq!(sent[0]["TAG"], "SYSTEM_EVENT_42");
    let (status, body) = call(&sim, "im.notify.system.add", json!({"MESSAGE": "hi"})).await;
    assert_eq!(
        (status, body),
        (
            400,
            json!({"error":"USER_ID_EMPTY","error_description":"User ID can't be empty"})
        )
    );
    let (status, body) = call(
        &sim,
        "im.notify.system.add",
        json!({"USER_ID": 1, "MESSAGE": "  "}),
    )
    .await;
    assert_eq!(
        (status, body["error"].clone()),
        (400, json!("MESSAGE_EMPTY"))
    );

    // The docs' example token is well formed, but this portal never issued it: a
    // real portal checks the token's signature. Issued tokens: tests/robots.rs.
    let reply = json!({"event_token":"55c1dc1c3f0d75.78875596|A51601_82584_96831_81132|hsyUws1j4XiwqPqN45eH66CcQtEvpUIP.47dd5d888e8e549d2c984713e12a4268e6e87d0208ca1f093ba1075e77f92e90","return_values":{"outputString":"846c55d14f552180874a628d2615e285"}});
    let denied = json!({"error":"ACCESS_DENIED","error_description":"Access denied!"});
    for body in [reply, json!({"EVENT_TOKEN": "garbage"}), json!({})] {
        let (status, answer) = call(&sim, "bizproc.event.send", body.clone()).await;
        assert_eq!((status, answer), (403, denied.clone()), "{body}");
    }
    assert!(sim.workflow_replies().await.unwrap().is_empty());
}

#[tokio::test]
async fn control_surface_dump_mutate_reset_and_user_fields() {
    // One anchor for both: started in different seconds, their seeded times would differ.
    let anchor = Some(chrono::Utc::now().timestamp() - 60);
    let config = || SimConfig {
        deals: 30,
        contacts: 10,
        user_fields: 4,
        limits: unlimited(),
        seed: 5,
        anchor,
        ..SimConfig::default()
    };
    let (a, b) = (sim(config()).await, sim(config()).await);
    let dump = a.dump(Entity::Deal).await.unwrap();
    assert_eq!(dump.len(), 30);
    assert_eq!(
        dump[..],
        b.dump(Entity::Deal).await.unwrap()[..],
        "same seed, same data"
    );
    assert_eq!(
        Value::Object(dump[4].clone()),
        ok(&a, "crm.deal.get", json!({"id": 5})).await["result"]
    );
    let contacts = a.dump(Entity::Contact).await.unwrap();
    assert!(
        contacts.iter().any(|c| c.contains_key("PHONE")),
        "the dump carries multi-fields"
    );

    let request = MutateRequest {
        entity: Entity::Deal,
        seed: 7,
        adds: 3,
        updates: 4,
        deletes: 2,
    };
    let outcome = a.mutate(&request).await.unwrap();
    assert_eq!(
        outcome,
        b.mutate(&request).await.unwrap(),
        "mutations are reproducible"
    );
    assert_eq!(outcome.added, vec![31, 32, 33]);
    assert_eq!(outcome.updated.len(), 4);
    assert_eq!(outcome.deleted.len(), 2);
    assert!(
        outcome
            .updated
            .iter()
            .all(|id| !outcome.deleted.contains(id))
    );
    let after = a.dump(Entity::Deal).await.unwrap();
    assert_eq!(after.len(), 31);
    let record_id =
        |r: &serde_json::Map<String, Value>| r["ID"].as_str().unwrap().parse::<u64>().unwrap();
    for id in &outcome.deleted {
        assert!(after.iter().all(|r| record_id(r) != *id));
    }
    let find = |records: &[serde_json::Map<String, Value>], id: u64| {
        records.iter().find(|r| record_id(r) == id).unwrap().clone()
    };
    for &id in &outcome.updated {
        assert_ne!(
            find(&after, id)["DATE_MODIFY"],
            find(&dump, id)["DATE_MODIFY"]
        );
    }
    let too_many = MutateRequest {
        entity: Entity::Deal,
        seed: 1,
        adds: 0,
        updates: 100,
        deletes: 0,
    };
    assert!(
        a.mutate(&too_many)
            .await
            .unwrap_err()
            .to_string()
            .contains("live deal records")
    );

    let name = a
        .add_user_field(&UserFieldRequest {
            entity: Entity::Deal,
            field_type: UserFieldType::String,
            multiple: false,
            code: Some("manager_note".into()),
            unchecked: false,
        })
        .await
        .unwrap();
    assert_eq!(name, "UF_CRM_MANAGER_NOTE");
    let hostile = "UF_CRM_X\"; DROP TABLE x; --";
    let unchecked = UserFieldRequest {
        entity: Entity::Deal,
        field_type: UserFieldType::Integer,
        multiple: false,
        code: Some(hostile.into()),
        unchecked: true,
    };
    assert_eq!(a.add_user_field(&unchecked).await.unwrap(), hostile);
    let fields = fields_of(&a, "deal").await;
    assert_eq!(fields[hostile]["type"], "integer");
    assert!(
        a.dump(Entity::Deal)
            .await
            .unwrap()
            .iter()
            .all(|r| r.contains_key(hostile) && r.contains_key(&name))
    );
    let bad = UserFieldRequest {
        code: Some("bad name!".into()),
        unchecked: false,
        ..unchecked.clone()
    };
    assert!(a.add_user_field(&bad).await.is_err());
    assert!(
        a.add_user_field(&unchecked)
            .await
            .unwrap_err()
            .to_string()
            .contains("already exists")
    );

    a.reset().await.unwrap();
    assert_eq!(
        a.dump(Entity::Deal).await.unwrap()[..],
        dump[..],
        "reset returns to the seeded state"
    );

    let stats = a.stats().await.unwrap();
    assert!(stats.http_requests >= 2);
    assert_eq!(stats.requests_by_method["crm.deal.get"], 1);
    assert!(stats.operating_seconds_by_method["crm.deal.fields"] > 0.0);
    a.reset_stats().await.unwrap();
    assert_eq!(a.stats().await.unwrap(), b24_sim::SimStats::default());
    assert!(
        a.set_faults("boom=1")
            .await
            .unwrap_err()
            .to_string()
            .contains("unknown fault")
    );
    let response = http()
        .get(format!("{}/_sim/dump/quote", a.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("unknown entity 'quote'"),
        "{body}"
    );
}

#[tokio::test]
async fn control_surface_refusals_answer_400_and_say_what_is_wrong() {
    let sim = sim_with(5, 0).await;
    let refused = |result: anyhow::Result<()>| {
        let message = result.unwrap_err().to_string();
        assert!(message.contains("400"), "{message}");
        message
    };
    let hide = refused(sim.hide_records(Entity::Deal, 2.0, 1).await.map(drop));
    assert!(hide.contains("share must be between 0 and 1"), "{hide}");
    let user_field = refused(
        sim.add_user_field(&UserFieldRequest {
            entity: Entity::Deal,
            field_type: UserFieldType::Boolean,
            multiple: true,
            code: None,
            unchecked: false,
        })
        .await
        .map(drop),
    );
    assert!(
        user_field.contains("boolean user fields cannot be multiple"),
        "{user_field}"
    );
    let limits = refused(
        sim.set_limits(&b24_sim::LimitsUpdate {
            burst: Some(-1.0),
            ..Default::default()
        })
        .await
        .map(drop),
    );
    assert!(
        limits.contains("burst must be a positive number"),
        "{limits}"
    );

    let (status, body) = post_raw_json(
        format!("{}/_sim/hide", sim.base_url()),
        "{\"entity\": \"deal\"",
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        body["error"].as_str().unwrap().contains("JSON"),
        "a body that is not JSON is named: {body}"
    );
}

#[tokio::test]
async fn binary_prints_the_webhook_url_first_and_serves() {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_b24-sim"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--seed",
            "3",
            "--deals",
            "120",
            "--contacts",
            "5",
            "--leads",
            "5",
        ])
        .args([
            "--companies",
            "5",
            "--user-fields",
            "3",
            "--no-limits",
            "--no-operating-limiter",
            "--faults",
            "seed=1",
            "--utc-offset",
            "-05:00",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next_line().await.unwrap().unwrap();
    let url = first
        .strip_prefix("B24_WEBHOOK_URL=")
        .expect("first line names the webhook");
    assert!(
        url.starts_with("http://127.0.0.1:") && url.ends_with('/'),
        "{url}"
    );
    let answer: Value = http()
        .get(format!("{url}crm.deal.list?start=100"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["total"], 120);
    assert_eq!(answer["result"].as_array().unwrap().len(), 20);
    // A negative portal offset: dates are midnight UTC, the previous local day.
    let begin = answer["result"][0]["BEGINDATE"].as_str().unwrap();
    assert!(begin.ends_with("T19:00:00-05:00"), "{begin}");
    // On-premise shape: no operating keys.
    assert!(
        answer["time"]["date_start"]
            .as_str()
            .unwrap()
            .ends_with("-05:00")
    );
    assert!(
        answer["time"].get("operating").is_none(),
        "{}",
        answer["time"]
    );
    child.kill().await.unwrap();
    let bad = tokio::process::Command::new(env!("CARGO_BIN_EXE_b24-sim"))
        .args(["--faults", "503=7"])
        .output()
        .await
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("between 0 and 1"));
}
