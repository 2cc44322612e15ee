//! TLS for Bazar's processes (rustls, with the *ring* provider).
//!
//! A process given a certificate, its key and a CA (`--tls-cert`,
//! `--tls-key`, `--tls-ca`, PEM files) serves HTTPS only, and calls its
//! peers over TLS that trusts that CA alone, presenting its own certificate
//! as a client certificate: mutual TLS between nodes, and from a frontend
//! to the nodes. As a server it asks every client for a certificate and
//! verifies any it is given against the CA; whether a route *needs* one is
//! the route's decision ([`Conn::peer_verified`]): clients of the public API
//! need none, a node's Raft RPCs and multiplexed connections do.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// How long a TLS handshake may take, either side.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The PEM files of a process's TLS identity and of the CA it trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// Its private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// The CA that signs the certificates of every Bazar process.
    pub ca: PathBuf,
}

impl TlsFiles {
    /// The files named by the three flags, all or none.
    pub fn from_flags(
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
        ca: Option<PathBuf>,
    ) -> Result<Option<TlsFiles>, String> {
        match (cert, key, ca) {
            (None, None, None) => Ok(None),
            (Some(cert), Some(key), Some(ca)) => Ok(Some(TlsFiles { cert, key, ca })),
            _ => Err("--tls-cert, --tls-key and --tls-ca go together: give all three, or none".into()),
        }
    }
}

/// A process's TLS configuration, for serving and for calling its peers.
#[derive(Debug, Clone)]
pub struct Tls {
    /// Serving: the process's certificate; client certificates are asked
    /// for and verified against the CA, but not required.
    pub server: Arc<ServerConfig>,
    /// Calling peers: trusts the CA alone, presents the certificate.
    pub client: Arc<ClientConfig>,
}

impl Tls {
    /// Loads and checks the files.
    pub fn load(files: &TlsFiles) -> Result<Tls, String> {
        let certs = read_certs(&files.cert)?;
        let key = PrivateKeyDer::from_pem_file(&files.key)
            .map_err(|e| format!("--tls-key {}: no private key read: {e}", files.key.display()))?;
        let roots = Arc::new(root_store(&files.ca)?);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .allow_unauthenticated()
            .build()
            .map_err(|e| format!("--tls-ca {}: {e}", files.ca.display()))?;
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs.clone(), key.clone_key())
            .map_err(|e| format!("--tls-cert {} with --tls-key {}: {e}", files.cert.display(), files.key.display()))?;
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        let client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, key)
            .map_err(|e| format!("--tls-cert {}: {e}", files.cert.display()))?;
        Ok(Tls { server: Arc::new(server), client: Arc::new(client) })
    }

    /// Accepts a TLS connection on `tcp`, within [`HANDSHAKE_TIMEOUT`].
    pub async fn accept(&self, tcp: TcpStream) -> io::Result<Conn> {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.server.clone());
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
            Ok(stream) => Ok(Conn::Server(Box::new(stream?))),
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out")),
        }
    }

    /// Opens TLS on `tcp` to `addr` (`host:port`; the host is what the
    /// peer's certificate must name), within [`HANDSHAKE_TIMEOUT`].
    pub async fn connect(&self, addr: &str, tcp: TcpStream) -> io::Result<Conn> {
        let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{host}: {e}")))?;
        let connector = tokio_rustls::TlsConnector::from(self.client.clone());
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, connector.connect(name, tcp)).await {
            Ok(stream) => Ok(Conn::Client(Box::new(stream?))),
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out")),
        }
    }
}

/// TLS handshakes of accepted connections, each run in a task of its own,
/// so that a listener's accept loop never waits on a slow or silent client:
/// [`Handshakes::start`] one per accepted connection, and take the finished
/// ones from [`Handshakes::next`]. A failed handshake is logged (debug) and
/// dropped.
#[derive(Debug)]
pub struct Handshakes {
    done: mpsc::Sender<(Conn, SocketAddr)>,
    finished: mpsc::Receiver<(Conn, SocketAddr)>,
}

impl Default for Handshakes {
    fn default() -> Self {
        let (done, finished) = mpsc::channel(64);
        Handshakes { done, finished }
    }
}

impl Handshakes {
    /// Starts the handshake of `tcp`, accepted from `addr`.
    pub fn start(&self, tls: Arc<Tls>, tcp: TcpStream, addr: SocketAddr) {
        let done = self.done.clone();
        tokio::spawn(async move {
            match tls.accept(tcp).await {
                Ok(conn) => {
                    let _ = done.send((conn, addr)).await;
                }
                Err(e) => tracing::debug!(%addr, error = %e, "TLS handshake failed"),
            }
        });
    }

    /// The next connection whose handshake succeeded.
    pub async fn next(&mut self) -> (Conn, SocketAddr) {
        match self.finished.recv().await {
            Some(conn) => conn,
            // Unreachable: `self` holds a sender.
            None => std::future::pending().await,
        }
    }
}

/// The certificates in the PEM file at `path`.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in it", path.display()));
    }
    Ok(certs)
}

/// A root store of the CA certificates in the PEM file at `path`.
pub fn root_store(path: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(path)? {
        roots.add(cert).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(roots)
}

/// A connection, plain or TLS, either side.
#[derive(Debug)]
pub enum Conn {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS, accepted.
    Server(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// TLS, opened.
    Client(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Conn {
    /// Whether the other side presented a certificate that the CA signed
    /// (the server side of a TLS connection only; the handshake verified
    /// any certificate presented).
    pub fn peer_verified(&self) -> bool {
        match self {
            Conn::Server(s) => s.get_ref().1.peer_certificates().is_some_and(|c| !c.is_empty()),
            _ => false,
        }
    }

    /// The TCP connection underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Plain(s) => s,
            Conn::Server(s) => s.get_ref().0,
            Conn::Client(s) => s.get_ref().0,
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Server(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Conn::Client(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Server(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Conn::Client(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::Server(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
            Conn::Client(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(s) => s.is_write_vectored(),
            Conn::Server(s) => s.is_write_vectored(),
            Conn::Client(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Server(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Conn::Client(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Server(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Conn::Client(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
