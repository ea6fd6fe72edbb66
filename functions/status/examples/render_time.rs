//! How long the status function takes to answer each of its pages, measured in-process
//! through its own handler against the database named by `B24SYNC_CONFIG` (see
//! `benches/status_page.sh`, which builds a mirror of 1,000,000 deals and 1,000 runs).
//! Prints one JSON line per page: the answer's size and the time per answer.

use std::time::Instant;

use lambda_http::Body;
use lambda_http::http::Request;
use status::{StatusState, handle};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = b24_config::Config::load(None)?;
    let token = config.status.as_ref().ok_or("no [status] tokens")?.tokens[0].clone();
    let repeats: usize = std::env::var("REPEATS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(50);
    let started = Instant::now();
    let state = StatusState::connect(&config).await?;
    let connected_ms = started.elapsed().as_secs_f64() * 1000.0;
    println!("{{\"connect_ms\":{connected_ms:.1}}}");
    for path in ["/", "/status.json", "/schema.md"] {
        let mut times = Vec::with_capacity(repeats);
        let mut bytes = 0;
        // One answer before timing: the first query plans are made then.
        for round in 0..=repeats {
            let request = Request::builder()
                .uri(format!("https://status.lambda-url.test{path}"))
                .header("authorization", format!("Bearer {token}"))
                .body(Body::Empty)?;
            let start = Instant::now();
            let response = handle(&state, request).await;
            let elapsed = start.elapsed().as_secs_f64() * 1000.0;
            if response.status() != 200 {
                return Err(format!("{path}: {}", response.status()).into());
            }
            bytes = response.body().len();
            if round > 0 {
                times.push(elapsed);
            }
        }
        times.sort_by(f64::total_cmp);
        let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
        println!(
            "{{\"path\":\"{path}\",\"bytes\":{bytes},\"answers\":{repeats},\"min_ms\":{:.2},\"median_ms\":{:.2},\"p95_ms\":{:.2},\"max_ms\":{:.2}}}",
            times[0],
            at(0.5),
            at(0.95),
            times[times.len() - 1]
        );
    }
    Ok(())
}
