//! `batch`: up to 50 commands in one request, `halt`, and `$result[cmd][...]`
//! references to earlier commands' answers.

use serde_json::{Map, Value};

use crate::answer::Answer;
use crate::error::ApiError;
use crate::params::{from_pairs, param};
use crate::values::{parse_flag, scalar_text};

/// Commands one batch may run.
pub(crate) const MAX_COMMANDS: usize = 50;

/// The answers so far, by section, each keyed by command.
#[derive(Default)]
struct Sections {
    result: Map<String, Value>,
    error: Map<String, Value>,
    total: Map<String, Value>,
    next: Map<String, Value>,
    time: Map<String, Value>,
}

impl Sections {
    fn section(&self, name: &str) -> Option<&Map<String, Value>> {
        match name.to_ascii_lowercase().as_str() {
            "result" => Some(&self.result),
            "error" => Some(&self.error),
            "total" => Some(&self.total),
            "next" => Some(&self.next),
            "time" => Some(&self.time),
            _ => None,
        }
    }
}

/// Runs the batch in `params`, each command through `execute` (the method name and its
/// decoded parameters, references already substituted).
pub(crate) fn run(
    params: &Map<String, Value>,
    mut execute: impl FnMut(&str, &Map<String, Value>) -> Result<Answer, ApiError>,
) -> Result<Value, ApiError> {
    let commands: Vec<(String, &Value)> = match param(params, "cmd") {
        Some(Value::Object(map)) => map.iter().map(|(k, v)| (k.clone(), v)).collect(),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| (i.to_string(), v))
            .collect(),
        _ => {
            return Err(ApiError::new(
                400,
                "ERROR_ARGUMENT",
                "Parameter 'cmd' must be an object or array of 'method?params' strings",
            ));
        }
    };
    let halt = param(params, "halt").and_then(parse_flag).unwrap_or(false);
    let mut sections = Sections::default();
    for (index, (key, command)) in commands.into_iter().enumerate() {
        if index >= MAX_COMMANDS {
            let error = ApiError::new(
                400,
                "ERROR_BATCH_LENGTH_EXCEEDED",
                "Max batch length exceeded",
            );
            sections.error.insert(key, error.body());
            continue;
        }
        let outcome = match command.as_str() {
            Some(command) => run_command(command, &sections, &mut execute),
            None => Err(ApiError::new(
                400,
                "ERROR_ARGUMENT",
                "A command must be a 'method?params' string",
            )),
        };
        match outcome {
            Ok(answer) => {
                if let Some(total) = answer.total {
                    sections.total.insert(key.clone(), total.into());
                }
                if let Some(next) = answer.next {
                    sections.next.insert(key.clone(), next.into());
                }
                sections.time.insert(key.clone(), answer.time);
                sections.result.insert(key, answer.result);
            }
            Err(error) => {
                sections.error.insert(key, error.body());
                if halt {
                    break;
                }
            }
        }
    }
    let mut out = Map::new();
    out.insert("result".into(), php_array(sections.result));
    out.insert("result_error".into(), php_array(sections.error));
    out.insert("result_total".into(), php_array(sections.total));
    out.insert("result_next".into(), php_array(sections.next));
    out.insert("result_time".into(), php_array(sections.time));
    Ok(Value::Object(out))
}

fn run_command(
    command: &str,
    sections: &Sections,
    execute: &mut impl FnMut(&str, &Map<String, Value>) -> Result<Answer, ApiError>,
) -> Result<Answer, ApiError> {
    let (method, query) = command.split_once('?').unwrap_or((command, ""));
    let pairs = form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), substitute(&v, sections)))
        .collect::<Vec<_>>();
    let params = from_pairs(pairs).map_err(|e| ApiError::new(400, "INVALID_REQUEST", e))?;
    execute(method, &params)
}

/// An empty PHP array is `[]`; keys exactly `0..n-1` make a list; anything else an object.
fn php_array(map: Map<String, Value>) -> Value {
    let sequential = map
        .keys()
        .enumerate()
        .all(|(i, k)| k.parse::<usize>() == Ok(i));
    if sequential {
        Value::Array(map.into_iter().map(|(_, v)| v).collect())
    } else {
        Value::Object(map)
    }
}

const REFERENCE_KINDS: [&str; 5] = ["result", "next", "total", "time", "error"];

/// Replaces `$result[cmd][...]` (and `$next`, `$total`, `$time`, `$error`) in a
/// decoded parameter value. A reference that is the whole value is replaced by the
/// raw value; a path that goes past the data stops at the last level that exists.
fn substitute(text: &str, sections: &Sections) -> Value {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        let kind = REFERENCE_KINDS.iter().find(|k| {
            after
                .get(..k.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(k))
        });
        let Some(kind) = kind else {
            out.push('$');
            rest = after;
            continue;
        };
        let path_text = &after[kind.len()..];
        let end = path_text
            .find(char::is_whitespace)
            .unwrap_or(path_text.len());
        let reference = &rest[dollar..dollar + 1 + kind.len() + end];
        match resolve(kind, &path_text[..end], sections) {
            Some(value) if reference.len() == text.len() => return value.clone(),
            Some(value) => out.push_str(&scalar_text(value).unwrap_or_default()),
            None => out.push_str(reference),
        }
        rest = &path_text[end..];
    }
    out.push_str(rest);
    Value::String(out)
}

fn resolve<'a>(kind: &str, path: &str, sections: &'a Sections) -> Option<&'a Value> {
    let mut segments = Vec::new();
    let mut rest = path;
    while let Some(inner) = rest.strip_prefix('[') {
        let close = inner.find(']')?;
        segments.push(&inner[..close]);
        rest = &inner[close + 1..];
    }
    let (command, path) = segments.split_first()?;
    let mut value = sections.section(kind)?.get(*command)?;
    for segment in path {
        let child = match value {
            Value::Object(map) => map.get(*segment),
            Value::Array(items) => segment.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => None,
        };
        match child {
            Some(child) => value = child,
            None => break,
        }
    }
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sections() -> Sections {
        let mut s = Sections::default();
        s.result
            .insert("list".into(), json!([{"ID": "7"}, {"ID": "9"}]));
        s.result
            .insert("user".into(), json!({"UF_DEPARTMENT": [3, 4]}));
        s.total.insert("list".into(), json!(120));
        s
    }

    #[test]
    fn whole_value_references_keep_the_raw_value() {
        let s = sections();
        assert_eq!(substitute("$result[list][1][ID]", &s), json!("9"));
        assert_eq!(
            substitute("$result[user][UF_DEPARTMENT]", &s),
            json!([3, 4])
        );
        assert_eq!(substitute("$total[list]", &s), json!(120));
    }

    #[test]
    fn embedded_references_are_replaced_as_text() {
        let s = sections();
        assert_eq!(
            substitute("id-$result[user][UF_DEPARTMENT][0] end", &s),
            json!("id-3 end")
        );
        assert_eq!(substitute("cost $5", &s), json!("cost $5"));
    }

    #[test]
    fn paths_past_the_data_stop_at_the_last_level() {
        let s = sections();
        assert_eq!(
            substitute("$result[list][49][ID]", &s),
            json!([{"ID": "7"}, {"ID": "9"}])
        );
        assert_eq!(
            substitute("$result[missing][0]", &s),
            json!("$result[missing][0]")
        );
    }

    /// Answers every command with its method and parameters; `fail` fails with a CRM error.
    fn echo(method: &str, params: &Map<String, Value>) -> Result<Answer, ApiError> {
        if method == "fail" {
            return Err(ApiError::crm("failed on purpose"));
        }
        Ok(Answer {
            result: json!({"method": method, "params": params}),
            total: Some(2),
            next: None,
            time: json!({"duration": 0.1}),
        })
    }

    #[test]
    fn runs_each_command_through_the_executor_with_earlier_results_substituted() {
        let params = json!({"cmd": {
            "first": "crm.deal.get?id=7",
            "second": "crm.deal.update?id=$result[first][params][id]&fields[TITLE]=x",
        }});
        let mut methods = Vec::new();
        let answer = run(params.as_object().unwrap(), |method, params| {
            methods.push(method.to_string());
            echo(method, params)
        })
        .unwrap();
        assert_eq!(methods, ["crm.deal.get", "crm.deal.update"]);
        assert_eq!(
            answer["result"]["second"]["params"],
            json!({"id": "7", "fields": {"TITLE": "x"}})
        );
        assert_eq!(answer["result_total"], json!({"first": 2, "second": 2}));
        assert_eq!(answer["result_error"], json!([]));
    }

    #[test]
    fn halt_stops_at_the_first_error_and_commands_past_the_limit_are_refused() {
        let halted = json!({"halt": 1, "cmd": ["a", "fail", "b"]});
        let mut ran = 0;
        let answer = run(halted.as_object().unwrap(), |method, params| {
            ran += 1;
            echo(method, params)
        })
        .unwrap();
        assert_eq!(ran, 2);
        assert_eq!(answer["result"].as_array().unwrap().len(), 1);
        assert!(answer["result_error"]["1"].is_object(), "{answer}");

        let commands: Vec<String> = (0..=MAX_COMMANDS).map(|i| format!("m{i}")).collect();
        let too_many = json!({ "cmd": commands });
        let answer = run(too_many.as_object().unwrap(), echo).unwrap();
        assert_eq!(answer["result"].as_array().unwrap().len(), MAX_COMMANDS);
        assert_eq!(
            answer["result_error"][MAX_COMMANDS.to_string()]["error"],
            json!("ERROR_BATCH_LENGTH_EXCEEDED")
        );
    }

    #[test]
    fn php_arrays_serialise_like_json_encode() {
        assert_eq!(php_array(Map::new()), json!([]));
        let mut m = Map::new();
        m.insert("0".into(), json!(1));
        m.insert("1".into(), json!(2));
        assert_eq!(php_array(m), json!([1, 2]));
        let mut m = Map::new();
        m.insert("a".into(), json!(1));
        assert_eq!(php_array(m), json!({"a": 1}));
    }
}
