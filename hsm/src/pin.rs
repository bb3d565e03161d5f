//! The user PIN: read from an environment variable or a file, held in a zeroizing buffer,
//! never printed.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// Where the user PIN comes from. A PIN is never part of a configuration file.
#[derive(Clone, PartialEq, Eq)]
pub enum PinSource {
    /// The named environment variable holds the PIN.
    Env(String),
    /// The file holds the PIN (one trailing newline is ignored).
    File(PathBuf),
}

impl fmt::Debug for PinSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PinSource::Env(var) => write!(f, "env:{var}"),
            PinSource::File(path) => write!(f, "file:{}", path.display()),
        }
    }
}

impl fmt::Display for PinSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl PinSource {
    /// Parses `env:NAME`, `file:/path` or a `file:` URI as used by RFC 7512's `pin-source`.
    pub fn parse(s: &str) -> Result<Self> {
        if let Some(var) = s.strip_prefix("env:") {
            if var.is_empty() {
                return Err(Error::Uri("pin-source env: needs a variable name".into()));
            }
            return Ok(PinSource::Env(var.to_owned()));
        }
        if let Some(path) = s.strip_prefix("file://") {
            return Ok(PinSource::File(PathBuf::from(path)));
        }
        if let Some(path) = s.strip_prefix("file:") {
            return Ok(PinSource::File(PathBuf::from(path)));
        }
        // RFC 7512 allows a bare path.
        if s.starts_with('/') {
            return Ok(PinSource::File(PathBuf::from(s)));
        }
        // The value is not echoed: an operator who wrote the PIN itself here must not see it in
        // a log.
        Err(Error::Uri(
            "pin-source must be env:NAME or file:/path".into(),
        ))
    }

    /// Reads the PIN now.
    pub fn load(&self) -> Result<Pin> {
        let raw: Zeroizing<String> = match self {
            PinSource::Env(var) => Zeroizing::new(std::env::var(var).map_err(|e| Error::Pin {
                source_name: self.to_string(),
                reason: e.to_string(),
            })?),
            PinSource::File(path) => {
                Zeroizing::new(std::fs::read_to_string(path).map_err(|e| Error::Pin {
                    source_name: self.to_string(),
                    reason: e.to_string(),
                })?)
            }
        };
        let trimmed = raw.strip_suffix('\n').unwrap_or(&raw);
        let trimmed = trimmed.strip_suffix('\r').unwrap_or(trimmed);
        if trimmed.is_empty() {
            return Err(Error::Pin {
                source_name: self.to_string(),
                reason: "the PIN is empty".into(),
            });
        }
        Ok(Pin::new(trimmed))
    }
}

/// A PKCS#11 user PIN. Zeroized on drop; `Debug` shows only that it is redacted.
///
/// Clones share one "refused" flag: once the token has refused the PIN, no session or worker
/// process tries it again (a real HSM locks the user after a few wrong PINs; an operator who
/// changed the PIN must fix the configuration and restart, not have every request spend one
/// attempt).
#[derive(Clone)]
pub struct Pin {
    secret: Arc<Zeroizing<String>>,
    refused: Arc<AtomicBool>,
}

impl Pin {
    pub fn new(pin: &str) -> Self {
        Pin {
            secret: Arc::new(Zeroizing::new(pin.to_owned())),
            refused: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The token refused this PIN: never offer it again.
    pub(crate) fn mark_refused(&self) {
        self.refused.store(true, Ordering::SeqCst);
    }

    /// Whether the token has refused this PIN (this process will not try it again).
    pub fn was_refused(&self) -> bool {
        self.refused.load(Ordering::SeqCst)
    }

    pub(crate) fn expose_bytes(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(self.secret.as_bytes().to_vec())
    }

    pub(crate) fn to_auth_pin(&self) -> cryptoki::types::AuthPin {
        // `AuthPin` is a secrecy::SecretString, which zeroizes its own copy.
        cryptoki::types::AuthPin::from(self.secret.as_str())
    }
}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pin(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_pin() {
        let pin = Pin::new("123456");
        assert_eq!(format!("{pin:?}"), "Pin(<redacted>)");
    }

    #[test]
    fn pin_source_forms() {
        assert_eq!(
            PinSource::parse("env:HSM_PIN").ok(),
            Some(PinSource::Env("HSM_PIN".into()))
        );
        assert_eq!(
            PinSource::parse("file:/run/pin").ok(),
            Some(PinSource::File("/run/pin".into()))
        );
        assert_eq!(
            PinSource::parse("/run/pin").ok(),
            Some(PinSource::File("/run/pin".into()))
        );
        assert!(PinSource::parse("1234").is_err());
        assert!(PinSource::parse("env:").is_err());
    }

    #[test]
    fn file_pin_strips_one_newline_and_refuses_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pin");
        std::fs::write(&path, "4321\n").unwrap();
        let pin = PinSource::File(path.clone()).load();
        assert!(matches!(pin, Ok(ref p) if p.secret.as_str() == "4321"));
        std::fs::write(&path, "\n").unwrap();
        assert!(matches!(
            PinSource::File(path).load(),
            Err(Error::Pin { .. })
        ));
        let missing = PinSource::File(dir.path().join("absent")).load();
        assert!(
            matches!(missing, Err(Error::Pin { ref source_name, .. }) if source_name.contains("absent"))
        );
    }
}
