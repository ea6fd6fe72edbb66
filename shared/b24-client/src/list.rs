//! Reading many rows: the chained-batch ID window, fetching by IDs, and offset paging
//! for methods that cannot order by ID.
//!
//! The ID window sends `*.list` commands in one `batch`, each with `start=-1`,
//! ordered by ID ascending and filtered `>ID` on the previous command's last row
//! (`$result[cN][49][ID]`): up to 2,500 rows per HTTP request, one request in flight,
//! one batch of rows in memory. A short page ends the listing.
//!
//! The window never asks for a count (`start=0`): on a big portal one COUNT costs
//! far more operating time than the pages it would save (about 50 s on 2.39 million
//! rows, against 0.1 s for a page). Not knowing where the data ends costs at most one
//! more request, when the rows end exactly on a full request and an empty page has to
//! confirm it, plus the commands after the last page in the final request, which find
//! nothing. A full listing sends 50 commands per request; a filtered one (usually few
//! rows, as in an incremental sync, where the portal scans for every command) starts
//! with 1, then 10, then 50.
//!
//! [`Client::list_paged`] counts on every page; it is only for methods that cannot
//! order by ID, and no sync path uses it.

use futures::{Stream, TryStreamExt, stream};
use serde_json::{Map, Value, json};

use crate::batch::{Command, MAX_BATCH_COMMANDS};
use crate::client::{Client, as_u64};
use crate::entity_api::{Dialect, ListShape};
use crate::error::B24Error;

/// One record as the portal returns it.
pub type Row = Map<String, Value>;

/// Rows per list page; fixed by the portal.
pub const PAGE_SIZE: usize = 50;

/// Commands in the first requests of a filtered listing.
const FILTERED_RAMP: [usize; 3] = [1, 10, MAX_BATCH_COMMANDS];

/// A listing of one `*.list` method (`crm.deal.list`, `crm.item.list`...).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ListQuery {
    pub method: String,
    /// How the method's requests and answers look (see [`crate::EntityApi`]); `select`
    /// and `filter` are in the mirror's codes for an entity's dialect.
    pub shape: ListShape,
    /// Fields to return; empty means the portal's default (`*` and `UF_*`). `ID` is
    /// added when neither it nor `*` is named, because the window needs it.
    pub select: Vec<String>,
    /// Any filter, e.g. `{">=DATE_MODIFY": "2024-01-01T00:00:00+00:00"}`. A `>ID` or
    /// `>=ID` bound in it moves the start of the window.
    pub filter: Map<String, Value>,
    /// Resume after this ID (a checkpoint).
    pub after_id: Option<u64>,
}

impl ListQuery {
    pub fn new(method: impl Into<String>) -> ListQuery {
        ListQuery {
            method: method.into(),
            ..ListQuery::default()
        }
    }
}

impl Client {
    /// Every row matching the query, in ascending ID order, each once. Rows deleted
    /// during the listing may be missing; rows added during it appear (IDs only grow).
    pub fn list_stream(
        &self,
        query: ListQuery,
    ) -> impl Stream<Item = Result<Row, B24Error>> + Send + 'static {
        let window = IdWindow::new(self.clone(), query);
        stream::try_unfold(window, |mut window| async move {
            if window.done {
                return Ok(None);
            }
            let rows = window.next_batch().await?;
            Ok(Some((stream::iter(rows.into_iter().map(Ok)), window)))
        })
        .try_flatten()
    }

    /// The rows of `ids` (missing ones are simply absent), in ascending ID order: 50 IDs
    /// per `@ID` command, 50 commands per request. `method` is the list method.
    pub async fn fetch_by_ids(
        &self,
        method: &str,
        ids: &[u64],
        select: &[String],
    ) -> Result<Vec<Row>, B24Error> {
        self.fetch_by_ids_in(&Dialect::Classic, method, ids, select)
            .await
    }

    /// [`Client::fetch_by_ids`] in `dialect` (`crm.item.list` with its names).
    pub async fn fetch_by_ids_in(
        &self,
        dialect: &Dialect,
        method: &str,
        ids: &[u64],
        select: &[String],
    ) -> Result<Vec<Row>, B24Error> {
        let mut ids = ids.to_vec();
        ids.sort_unstable();
        ids.dedup();
        let select = select_with_id(select);
        let commands = ids
            .chunks(PAGE_SIZE)
            .enumerate()
            .map(|(i, chunk)| {
                let mut filter = Map::new();
                filter.insert("@ID".into(), json!(chunk));
                Command::new(
                    format!("ids{i}"),
                    method,
                    dialect.list_params(&filter, &select),
                )
            })
            .collect();
        let mut rows = Vec::with_capacity(ids.len());
        for result in self.batch(commands, false).await? {
            rows.extend(dialect.rows(method, result.outcome?.result)?);
        }
        Ok(rows)
    }

    /// Offset paging (`start=0,50,...`, 50 pages per request after the first) for
    /// methods that cannot be ordered by ID. Costs a COUNT per page on the portal, and
    /// rows can shift between pages if data changes meanwhile; prefer
    /// [`Client::list_stream`] wherever ordering by ID works.
    pub fn list_paged(
        &self,
        method: &str,
        params: Map<String, Value>,
    ) -> impl Stream<Item = Result<Row, B24Error>> + Send + 'static {
        let state = Paged {
            client: self.clone(),
            method: method.to_string(),
            params,
            next_start: Some(0),
            total: None,
        };
        stream::try_unfold(state, |mut state| async move {
            let Some(start) = state.next_start else {
                return Ok(None);
            };
            let rows = state.fetch_from(start).await?;
            Ok(Some((stream::iter(rows.into_iter().map(Ok)), state)))
        })
        .try_flatten()
    }
}

struct IdWindow {
    client: Client,
    method: String,
    shape: ListShape,
    select: Vec<String>,
    /// The caller's filter without its `>ID` / `>=ID` bound (the window sets that).
    filter: Map<String, Value>,
    /// The highest ID delivered so far (or the starting bound).
    cursor: u64,
    /// The filter has conditions besides ID bounds: ramped batch sizes.
    filtered: bool,
    requests_sent: usize,
    done: bool,
    /// Consecutive batches that made no progress because of a limit.
    stalls: u32,
    /// A malformed filter bound, reported on the first poll.
    invalid: Option<B24Error>,
}

impl IdWindow {
    fn new(client: Client, query: ListQuery) -> IdWindow {
        let mut filter = query.filter;
        let mut cursor = query.after_id.unwrap_or(0);
        let mut invalid = None;
        for key in [">ID", ">=ID"] {
            let present: Vec<String> = filter
                .keys()
                .filter(|k| k.eq_ignore_ascii_case(key))
                .cloned()
                .collect();
            for k in present {
                let value = filter.remove(&k).unwrap_or(Value::Null);
                match as_u64(&value) {
                    // `>=N` is `>N-1` on integer IDs.
                    Some(bound) => {
                        cursor = cursor.max(if key == ">ID" {
                            bound
                        } else {
                            bound.saturating_sub(1)
                        })
                    }
                    None => {
                        invalid = Some(B24Error::InvalidArgument(format!(
                            "filter {k:?} must be a non-negative integer ID"
                        )))
                    }
                }
            }
        }
        let filtered = filter.keys().any(|k| !is_id_condition(k));
        IdWindow {
            select: select_with_id(&query.select),
            method: query.method,
            shape: query.shape,
            client,
            filter,
            cursor,
            filtered,
            requests_sent: 0,
            done: false,
            stalls: 0,
            invalid,
        }
    }

    fn command(&self, index: usize) -> Command {
        let mut filter = self.filter.clone();
        let bound = if index == 0 {
            json!(self.cursor)
        } else {
            let previous = format!("c{}", index - 1);
            json!(self.shape.last_id_reference(&previous, PAGE_SIZE - 1))
        };
        filter.insert(">ID".into(), bound);
        let params = self.shape.list_params(&filter, &self.select);
        Command::new(format!("c{index}"), &self.method, params)
    }

    /// How many commands the next request holds.
    fn commands_in_next_request(&self) -> usize {
        if self.filtered {
            FILTERED_RAMP[self.requests_sent.min(FILTERED_RAMP.len() - 1)]
        } else {
            MAX_BATCH_COMMANDS
        }
    }

    async fn next_batch(&mut self) -> Result<Vec<Row>, B24Error> {
        if let Some(error) = self.invalid.take() {
            return Err(error);
        }
        let count = self.commands_in_next_request();
        let commands: Vec<Command> = (0..count).map(|i| self.command(i)).collect();
        let results = self.client.send_batch(&commands, false).await?;
        self.requests_sent += 1;

        let mut rows = Vec::with_capacity(count * PAGE_SIZE);
        for result in results {
            let output = match result.outcome {
                Ok(output) => output,
                Err(error) if error.is_retryable() => {
                    // A limit hit this command: keep what came before, resume from there.
                    self.stalls = if rows.is_empty() { self.stalls + 1 } else { 0 };
                    if self.stalls > self.client.inner.options.max_retries {
                        return Err(error);
                    }
                    tracing::warn!(method = %self.method, error = %error, "list command throttled, resuming");
                    break;
                }
                Err(error) => return Err(error),
            };
            let page = self.shape.rows(&self.method, output.result)?;
            let page_len = page.len() as u64;
            for row in page {
                let id = row_id(&self.method, &row)?;
                if id <= self.cursor {
                    return Err(B24Error::UnexpectedResponse {
                        method: self.method.clone(),
                        detail: format!(
                            "row ID {id} is not above the window start {}",
                            self.cursor
                        ),
                    });
                }
                self.cursor = id;
                rows.push(row);
            }
            if page_len < PAGE_SIZE as u64 {
                self.done = true;
                break;
            }
        }
        if !rows.is_empty() {
            self.stalls = 0;
        }
        Ok(rows)
    }
}

struct Paged {
    client: Client,
    method: String,
    params: Map<String, Value>,
    next_start: Option<u64>,
    total: Option<u64>,
}

impl Paged {
    fn params_at(&self, start: u64) -> Value {
        let mut params = self.params.clone();
        params.insert("start".into(), json!(start));
        Value::Object(params)
    }

    async fn fetch_from(&mut self, start: u64) -> Result<Vec<Row>, B24Error> {
        let Some(total) = self.total else {
            // The first page alone, to learn the total.
            let response = self
                .client
                .call(&self.method, &self.params_at(start))
                .await?;
            self.total = Some(response.total.unwrap_or(0));
            self.next_start = response.next;
            return Dialect::Classic.rows(&self.method, response.result);
        };
        let starts: Vec<u64> = (0..MAX_BATCH_COMMANDS as u64)
            .map(|i| start + i * PAGE_SIZE as u64)
            .take_while(|s| *s < total)
            .collect();
        let commands: Vec<Command> = starts
            .iter()
            .map(|s| Command::new(format!("p{s}"), &self.method, self.params_at(*s)))
            .collect();
        let mut rows = Vec::new();
        for result in self.client.send_batch(&commands, false).await? {
            rows.extend(Dialect::Classic.rows(&self.method, result.outcome?.result)?);
        }
        let after = starts.last().map_or(total, |s| s + PAGE_SIZE as u64);
        self.next_start = (after < total).then_some(after);
        Ok(rows)
    }
}

/// Conditions on the ID itself (`ID`, `>ID`, `@ID`, ...), as opposed to filters that
/// make the portal scan rows.
fn is_id_condition(key: &str) -> bool {
    key.trim_start_matches(['>', '<', '=', '!', '@', '%'])
        .eq_ignore_ascii_case("ID")
}

/// Adds `ID` to an explicit select list that would otherwise leave it out.
fn select_with_id(select: &[String]) -> Vec<String> {
    let mut select: Vec<String> = select
        .iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    if !select.is_empty()
        && !select
            .iter()
            .any(|s| s == "*" || s.eq_ignore_ascii_case("ID"))
    {
        select.insert(0, "ID".into());
    }
    select
}

fn row_id(method: &str, row: &Row) -> Result<u64, B24Error> {
    row.get("ID")
        .and_then(as_u64)
        .ok_or_else(|| B24Error::UnexpectedResponse {
            method: method.to_string(),
            detail: "a list row has no numeric ID".into(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::ClientOptions;
    use b24_domain::webhook::WebhookUrl;

    fn window(query: ListQuery) -> IdWindow {
        let url = WebhookUrl::parse("http://127.0.0.1:9/rest/1/abc/").unwrap();
        IdWindow::new(Client::new(url, ClientOptions::default()).unwrap(), query)
    }

    fn filter(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap()
    }

    #[test]
    fn the_window_starts_after_the_highest_of_checkpoint_and_filter_bound() {
        let w = window(ListQuery {
            filter: filter(json!({">=id": "101", "STAGE_ID": "NEW"})),
            ..ListQuery::new("crm.deal.list")
        });
        assert_eq!(w.cursor, 100);
        assert_eq!(w.filter, filter(json!({"STAGE_ID": "NEW"})));
        let w = window(ListQuery {
            filter: filter(json!({">ID": 7})),
            after_id: Some(40),
            ..ListQuery::new("crm.deal.list")
        });
        assert_eq!(w.cursor, 40);
        let w = window(ListQuery {
            filter: filter(json!({">ID": 70, "<ID": 90})),
            after_id: Some(40),
            ..ListQuery::new("m")
        });
        assert_eq!(w.cursor, 70);
        assert_eq!(w.filter, filter(json!({"<ID": 90})));
        assert!(
            window(ListQuery {
                filter: filter(json!({">ID": "x"})),
                ..ListQuery::new("m")
            })
            .invalid
            .is_some()
        );
    }

    #[test]
    fn commands_chain_on_the_previous_last_id() {
        let mut w = window(ListQuery {
            select: vec!["TITLE".into()],
            filter: filter(json!({">=DATE_MODIFY": "2024-01-01"})),
            after_id: Some(5),
            ..ListQuery::new("crm.deal.list")
        });
        assert_eq!(
            w.command(0).params,
            json!({"order": {"ID": "ASC"}, "filter": {">=DATE_MODIFY": "2024-01-01", ">ID": 5}, "start": -1, "select": ["ID", "TITLE"]})
        );
        assert_eq!(
            w.command(3).params["filter"][">ID"],
            json!("$result[c2][49][ID]")
        );
        // Filtered: ramped sizes.
        assert!(w.filtered);
        assert_eq!(w.commands_in_next_request(), 1);
        w.requests_sent = 1;
        assert_eq!(w.commands_in_next_request(), 10);
        w.requests_sent = 5;
        assert_eq!(w.commands_in_next_request(), 50);
    }

    #[test]
    fn a_full_listing_never_asks_for_a_count() {
        let mut w = window(ListQuery {
            filter: filter(json!({"<ID": 9000})),
            ..ListQuery::new("crm.deal.list")
        });
        assert!(!w.filtered);
        for requests_sent in [0, 1, 39, 40] {
            w.requests_sent = requests_sent;
            assert_eq!(w.commands_in_next_request(), 50);
            for index in 0..50 {
                assert_eq!(w.command(index).params["start"], json!(-1), "c{index}");
            }
        }
    }

    #[test]
    fn select_keeps_or_adds_id() {
        assert_eq!(select_with_id(&[]), Vec::<String>::new());
        assert_eq!(
            select_with_id(&["*".into(), "UF_*".into()]),
            vec!["*", "UF_*"]
        );
        assert_eq!(select_with_id(&["TITLE".into()]), vec!["ID", "TITLE"]);
        assert_eq!(select_with_id(&["id".into(), " ".into()]), vec!["id"]);
    }

    #[test]
    fn pages_and_ids_are_parsed_strictly() {
        let rows = Dialect::Classic
            .rows("m", json!([{"ID": "3"}, {"ID": 4}]))
            .unwrap();
        assert_eq!(row_id("m", &rows[0]).unwrap(), 3);
        assert_eq!(row_id("m", &rows[1]).unwrap(), 4);
        assert!(Dialect::Classic.rows("m", json!({})).unwrap().is_empty());
        assert!(Dialect::Classic.rows("m", json!({"a": 1})).is_err());
        assert!(Dialect::Classic.rows("m", json!([1])).is_err());
        assert!(row_id("m", &filter(json!({"ID": "x"}))).is_err());
    }
}
