//! A successful call as the envelope shows it: what `methods` produces for a call and
//! `batch` collects per command.

use serde_json::{Map, Value, json};

pub(crate) struct Answer {
    pub result: Value,
    pub total: Option<usize>,
    pub next: Option<usize>,
    pub time: Value,
}

impl Answer {
    /// `{"result": ..., "next": ..., "total": ..., "time": {...}}`
    pub fn envelope(self) -> Value {
        let mut out = Map::new();
        out.insert("result".into(), self.result);
        if let Some(next) = self.next {
            out.insert("next".into(), json!(next));
        }
        if let Some(total) = self.total {
            out.insert("total".into(), json!(total));
        }
        out.insert("time".into(), self.time);
        Value::Object(out)
    }
}
