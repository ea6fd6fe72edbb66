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

/// Runs each `(args, expected)` and checks it is refused as a usage error: exit code 2,
/// a message that contains `expected`, and none of the `secrets` given on the line.
pub async fn assert_usage_errors(cases: &[(&[&str], &str)], secrets: &[&str]) {
    for (args, expected) in cases {
        let output = b24sync(args, &[]).await;
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {message}");
        assert!(message.contains(expected), "{args:?}: {message}");
        for secret in secrets {
            assert!(
                !message.contains(secret),
                "{args:?} leaked a secret: {message}"
            );
        }
    }
}
