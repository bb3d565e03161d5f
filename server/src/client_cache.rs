//! Registered clients, kept in memory for a few seconds: the token endpoint reads its client on
//! every request, and a database query plus a JSON parse per token was measurable beside the
//! signature (README, Performance).
//!
//! A change made on this instance (the management API) takes effect here at once; one made on
//! another instance, or with the CLI, within [`CLIENT_CACHE_TTL`]. Deleting a client revokes its
//! tokens in the database immediately whatever the cache holds; for up to the TTL another
//! instance may still authenticate it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::model::Client;
use crate::store::{Result, Store};

/// How long a cached client is believed.
pub const CLIENT_CACHE_TTL: Duration = Duration::from_secs(5);
/// Clients cached at most; beyond, the cache starts over (unknown client_ids are never cached,
/// so only registered clients can fill it).
const MAX_CLIENTS: usize = 10_000;

#[derive(Debug, Default)]
pub struct ClientCache {
    entries: Mutex<HashMap<String, (Instant, Arc<Client>)>>,
}

impl ClientCache {
    /// The client, from the cache if fresh, else from the store.
    pub async fn get(&self, store: &Store, client_id: &str) -> Result<Option<Arc<Client>>> {
        let now = Instant::now();
        if let Some((at, c)) = self.lock().get(client_id) {
            if now.duration_since(*at) < CLIENT_CACHE_TTL {
                return Ok(Some(c.clone()));
            }
        }
        let Some(client) = store.get_client(client_id).await? else {
            self.invalidate(client_id);
            return Ok(None);
        };
        let client = Arc::new(client);
        let mut entries = self.lock();
        if entries.len() >= MAX_CLIENTS {
            entries.clear();
        }
        entries.insert(client_id.to_owned(), (now, client.clone()));
        Ok(Some(client))
    }

    /// Forgets a client (after this instance changed or deleted it).
    pub fn invalidate(&self, client_id: &str) {
        self.lock().remove(client_id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, Arc<Client>)>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}
