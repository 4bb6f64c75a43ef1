//! The runtime under every bypass layer.
//!
//! - [`clock`]: time as a value ([`Instant`]) read from an injectable [`Clock`], real or virtual.
//! - [`timer`]: deadlines that wake tasks when the clock passes them.
//! - [`scheduler`]: a single-threaded run-to-completion scheduler of tasks kept in a slab; a task
//!   is named by a [`TaskId`], and wakers mark readiness in a bitset without allocating.
//! - [`buffer`]: refcounted [`Buffer`]s with headroom, carved from a [`BufferPool`], and the
//!   scatter-gather array [`Sga`] built from them.
//!
//! Nothing here knows about devices or protocols.

pub mod buffer;
pub mod clock;
mod memory;
pub mod scheduler;
pub mod timer;

pub use buffer::{Buffer, BufferPool, PoolConfig, PoolStats, Sga};
pub use clock::{Clock, Instant};
pub use memory::Memory;
pub use scheduler::{FutureTask, Scheduler, Task, TaskId};
pub use timer::{Sleep, TimerId, Timers};
