//! Start-up figures of the Lambda functions' binaries (run by `benches/functions.sh`):
//! each binary is started RUNS times against a local stand-in of the Lambda Runtime API,
//! with its configuration in moto's Secrets Manager, a throw-away database on the local
//! PostgreSQL and a simulated portal, and for each start this measures
//!
//! - start to ready: process spawn to its first `GET .../invocation/next` (configuration
//!   read from the secret, clients built, database connected, migrations checked);
//! - the first invocation: a sample event from `events/` in, its answer out;
//! - peak memory: the process's `VmHWM` after that invocation.
//!
//! One unrecorded start per function comes first: it applies the migrations, runs the
//! sync's first (full) pass and the forwarder's first forwards (adds; the recorded
//! starts update those deals), so the recorded starts all do the same work.
//!
//!   cargo run -p b24-testkit --example function_startup -- target/release 10

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use b24_sim::{RunningSim, SimConfig};
use b24_testkit::TestDb;
use b24_testkit::function_process::{FunctionProcess, lambda_environment, moto_environment};
use b24_testkit::moto::MotoServer;
use b24_testkit::runtime_api::RuntimeApi;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(120);
/// The token of `events/webhook-intake/form-event.json`.
const APP_TOKEN: &str = "51856fefc120afa4b628cc82d3935cce";

/// One function: its binary, the memory the SAM template gives it, the sample event
/// and what its answer must hold.
struct Function {
    name: &'static str,
    memory_mb: u32,
    event: &'static str,
    answered: fn(&Value) -> bool,
}

const FUNCTIONS: [Function; 7] = [
    Function {
        name: "webhook-intake",
        memory_mb: 128,
        event: "webhook-intake/form-event.json",
        answered: |answer| answer["statusCode"] == 202,
    },
    Function {
        name: "change-worker",
        memory_mb: 256,
        event: "change-worker/updates.json",
        answered: |answer| answer["batchItemFailures"] == json!([]),
    },
    Function {
        name: "sync-scheduled",
        memory_mb: 512,
        event: "sync-scheduled/incremental.json",
        answered: |answer| {
            answer["runs"]
                .as_array()
                .is_some_and(|runs| runs.len() == 4)
        },
    },
    Function {
        name: "deal-robot",
        memory_mb: 128,
        event: "deal-robot/webhook-robot.json",
        answered: |answer| answer["statusCode"] == 202,
    },
    Function {
        name: "deal-forwarder",
        memory_mb: 256,
        event: "deal-forwarder/jobs.json",
        answered: |answer| answer["batchItemFailures"] == json!([]),
    },
    Function {
        name: "status",
        memory_mb: 256,
        event: "status/status-json.json",
        answered: |answer| answer["statusCode"] == 200,
    },
    Function {
        name: "back-sync",
        memory_mb: 256,
        event: "back-sync/all-portals.json",
        answered: |answer| answer["pushes"].is_array(),
    },
];

/// The bearer token of the status function's samples.
const STATUS_TOKEN: &str = "st4tus-t0ken-9c2e7a51d84b";

/// The route, source portal and secret of the deal robot's and forwarder's samples.
const ROUTE: &str = "partner-to-central";
const ROUTE_SECRET: &str = "f0rw4rd-s3cr3t-9c2e7a51d84b";

struct Sample {
    ready_ms: f64,
    first_invocation_ms: f64,
    peak_kib: u64,
}

/// Everything the functions talk to; dropping it stops moto and the simulators and
/// drops the database.
struct Surroundings {
    moto: MotoServer,
    _sims: [RunningSim; 3],
    _db: TestDb,
    secret: String,
    queue_url: String,
    forward_queue_url: String,
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(dir), runs) = (args.next(), args.next()) else {
        eprintln!("usage: function_startup BINARY_DIR [RUNS=10]");
        std::process::exit(2);
    };
    let runs: usize = match runs.as_deref().map(str::parse).unwrap_or(Ok(10)) {
        Ok(runs) if runs > 0 => runs,
        _ => {
            eprintln!("RUNS must be a whole number above 0");
            std::process::exit(2);
        }
    };
    let dir = PathBuf::from(dir);
    let surroundings = surroundings().await;

    println!(
        "| Function | Binary size | Start to ready (ms) | First invocation (ms) | Peak memory (VmHWM) |"
    );
    println!("| --- | ---: | ---: | ---: | ---: |");
    for function in &FUNCTIONS {
        let binary = dir.join(function.name);
        let size = std::fs::metadata(&binary)
            .unwrap_or_else(|e| panic!("{}: {e} (build it first)", binary.display()))
            .len();
        let event = sample_event(function.event);
        start_once(function, &binary, &event, &surroundings).await;
        let mut samples = Vec::with_capacity(runs);
        for _ in 0..runs {
            samples.push(start_once(function, &binary, &event, &surroundings).await);
        }
        println!(
            "| `{}` | {} bytes ({:.1} MiB) | {} | {} | {} |",
            function.name,
            thousands(size),
            size as f64 / 1_048_576.0,
            spread(samples.iter().map(|s| s.ready_ms).collect(), ""),
            spread(samples.iter().map(|s| s.first_invocation_ms).collect(), ""),
            spread(
                samples.iter().map(|s| s.peak_kib as f64 / 1024.0).collect(),
                " MiB"
            ),
        );
    }
    println!("\nmedian (min to max) of {runs} starts per function, after one unrecorded start");
}

async fn surroundings() -> Surroundings {
    let db = TestDb::create().await;
    let sim = b24_sim::start(SimConfig {
        deals: 2_000,
        contacts: 500,
        leads: 500,
        companies: 200,
        user_fields: 12,
        ..SimConfig::default()
    })
    .await
    .expect("the simulated portal starts");
    // The forwarder's portals, default limits: a partner with the samples' deals 1 and
    // 2 (two product rows each), and an empty central portal.
    let partner = b24_sim::start(SimConfig {
        deals: 10,
        domain: "partner.sim.test".into(),
        ..SimConfig::default()
    })
    .await
    .expect("the partner portal starts");
    let central = b24_sim::start(SimConfig {
        domain: "central.sim.test".into(),
        ..SimConfig::default()
    })
    .await
    .expect("the central portal starts");
    let rows = json!([
        {"PRODUCT_NAME": "Turbine", "PRICE": 1000, "QUANTITY": 2},
        {"PRODUCT_NAME": "Service", "PRICE": 250, "QUANTITY": 4},
    ]);
    let client = reqwest::Client::new();
    for deal in [1, 2] {
        let set = client
            .post(format!("{}crm.deal.productrows.set", partner.webhook_url()))
            .json(&json!({"id": deal, "rows": rows}))
            .send()
            .await
            .expect("product rows set");
        assert!(set.status().is_success(), "product rows: {}", set.status());
    }
    let moto = MotoServer::start();
    let config = json!({
        "database": {"url": db.url},
        "portals": {
            "demo": {
                "webhook_url": sim.webhook_url(),
                "domain": "some-domain.bitrix24.com",
                "application_tokens": [APP_TOKEN],
                "back_sync": {"enabled": true},
            },
            "partner": {"webhook_url": partner.webhook_url(), "domain": "partner.sim.test", "entities": ["deal"]},
            "central": {"webhook_url": central.webhook_url(), "domain": "central.sim.test", "entities": ["deal"]},
        },
        "status": {"tokens": [STATUS_TOKEN]},
        "routes": {(ROUTE): {
            "source": "partner", "target": "central", "secret": ROUTE_SECRET,
            "fields": {"TITLE": "TITLE", "OPPORTUNITY": "OPPORTUNITY", "CURRENCY_ID": "CURRENCY_ID"},
        }},
    });
    let secret = moto
        .create_secret("b24sync/config", &config.to_string())
        .await;
    let queue_url = moto.create_queue("b24sync-changes").await;
    let forward_queue_url = moto.create_queue("b24sync-forwards").await;
    Surroundings {
        moto,
        _sims: [sim, partner, central],
        _db: db,
        secret,
        queue_url,
        forward_queue_url,
    }
}

/// One start of `binary`: ready, one invocation, peak memory, stopped.
async fn start_once(
    function: &Function,
    binary: &Path,
    event: &Value,
    around: &Surroundings,
) -> Sample {
    let runtime = RuntimeApi::start(function.name).await;
    let mut env = lambda_environment(function.name, function.memory_mb, &runtime);
    env.extend(moto_environment(&around.moto));
    env.extend(
        [
            ("B24SYNC_CONFIG_SECRET", around.secret.as_str()),
            ("B24SYNC_MIGRATE_ON_START", "true"),
            ("CHANGE_QUEUE_URL", around.queue_url.as_str()),
            ("FORWARD_QUEUE_URL", around.forward_queue_url.as_str()),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    let process = FunctionProcess::start(binary, &env);
    let ready = runtime
        .wait_ready(WAIT)
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", function.name));
    let invoked = Instant::now();
    let answer = runtime
        .invoke(event, WAIT)
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", function.name));
    let first_invocation = invoked.elapsed();
    assert!(
        (function.answered)(&answer.response),
        "{}: unexpected answer {}",
        function.name,
        answer.response
    );
    let peak_kib = process
        .peak_memory_kib()
        .unwrap_or_else(|| panic!("{}: no VmHWM (exited?)", function.name));
    let sample = Sample {
        ready_ms: ms(ready.duration_since(process.started_at())),
        first_invocation_ms: ms(first_invocation),
        peak_kib,
    };
    process.stop();
    sample
}

fn sample_event(relative: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../events")
        .join(relative);
    serde_json::from_str(&std::fs::read_to_string(&path).expect("the sample event"))
        .expect("the sample event is JSON")
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// "median (min to max)" with one decimal, the median followed by `unit`.
fn spread(mut values: Vec<f64>, unit: &str) -> String {
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    let median = if values.len().is_multiple_of(2) {
        (values[middle - 1] + values[middle]) / 2.0
    } else {
        values[middle]
    };
    format!(
        "**{median:.1}**{unit} ({:.1} to {:.1})",
        values[0],
        values[values.len() - 1]
    )
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
