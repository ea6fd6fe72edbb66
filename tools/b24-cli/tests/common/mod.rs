//! Running the `b24sync` binary as an operator would, with a clean environment.

use std::process::Output;

/// Runs `b24sync` with `args`, none of its environment variables but `envs`.
pub async fn b24sync(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_b24sync"));
    command
        .args(args)
        .env_remove("B24SYNC_CONFIG")
        .env_remove("B24SYNC_WEBHOOK")
        .env_remove("B24SYNC_DATABASE_URL");
    for (key, value) in envs {
        command.env(key, value);
    }
    command.output().await.unwrap()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}
