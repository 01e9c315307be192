//! `https://` targets: TLS with rustls (ring), spoken over the same
//! non-blocking sockets as plain HTTP. The server's certificate is checked
//! against the platform's roots, or `--cacert FILE`, for the URL's host
//! (SNI); `--insecure` accepts any certificate (a self-signed test server)
//! but still checks the handshake's signatures.
//!
//! [`read`] and [`write`] are what a connection uses instead of the
//! socket's own: they move TLS records between the socket and rustls and
//! hand plaintext in and out, with `WouldBlock` meaning what it means on a
//! socket.

use std::io::{self, Read, Write};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, ring};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

use crate::options::{Args, Target};

/// The client configuration every connection shares.
pub(crate) fn config(args: &Args) -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let config = if args.insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth()
    } else {
        let mut roots = RootCertStore::empty();
        match &args.cacert {
            Some(path) => {
                let certs = CertificateDer::pem_file_iter(path)
                    .map_err(|e| format!("--cacert {}: {e}", path.display()))?;
                for cert in certs {
                    let cert = cert.map_err(|e| format!("--cacert {}: {e}", path.display()))?;
                    roots
                        .add(cert)
                        .map_err(|e| format!("--cacert {}: {e}", path.display()))?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(found.certs);
            }
        }
        if roots.is_empty() {
            return Err("no trusted certificates (give --cacert FILE, or --insecure)".into());
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    Ok(Arc::new(config))
}

/// A new TLS session for a connection to `target`, if it is https://
/// (its host is the SNI, and the name the certificate must carry).
pub(crate) fn session(
    config: &Option<Arc<ClientConfig>>,
    target: &Target,
) -> io::Result<Option<Box<ClientConnection>>> {
    let (Some(config), Some(host)) = (config, &target.tls) else {
        return Ok(None);
    };
    let name = ServerName::try_from(host.clone()).map_err(io::Error::other)?;
    let session = ClientConnection::new(config.clone(), name).map_err(io::Error::other)?;
    Ok(Some(Box::new(session)))
}

/// Writes what TLS has to send, until it is all out or the socket is full.
fn flush(tls: &mut ClientConnection, socket: &mut impl Write) -> io::Result<()> {
    while tls.wants_write() {
        match tls.write_tls(socket) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Plaintext to send, through `tls` if there is a session, else straight
/// to the socket. TLS takes all of it at once (and holds it until the
/// handshake is done), then writes as much as the socket takes.
pub(crate) fn write(
    tls: &mut Option<Box<ClientConnection>>,
    socket: &mut impl Write,
    bytes: &[u8],
) -> io::Result<usize> {
    let Some(tls) = tls else {
        return socket.write(bytes);
    };
    let n = tls.writer().write(bytes)?;
    flush(tls, socket)?;
    Ok(n)
}

/// Plaintext received, through `tls` if there is a session, else straight
/// from the socket: `Ok(0)` when the server closed, `WouldBlock` when
/// nothing more is there for now.
pub(crate) fn read<S: Read + Write>(
    tls: &mut Option<Box<ClientConnection>>,
    socket: &mut S,
    buf: &mut [u8],
) -> io::Result<usize> {
    let Some(tls) = tls else {
        return socket.read(buf);
    };
    loop {
        match tls.reader().read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            // Closed without close_notify: as a plain socket's end.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
            Err(e) => return Err(e),
        }
        // The handshake's own messages, and what waited for it.
        flush(tls, socket)?;
        match tls.read_tls(socket)? {
            0 => return Ok(0),
            _ => {
                tls.process_new_packets().map_err(io::Error::other)?;
                flush(tls, socket)?;
            }
        }
    }
}

/// `--insecure`: any certificate is taken, but the handshake's signatures
/// are still checked with the provider's algorithms.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
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
        let algorithms = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
