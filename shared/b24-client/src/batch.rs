//! `batch`: up to 50 commands per HTTP request, `$result[...]` references between them,
//! and per-command results and errors (the portal answers 200 with partial failures).

use std::collections::HashSet;

use serde_json::{Map, Value, json};

use crate::client::{Client, RequestSpec, TimeBlock, as_u64, is_create, normalize_method};
use crate::error::B24Error;
use crate::params::encode_query;

/// The portal's limit of commands in one `batch` request.
pub const MAX_BATCH_COMMANDS: usize = 50;

/// One command of a batch. `params` may hold `$result[name][...]` references to the
/// result of an earlier command of the same batch request.
#[derive(Clone, Debug, PartialEq)]
pub struct Command {
    /// Unique within the batch; letters, digits and `_` (it appears inside references).
    pub name: String,
    pub method: String,
    pub params: Value,
}

impl Command {
    pub fn new(name: impl Into<String>, method: impl Into<String>, params: Value) -> Command {
        Command {
            name: name.into(),
            method: method.into(),
            params,
        }
    }

    /// `method?php-style-query`, the form the portal expects inside `cmd`.
    fn encode(&self) -> String {
        let query = encode_query(&self.params);
        if query.is_empty() {
            self.method.clone()
        } else {
            format!("{}?{query}", self.method)
        }
    }
}

#[derive(Debug)]
pub struct CommandResult {
    pub name: String,
    pub method: String,
    pub outcome: Result<CommandOutput, B24Error>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct CommandOutput {
    pub result: Value,
    /// `result_total[name]`: present for list commands with `start >= 0`.
    pub total: Option<u64>,
    /// `result_next[name]`: present when a list command has another page.
    pub next: Option<u64>,
    /// `result_time[name].operating`: the method's running total in the portal's
    /// window after this command, when the portal reports it.
    pub operating: Option<f64>,
}

impl Client {
    /// Runs `commands`, split into requests of at most 50. References may only point to
    /// commands in the same request of 50; with `halt`, a failing command stops the rest
    /// (they come back as [`B24Error::CommandSkipped`]). The outer error is for failures
    /// of a whole request; per-command failures are in each result.
    pub async fn batch(
        &self,
        commands: Vec<Command>,
        halt: bool,
    ) -> Result<Vec<CommandResult>, B24Error> {
        validate_commands(&commands)?;
        let mut results = Vec::with_capacity(commands.len());
        let mut halted = false;
        for chunk in commands.chunks(MAX_BATCH_COMMANDS) {
            if halted {
                results.extend(chunk.iter().map(|c| CommandResult {
                    name: c.name.clone(),
                    method: c.method.clone(),
                    outcome: Err(B24Error::CommandSkipped {
                        method: c.method.clone(),
                    }),
                }));
                continue;
            }
            let chunk_results = self.send_batch(chunk, halt).await?;
            halted = halt && chunk_results.iter().any(|r| r.outcome.is_err());
            results.extend(chunk_results);
        }
        Ok(results)
    }

    /// One `batch` HTTP request of at most 50 commands.
    pub(crate) async fn send_batch(
        &self,
        commands: &[Command],
        halt: bool,
    ) -> Result<Vec<CommandResult>, B24Error> {
        let cmd: Map<String, Value> = commands
            .iter()
            .map(|c| (c.name.clone(), Value::String(c.encode())))
            .collect();
        let body = json!({ "halt": u8::from(halt), "cmd": cmd });
        let mut charged = vec!["batch".to_string()];
        for command in commands {
            let method = normalize_method(&command.method);
            if !charged.contains(&method) {
                charged.push(method);
            }
        }
        let spec = RequestSpec {
            method: "batch",
            charged,
            creates: commands.iter().any(|c| is_create(&c.method)),
        };
        let mut envelope = self.execute(&spec, &body).await?;

        let outer_time = TimeBlock::from_envelope(&envelope);
        let mut sections = match envelope.remove("result") {
            Some(Value::Object(map)) => map,
            _ => {
                return Err(B24Error::UnexpectedResponse {
                    method: "batch".into(),
                    detail: "`result` is not an object".into(),
                });
            }
        };
        let mut results_by_name = section(&mut sections, "result");
        let mut errors = section(&mut sections, "result_error");
        let totals = section(&mut sections, "result_total");
        let nexts = section(&mut sections, "result_next");
        let times = section(&mut sections, "result_time");

        // Every command of one method carries that method's running total; the
        // limiter keeps the highest, never the sum.
        let mut reports: Vec<_> = outer_time.report("batch".into()).into_iter().collect();
        let mut out = Vec::with_capacity(commands.len());
        for command in commands {
            let time = TimeBlock::from_time(times.get(&command.name));
            reports.extend(time.report(normalize_method(&command.method)));
            let outcome = if let Some(error) = errors.remove(&command.name) {
                let code = error
                    .get("error")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let description = error
                    .get("error_description")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let mut error = B24Error::from_envelope(&command.method, None, code, description);
                if let B24Error::OperationTimeLimit { reset_at, .. } = &mut error {
                    // The outer time block speaks for `batch`, not for this method.
                    *reset_at = time.reset_at;
                }
                self.note_throttle(&error).await;
                Err(error)
            } else if let Some(result) = results_by_name.remove(&command.name) {
                Ok(CommandOutput {
                    result,
                    total: totals.get(&command.name).and_then(as_u64),
                    next: nexts.get(&command.name).and_then(as_u64),
                    operating: time.operating,
                })
            } else {
                Err(B24Error::CommandSkipped {
                    method: command.method.clone(),
                })
            };
            out.push(CommandResult {
                name: command.name.clone(),
                method: command.method.clone(),
                outcome,
            });
        }
        self.observe(reports).await;
        Ok(out)
    }
}

/// One keyed section of a batch answer. PHP sends an empty one as `[]`, and one keyed
/// exactly 0..n-1 as an array, so both shapes become a map by name.
fn section(sections: &mut Map<String, Value>, key: &str) -> Map<String, Value> {
    match sections.remove(key) {
        Some(Value::Object(map)) => map,
        Some(Value::Array(items)) => items
            .into_iter()
            .enumerate()
            .map(|(i, v)| (i.to_string(), v))
            .collect(),
        _ => Map::new(),
    }
}

fn validate_commands(commands: &[Command]) -> Result<(), B24Error> {
    let mut seen = HashSet::new();
    for command in commands {
        let valid_name = !command.name.is_empty()
            && command
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid_name {
            return Err(B24Error::InvalidArgument(format!(
                "batch command name {:?} must be letters, digits and '_'",
                command.name
            )));
        }
        if !seen.insert(command.name.as_str()) {
            return Err(B24Error::InvalidArgument(format!(
                "batch command name {:?} is used twice",
                command.name
            )));
        }
        if command.method.is_empty() || command.method.contains(['?', '&', '/']) {
            return Err(B24Error::InvalidArgument(format!(
                "batch command {:?} has an invalid method name",
                command.name
            )));
        }
        if normalize_method(&command.method) == "batch" {
            return Err(B24Error::InvalidArgument(
                "a batch cannot contain a batch".into(),
            ));
        }
    }
    // A reference resolves only inside the request that holds its target.
    for (index, chunk) in commands.chunks(MAX_BATCH_COMMANDS).enumerate().skip(1) {
        let earlier = &commands[..index * MAX_BATCH_COMMANDS];
        for command in chunk {
            let text = command.params.to_string();
            if let Some(target) = earlier.iter().find(|e| references(&text, &e.name)) {
                return Err(B24Error::InvalidArgument(format!(
                    "batch command {:?} references {:?}, which goes in an earlier request of {MAX_BATCH_COMMANDS}; \
                     keep referencing commands within one group of {MAX_BATCH_COMMANDS}",
                    command.name, target.name
                )));
            }
        }
    }
    Ok(())
}

fn references(text: &str, name: &str) -> bool {
    ["result", "next", "total", "time", "error"]
        .iter()
        .any(|kind| text.contains(&format!("${kind}[{name}]")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_commands_in_the_php_query_form() {
        let c = Command::new(
            "c1",
            "crm.deal.list",
            json!({"filter": {">ID": "$result[c0][49][ID]"}, "start": -1}),
        );
        assert_eq!(
            c.encode(),
            "crm.deal.list?filter[%3EID]=%24result%5Bc0%5D%5B49%5D%5BID%5D&start=-1"
        );
        assert_eq!(
            Command::new("u", "user.current", json!({})).encode(),
            "user.current"
        );
    }

    #[test]
    fn rejects_bad_names_duplicates_nesting_and_cross_request_references() {
        let ok = |name: &str| Command::new(name, "crm.deal.get", json!({"id": 1}));
        assert!(validate_commands(&[ok("a"), ok("b_2")]).is_ok());
        assert!(
            matches!(validate_commands(&[ok("a"), ok("a")]), Err(B24Error::InvalidArgument(m)) if m.contains("twice"))
        );
        assert!(validate_commands(&[ok("a b")]).is_err());
        assert!(validate_commands(&[ok("")]).is_err());
        assert!(validate_commands(&[Command::new("a", "batch", json!({}))]).is_err());
        assert!(validate_commands(&[Command::new("a", "crm.deal.get?id=1", json!({}))]).is_err());

        let mut commands: Vec<Command> = (0..50).map(|i| ok(&format!("c{i}"))).collect();
        commands.push(Command::new(
            "c50",
            "crm.deal.get",
            json!({"id": "$result[c49][ID]"}),
        ));
        let err = validate_commands(&commands).unwrap_err();
        assert!(err.to_string().contains("\"c49\""), "{err}");
        commands[50].params = json!({"id": "$result[c51][ID]"});
        commands.push(ok("c51"));
        assert!(validate_commands(&commands).is_ok());
    }

    #[test]
    fn sections_accept_objects_arrays_and_empty_arrays() {
        let mut sections =
            json!({"result": ["a", "b"], "result_error": [], "result_total": {"x": 3}})
                .as_object()
                .cloned()
                .unwrap();
        assert_eq!(section(&mut sections, "result").get("1"), Some(&json!("b")));
        assert!(section(&mut sections, "result_error").is_empty());
        assert_eq!(
            section(&mut sections, "result_total").get("x"),
            Some(&json!(3))
        );
        assert!(section(&mut sections, "result_next").is_empty());
    }
}
