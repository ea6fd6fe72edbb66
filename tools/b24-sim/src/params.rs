//! Request parameters as PHP sees them: query string and form bodies with
//! PHP-style nested keys (`fields[PHONE][0][VALUE]=...`, `select[]=ID`), or a
//! JSON body, merged into one object.

use serde_json::{Map, Value};

/// PHP's default `max_input_nesting_level` is 64; nobody needs more than this.
const MAX_DEPTH: usize = 32;

/// Builds the nested parameter object from decoded key/value pairs.
/// Objects whose keys are exactly `0..n-1` become arrays, as PHP's `json_encode` shows them.
pub(crate) fn from_pairs(
    pairs: impl IntoIterator<Item = (String, Value)>,
) -> Result<Map<String, Value>, String> {
    let mut root = Map::new();
    for (key, value) in pairs {
        let path = key_path(&key)?;
        if path.first().is_some_and(|s| s.is_empty()) {
            continue; // PHP drops keys with no name (`[x]=1`, `=1`)
        }
        insert(&mut root, &path, value);
    }
    Ok(root.into_iter().map(|(k, v)| (k, normalize(v))).collect())
}

/// `a[b][][c]` -> `["a", "b", "", "c"]`; a name with an unclosed bracket is taken literally.
fn key_path(key: &str) -> Result<Vec<String>, String> {
    let Some(open) = key.find('[') else {
        return Ok(vec![key.to_string()]);
    };
    let mut path = vec![key[..open].to_string()];
    let mut rest = &key[open..];
    while let Some(inner) = rest.strip_prefix('[') {
        let Some(close) = inner.find(']') else {
            // PHP keeps what it parsed so far and ignores the malformed tail.
            break;
        };
        path.push(inner[..close].to_string());
        rest = &inner[close + 1..];
        if path.len() > MAX_DEPTH {
            return Err(format!(
                "parameter '{}' is nested more than {MAX_DEPTH} levels deep",
                truncate(key)
            ));
        }
    }
    Ok(path)
}

fn truncate(key: &str) -> String {
    key.chars().take(60).collect()
}

fn insert(map: &mut Map<String, Value>, path: &[String], value: Value) {
    let key = if path[0].is_empty() {
        next_index(map)
    } else {
        path[0].clone()
    };
    if path.len() == 1 {
        map.insert(key, value);
        return;
    }
    let entry = map.entry(key).or_insert_with(|| Value::Object(Map::new()));
    if !entry.is_object() {
        *entry = Value::Object(Map::new());
    }
    if let Value::Object(child) = entry {
        insert(child, &path[1..], value);
    }
}

/// The key `[]` appends under: one more than the largest integer key.
fn next_index(map: &Map<String, Value>) -> String {
    map.keys()
        .filter_map(|k| k.parse::<u64>().ok())
        .max()
        .map_or(0, |m| m + 1)
        .to_string()
}

fn normalize(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let sequential = map
                .keys()
                .enumerate()
                .all(|(i, k)| k.parse::<usize>() == Ok(i));
            if sequential && !map.is_empty() {
                Value::Array(map.into_iter().map(|(_, v)| normalize(v)).collect())
            } else {
                Value::Object(map.into_iter().map(|(k, v)| (k, normalize(v))).collect())
            }
        }
        other => other,
    }
}

/// Parses `a=1&b[c]=2` (percent-decoded, `+` as space) into nested parameters.
pub(crate) fn from_query(query: &str) -> Result<Map<String, Value>, String> {
    from_pairs(
        form_urlencoded::parse(query.as_bytes())
            .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned()))),
    )
}

/// Request parameters from the query string and the body, the body winning.
pub(crate) fn from_request(
    query: Option<&str>,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Map<String, Value>, String> {
    let mut params = from_query(query.unwrap_or_default())?;
    let body_text =
        std::str::from_utf8(body).map_err(|_| "request body is not UTF-8".to_string())?;
    let trimmed = body_text.trim_start();
    if trimmed.is_empty() {
        return Ok(params);
    }
    let is_json = content_type.is_some_and(|c| c.to_ascii_lowercase().contains("json"))
        || trimmed.starts_with('{');
    let body_params = if is_json {
        match serde_json::from_str::<Value>(body_text) {
            Ok(Value::Object(map)) => map,
            Ok(_) => return Err("JSON body must be an object of parameters".to_string()),
            Err(e) => return Err(format!("request body is not valid JSON: {e}")),
        }
    } else {
        from_query(body_text)?
    };
    params.extend(body_params);
    Ok(params)
}

/// A parameter by name, case-insensitively (`ID` and `id` are the same to the portal).
pub(crate) fn param<'a>(params: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    params.get(name).or_else(|| {
        params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn php_nested_keys_build_objects_and_arrays() {
        let q = "fields[TITLE]=My%20company&fields[PHONE][0][VALUE]=112233&fields[PHONE][0][VALUE_TYPE]=WORK\
                 &fields[PHONE][1][VALUE]=555888112&fields[PHONE][1][VALUE_TYPE]=OTHER";
        let params = from_query(q).unwrap();
        assert_eq!(
            Value::Object(params),
            json!({"fields": {"TITLE": "My company", "PHONE": [
                {"VALUE": "112233", "VALUE_TYPE": "WORK"},
                {"VALUE": "555888112", "VALUE_TYPE": "OTHER"}
            ]}})
        );
    }

    #[test]
    fn append_and_indexed_lists_and_trailing_ampersand() {
        let params = from_query("select[]=ID&select[]=TITLE&filter[%3EID]=5&start=50&").unwrap();
        assert_eq!(
            Value::Object(params),
            json!({"select": ["ID", "TITLE"], "filter": {">ID": "5"}, "start": "50"})
        );
        let params = from_query("select[0]=%2A&select[1]=UF_%2A").unwrap();
        assert_eq!(params["select"], json!(["*", "UF_*"]));
    }

    #[test]
    fn non_sequential_keys_stay_an_object() {
        let params = from_query("cmd[a]=x&cmd[b]=y&ids[1]=5").unwrap();
        assert_eq!(params["cmd"], json!({"a": "x", "b": "y"}));
        assert_eq!(params["ids"], json!({"1": "5"}));
    }

    #[test]
    fn json_body_overrides_query_and_bad_json_is_named() {
        let params =
            from_request(Some("id=1&x=2"), Some("application/json"), br#"{"id": 7}"#).unwrap();
        assert_eq!(params["id"], json!(7));
        assert_eq!(params["x"], json!("2"));
        let err = from_request(None, Some("application/json"), b"{oops").unwrap_err();
        assert!(err.contains("not valid JSON"), "{err}");
        assert!(from_request(None, Some("application/json"), b"[1]").is_err());
    }

    #[test]
    fn deep_nesting_is_refused_and_lookup_is_case_insensitive() {
        let key = format!("a{}", "[x]".repeat(40));
        assert!(
            from_query(&format!("{key}=1"))
                .unwrap_err()
                .contains("nested")
        );
        let params = from_query("ID=5").unwrap();
        assert_eq!(param(&params, "id"), Some(&json!("5")));
    }
}
