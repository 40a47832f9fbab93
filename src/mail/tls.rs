//! The TLS client settings every connection uses: the public roots plus
//! `CaFile`, the name from `TlsServerName`, and verification always on unless
//! `TlsVerify = no` was written.

use crate::config::SmtpConfig;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::sync::Arc;

/// The certificates of a PEM file.
pub fn read_pem_certificates(
    path: &std::path::Path,
) -> Result<Vec<CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    let certificates: Result<Vec<_>, _> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("CaFile {}: {e}", path.display()))?
        .collect();
    let certificates = certificates.map_err(|e| format!("CaFile {}: {e}", path.display()))?;
    if certificates.is_empty() {
        return Err(format!("CaFile {} holds no certificate", path.display()));
    }
    Ok(certificates)
}

/// A rustls client configuration for this server.
pub fn client_config(smtp: &SmtpConfig) -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let config = if smtp.tls_verify {
        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(ca) = &smtp.ca_file {
            for certificate in read_pem_certificates(ca)? {
                roots
                    .add(certificate)
                    .map_err(|e| format!("CaFile {}: {e}", ca.display()))?;
            }
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
            .with_no_client_auth()
    };
    Ok(Arc::new(config))
}

/// The name to verify the certificate against.
pub fn server_name(smtp: &SmtpConfig) -> Result<ServerName<'static>, String> {
    ServerName::try_from(smtp.tls_name().to_string()).map_err(|e| {
        format!(
            "{:?} cannot be checked against a certificate: {e}",
            smtp.tls_name()
        )
    })
}

/// Only for `TlsVerify = no`, which the configuration warns about on every load.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
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

/// A TLS failure in plain words.
pub fn describe_tls_error(error: &rustls::Error, name: &str) -> String {
    use rustls::CertificateError as C;
    match error {
        rustls::Error::InvalidCertificate(C::UnknownIssuer) => "the server's certificate is not trusted: it is not signed by a known authority (add the authority with CaFile)".to_string(),
        rustls::Error::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => {
            format!("the server's certificate is not for {name:?} (a name mismatch; TlsServerName sets the name to check)")
        }
        rustls::Error::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => "the server's certificate has expired".into(),
        rustls::Error::InvalidCertificate(C::NotValidYet | C::NotValidYetContext { .. }) => {
            "the server's certificate is not valid yet (check this machine's clock)".into()
        }
        // A self-signed certificate given as CaFile: webpki takes a
        // certificate that signs itself for an authority, not a server.
        rustls::Error::InvalidCertificate(other) if format!("{other:?}").contains("CaUsedAsEndEntity") => {
            "the server's certificate is a certificate authority's (a self-signed certificate?): a server needs a certificate of its own, signed by the authority that CaFile names".into()
        }
        rustls::Error::InvalidCertificate(other) => format!("the server's certificate is not acceptable: {other}"),
        other => format!("the TLS handshake failed: {other}"),
    }
}
