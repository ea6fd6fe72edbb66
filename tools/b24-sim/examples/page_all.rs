//! Pages through every deal of a running simulator the way a full sync does:
//! chained `batch` requests of 50 `crm.deal.list` commands, `start=-1`, each
//! filtering `>ID` on the previous command's last row. Prints rows, requests,
//! elapsed seconds and rows per second as one JSON line.
//!
//! Usage: page_all <webhook url> [entity]

use std::time::Instant;

use anyhow::{Context, bail};
use serde_json::{Value, json};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let webhook = args
        .next()
        .context("usage: page_all <webhook url> [entity]")?;
    let entity = args.next().unwrap_or_else(|| "deal".to_string());
    let client = reqwest::Client::builder().no_proxy().build()?;
    let started = Instant::now();
    let (mut rows, mut requests, mut last) = (0usize, 0usize, 0u64);
    let mut previous_id = 0u64;
    'paging: loop {
        let cmd: serde_json::Map<String, Value> = (0..50)
            .map(|n| {
                let after = if n == 0 { last.to_string() } else { format!("$result[c{}][49][ID]", n - 1) };
                let command = format!("crm.{entity}.list?order[ID]=ASC&filter[>ID]={after}&select[]=*&select[]=UF_*&start=-1");
                (format!("c{n}"), json!(command))
            })
            .collect();
        let answer: Value = client
            .post(format!("{webhook}batch"))
            .json(&json!({"halt": 0, "cmd": cmd}))
            .send()
            .await?
            .json()
            .await?;
        requests += 1;
        for n in 0..50 {
            let Some(page) = answer["result"]["result"][format!("c{n}")].as_array() else {
                bail!("unexpected answer: {answer}");
            };
            for row in page {
                let id: u64 = row["ID"].as_str().context("row without ID")?.parse()?;
                if id <= previous_id {
                    bail!("row {id} came after {previous_id}: paging is not ascending");
                }
                previous_id = id;
            }
            rows += page.len();
            if page.len() < 50 {
                break 'paging;
            }
            last = previous_id;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({"rows": rows, "requests": requests, "seconds": seconds, "rows_per_second": rows as f64 / seconds})
    );
    Ok(())
}
