//! TLS for every connection of the store (the pool, the listener, the vacuum task), with rustls
//! and libpq's meanings of `sslmode`, `sslrootcert`, `sslcert` and `sslkey`.
//!
//! | `sslmode`       | TLS                        | certificate checked                            |
//! |-----------------|----------------------------|------------------------------------------------|
//! | `disable`       | never                      | –                                              |
//! | `prefer` (default) | when the server has it  | not, unless `sslrootcert` is set (then as `verify-ca`) |
//! | `require`       | always                     | not, unless `sslrootcert` is set (then as `verify-ca`) |
//! | `verify-ca`     | always                     | chain to `sslrootcert`, or the system's roots  |
//! | `verify-full`   | always                     | chain, and the host name (or IP) of the URL    |
//!
//! Unlike libpq, which reads `~/.postgresql/root.crt`, the roots without `sslrootcert` are the
//! system's (what a managed database signed by a public CA needs); `sslrootcert=system` says
//! so explicitly and, as in libpq, then only `verify-full` is accepted.

use std::fmt;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};

/// `sslmode`, as libpq means it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// TLS when the server offers it, plain otherwise. The default.
    #[default]
    Prefer,
    /// TLS or no connection; the certificate is not checked (unless a root is given).
    Require,
    /// TLS with a certificate that chains to a trusted root; any host name.
    VerifyCa,
    /// TLS with a certificate that chains to a trusted root and names the host of the URL.
    VerifyFull,
}

impl SslMode {
    /// The name used in URLs and in `drover.toml`.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

impl std::str::FromStr for SslMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            // libpq's `allow` tries plain first; Drover does not offer that downgrade.
            other => {
                return Err(format!(
                    "invalid sslmode {other:?}: expected disable, prefer, require, verify-ca or \
                     verify-full"
                ));
            }
        })
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The TLS settings of a store; `None` fields are unset (the URL may set them, see
/// [`crate::PgConfig`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSettings {
    /// `sslmode`; unset means `prefer`.
    pub mode: Option<SslMode>,
    /// `sslrootcert`: a PEM file of trusted roots, or `system` for the system's roots.
    pub root_cert: Option<PathBuf>,
    /// `sslcert`: the client certificate (PEM, the chain after it), sent when the server asks.
    pub client_cert: Option<PathBuf>,
    /// `sslkey`: the client certificate's private key (PEM).
    pub client_key: Option<PathBuf>,
}

impl TlsSettings {
    /// The mode in force.
    pub fn mode(&self) -> SslMode {
        self.mode.unwrap_or_default()
    }

    /// Fills the unset fields from `other` (the URL's); a field set differently in both is an
    /// error.
    pub fn merge(&mut self, other: TlsSettings) -> Result<(), String> {
        // Each value as it is written in a URL or the config (`verify-full`, a path).
        fn one<T: PartialEq>(
            name: &str,
            mine: &mut Option<T>,
            theirs: Option<T>,
            written: impl Fn(&T) -> String,
        ) -> Result<(), String> {
            match (mine.as_ref(), theirs) {
                (Some(a), Some(b)) if *a != b => Err(format!(
                    "{name} is set twice, to {} in the config and to {} in the URL",
                    written(a),
                    written(&b)
                )),
                (None, Some(b)) => {
                    *mine = Some(b);
                    Ok(())
                }
                _ => Ok(()),
            }
        }
        let path = |path: &std::path::PathBuf| path.display().to_string();
        one("sslmode", &mut self.mode, other.mode, |mode| {
            mode.as_str().into()
        })?;
        one("sslrootcert", &mut self.root_cert, other.root_cert, path)?;
        one("sslcert", &mut self.client_cert, other.client_cert, path)?;
        one("sslkey", &mut self.client_key, other.client_key, path)
    }

    /// The `tokio-postgres` mode: it knows only whether TLS is off, tried or required.
    pub(crate) fn pg_mode(&self) -> tokio_postgres::config::SslMode {
        use tokio_postgres::config::SslMode as Pg;
        match self.mode() {
            SslMode::Disable => Pg::Disable,
            SslMode::Prefer => Pg::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => Pg::Require,
        }
    }

    /// Builds the connector, reading the certificate files: a missing or bad file fails here,
    /// at start-up.
    pub(crate) fn connector(&self) -> Result<RustlsConnect, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let system = self.root_cert.as_deref() == Some(Path::new("system"));
        if system && self.mode() != SslMode::VerifyFull {
            return Err(format!(
                "sslrootcert=system needs sslmode=verify-full (it is {})",
                self.mode()
            ));
        }
        let check = match (self.mode(), &self.root_cert) {
            (SslMode::Disable, _) => Check::Nothing,
            (SslMode::Prefer | SslMode::Require, None) => Check::Nothing,
            (SslMode::Prefer | SslMode::Require | SslMode::VerifyCa, Some(_)) => Check::Chain,
            (SslMode::VerifyCa, None) => Check::Chain,
            (SslMode::VerifyFull, _) => Check::ChainAndName,
        };
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|err| format!("cannot set up TLS: {err}"))?;
        let verifier: Arc<dyn ServerCertVerifier> = match check {
            Check::Nothing => Arc::new(NoCheck {
                algorithms: provider.signature_verification_algorithms,
            }),
            Check::Chain | Check::ChainAndName => {
                let roots = match &self.root_cert {
                    Some(path) if !system => file_roots(path)?,
                    _ => system_roots()?,
                };
                let webpki =
                    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                        .build()
                        .map_err(|err| format!("cannot set up TLS verification: {err}"))?;
                Arc::new(WebPki {
                    inner: webpki,
                    check_name: check == Check::ChainAndName,
                })
            }
        };
        let builder = builder
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let config = match (&self.client_cert, &self.client_key) {
            (None, None) => builder.with_no_client_auth(),
            (Some(cert), Some(key)) => {
                let chain = read_certs(cert, "sslcert")?;
                let key = PrivateKeyDer::from_pem_file(key).map_err(|err| {
                    format!(
                        "cannot read the private key sslkey={}: {err}",
                        key.display()
                    )
                })?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|err| format!("the client certificate (sslcert) is unusable: {err}"))?
            }
            (Some(_), None) => return Err("sslcert is set but sslkey is not".to_owned()),
            (None, Some(_)) => return Err("sslkey is set but sslcert is not".to_owned()),
        };
        Ok(RustlsConnect {
            config: Arc::new(config),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    Nothing,
    Chain,
    ChainAndName,
}

fn read_certs(path: &Path, option: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|err| format!("cannot read {option}={}: {err}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{option}={} holds no PEM certificate",
            path.display()
        ));
    }
    Ok(certs)
}

fn file_roots(path: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(path, "sslrootcert")? {
        roots.add(cert).map_err(|err| {
            format!(
                "sslrootcert={} holds an unusable certificate: {err}",
                path.display()
            )
        })?;
    }
    Ok(roots)
}

fn system_roots() -> Result<RootCertStore, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    // A system store usually holds a few certificates rustls cannot parse; the rest serve.
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .first()
            .map(|err| format!(": {err}"))
            .unwrap_or_default();
        return Err(format!(
            "no trusted root certificate found on this system{why}; set sslrootcert to a PEM \
             file of the server's CA"
        ));
    }
    Ok(roots)
}

/// Accepts any certificate (`prefer`/`require` without roots, as libpq), yet checks that the
/// server holds the key of the certificate it sent.
#[derive(Debug)]
struct NoCheck {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for NoCheck {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The chain check of webpki, with the host name check or (`verify-ca`) without it.
#[derive(Debug)]
struct WebPki {
    inner: Arc<WebPkiServerVerifier>,
    check_name: bool,
}

impl ServerCertVerifier for WebPki {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            // webpki checks the name last, after the chain: this error means the chain is good.
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.check_name => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Makes a TLS connector per connection, for the host the connection goes to.
#[derive(Clone)]
pub(crate) struct RustlsConnect {
    config: Arc<ClientConfig>,
}

impl<S> MakeTlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsConnectOne;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> Result<RustlsConnectOne, io::Error> {
        // A Unix socket has no host name ("") and never negotiates TLS; any name serves.
        let name = if domain.is_empty() {
            "localhost"
        } else {
            domain
        };
        let name = ServerName::try_from(name.to_owned()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{domain:?} is not a host name TLS can check"),
            )
        })?;
        Ok(RustlsConnectOne {
            config: self.config.clone(),
            name,
        })
    }
}

/// The TLS connector of one connection.
pub(crate) struct RustlsConnectOne {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

impl<S> TlsConnect<S> for RustlsConnectOne
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<RustlsStream<S>, io::Error>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let host = self.name.to_str().into_owned();
            tokio_rustls::TlsConnector::from(self.config)
                .connect(self.name, stream)
                .await
                .map(RustlsStream)
                .map_err(|err| explain(err, &host))
        })
    }
}

/// How a refused server certificate is described: a matter of the TLS settings (or of the
/// server's certificate), which trying again will not change.
const CERTIFICATE_REFUSED: [&str; 2] = [
    "certificate verify failed",
    "certificate host name mismatch",
];

/// Whether an error's text says the server's certificate was refused (see [`explain`]): for
/// a start-up that waits for an unreachable server, which must stop at once on this instead.
pub fn is_certificate_refused(text: &str) -> bool {
    CERTIFICATE_REFUSED.iter().any(|what| text.contains(what))
}

/// A name from a certificate as rustls reports it (`DnsName("db.example.com")`,
/// `IpAddress(10.0.0.1)`), as a person writes it.
fn plain_name(name: &str) -> &str {
    let inner = name
        .strip_prefix("DnsName(")
        .or_else(|| name.strip_prefix("IpAddress("))
        .and_then(|rest| rest.strip_suffix(')'));
    match inner {
        Some(inner) => inner.trim_matches('"'),
        None => name,
    }
}

/// Says what went wrong in the handshake in the terms of the settings.
fn explain(err: io::Error, host: &str) -> io::Error {
    let Some(tls) = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    else {
        return err;
    };
    let text = match tls {
        rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext {
            presented,
            ..
        }) => format!(
            "{}: the server's certificate is not valid for {host} (it names {}); connect by \
             one of those names, or use sslmode=verify-ca",
            CERTIFICATE_REFUSED[1],
            presented
                .iter()
                .map(|name| plain_name(name))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        rustls::Error::InvalidCertificate(CertificateError::NotValidForName) => format!(
            "{}: the server's certificate is not valid for {host}",
            CERTIFICATE_REFUSED[1]
        ),
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => format!(
            "{}: the server's certificate is not signed by a trusted root (set sslrootcert to \
             the server's CA)",
            CERTIFICATE_REFUSED[0]
        ),
        rustls::Error::InvalidCertificate(other) => {
            format!("{}: {other:?}", CERTIFICATE_REFUSED[0])
        }
        other => format!("TLS handshake failed: {other}"),
    };
    io::Error::new(io::ErrorKind::InvalidData, text)
}

/// A TLS connection. No channel binding is offered: SCRAM then authenticates without it, as
/// libpq does with `channel_binding=prefer` when the client cannot bind.
pub(crate) struct RustlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for RustlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}
