//! PHP-style query strings (`filter[>ID]=5&select[0]=ID`), the form batch commands
//! carry their parameters in. Mirrors PHP's `http_build_query`, which is what the
//! portal parses them with: nulls and empty containers are left out, booleans are 1/0.

use serde_json::Value;

/// Encodes a JSON object of parameters. `$result[...]` references in values are
/// percent-encoded like any other text; the portal decodes before resolving them.
pub fn encode_query(params: &Value) -> String {
    let mut out = String::new();
    if let Value::Object(map) = params {
        for (key, value) in map {
            encode_into(&mut out, &encode_component(key), value);
        }
    }
    out
}

fn encode_into(out: &mut String, key: &str, value: &Value) {
    match value {
        Value::Null => {}
        Value::Object(map) => {
            for (k, v) in map {
                encode_into(out, &format!("{key}[{}]", encode_component(k)), v);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                encode_into(out, &format!("{key}[{i}]"), v);
            }
        }
        Value::Bool(b) => push_pair(out, key, if *b { "1" } else { "0" }),
        Value::Number(n) => push_pair(out, key, &n.to_string()),
        Value::String(s) => push_pair(out, key, &encode_component(s)),
    }
}

fn push_pair(out: &mut String, key: &str, encoded_value: &str) {
    if !out.is_empty() {
        out.push('&');
    }
    out.push_str(key);
    out.push('=');
    out.push_str(encoded_value);
}

fn encode_component(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn encodes_nested_objects_arrays_and_references() {
        let params = json!({
            "order": {"ID": "ASC"},
            "filter": {">ID": "$result[c0][49][ID]", "@STAGE_ID": ["NEW", "WON"], "=%TITLE": "a&b c"},
            "select": ["*", "UF_*"],
            "start": -1,
            "flag": true,
            "gone": null,
            "empty": []
        });
        assert_eq!(
            encode_query(&params),
            "order[ID]=ASC\
             &filter[%3EID]=%24result%5Bc0%5D%5B49%5D%5BID%5D\
             &filter[%40STAGE_ID][0]=NEW&filter[%40STAGE_ID][1]=WON\
             &filter[%3D%25TITLE]=a%26b+c\
             &select[0]=*&select[1]=UF_*\
             &start=-1&flag=1"
        );
    }

    #[test]
    fn round_trips_through_a_form_decoder() {
        let params = json!({"fields": {"TITLE": "Ü & = ?", "PHONE": [{"VALUE": "+1 555"}]}});
        let decoded: Vec<(String, String)> =
            form_urlencoded::parse(encode_query(&params).as_bytes())
                .into_owned()
                .collect();
        assert_eq!(
            decoded,
            vec![
                ("fields[TITLE]".to_string(), "Ü & = ?".to_string()),
                ("fields[PHONE][0][VALUE]".to_string(), "+1 555".to_string())
            ]
        );
    }
}
