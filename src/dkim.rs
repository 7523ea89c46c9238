//! DKIM keys: RSA-2048 generation, the public key as published in DNS, and selector names. Where
//! the keys are kept (files only root and OpenDKIM read) is [`crate::dkim_keys`].

use rsa::pkcs8::{DecodePrivateKey as _, EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::{PrivateKey, rand_core::UnwrapErr};
use thiserror::Error;

use crate::names::Selector;

pub const KEY_BITS: usize = 2048;

#[derive(Debug, Error)]
pub enum DkimError {
    #[error("could not generate a DKIM key: {0}")]
    Generate(String),
    #[error("could not encode the DKIM key: {0}")]
    Encode(String),
    #[error("the DKIM key file is not a PKCS#8 RSA key: {0}")]
    Decode(String),
}

/// A DKIM key pair: the private key as PKCS#8 PEM (what OpenDKIM reads) and the public key as the
/// base64 of its SubjectPublicKeyInfo DER (the `p=` of the DNS record).
#[derive(Debug, Clone)]
pub struct KeyPair {
    pub private_pem: String,
    pub public_b64: String,
}

pub fn generate() -> Result<KeyPair, DkimError> {
    let mut rng = UnwrapErr(getrandom::SysRng);
    let key =
        PrivateKey::new(&mut rng, KEY_BITS).map_err(|e| DkimError::Generate(e.to_string()))?;
    let private_pem = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| DkimError::Encode(e.to_string()))?
        .to_string();
    Ok(KeyPair {
        public_b64: public_b64(&key)?,
        private_pem,
    })
}

fn public_b64(key: &PrivateKey) -> Result<String, DkimError> {
    let der = key
        .to_public_key()
        .to_public_key_der()
        .map_err(|e| DkimError::Encode(e.to_string()))?;
    use base64::Engine as _;
    Ok(base64::engine::general_purpose::STANDARD.encode(der.as_bytes()))
}

/// The `p=` value of the private key `private_pem` (PKCS#8 PEM, as [`generate`] writes it).
pub fn public_of(private_pem: &str) -> Result<String, DkimError> {
    let key =
        PrivateKey::from_pkcs8_pem(private_pem).map_err(|e| DkimError::Decode(e.to_string()))?;
    public_b64(&key)
}

/// The selector for a domain's first key.
pub fn first_selector() -> Selector {
    Selector::parse("mail").expect("constant selector is valid")
}

/// A new selector for a rotation on `date` (`YYYYMMDD`), distinct from `current`.
pub fn next_selector(current: Option<&str>, date: &str) -> Selector {
    let base = format!("mail-{date}");
    let mut candidate = base.clone();
    let mut n = 2;
    while Some(candidate.as_str()) == current {
        candidate = format!("{base}-{n}");
        n += 1;
    }
    // Called again on the same day after a rotation, `current` is `mail-DATE` or `mail-DATE-N`.
    if let Some(cur) = current
        && let Some(rest) = cur.strip_prefix(&format!("{base}-"))
        && let Ok(k) = rest.parse::<u32>()
    {
        candidate = format!("{base}-{}", k + 1);
    }
    Selector::parse(&candidate).expect("generated selector is valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_a_2048_bit_key() {
        let kp = generate().unwrap();
        assert!(kp.private_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        // A 2048-bit SubjectPublicKeyInfo is 294 bytes: 392 base64 characters.
        assert_eq!(kp.public_b64.len(), 392);
        assert_eq!(public_of(&kp.private_pem).unwrap(), kp.public_b64);
        assert!(public_of("not a key").is_err());
    }

    #[test]
    fn selectors_rotate() {
        assert_eq!(first_selector().as_str(), "mail");
        assert_eq!(
            next_selector(Some("mail"), "20261124").as_str(),
            "mail-20261124"
        );
        assert_eq!(
            next_selector(Some("mail-20261124"), "20261124").as_str(),
            "mail-20261124-2"
        );
        assert_eq!(
            next_selector(Some("mail-20261124-2"), "20261124").as_str(),
            "mail-20261124-3"
        );
        assert_eq!(
            next_selector(Some("mail-20261124-3"), "20261125").as_str(),
            "mail-20261125"
        );
    }
}
