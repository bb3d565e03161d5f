//! The few DER structures the HSM layer writes: SubjectPublicKeyInfo for RSA and P-256 keys, and
//! the DER form of an ECDSA signature (TLS and X.509 want it; JWS wants raw r‖s).

use crate::error::{Error, Result};

pub(crate) const OID_RSA_ENCRYPTION: &[u8] =
    &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
pub(crate) const OID_EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
pub(crate) const OID_PRIME256V1: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// CKA_EC_PARAMS for P-256: the DER OID `prime256v1`.
pub(crate) fn p256_ec_params() -> Vec<u8> {
    tlv(0x06, OID_PRIME256V1)
}

pub(crate) fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 4);
    out.push(tag);
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else if len <= 0xff {
        out.extend_from_slice(&[0x81, len as u8]);
    } else {
        out.extend_from_slice(&[0x82, (len >> 8) as u8, len as u8]);
    }
    out.extend_from_slice(content);
    out
}

/// A DER INTEGER holding the unsigned big-endian `bytes`.
pub(crate) fn unsigned_integer(bytes: &[u8]) -> Vec<u8> {
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    let trimmed = bytes.get(start..).unwrap_or_default();
    let mut content = Vec::with_capacity(trimmed.len() + 1);
    if trimmed.first().is_none_or(|&b| b & 0x80 != 0) {
        content.push(0);
    }
    content.extend_from_slice(trimmed);
    tlv(0x02, &content)
}

pub(crate) fn sequence(parts: &[&[u8]]) -> Vec<u8> {
    tlv(0x30, &parts.concat())
}

/// An ECDSA signature as raw r‖s (each half the same length) turned into DER `SEQUENCE { r, s }`.
pub fn ecdsa_raw_to_der(raw: &[u8]) -> Result<Vec<u8>> {
    if raw.is_empty() || raw.len() % 2 != 0 {
        return Err(Error::InvalidInput(format!(
            "an ECDSA r||s signature has an even, non-zero length, not {}",
            raw.len()
        )));
    }
    let (r, s) = raw.split_at(raw.len() / 2);
    Ok(sequence(&[&unsigned_integer(r), &unsigned_integer(s)]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_minimal_and_positive() {
        assert_eq!(unsigned_integer(&[0, 0, 1]), vec![2, 1, 1]);
        assert_eq!(unsigned_integer(&[0x80]), vec![2, 2, 0, 0x80]);
        assert_eq!(unsigned_integer(&[0, 0]), vec![2, 1, 0]);
    }

    #[test]
    fn long_lengths() {
        let content = vec![7u8; 300];
        let t = tlv(0x04, &content);
        assert_eq!(&t[..4], &[0x04, 0x82, 0x01, 0x2c]);
        let t = tlv(0x04, &content[..200]);
        assert_eq!(&t[..3], &[0x04, 0x81, 200]);
    }

    #[test]
    fn ecdsa_der_rejects_odd_lengths() {
        assert!(ecdsa_raw_to_der(&[1, 2, 3]).is_err());
        assert!(ecdsa_raw_to_der(&[]).is_err());
        assert_eq!(
            ecdsa_raw_to_der(&[0x01, 0x80]).unwrap(),
            vec![0x30, 0x07, 0x02, 0x01, 0x01, 0x02, 0x02, 0x00, 0x80]
        );
    }
}
