//! The keyspace: byte-string keys to byte-string values, each with an optional expiry time.
//!
//! Expiry times are absolute wall-clock milliseconds since the Unix epoch, as in Redis, so an
//! append-only file replayed after a restart expires keys when it should. A key past its time
//! is gone for every reader at once (*lazy* expiry, checked on each access); a periodic
//! [`Store::sweep`] also removes expired keys nobody touches, so they do not hold memory.

use std::cmp::Reverse;
use std::collections::hash_map::Entry as MapEntry;
use std::collections::{BinaryHeap, HashMap};

/// A stored value and its expiry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Value {
    pub bytes: Vec<u8>,
    /// Unix milliseconds at which the key disappears; `None`: never.
    pub expire_at: Option<u64>,
}

/// The key-value map, with its expiry schedule.
#[derive(Default)]
pub struct Store {
    map: HashMap<Vec<u8>, Value>,
    /// Keys with an expiry, soonest first. An entry is stale once its key was deleted or given
    /// another time; stale entries are skipped when they come up.
    schedule: BinaryHeap<Reverse<(u64, Vec<u8>)>>,
    /// Keys that have an expiry.
    volatile: usize,
    /// Bytes of keys and values held.
    bytes: usize,
    /// Keys removed because their time came.
    expired: u64,
}

impl Store {
    pub fn new() -> Store {
        Store::default()
    }

    /// Keys stored, expired-but-not-yet-removed ones included.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Keys that have an expiry.
    pub fn volatile(&self) -> usize {
        self.volatile
    }

    /// Keys removed because their time came, since the store was made.
    pub fn expired(&self) -> u64 {
        self.expired
    }

    /// Bytes of keys and values held (not counting the map's own overhead).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The live value of `key` at `now` (Unix ms); an expired key is removed.
    pub fn get(&mut self, key: &[u8], now: u64) -> Option<&Value> {
        self.expire_if_due(key, now);
        self.map.get(key)
    }

    /// The live value of `key`, writable; an expired key is removed.
    pub fn get_mut(&mut self, key: &[u8], now: u64) -> Option<&mut Value> {
        self.expire_if_due(key, now);
        self.map.get_mut(key)
    }

    /// Stores `bytes` under `key` with `expire_at`, replacing any value and expiry.
    pub fn set(&mut self, key: &[u8], bytes: Vec<u8>, expire_at: Option<u64>) {
        let value_len = bytes.len();
        match self.map.entry(key.to_vec()) {
            MapEntry::Occupied(mut e) => {
                let old = e.get();
                self.bytes -= old.bytes.len();
                self.volatile -= usize::from(old.expire_at.is_some());
                *e.get_mut() = Value { bytes, expire_at };
            }
            MapEntry::Vacant(e) => {
                self.bytes += key.len();
                e.insert(Value { bytes, expire_at });
            }
        }
        self.bytes += value_len;
        if let Some(t) = expire_at {
            self.volatile += 1;
            self.schedule_expiry(key, t);
        }
    }

    /// Sets or clears the expiry of an existing live key; false if there is none.
    pub fn set_expiry(&mut self, key: &[u8], expire_at: Option<u64>, now: u64) -> bool {
        self.expire_if_due(key, now);
        let Some(v) = self.map.get_mut(key) else {
            return false;
        };
        self.volatile -= usize::from(v.expire_at.is_some());
        self.volatile += usize::from(expire_at.is_some());
        v.expire_at = expire_at;
        if let Some(t) = expire_at {
            self.schedule_expiry(key, t);
        }
        true
    }

    /// Removes `key`; true if a live key was removed.
    pub fn remove(&mut self, key: &[u8], now: u64) -> bool {
        self.expire_if_due(key, now);
        self.remove_now(key)
    }

    /// Removes every key.
    pub fn clear(&mut self) {
        self.map = HashMap::new();
        self.schedule = BinaryHeap::new();
        self.volatile = 0;
        self.bytes = 0;
    }

    /// Removes up to `budget` keys whose time has come; returns how many were removed.
    pub fn sweep(&mut self, now: u64, budget: usize) -> usize {
        let mut removed = 0;
        while removed < budget {
            let Some(Reverse((t, _))) = self.schedule.peek() else {
                break;
            };
            if *t > now {
                break;
            }
            let Reverse((t, key)) = self.schedule.pop().expect("peeked");
            // Skip stale entries: the key is gone or has another time now.
            if self.map.get(&key).is_some_and(|v| v.expire_at == Some(t)) {
                self.remove_now(&key);
                self.expired += 1;
                removed += 1;
            }
        }
        removed
    }

    fn schedule_expiry(&mut self, key: &[u8], t: u64) {
        self.schedule.push(Reverse((t, key.to_vec())));
        // Stale entries pile up when keys get new times over and over: rebuild from the map
        // before the schedule outgrows it.
        if self.schedule.len() > 2 * self.volatile + 1024 {
            self.schedule = self
                .map
                .iter()
                .filter_map(|(k, v)| v.expire_at.map(|t| Reverse((t, k.clone()))))
                .collect();
        }
    }

    fn expire_if_due(&mut self, key: &[u8], now: u64) {
        if self
            .map
            .get(key)
            .and_then(|v| v.expire_at)
            .is_some_and(|t| t <= now)
        {
            self.remove_now(key);
            self.expired += 1;
        }
    }

    fn remove_now(&mut self, key: &[u8]) -> bool {
        match self.map.remove(key) {
            Some(v) => {
                self.bytes -= key.len() + v.bytes.len();
                self.volatile -= usize::from(v.expire_at.is_some());
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expired_keys_vanish_on_access_and_on_sweep() {
        let mut s = Store::new();
        s.set(b"a", b"1".to_vec(), Some(100));
        s.set(b"b", b"2".to_vec(), Some(200));
        s.set(b"c", b"3".to_vec(), None);
        assert_eq!(s.volatile(), 2);
        assert_eq!(s.bytes(), 6);
        assert_eq!(
            s.get(b"a", 99).map(|v| v.bytes.clone()),
            Some(b"1".to_vec())
        );
        assert!(s.get(b"a", 100).is_none());
        assert_eq!(s.len(), 2);
        // Re-setting b without expiry makes its schedule entry stale.
        s.set(b"b", b"22".to_vec(), None);
        assert_eq!(s.sweep(1000, 10), 0);
        assert_eq!(s.len(), 2);
        assert_eq!(s.volatile(), 0);
        s.set(b"d", b"4".to_vec(), Some(50));
        assert_eq!(s.sweep(49, 10), 0);
        assert_eq!(s.sweep(50, 10), 1);
        assert_eq!(s.len(), 2);
        assert_eq!(s.bytes(), 5);
        s.clear();
        assert!(s.is_empty());
        assert_eq!(s.bytes(), 0);
    }
}
