//! TLS with real processes: three nodes and a frontend started with
//! `--tls-cert/--tls-key/--tls-ca` (certificates this test makes with
//! rcgen), serving HTTPS only, talking to each other over mutual TLS, and
//! refusing what their CA did not sign.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bazar_api::OrderStatus;
use bazar_tests::frontend::FrontendProc;
use bazar_tests::{CLUSTER_TOKEN, Cluster, ClusterOptions};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

/// A CA and one certificate it signed, naming every address of the test's
/// processes, written as PEM files.
struct Pki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl Pki {
    fn make(dir: &Path, name: &str, ips: &[IpAddr]) -> Pki {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, format!("{name} CA"));
        let ca_key = KeyPair::generate().unwrap();
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let mut names: Vec<String> = ips.iter().map(ToString::to_string).collect();
        names.push("localhost".into());
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name.push(DnType::CommonName, format!("{name} node"));
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
        let pki = Pki {
            ca: dir.join(format!("{name}-ca.pem")),
            cert: dir.join(format!("{name}-cert.pem")),
            key: dir.join(format!("{name}-key.pem")),
        };
        std::fs::write(&pki.ca, ca.pem()).unwrap();
        std::fs::write(&pki.cert, cert.pem()).unwrap();
        std::fs::write(&pki.key, key.serialize_pem()).unwrap();
        pki
    }

    fn flags(&self) -> Vec<String> {
        let path = |p: &PathBuf| p.to_str().unwrap().to_string();
        vec![
            "--tls-cert".into(),
            path(&self.cert),
            "--tls-key".into(),
            path(&self.key),
            "--tls-ca".into(),
            path(&self.ca),
        ]
    }

    /// A reqwest client that trusts `ca` and presents this certificate
    /// (`identity`) or none.
    fn http(&self, ca: &Path, identity: bool) -> reqwest::Client {
        let pem = std::fs::read(ca).unwrap();
        let mut builder = reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
            .timeout(Duration::from_secs(10));
        if identity {
            let mut both = std::fs::read(&self.cert).unwrap();
            both.extend(std::fs::read(&self.key).unwrap());
            builder = builder.identity(reqwest::Identity::from_pem(&both).unwrap());
        }
        builder.build().unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_with_tls_serves_only_https_and_lets_in_only_peers_its_ca_signed() {
    let dir = tempfile::tempdir().unwrap();
    let net = [rand::random_range(1..=254u8), rand::random_range(1..=254u8)];
    let mut ips = vec![IpAddr::V4(Ipv4Addr::LOCALHOST)];
    ips.extend((1..=3).map(|id| IpAddr::V4(Ipv4Addr::new(127, net[0], net[1], id))));
    let pki = Pki::make(dir.path(), "bazar", &ips);
    let rogue = Pki::make(dir.path(), "rogue", &ips);

    let flags = pki.flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let options = ClusterOptions { tls_ca: Some(pki.ca.clone()), peer_net: Some(net), ..Default::default() };
    // Ready means both groups elected a leader and the catalog was seeded:
    // the nodes reached each other over mutual TLS.
    let cluster = Cluster::start_with(3, &flags, options).await;
    let node = cluster.client_addr(1);

    // The public API over HTTPS, through a node and through a frontend
    // that reaches the nodes over TLS too.
    let order = cluster.client(1).buy(2, 1, Some("tls-1")).await.expect("a buy over https");
    assert_eq!(order.status, OrderStatus::Confirmed);
    let fe = FrontendProc::start(&cluster, "frontend", &flags).await;
    fe.wait_fresh(Duration::from_secs(20)).await;
    let order = fe.client().buy(3, 1, Some("tls-2")).await.expect("a buy through the frontend over https");
    assert_eq!(order.status, OrderStatus::Confirmed);
    let book = fe.client().lookup(3, Some(bazar_api::Consistency::Linearizable)).await.expect("a read");
    assert!(book.value.stock > 0);

    // Plain HTTP gets nothing, from a node or from the frontend.
    for addr in [&node, &fe.addr] {
        let plain = reqwest::Client::new().get(format!("http://{addr}/health")).send().await;
        assert!(plain.is_err() || !plain.unwrap().status().is_success(), "{addr} answered plain HTTP");
    }
    // A client that trusts another CA does not trust the cluster.
    let wrong_trust = rogue.http(&rogue.ca, false).get(format!("https://{node}/health")).send().await;
    assert!(wrong_trust.is_err(), "a certificate from another CA was accepted: {wrong_trust:?}");

    // Raft RPCs need a client certificate the cluster's CA signed, on top
    // of the cluster token.
    let vote = |http: reqwest::Client| {
        let url = format!("https://{node}/raft/catalog/vote");
        async move { http.post(url).bearer_auth(CLUSTER_TOKEN).body(vec![0u8; 4]).send().await }
    };
    let without = vote(pki.http(&pki.ca, false)).await.expect("an answer");
    assert_eq!(without.status(), 401);
    let text = without.text().await.unwrap();
    assert!(text.contains("client certificate"), "{text}");
    let foreign = vote(rogue.http(&pki.ca, true)).await;
    assert!(foreign.is_err(), "a client certificate from another CA got an answer: {foreign:?}");
    let with = vote(pki.http(&pki.ca, true)).await.expect("an answer");
    assert_ne!(with.status(), 401, "a peer certificate from the cluster's CA is let in");
    let mux = pki.http(&pki.ca, false).get(format!("https://{node}/mux")).bearer_auth(CLUSTER_TOKEN).send().await;
    assert_eq!(mux.expect("an answer").status(), 401, "/mux needs a client certificate too");
}
