//! A bounded memo of values that are costly to build from their description and never change
//! for one description: parsed keys (client JWS verifiers, APIs' JWE encrypters) and compiled
//! JSON Schemas (APIs' authorization_details types).
//!
//! Keyed by the description's content, an entry can never outlive what it was built from: a
//! rotated or edited key is a different key string, and the old entry is simply never asked for
//! again. When full, the memo starts over (a rebuild costs one parse per key).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

pub struct Memo<T: ?Sized> {
    entries: Mutex<HashMap<String, Arc<T>>>,
    max_entries: usize,
}

impl<T: ?Sized> Memo<T> {
    pub fn new(max_entries: usize) -> Self {
        Memo {
            entries: Mutex::new(HashMap::new()),
            max_entries,
        }
    }

    /// The value for `key`, built by `build` the first time `key` is seen. A build that fails
    /// is not remembered. Two threads may both build a new key; one result is kept.
    pub fn get_or_build<E>(
        &self,
        key: String,
        build: impl FnOnce() -> Result<Arc<T>, E>,
    ) -> Result<Arc<T>, E> {
        if let Some(v) = self.lock().get(&key) {
            return Ok(Arc::clone(v));
        }
        let built = build()?;
        let mut entries = self.lock();
        if entries.len() >= self.max_entries {
            entries.clear();
        }
        entries.insert(key, Arc::clone(&built));
        Ok(built)
    }

    /// The memo holds no invariant a panic could break: a poisoned lock is still usable.
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<T>>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_once_per_key_failures_not_kept_and_bounded() {
        let memo: Memo<str> = Memo::new(2);
        let mut builds = 0;
        for _ in 0..3 {
            let v = memo
                .get_or_build::<()>("a".into(), || {
                    builds += 1;
                    Ok(Arc::from("A"))
                })
                .unwrap();
            assert_eq!(&*v, "A");
        }
        assert_eq!(builds, 1);
        assert!(memo.get_or_build("b".into(), || Err("no")).is_err());
        assert!(
            memo.get_or_build::<()>("b".into(), || Ok(Arc::from("B")))
                .is_ok()
        );
        // Full (a, b): a third key starts over, so "a" is built again.
        memo.get_or_build::<()>("c".into(), || Ok(Arc::from("C")))
            .unwrap();
        let mut rebuilt = false;
        memo.get_or_build::<()>("a".into(), || {
            rebuilt = true;
            Ok(Arc::from("A"))
        })
        .unwrap();
        assert!(rebuilt);
    }
}
