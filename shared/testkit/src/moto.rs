//! A moto server (PyPI `moto[server]`, installed by `scripts/test.sh`) standing in for
//! AWS in the adapter tests: started on a free loopback port, stopped when dropped; with
//! the few calls the tests need to set it up and to look at what code under test sent.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_sqs::config::Credentials;

/// A running `moto_server`; dropping it kills the process.
pub struct MotoServer {
    child: Child,
    endpoint: String,
    log: PathBuf,
}

impl MotoServer {
    /// Starts `moto_server -H 127.0.0.1 -p <free port>` and waits (up to 30 s) until it
    /// accepts connections. Panics with what to do when it is missing or exits.
    pub fn start() -> MotoServer {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free loopback port")
            .port();
        // moto logs every request; a file never fills up the way a pipe would.
        let log = std::env::temp_dir().join(format!("moto-{}-{port}.log", std::process::id()));
        let log_file = std::fs::File::create(&log).expect("moto log file");
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("moto log file"))
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("moto_server did not start ({e}): run scripts/test.sh, or pip install 'moto[server]'")
            });
        let mut server = MotoServer {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            log,
        };
        server.wait_until_listening(port);
        server
    }

    fn wait_until_listening(&mut self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("moto_server exited ({status}): {}", self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "moto_server did not listen on port {port} within 30 s: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `http://127.0.0.1:<port>`: the endpoint of every service moto emulates.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The environment an SDK reading its configuration from the environment needs to
    /// reach this server: dummy credentials (moto accepts any), the region, and the SQS
    /// endpoint.
    pub fn sdk_env(&self) -> [(&'static str, String); 4] {
        [
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ENDPOINT_URL_SQS", self.endpoint.clone()),
        ]
    }
}

/// Set-up and inspection through the SDK, configured in code (not from the environment),
/// so tests in one process can run in parallel.
impl MotoServer {
    /// The SDK configuration for this server with moto's dummy credentials.
    pub async fn sdk_config(&self) -> SdkConfig {
        aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("test", "test", None, None, "moto"))
            .endpoint_url(&self.endpoint)
            .load()
            .await
    }

    /// Creates the Secrets Manager secret `name` holding `text` and returns its ARN.
    pub async fn create_secret(&self, name: &str, text: &str) -> String {
        let created = aws_sdk_secretsmanager::Client::new(&self.sdk_config().await)
            .create_secret()
            .name(name)
            .secret_string(text)
            .send()
            .await
            .expect("create_secret on moto");
        created.arn().expect("a secret ARN").to_string()
    }

    /// Creates the standard queue `name` and returns its URL.
    pub async fn create_queue(&self, name: &str) -> String {
        let created = aws_sdk_sqs::Client::new(&self.sdk_config().await)
            .create_queue()
            .queue_name(name)
            .send()
            .await
            .expect("create_queue on moto");
        created.queue_url().expect("a queue URL").to_string()
    }

    /// The bodies of the messages on `queue_url`, received until a receive comes back
    /// empty (each stays invisible for the queue's visibility timeout, 30 s, so each is
    /// returned once).
    pub async fn receive_bodies(&self, queue_url: &str) -> Vec<String> {
        let client = aws_sdk_sqs::Client::new(&self.sdk_config().await);
        let mut bodies = Vec::new();
        loop {
            let answer = client
                .receive_message()
                .queue_url(queue_url)
                .max_number_of_messages(10)
                .send()
                .await
                .expect("receive_message on moto");
            if answer.messages().is_empty() {
                return bodies;
            }
            bodies.extend(
                answer
                    .messages()
                    .iter()
                    .filter_map(|m| m.body().map(str::to_string)),
            );
        }
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}
