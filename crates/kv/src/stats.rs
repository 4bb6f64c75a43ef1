//! Counters of a running server, readable from other threads while it runs.

use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters of a server. Shared through an `Arc`; every field is a relaxed atomic, so a
/// reader sees each number recently, not all of them at one instant.
#[derive(Debug, Default)]
pub struct Stats {
    /// Clients connected now.
    pub connected_clients: AtomicU64,
    /// Connections accepted since start.
    pub total_connections: AtomicU64,
    /// Connections refused because `max_clients` were connected.
    pub rejected_connections: AtomicU64,
    /// Commands executed since start (replayed ones not included).
    pub total_commands: AtomicU64,
    /// Connections closed for sending malformed RESP.
    pub protocol_errors: AtomicU64,
    /// Bytes held by the request parsers of all connections now.
    pub input_buffered: AtomicU64,
    /// The most bytes one connection's parser held at any time.
    pub peak_input_buffered: AtomicU64,
    /// Reply bytes handed to the network and not yet acknowledged by the libOS, over all
    /// connections.
    pub output_in_flight: AtomicU64,
    /// Keys in the keyspace (updated once per event-loop batch).
    pub keys: AtomicU64,
    /// Bytes of keys and values (updated once per event-loop batch).
    pub data_bytes: AtomicU64,
    /// Keys removed by expiry (lazily or by the sweep).
    pub expired_keys: AtomicU64,
    /// Batches of write commands appended to the append-only file since start (one per turn
    /// of the event loop that wrote anything).
    pub aof_appends: AtomicU64,
    /// Syncs of the append-only file since start.
    pub aof_syncs: AtomicU64,
    /// Commands replayed from the append-only file at start.
    pub aof_replayed: AtomicU64,
    /// The local TCP port the server listens on (0 until it listens).
    pub port: AtomicU64,
}

impl Stats {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn sub(counter: &AtomicU64, n: u64) {
        counter.fetch_sub(n, Ordering::Relaxed);
    }

    pub(crate) fn set(counter: &AtomicU64, n: u64) {
        counter.store(n, Ordering::Relaxed);
    }

    pub(crate) fn raise(counter: &AtomicU64, n: u64) {
        counter.fetch_max(n, Ordering::Relaxed);
    }
}
