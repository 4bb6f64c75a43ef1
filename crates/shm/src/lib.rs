//! Lock-free shared-memory message queues between processes, with no kernel on the data path.
//!
//! A [`Channel`] joins two processes (or two threads) through one shared region. One side
//! [`Channel::create`]s it under a name, the other [`Channel::open`]s it; then each side sends
//! [`Sga`](bypass_runtime::Sga) messages with [`Channel::try_send`] (or [`Channel::stage`] +
//! [`Channel::flush`] for a batch) and receives them with [`Channel::try_recv`] /
//! [`Channel::recv`].
//!
//! # The region
//!
//! The region is a POSIX shared-memory object `/dev/shm/bypass-shm.NAME` of mode 0600 (only the
//! same user can open it). It holds a header (magic, version, geometry, each side's pid and
//! state), two single-producer/single-consumer descriptor rings (one per direction), two
//! return rings, and a buffer arena split in two halves, one per side (see [`layout`]).
//!
//! Each half is wrapped as a [`BufferPool`](bypass_runtime::BufferPool): buffers from
//! [`Channel::alloc`] live in the sender's half, a descriptor `(chunk, start, len, flags)`
//! names them, and the receiver gets a [`Buffer`](bypass_runtime::Buffer) on the very same
//! bytes: no copy. When the receiver drops its last handle on a chunk, the chunk goes home
//! through the return ring and the sender's pool can hand it out again. A message of several
//! segments is several descriptors with a "more follows" flag, published together: the
//! receiver gets it whole or not at all.
//!
//! # Small messages travel inline
//!
//! A ring slot is 128 B (two cache lines): the descriptor, up to
//! [`layout::INLINE_MAX`] = 108 bytes of message, and a stamp. A message of at most
//! [`Channel::inline_max`] bytes (108, or a buffer's data capacity if that is smaller) is
//! copied into its slot instead: its buffers are free again as soon as it is sent, and the
//! receiver copies the bytes into a buffer of *its own* half. Such a message costs the two
//! cache lines of its slot and nothing else: no chunk is lent, so none comes home through a
//! return ring, and the payload is not a third line to fetch. Zero-copy is what large
//! messages need; for a few dozen bytes the copies are cheaper than the bookkeeping. A
//! received small message occupies a chunk of the receiver's half until dropped: while every
//! chunk of that half is in use, small messages wait in the ring.
//!
//! Data rings are *stamped* (see [`ring`]): the sender writes, last in each slot it
//! publishes, a word derived from the slot's index, and the receiver polls that word in the
//! next slot, not the ring's tail index. So a receiver waiting for a message spins on the
//! line the message arrives in, and sees it one cache-line transfer after it was published.
//!
//! The name exists only until the peer attaches: the opener unlinks it at once, so after a
//! crash nothing is left in `/dev/shm` and the name can be created again. A region left by a
//! creator that died before any peer came is detected (its pid no longer runs) and replaced by
//! the next [`Channel::create`] of the name, or removed by a [`Channel::open`] of it.
//!
//! # Waiting and liveness
//!
//! Receiving busy-polls by default ([`WaitMode::Spin`]). [`WaitMode::Block`] polls a while,
//! then sleeps on a futex on the ring's tail word, which the sender wakes only when the
//! receiver has announced that it sleeps (a flag on its own cache line): an idle process burns
//! no core, and a busy sender pays no system call.
//!
//! Each side watches the other through a pidfd, opened from the pid the peer wrote in the
//! header. A pidfd names one process exactly (no confusion with a later process of the same
//! pid, unlike `kill(pid, 0)`), and checking it is one non-blocking `poll`, done at most once
//! per millisecond while idle; a sleeping receiver wakes at least every 5 ms to check. So a
//! pending receive fails with [`ErrorKind::PeerGone`] within a few milliseconds of the peer's
//! death, after every message the peer had published has been received. A heartbeat would
//! cost the peer periodic stores and still need a timeout to decide; a robust futex only
//! covers a peer holding a lock, which this lock-free protocol never does.
//!
//! # A hostile peer
//!
//! Every value read from shared memory is checked before use: ring indices against what the
//! protocol allows, stamps against the one exact value they must have, descriptors against
//! the geometry read once at open (a chunk index, a range inside one chunk, a chunk not
//! already held, known flags; an inline one against the inline limit, naming no chunk),
//! returned chunks against the set in flight, the peer's state word against the known states. Loops over shared data are bounded
//! by the ring size. A violation fails the channel with [`ErrorKind::Corrupt`]. Garbage in the
//! arena (or in the bytes of an inline slot) can only change the bytes of messages, never
//! where this side reads or writes. What a peer of the same user can still do is make the
//! object shorter with `ftruncate`, which makes this side's next access to the lost pages
//! fault (SIGBUS): such a peer could as well `ptrace` it. (Sealing would close this: a
//! `memfd` with `F_SEAL_SHRINK | F_SEAL_GROW` cannot change size, but POSIX shared-memory
//! objects cannot be sealed, so the opener would have to receive the creator's memfd, over a
//! Unix socket or by opening `/proc/PID/fd/N`; not done.)
//!
//! # Unsafe code
//!
//! Only the `region` module (the mapping and raw access to shared words) has `unsafe`.
//!
//! # Model checking
//!
//! The ring is written against atomics that `--cfg loom` swaps for loom's:
//! `RUSTFLAGS="--cfg loom" cargo test -p bypass-shm --release --test loom`.

#[cfg(not(loom))]
pub mod bench;
#[cfg(not(loom))]
mod channel;
#[cfg(not(loom))]
mod error;
#[cfg(not(loom))]
pub mod layout;
#[cfg(not(loom))]
mod os;
#[cfg(not(loom))]
mod region;
pub mod ring;
#[cfg(not(loom))]
#[doc(hidden)]
pub mod testing;

#[cfg(not(loom))]
pub use channel::{Channel, ChannelConfig, ChannelStats, TrySendError, WaitMode};
#[cfg(not(loom))]
pub use error::{Error, ErrorKind};
#[cfg(not(loom))]
pub use os::object_path;
