//! TLS to PostgreSQL, with rustls, as libpq's `sslmode` and `sslrootcert` say.
//!
//! rust-postgres' own `Config` knows `sslmode=disable|prefer|require` only, and verifies nothing
//! itself: these settings are read here (from the URL, then `PGSSLMODE` and `PGSSLROOTCERT`, as
//! libpq reads them), the protocol's part is handed to `Config`, and the verification to a
//! rustls client configuration:
//!
//! | sslmode | TLS | the server's certificate |
//! |---|---|---|
//! | `disable` | never | — |
//! | `allow`, `prefer` (the default) | when the server offers it | not checked, unless a root certificate is given (then as `verify-ca`) |
//! | `require` | always | not checked, unless a root certificate is given (then as `verify-ca`) |
//! | `verify-ca` | always | signed by a root certificate of `sslrootcert` |
//! | `verify-full` | always | that, and issued for the host connected to |
//!
//! `sslrootcert` is a PEM file of root certificates, or `system` for the well-known public
//! roots (and then `verify-full`, as libpq does). Without it, `~/.postgresql/root.crt` is used
//! when it exists.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ClientConfig, WebPkiServerVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, Error as TlsError, RootCertStore, SignatureScheme};
use std::path::PathBuf;
use std::sync::Arc;

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum SslMode {
    Disable,
    /// libpq tries without TLS first; here it is `prefer`.
    Allow,
    #[default]
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(s: &str) -> Result<SslMode, String> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(format!(
                    "sslmode={other:?} is not one of disable, allow, prefer, require, verify-ca, verify-full"
                ));
            }
        })
    }
}

/// Where the trusted root certificates come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Roots {
    /// None given, and no `~/.postgresql/root.crt`.
    None,
    /// A PEM file.
    File(PathBuf),
    /// `sslrootcert=system`: the well-known public roots.
    System,
}

/// The TLS settings of one PostgreSQL location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tls {
    pub mode: SslMode,
    pub roots: Roots,
}

impl Tls {
    /// The settings from the URL's `sslmode` and `sslrootcert` (`None` when absent), then
    /// `PGSSLMODE` and `PGSSLROOTCERT`, then libpq's defaults.
    pub(crate) fn from_settings(
        sslmode: Option<&str>,
        sslrootcert: Option<&str>,
    ) -> Result<Tls, String> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let mode = match sslmode.map(str::to_owned).or_else(|| env("PGSSLMODE")) {
            Some(m) => SslMode::parse(&m)?,
            None => SslMode::default(),
        };
        let given = sslrootcert
            .map(str::to_owned)
            .or_else(|| env("PGSSLROOTCERT"));
        let roots = match given.as_deref() {
            Some("system") => Roots::System,
            Some(path) => Roots::File(PathBuf::from(path)),
            None => std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".postgresql/root.crt"))
                .filter(|p| p.is_file())
                .map_or(Roots::None, Roots::File),
        };
        // libpq: with `sslrootcert=system` the mode is `verify-full` whatever was asked.
        let mode = if roots == Roots::System && mode != SslMode::Disable {
            SslMode::VerifyFull
        } else {
            mode
        };
        if matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull) && roots == Roots::None {
            return Err(format!(
                "sslmode={} needs root certificates to check the server's against: give sslrootcert=FILE (PEM) in the URL or PGSSLROOTCERT, or sslrootcert=system for the public roots",
                if mode == SslMode::VerifyCa {
                    "verify-ca"
                } else {
                    "verify-full"
                }
            ));
        }
        Ok(Tls { mode, roots })
    }

    /// What the protocol does: never TLS, TLS when offered, or TLS or nothing.
    pub(crate) fn protocol(&self) -> postgres::config::SslMode {
        match self.mode {
            SslMode::Disable => postgres::config::SslMode::Disable,
            SslMode::Allow | SslMode::Prefer => postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                postgres::config::SslMode::Require
            }
        }
    }

    /// The rustls connector that checks the server's certificate as the mode says.
    pub(crate) fn connector(&self) -> Result<tokio_postgres_rustls::MakeRustlsConnect, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?;
        let roots = self.root_store()?;
        let config = match (self.mode, roots) {
            (SslMode::VerifyFull, Some(roots)) => {
                builder.with_root_certificates(roots).with_no_client_auth()
            }
            // A root given with a weaker mode checks the chain, as libpq's `verify-ca` does.
            (_, Some(roots)) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(ChainOnly {
                    inner: WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .map_err(|e| format!("TLS: {e}"))?,
                }))
                .with_no_client_auth(),
            (_, None) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Unchecked {
                    algorithms: provider.signature_verification_algorithms,
                }))
                .with_no_client_auth(),
        };
        Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
    }

    /// The trusted roots, when any are given.
    fn root_store(&self) -> Result<Option<RootCertStore>, String> {
        let mut store = RootCertStore::empty();
        match &self.roots {
            Roots::None => return Ok(None),
            Roots::System => store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
            Roots::File(path) => {
                let shown = path.display();
                let certs = CertificateDer::pem_file_iter(path)
                    .map_err(|e| format!("sslrootcert {shown}: {e}"))?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| format!("sslrootcert {shown}: {e}"))?;
                let (added, _) = store.add_parsable_certificates(certs);
                if added == 0 {
                    return Err(format!(
                        "sslrootcert {shown}: no certificate in it (a PEM file of root certificates is expected)"
                    ));
                }
            }
        }
        Ok(Some(store))
    }
}

/// `verify-ca`: the chain must lead to a trusted root; the host name is not checked.
#[derive(Debug)]
struct ChainOnly {
    inner: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        match self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(TlsError::InvalidCertificate(rustls::CertificateError::NotValidForName))
            | Err(TlsError::InvalidCertificate(
                rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// `prefer` and `require` without a root certificate: the connection is encrypted, the
/// certificate not checked (libpq's behaviour); the handshake's signatures still are.
#[derive(Debug)]
struct Unchecked {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_as_libpq_spells_them_and_verify_needs_roots() {
        let t = Tls::from_settings(Some("require"), None).expect("require");
        assert_eq!(t.protocol(), postgres::config::SslMode::Require);
        assert_eq!(
            Tls::from_settings(Some("disable"), None)
                .unwrap()
                .protocol(),
            postgres::config::SslMode::Disable
        );
        assert!(
            Tls::from_settings(Some("verify-ful"), None)
                .unwrap_err()
                .contains("not one of")
        );
        let system = Tls::from_settings(Some("require"), Some("system")).unwrap();
        assert_eq!(
            (system.mode, &system.roots),
            (SslMode::VerifyFull, &Roots::System)
        );
        assert!(system.connector().is_ok());
        assert!(
            Tls::from_settings(Some("verify-ca"), Some("/nonexistent/root.pem"))
                .unwrap()
                .connector()
                .is_err()
        );
    }
}
