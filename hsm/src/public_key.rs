//! Public keys read out of the token: JWK members and SubjectPublicKeyInfo DER.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::der;
use crate::error::{Error, Result};

/// The public half of a key pair in the token.
#[derive(Clone, PartialEq, Eq)]
pub enum PublicKey {
    /// RSA: big-endian modulus and public exponent, leading zeros removed.
    Rsa { n: Vec<u8>, e: Vec<u8> },
    /// EC P-256: the affine coordinates, 32 bytes each.
    EcP256 { x: [u8; 32], y: [u8; 32] },
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PublicKey::Rsa { n, .. } => write!(f, "PublicKey::Rsa({} bits)", n.len() * 8),
            PublicKey::EcP256 { .. } => f.write_str("PublicKey::EcP256"),
        }
    }
}

impl PublicKey {
    /// An RSA public key from its big-endian modulus and exponent.
    pub fn rsa(n: &[u8], e: &[u8]) -> Result<Self> {
        let strip = |b: &[u8]| -> Vec<u8> {
            let start = b.iter().position(|&x| x != 0).unwrap_or(b.len());
            b.get(start..).unwrap_or_default().to_vec()
        };
        let (n, e) = (strip(n), strip(e));
        if n.is_empty() || e.is_empty() {
            return Err(Error::Malformed("RSA public key"));
        }
        Ok(PublicKey::Rsa { n, e })
    }

    /// Parses CKA_EC_POINT, which tokens return either DER-wrapped (`04 41 04‖X‖Y`, as the
    /// standard says) or raw (`04‖X‖Y`, as some HSMs do).
    pub fn from_ec_point(point: &[u8]) -> Result<Self> {
        let raw = match point {
            [0x04, 0x41, rest @ ..] if rest.len() == 65 => rest,
            [0x04, ..] if point.len() == 65 => point,
            _ => return Err(Error::Malformed("CKA_EC_POINT")),
        };
        let (Some(x), Some(y)) = (raw.get(1..33), raw.get(33..65)) else {
            return Err(Error::Malformed("CKA_EC_POINT"));
        };
        let (Ok(x), Ok(y)) = (x.try_into(), y.try_into()) else {
            return Err(Error::Malformed("CKA_EC_POINT"));
        };
        Ok(PublicKey::EcP256 { x, y })
    }

    /// The JWK members of the key, base64url without padding: `kty`, then `n`/`e` or
    /// `crv`/`x`/`y`. Never a private member: the token does not give them out.
    pub fn jwk_members(&self) -> Vec<(&'static str, String)> {
        let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
        match self {
            PublicKey::Rsa { n, e } => vec![("kty", "RSA".into()), ("n", b64(n)), ("e", b64(e))],
            PublicKey::EcP256 { x, y } => vec![
                ("kty", "EC".into()),
                ("crv", "P-256".into()),
                ("x", b64(x)),
                ("y", b64(y)),
            ],
        }
    }

    /// The uncompressed SEC1 point `04‖X‖Y` of an EC key.
    pub fn ec_point(&self) -> Option<Vec<u8>> {
        match self {
            PublicKey::EcP256 { x, y } => Some([&[0x04u8][..], x, y].concat()),
            PublicKey::Rsa { .. } => None,
        }
    }

    /// RSA modulus length in bits.
    pub fn rsa_bits(&self) -> Option<usize> {
        match self {
            PublicKey::Rsa { n, .. } => {
                let lead = n.first().map_or(0, |b| 8 - b.leading_zeros() as usize);
                Some((n.len().saturating_sub(1)) * 8 + lead)
            }
            PublicKey::EcP256 { .. } => None,
        }
    }

    /// SubjectPublicKeyInfo, DER (RFC 5280), as certificates and PEM public keys carry it.
    pub fn spki_der(&self) -> Vec<u8> {
        match self {
            PublicKey::Rsa { n, e } => {
                let alg = der::sequence(&[&der::tlv(0x06, der::OID_RSA_ENCRYPTION), &[0x05, 0x00]]);
                let rsa_key =
                    der::sequence(&[&der::unsigned_integer(n), &der::unsigned_integer(e)]);
                let bits = der::tlv(0x03, &[&[0u8][..], &rsa_key].concat());
                der::sequence(&[&alg, &bits])
            }
            PublicKey::EcP256 { x, y } => {
                let alg = der::sequence(&[
                    &der::tlv(0x06, der::OID_EC_PUBLIC_KEY),
                    &der::tlv(0x06, der::OID_PRIME256V1),
                ]);
                let bits = der::tlv(0x03, &[&[0u8, 0x04][..], x, y].concat());
                der::sequence(&[&alg, &bits])
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ec_point_both_encodings() {
        let mut raw = vec![0x04];
        raw.extend((1..=64).map(|i| i as u8));
        let wrapped = [&[0x04u8, 0x41][..], &raw].concat();
        let a = PublicKey::from_ec_point(&raw).unwrap();
        let b = PublicKey::from_ec_point(&wrapped).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.ec_point().unwrap(), raw);
        assert!(PublicKey::from_ec_point(&raw[..64]).is_err());
        assert!(PublicKey::from_ec_point(&[0x04, 0x41, 0x04]).is_err());
        assert!(PublicKey::from_ec_point(&[]).is_err());
    }

    #[test]
    fn rsa_bits_and_members() {
        let k = PublicKey::rsa(&[0, 0x80, 0, 1], &[0, 1, 0, 1]).unwrap();
        assert_eq!(k.rsa_bits(), Some(24));
        assert_eq!(k.jwk_members()[2], ("e", "AQAB".to_string()));
        assert!(PublicKey::rsa(&[0, 0], &[1]).is_err());
    }
}
