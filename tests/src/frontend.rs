//! Frontend processes in front of a test [`Cluster`].

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bazar_client::Client;
use tokio::time::Instant;

use crate::{ADMIN_TOKEN, Cluster, FRONTEND_TOKEN, binary, free_port};

/// A running `frontend` process; killed when dropped.
pub struct FrontendProc {
    /// host:port it listens on.
    pub addr: String,
    child: Child,
    /// The CA to trust when the frontend serves TLS (its cluster's).
    ca: Option<std::path::PathBuf>,
}

impl FrontendProc {
    /// Starts a frontend in front of every node of `cluster`, with `extra`
    /// flags, and waits until it answers `/health`.
    pub async fn start(cluster: &Cluster, name: &str, extra: &[&str]) -> FrontendProc {
        let addr = format!("127.0.0.1:{}", free_port());
        FrontendProc::start_on(cluster, name, &addr, extra, &[]).await
    }

    /// Like [`FrontendProc::start`], listening on `addr`, with `envs` set.
    pub async fn start_on(
        cluster: &Cluster,
        name: &str,
        addr: &str,
        extra: &[&str],
        envs: &[(&str, &str)],
    ) -> FrontendProc {
        let addr = addr.to_string();
        let nodes = cluster.ids().iter().map(|id| format!("{id}={}", cluster.addr(*id))).collect::<Vec<_>>().join(",");
        let log_path = cluster.dir().join(format!("{name}.log"));
        let log = std::fs::File::create(&log_path).expect("frontend log");
        let child = Command::new(binary("frontend"))
            .arg("--listen")
            .arg(&addr)
            .arg("--nodes")
            .arg(nodes)
            .args(extra)
            .envs(envs.iter().copied())
            .env("BAZAR_FRONTEND_TOKEN", FRONTEND_TOKEN)
            .env("RUST_LOG", std::env::var("BAZAR_TEST_LOG").unwrap_or_else(|_| "info".into()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawning frontend");
        let fe = FrontendProc { addr, child, ca: cluster.tls_ca().map(|p| p.to_path_buf()) };
        let client = fe.client();
        let deadline = Instant::now() + Duration::from_secs(20);
        while client.health().await.is_err() {
            assert!(Instant::now() < deadline, "frontend {name} did not answer /health");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        fe
    }

    /// The frontend's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A client for this frontend, with the admin token.
    pub fn client(&self) -> Client {
        let scheme = if self.ca.is_some() { "https" } else { "http" };
        Client::builder(format!("{scheme}://{}", self.addr))
            .ca_file(self.ca.clone())
            .admin_token(ADMIN_TOKEN)
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client")
    }

    /// `GET /cluster` of the frontend.
    pub async fn status(&self) -> serde_json::Value {
        self.client().cluster().await.expect("frontend /cluster")
    }

    /// Waits until the frontend's cache is fresh for both groups.
    pub async fn wait_fresh(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.status().await;
            let fresh = status["groups"].as_array().is_some_and(|g| g.iter().all(|g| g["cache"]["fresh"] == true));
            if fresh {
                return;
            }
            assert!(Instant::now() < deadline, "frontend cache not fresh within {timeout:?}: {status}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for FrontendProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
