//! A function's real binary running as Lambda would start it, against a
//! [`RuntimeApi`](crate::runtime_api::RuntimeApi): the environment Lambda sets, its
//! output kept in files (a pipe nobody reads would block it), its peak memory, and the
//! process killed when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use serde_json::Value;

use crate::moto::MotoServer;
use crate::runtime_api::RuntimeApi;

/// A started function process.
pub struct FunctionProcess {
    child: Child,
    started_at: Instant,
    stdout: PathBuf,
    stderr: PathBuf,
}

/// What a stopped function wrote, and how it ended.
#[derive(Debug)]
pub struct FunctionOutput {
    pub stdout: String,
    pub stderr: String,
    /// `None` when it was still running and had to be killed.
    pub exit: Option<ExitStatus>,
}

impl FunctionOutput {
    /// Every non-empty line of stdout and stderr, stdout first.
    pub fn lines(&self) -> impl Iterator<Item = &str> {
        self.stdout
            .lines()
            .chain(self.stderr.lines())
            .filter(|line| !line.trim().is_empty())
    }

    /// Every line parsed as a JSON object; panics naming the first line that is not one.
    pub fn json_lines(&self) -> Vec<Value> {
        self.lines()
            .map(|line| match serde_json::from_str::<Value>(line) {
                Ok(value) if value.is_object() => value,
                _ => panic!("output line is not a JSON object: {line}"),
            })
            .collect()
    }
}

/// The request ID a JSON log line carries: `lambda_runtime` logs inside a span named
/// after the invocation, and the JSON format writes it as `span.requestId`.
pub fn request_id(line: &Value) -> Option<&str> {
    line.pointer("/span/requestId").and_then(Value::as_str)
}

/// The variables Lambda sets for every function (name, memory, version, log group and
/// stream, JSON log format, the runtime API), for a function named `name` with
/// `memory_mb` of memory.
pub fn lambda_environment(
    name: &str,
    memory_mb: u32,
    runtime: &RuntimeApi,
) -> Vec<(String, String)> {
    [
        ("AWS_LAMBDA_RUNTIME_API", runtime.address()),
        ("AWS_LAMBDA_FUNCTION_NAME", name.to_string()),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", memory_mb.to_string()),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".to_string()),
        ("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{name}")),
        ("AWS_LAMBDA_LOG_STREAM_NAME", "local/[$LATEST]0".to_string()),
        ("AWS_LAMBDA_LOG_FORMAT", "JSON".to_string()),
        ("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand".to_string()),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_string(), value))
    .collect()
}

/// The variables that point a function's AWS SDK at `moto` (dummy credentials, region,
/// every service's endpoint), as Lambda's role credentials and region would.
pub fn moto_environment(moto: &MotoServer) -> Vec<(String, String)> {
    [
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ENDPOINT_URL", moto.endpoint()),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_string(), value.to_string()))
    .collect()
}

impl FunctionProcess {
    /// Starts `binary` with a clean environment holding only `PATH` and `env` (as Lambda
    /// gives a function only its own variables).
    pub fn start(binary: &Path, env: &[(String, String)]) -> FunctionProcess {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let stem = format!(
            "function-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let stdout = std::env::temp_dir().join(format!("{stem}.out"));
        let stderr = std::env::temp_dir().join(format!("{stem}.err"));
        let mut command = Command::new(binary);
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).expect("a file for the function's stdout"))
            .stderr(std::fs::File::create(&stderr).expect("a file for the function's stderr"));
        let started_at = Instant::now();
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        FunctionProcess {
            child,
            started_at,
            stdout,
            stderr,
        }
    }

    /// The instant just before the process was spawned.
    pub fn started_at(&self) -> Instant {
        self.started_at
    }

    /// The process's peak resident memory so far in KiB (`VmHWM` in
    /// `/proc/<pid>/status`); `None` once it has exited or off Linux.
    pub fn peak_memory_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// Its exit status once it has exited by itself.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Kills it if it still runs and returns what it wrote.
    pub fn stop(mut self) -> FunctionOutput {
        let exit = self.exit_status();
        if exit.is_none() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        FunctionOutput {
            stdout: std::fs::read_to_string(&self.stdout).unwrap_or_default(),
            stderr: std::fs::read_to_string(&self.stderr).unwrap_or_default(),
            exit,
        }
    }
}

impl Drop for FunctionProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.stdout);
        let _ = std::fs::remove_file(&self.stderr);
    }
}
