//! The self-signed TLS certificate made on first start, shared by Postfix, Dovecot and the dashboard.

use std::net::{IpAddr, Ipv4Addr};

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};
use thiserror::Error;

use crate::names::Hostname;

#[derive(Debug, Error)]
#[error("could not make the TLS certificate: {0}")]
pub struct TlsError(String);

/// A PEM certificate and its PEM private key.
pub struct SelfSigned {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A certificate for `hostname` (and `localhost`, 127.0.0.1, so local clients can verify it), valid
/// for ten years. Users replace `ssl/cert.pem` and `ssl/key.pem` with a real one.
pub fn self_signed(hostname: &Hostname) -> Result<SelfSigned, TlsError> {
    let err = |e: rcgen::Error| TlsError(e.to_string());
    let mut params =
        CertificateParams::new(vec![hostname.to_string(), "localhost".to_string()]).map_err(err)?;
    params
        .subject_alt_names
        .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, hostname.to_string());
    dn.push(DnType::OrganizationName, "mailserver (self-signed)");
    params.distinguished_name = dn;
    let now = std::time::SystemTime::now();
    params.not_before = now.into();
    params.not_after = (now + std::time::Duration::from_secs(10 * 365 * 24 * 3600)).into();
    let key = KeyPair::generate().map_err(err)?;
    let cert = params.self_signed(&key).map_err(err)?;
    Ok(SelfSigned {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn makes_a_certificate() {
        let c = self_signed(&Hostname::parse("mx.example.com").unwrap()).unwrap();
        assert!(c.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(c.key_pem.contains("PRIVATE KEY"));
    }
}
