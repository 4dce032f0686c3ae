//! TLS for jitd's PostgreSQL connections (rustls, through
//! `tokio-postgres-rustls`), chosen in the `database` URL the way libpq
//! spells it:
//!
//! | `sslmode` | connection | server certificate |
//! |---|---|---|
//! | absent, `disable` | plain TCP | — |
//! | `prefer` | TLS if the server offers it, else plain | not checked |
//! | `require` | TLS, or no connection | not checked (encryption only) |
//! | `verify-ca` | TLS, or no connection | chain to `sslrootcert` checked |
//! | `verify-full` | TLS, or no connection | chain checked and the URL's host in the certificate |
//!
//! `sslrootcert` (with `verify-ca` / `verify-full`, required there) is a
//! PEM file of the CA certificates to trust, or `system` for the Mozilla
//! root set that ships with jitd (`webpki-roots`). Over a network, use
//! `verify-full`: `prefer` and `require` stop eavesdroppers but not a
//! machine in the middle. Client certificates are not supported.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::StoreError;

/// The `sslmode` of a database URL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// How connections are opened: plain, or TLS with a rustls configuration.
#[derive(Clone)]
pub enum Connector {
    Plain,
    Tls(MakeRustlsConnect),
}

impl Connector {
    /// Opens one connection with `config` (blocking).
    pub fn connect(&self, config: &postgres::Config) -> Result<postgres::Client, postgres::Error> {
        match self {
            Connector::Plain => config.connect(postgres::NoTls),
            Connector::Tls(t) => config.connect(t.clone()),
        }
    }
}

/// Splits a `postgres://` URL into what the driver parses (the URL
/// without `sslmode` and `sslrootcert`) and the TLS settings. Errors: an
/// unknown `sslmode`, `verify-*` without `sslrootcert`, a root file that
/// cannot be read or holds no certificate.
pub fn parse(url: &str) -> Result<(String, SslMode, Connector), StoreError> {
    let bad = |m: String| StoreError::Pg(format!("database URL: {m}"));
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, q),
        None => (url, ""),
    };
    let mut mode = None;
    let mut root = None;
    let mut kept = Vec::new();
    for part in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = url::form_urlencoded::parse(part.as_bytes())
            .next()
            .unwrap_or_default();
        match &*k {
            "sslmode" => mode = Some(v.into_owned()),
            "sslrootcert" => root = Some(v.into_owned()),
            _ => kept.push(part),
        }
    }
    let mode = match mode.as_deref() {
        None | Some("disable") => SslMode::Disable,
        Some("prefer") => SslMode::Prefer,
        Some("require") => SslMode::Require,
        Some("verify-ca") => SslMode::VerifyCa,
        Some("verify-full") => SslMode::VerifyFull,
        Some(other) => {
            return Err(bad(format!(
                "sslmode={other}: one of disable, prefer, require, verify-ca, verify-full"
            )))
        }
    };
    let driver_url = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(format!("TLS: {e}")))?;
    let config = match mode {
        SslMode::Disable => return Ok((driver_url, mode, Connector::Plain)),
        SslMode::Prefer | SslMode::Require => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Unverified(provider)))
            .with_no_client_auth(),
        SslMode::VerifyCa | SslMode::VerifyFull => {
            let roots = roots(root.as_deref(), mode)?;
            if mode == SslMode::VerifyFull {
                builder.with_root_certificates(roots).with_no_client_auth()
            } else {
                let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .map_err(|e| bad(format!("sslrootcert: {e}")))?;
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(AnyHostname(inner)))
                    .with_no_client_auth()
            }
        }
    };
    Ok((
        driver_url,
        mode,
        Connector::Tls(MakeRustlsConnect::new(config)),
    ))
}

/// The trust anchors `sslrootcert` names.
fn roots(root: Option<&str>, mode: SslMode) -> Result<rustls::RootCertStore, StoreError> {
    let bad = |m: String| StoreError::Pg(format!("database URL: {m}"));
    let mut store = rustls::RootCertStore::empty();
    match root {
        None => {
            return Err(bad(format!(
                "sslmode={} needs sslrootcert=PATH (PEM file of the CA certificates) or sslrootcert=system",
                if mode == SslMode::VerifyCa {
                    "verify-ca"
                } else {
                    "verify-full"
                }
            )))
        }
        Some("system") => store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| bad(format!("sslrootcert {path}: {e}")))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad(format!("sslrootcert {path}: {e}")))?;
            let (added, _) = store.add_parsable_certificates(certs);
            if added == 0 {
                return Err(bad(format!(
                    "sslrootcert {path}: no CA certificate in the file"
                )));
            }
        }
    }
    Ok(store)
}

/// `prefer` / `require`: any server certificate (libpq's meaning), but
/// the handshake's signatures are still checked.
#[derive(Debug)]
struct Unverified(Arc<CryptoProvider>);

impl ServerCertVerifier for Unverified {
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
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain is checked against the roots, the host name is
/// not.
#[derive(Debug)]
struct AnyHostname(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyHostname {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // The name is checked after the chain: a name error means the
        // chain passed.
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_and_sslrootcert_are_taken_out_of_the_url() {
        let (u, m, c) = parse("postgres://jit@db/jit?application_name=x&sslmode=require").unwrap();
        assert_eq!(u, "postgres://jit@db/jit?application_name=x");
        assert_eq!(m, SslMode::Require);
        assert!(matches!(c, Connector::Tls(_)));
        let (u, m, c) = parse("postgres://jit@db/jit").unwrap();
        assert_eq!((u.as_str(), m), ("postgres://jit@db/jit", SslMode::Disable));
        assert!(matches!(c, Connector::Plain));
        let (u, m, _) =
            parse("postgres://jit@db/jit?sslmode=verify-full&sslrootcert=system").unwrap();
        assert_eq!(
            (u.as_str(), m),
            ("postgres://jit@db/jit", SslMode::VerifyFull)
        );
    }

    #[test]
    fn bad_tls_settings_are_refused_with_the_reason() {
        let err = |u: &str| match parse(u) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("{u} accepted"),
        };
        assert!(err("postgres://db/jit?sslmode=allow").contains("one of disable"));
        assert!(err("postgres://db/jit?sslmode=verify-full").contains("needs sslrootcert"));
        assert!(
            err("postgres://db/jit?sslmode=verify-ca&sslrootcert=/nonexistent.pem")
                .contains("/nonexistent.pem")
        );
    }
}
