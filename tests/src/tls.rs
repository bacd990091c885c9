//! TLS pieces for the HTTPS tests: a test CA of the tests' own (standing in
//! for the public CA a real upstream uses), an HTTPS front for any loopback
//! server, clients that go through cacheow's CONNECT, and an echo server
//! for protocol upgrades.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http::Uri;
use http_body_util::{BodyExt, Empty};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::rt::TokioExecutor;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream;

use crate::{Handler, Upstream};

/// The crypto provider of every config here: ring, as in cacheow.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate authority for test upstreams. cacheow trusts it only when
/// given `--upstream-ca` with [`TestCa::path`].
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    der: CertificateDer<'static>,
    dir: tempfile::TempDir,
}

impl TestCa {
    /// A fresh CA, its certificate written to a temp file.
    pub fn new() -> TestCa {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, "cacheow tests upstream CA");
        params.distinguished_name = name;
        let cert = params.self_signed(&key).expect("CA cert");
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("upstream-ca.pem"), cert.pem()).expect("write CA");
        TestCa {
            der: cert.der().clone(),
            issuer: Issuer::new(params, key),
            dir,
        }
    }

    /// The CA certificate as a PEM file.
    pub fn path(&self) -> PathBuf {
        self.dir.path().join("upstream-ca.pem")
    }

    /// The CA certificate.
    pub fn der(&self) -> &CertificateDer<'static> {
        &self.der
    }

    /// A server config for `localhost` and `127.0.0.1`, signed by this CA.
    fn server_config(&self, alpn: Alpn) -> ServerConfig {
        let key = KeyPair::generate().expect("leaf key");
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .expect("leaf params");
        params
            .distinguished_name
            .push(DnType::CommonName, "cacheow tests upstream");
        let leaf = params.signed_by(&key, &self.issuer).expect("leaf cert");
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(vec![leaf.der().clone(), self.der.clone()], key)
            .expect("server config");
        config.alpn_protocols = alpn.protocols();
        config
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

/// What a TLS server offers by ALPN.
#[derive(Debug, Clone, Copy)]
pub enum Alpn {
    /// `h2` and `http/1.1`.
    H2AndHttp1,
    /// `http/1.1` only, like many older servers.
    Http1Only,
}

impl Alpn {
    fn protocols(self) -> Vec<Vec<u8>> {
        match self {
            Alpn::H2AndHttp1 => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            Alpn::Http1Only => vec![b"http/1.1".to_vec()],
        }
    }
}

/// Roots holding the certificates of a PEM file (cacheow's CA, a test CA).
pub fn roots_from_pem_file(path: &Path) -> RootCertStore {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).expect("read PEM") {
        roots.add(cert.expect("PEM certificate")).expect("root");
    }
    roots
}

/// Terminates TLS on an ephemeral loopback port and pipes the plaintext to
/// `backend`, so any plain test server becomes an HTTPS one.
pub struct TlsFront {
    /// Where it listens.
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl TlsFront {
    /// Starts the front for `backend` with a certificate from `ca`.
    pub async fn start(backend: SocketAddr, ca: &TestCa, alpn: Alpn) -> TlsFront {
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(ca.server_config(alpn)));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let Ok(mut plain) = TcpStream::connect(backend).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                });
            }
        });
        TlsFront { addr, task }
    }

    /// Stops accepting connections.
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An HTTPS upstream that counts its hits: the plain [`Upstream`] behind a
/// [`TlsFront`].
pub struct HttpsUpstream {
    /// The plain server behind the front; its hits are the upstream's hits.
    pub plain: Upstream,
    front: TlsFront,
}

impl HttpsUpstream {
    /// Serves `handler` over TLS with a certificate from `ca`.
    pub async fn start(handler: Handler, ca: &TestCa, alpn: Alpn) -> HttpsUpstream {
        let plain = Upstream::start(handler).await;
        let front = TlsFront::start(plain.addr, ca, alpn).await;
        HttpsUpstream { plain, front }
    }

    /// The port it serves HTTPS on.
    pub fn port(&self) -> u16 {
        self.front.addr.port()
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port())
    }

    /// How many requests reached it.
    pub fn hits(&self) -> usize {
        self.plain.hits()
    }

    /// Stops serving.
    pub fn stop(&self) {
        self.front.stop();
        self.plain.stop();
    }
}

/// Opens a connection to `proxy` and sends `CONNECT target`; returns the
/// status line and headers as text, and the stream positioned after them.
pub async fn connect_raw(proxy: SocketAddr, target: &str) -> (String, TcpStream) {
    let mut stream = TcpStream::connect(proxy).await.expect("connect to cacheow");
    stream
        .write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
        .await
        .expect("send CONNECT");
    let head = read_head(&mut stream).await;
    (head, stream)
}

/// Reads an HTTP response head byte by byte (so nothing after it is taken).
pub async fn read_head(stream: &mut (impl tokio::io::AsyncRead + Unpin)) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// CONNECT through `proxy`, then a TLS handshake for `name` verified
/// against `roots`, offering `alpn`.
pub async fn tls_through(
    proxy: SocketAddr,
    target: &str,
    name: &str,
    roots: RootCertStore,
    alpn: Alpn,
) -> io::Result<TlsStream<TcpStream>> {
    let (head, stream) = connect_raw(proxy, target).await;
    assert!(head.starts_with("HTTP/1.1 200"), "CONNECT {target}: {head}");
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.protocols();
    let name = ServerName::try_from(name.to_owned()).expect("server name");
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, stream)
        .await
}

/// The certificate chain a TLS server presented.
pub fn peer_chain(stream: &TlsStream<TcpStream>) -> Vec<CertificateDer<'static>> {
    stream
        .get_ref()
        .1
        .peer_certificates()
        .expect("peer certificates")
        .iter()
        .map(|c| c.clone().into_owned())
        .collect()
}

/// A Rust HTTPS client built the way SDKs build theirs (hyper-util's pooled
/// client, rustls on ring, ALPN h2 and http/1.1), trusting only `roots` and
/// reaching every host through a CONNECT tunnel by `proxy`.
pub type ProxiedClient = Client<HttpsConnector<Tunnel<HttpConnector>>, Empty<Bytes>>;

/// See [`ProxiedClient`].
pub fn https_client_through(proxy: SocketAddr, roots: RootCertStore) -> ProxiedClient {
    let proxy: Uri = format!("http://{proxy}").parse().expect("proxy uri");
    let tls = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .enable_http2()
        .wrap_connector(Tunnel::new(proxy, HttpConnector::new()));
    Client::builder(TokioExecutor::new()).build(connector)
}

/// `GET url` with `client`: the response head and the whole body.
pub async fn get(client: &ProxiedClient, url: &str) -> (http::response::Parts, Bytes) {
    let uri: Uri = url.parse().expect("url");
    let response = client
        .get(uri)
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e:?}"));
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    (parts, body)
}

/// A server that answers any request with `101 Switching Protocols`, then
/// echoes every byte: what a WebSocket looks like to a byte-copying proxy.
pub async fn upgrade_echo() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let head = read_head(&mut stream).await;
                if !head.to_ascii_lowercase().contains("upgrade: websocket") {
                    let _ = stream
                        .write_all(b"HTTP/1.1 426 Upgrade Required\r\ncontent-length: 0\r\n\r\n")
                        .await;
                    return;
                }
                let reply = "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n";
                if stream.write_all(reply.as_bytes()).await.is_err() {
                    return;
                }
                let (mut read, mut write) = stream.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });
    (addr, task)
}
