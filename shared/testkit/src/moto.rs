//! A moto server (PyPI `moto[server]`, installed by `scripts/test.sh`) standing in for
//! AWS in the adapter tests: started on a free loopback port, stopped when dropped.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}
