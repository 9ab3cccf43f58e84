//! DICOM TLS (the secure transport connection profiles of PS3.15 B): rustls configurations for
//! requestors and for Lucent's Store SCP, and the [`Transport`] (plain TCP or TLS) that a `Link`
//! reads and writes once the association is negotiated.
//!
//! * Requestor ([`client_config`]): the server certificate is always verified, against Mozilla's
//!   roots plus the node's own CA file when given, for the server name = the node's host (a DNS
//!   name or an IP address, as the certificate's subject alternative names must say). A client
//!   certificate and key are presented when the node has them (peers requiring mutual TLS).
//! * Acceptor ([`server_config`]): the SCP's certificate chain and key; client certificates are
//!   required and verified only when a client CA file is configured.
//!
//! The crypto provider is *ring* (the one `ureq` already brings); no OpenSSL. TLS 1.2 and 1.3.
//! TCP_NODELAY and the read/write timeouts stay on the TCP socket under the TLS stream.
//!
//! `dicom-ul` negotiates the association over the TLS stream it creates and keeps the stream
//! inside its association value, with no way to give it back. [`take_client_stream`] and
//! [`take_server_stream`] move it out, leaving in its place a fresh, never used connection on a
//! duplicate of the socket descriptor: dropping that placeholder with the association closes only
//! the duplicate and sends nothing.

use std::io::{IoSlice, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection, StreamOwned};

use super::node::PacsNode;
use crate::error::{Error, Result};

/// A requestor's TLS stream.
pub(crate) type ClientStream = StreamOwned<ClientConnection, TcpStream>;
/// An acceptor's TLS stream.
pub(crate) type ServerStream = StreamOwned<ServerConnection, TcpStream>;

/// The byte stream under a `Link`: the TCP socket itself, or TLS over it.
pub(crate) enum Transport {
    Plain(TcpStream),
    Client(Box<ClientStream>),
    Server(Box<ServerStream>),
}

impl Transport {
    /// The TCP socket (for socket options: TCP_NODELAY, timeouts, TCP_QUICKACK).
    pub(crate) fn socket(&self) -> &TcpStream {
        match self {
            Self::Plain(s) => s,
            Self::Client(s) => &s.sock,
            Self::Server(s) => &s.sock,
        }
    }

    /// Ends the connection, best effort: TLS close_notify (bounded by the socket's write
    /// timeout), then the socket is shut down both ways.
    pub(crate) fn close(&mut self) {
        fn notify<C, S>(stream: &mut StreamOwned<C, TcpStream>)
        where
            C: std::ops::DerefMut + std::ops::Deref<Target = rustls::ConnectionCommon<S>>,
            S: rustls::SideData,
        {
            stream.conn.send_close_notify();
            while stream.conn.wants_write() {
                match stream.conn.write_tls(&mut stream.sock) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        }
        match self {
            Self::Plain(_) => {}
            Self::Client(s) => notify(s.as_mut()),
            Self::Server(s) => notify(s.as_mut()),
        }
        let _ = self.socket().shutdown(std::net::Shutdown::Both);
    }
}

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Self::Plain(s) => s.read(buf),
            Self::Client(s) => s.read(buf),
            Self::Server(s) => s.read(buf),
        }
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Self::Plain(s) => s.write(buf),
            Self::Client(s) => s.write(buf),
            Self::Server(s) => s.write(buf),
        }
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> std::io::Result<usize> {
        match self {
            Self::Plain(s) => s.write_vectored(bufs),
            Self::Client(s) => s.write_vectored(bufs),
            Self::Server(s) => s.write_vectored(bufs),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Self::Plain(s) => s.flush(),
            Self::Client(s) => s.flush(),
            Self::Server(s) => s.flush(),
        }
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn invalid(reason: String) -> Error {
    Error::InvalidNode { reason }
}

/// Every certificate in a PEM file (at least one).
fn read_certificates(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&bytes).filter_map(std::result::Result::ok).collect();
    if certs.is_empty() {
        return Err(invalid(format!("{what} {} holds no PEM certificate", path.display())));
    }
    Ok(certs)
}

/// The private key in a PEM file (PKCS#8, PKCS#1 or SEC1).
fn read_key(path: &Path, what: &str) -> Result<PrivateKeyDer<'static>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    PrivateKeyDer::from_pem_slice(&bytes)
        .map_err(|e| invalid(format!("{what} {} holds no usable PEM private key: {e}", path.display())))
}

/// Mozilla's roots plus the certificates of `ca_file`, when given.
fn roots(ca_file: Option<&Path>, what: &str) -> Result<RootCertStore> {
    let mut roots = RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    if let Some(ca) = ca_file {
        let (added, _ignored) = roots.add_parsable_certificates(read_certificates(ca, what)?);
        if added == 0 {
            return Err(invalid(format!("{what} {} holds no usable CA certificate", ca.display())));
        }
    }
    Ok(roots)
}

/// The server name a node's certificate must carry: its host (DNS name or IP address).
pub(crate) fn server_name(node: &PacsNode) -> Result<ServerName<'static>> {
    ServerName::try_from(node.host.trim().to_owned()).map_err(|_| {
        invalid(format!("node {}: the host {:?} is not a valid TLS server name", node.name, node.host.trim()))
    })
}

/// The requestor configuration for `node`: certificate verification always on (Mozilla's roots
/// plus `tls_ca_file`), and the client certificate when the node has one.
pub(crate) fn client_config(node: &PacsNode) -> Result<Arc<ClientConfig>> {
    let roots = roots(node.tls_ca_file.as_deref(), "the TLS CA file")?;
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(format!("TLS: {e}")))?
        .with_root_certificates(roots);
    let config = match (&node.tls_cert_file, &node.tls_key_file) {
        (Some(cert), Some(key)) => builder
            .with_client_auth_cert(
                read_certificates(cert, "the TLS client certificate file")?,
                read_key(key, "the TLS client key file")?,
            )
            .map_err(|e| invalid(format!("node {}: the TLS client certificate or key: {e}", node.name)))?,
        (None, None) => builder.with_no_client_auth(),
        _ => return Err(invalid(format!("node {}: a TLS client certificate needs its key, and back", node.name))),
    };
    Ok(Arc::new(config))
}

/// The acceptor configuration: the certificate chain and key of the SCP; with `client_ca`,
/// client certificates issued by it are required.
pub(crate) fn server_config(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<Arc<ServerConfig>> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(format!("TLS: {e}")))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            let (added, _ignored) = roots.add_parsable_certificates(read_certificates(ca, "the TLS client CA file")?);
            if added == 0 {
                return Err(invalid(format!("the TLS client CA file {} holds no usable certificate", ca.display())));
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| invalid(format!("the TLS client CA file {}: {e}", ca.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder
        .with_single_cert(
            read_certificates(cert, "the SCP's TLS certificate file")?,
            read_key(key, "the SCP's TLS key file")?,
        )
        .map_err(|e| invalid(format!("the SCP's TLS certificate or key: {e}")))?;
    Ok(Arc::new(config))
}

/// A requestor configuration never used to connect. Set on the options of a plain association,
/// it stops `dicom-ul` from guessing that the peer speaks TLS from a failed read of the
/// A-ASSOCIATE answer (which it guesses, wrongly, on a timeout or a closed connection too).
pub(crate) fn unused_client_config() -> Result<Arc<ClientConfig>> {
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(format!("TLS: {e}")))?
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Moves the requestor's TLS stream out of `dicom-ul`'s association (see the module docs).
pub(crate) fn take_client_stream(
    slot: &mut ClientStream,
    config: &Arc<ClientConfig>,
    name: ServerName<'static>,
) -> std::io::Result<ClientStream> {
    let duplicate = slot.sock.try_clone()?;
    let placeholder = ClientConnection::new(Arc::clone(config), name).map_err(std::io::Error::other)?;
    Ok(std::mem::replace(slot, StreamOwned::new(placeholder, duplicate)))
}

/// Moves the acceptor's TLS stream out of `dicom-ul`'s association (see the module docs).
pub(crate) fn take_server_stream(slot: &mut ServerStream, config: &Arc<ServerConfig>) -> std::io::Result<ServerStream> {
    let duplicate = slot.sock.try_clone()?;
    let placeholder = ServerConnection::new(Arc::clone(config)).map_err(std::io::Error::other)?;
    Ok(std::mem::replace(slot, StreamOwned::new(placeholder, duplicate)))
}
