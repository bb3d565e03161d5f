//! RFC 7512 `pkcs11:` URIs, the way HSM operators name a module, a token and a key:
//!
//! ```text
//! pkcs11:token=Strongroom;id=%69%64%2D%31?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/run/secrets/hsm-pin
//! ```
//!
//! Only the attributes Strongroom acts on are kept; the others are parsed and ignored, as the RFC
//! asks. `pin-value` is refused: a PIN in a URI ends up in shell history and process listings.

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::pin::PinSource;

/// What a `pkcs11:` URI names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pkcs11Uri {
    /// `token=`: the token label.
    pub token: Option<String>,
    /// `serial=`: the token serial number.
    pub serial: Option<String>,
    /// `slot-id=`: a slot id. Strongroom still selects by label when one is given.
    pub slot_id: Option<u64>,
    /// `object=`: the object label (CKA_LABEL).
    pub object: Option<String>,
    /// `id=`: the object id (CKA_ID), raw bytes.
    pub id: Option<Vec<u8>>,
    /// `type=`: private, public, cert, secret-key or data.
    pub object_type: Option<String>,
    /// `module-path=`: the PKCS#11 shared library.
    pub module_path: Option<PathBuf>,
    /// `module-name=`: a library name without path or suffix.
    pub module_name: Option<String>,
    /// `pin-source=`: where the PIN comes from.
    pub pin_source: Option<PinSource>,
}

impl Pkcs11Uri {
    pub fn parse(uri: &str) -> Result<Self> {
        let rest = uri
            .strip_prefix("pkcs11:")
            .ok_or_else(|| Error::Uri("must start with \"pkcs11:\"".into()))?;
        let (path, query) = match rest.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (rest, None),
        };
        let mut out = Pkcs11Uri::default();
        for attr in path.split(';').filter(|a| !a.is_empty()) {
            let (name, value) = attr
                .split_once('=')
                .ok_or_else(|| Error::Uri(format!("path attribute {attr:?} has no '='")))?;
            let bytes = percent_decode(value)?;
            match name {
                "token" => out.token = Some(utf8(name, bytes)?),
                "serial" => out.serial = Some(utf8(name, bytes)?),
                "object" => out.object = Some(utf8(name, bytes)?),
                "type" => out.object_type = Some(utf8(name, bytes)?),
                "id" => out.id = Some(bytes),
                "slot-id" => {
                    let s = utf8(name, bytes)?;
                    out.slot_id = Some(
                        s.parse()
                            .map_err(|_| Error::Uri(format!("slot-id {s:?} is not a number")))?,
                    );
                }
                // manufacturer, model, library-*, slot-description, ...: valid, not used.
                _ => {}
            }
        }
        for attr in query
            .into_iter()
            .flat_map(|q| q.split('&'))
            .filter(|a| !a.is_empty())
        {
            let (name, value) = attr
                .split_once('=')
                .ok_or_else(|| Error::Uri(format!("query attribute {attr:?} has no '='")))?;
            if name == "pin-value" {
                return Err(Error::Uri(
                    "pin-value is refused: give the PIN through pin-source (env: or file:)".into(),
                ));
            }
            // Decoding errors never echo a pin-* value.
            let value = utf8(
                name,
                percent_decode(value).map_err(|e| redact_pin(name, e))?,
            )?;
            match name {
                "module-path" => out.module_path = Some(PathBuf::from(value)),
                "module-name" => out.module_name = Some(value),
                "pin-source" => out.pin_source = Some(PinSource::parse(&value)?),
                "pin-value" => {
                    return Err(Error::Uri(
                        "pin-value is refused: give the PIN through pin-source (env: or file:)"
                            .into(),
                    ));
                }
                _ => {}
            }
        }
        Ok(out)
    }

    /// The module to load: `module-path`, or `module-name` looked up in the usual directories.
    pub fn module(&self) -> Option<PathBuf> {
        if let Some(p) = &self.module_path {
            return Some(p.clone());
        }
        let name = self.module_name.as_ref()?;
        let file = format!("{name}.so");
        [
            "/usr/lib/x86_64-linux-gnu/pkcs11",
            "/usr/lib/pkcs11",
            "/usr/lib/softhsm",
            "/usr/lib",
        ]
        .iter()
        .map(|d| PathBuf::from(d).join(&file))
        .find(|p| p.exists())
    }
}

fn redact_pin(name: &str, e: Error) -> Error {
    if name.starts_with("pin-") {
        Error::Uri(format!("bad percent-encoding in {name}"))
    } else {
        e
    }
}

fn utf8(name: &str, bytes: Vec<u8>) -> Result<String> {
    String::from_utf8(bytes).map_err(|_| Error::Uri(format!("{name} is not UTF-8")))
}

fn percent_decode(s: &str) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hi = bytes.next().and_then(hex_value);
            let lo = bytes.next().and_then(hex_value);
            match (hi, lo) {
                (Some(h), Some(l)) => out.push(h << 4 | l),
                _ => return Err(Error::Uri(format!("bad percent-encoding in {s:?}"))),
            }
        } else {
            out.push(b);
        }
    }
    Ok(out)
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rfc7512_examples() {
        let u = Pkcs11Uri::parse(
            "pkcs11:token=The%20Software%20PKCS%2311%20Softtoken;object=my-key;id=%01%02%ff;type=private?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/token_pin",
        )
        .unwrap();
        assert_eq!(u.token.as_deref(), Some("The Software PKCS#11 Softtoken"));
        assert_eq!(u.object.as_deref(), Some("my-key"));
        assert_eq!(u.id.as_deref(), Some(&[1u8, 2, 255][..]));
        assert_eq!(u.object_type.as_deref(), Some("private"));
        assert_eq!(
            u.module_path.as_deref(),
            Some(std::path::Path::new("/usr/lib/softhsm/libsofthsm2.so"))
        );
        assert_eq!(u.pin_source, Some(PinSource::File("/etc/token_pin".into())));
    }

    #[test]
    fn empty_and_unknown_attributes() {
        assert_eq!(Pkcs11Uri::parse("pkcs11:").unwrap(), Pkcs11Uri::default());
        let u = Pkcs11Uri::parse("pkcs11:manufacturer=SoftHSM;slot-id=7").unwrap();
        assert_eq!(u.slot_id, Some(7));
    }

    #[test]
    fn refuses_bad_uris() {
        assert!(Pkcs11Uri::parse("pkcs12:token=x").is_err());
        assert!(Pkcs11Uri::parse("pkcs11:token").is_err());
        assert!(Pkcs11Uri::parse("pkcs11:id=%zz").is_err());
        assert!(Pkcs11Uri::parse("pkcs11:id=%0").is_err());
        assert!(Pkcs11Uri::parse("pkcs11:slot-id=abc").is_err());
        let e = Pkcs11Uri::parse("pkcs11:token=t?pin-value=1234").unwrap_err();
        assert!(e.to_string().contains("pin-source"));
        assert!(!e.to_string().contains("1234"));
        let e = Pkcs11Uri::parse("pkcs11:token=t?pin-value=12%g4").unwrap_err();
        assert!(!e.to_string().contains("12%g4"));
        let e = Pkcs11Uri::parse("pkcs11:token=t?pin-source=12%g4").unwrap_err();
        assert!(!e.to_string().contains("12%g4"));
        let e = Pkcs11Uri::parse("pkcs11:token=t?pin-source=123456").unwrap_err();
        assert!(!e.to_string().contains("123456"));
    }
}
