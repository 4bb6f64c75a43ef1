//! The Linux system calls under the real devices, kept small and in one place (mio-style).
//!
//! Every `unsafe` block of the real devices that is not ring access lives here: sockets and
//! their options, `mmap`, interface ioctls, and the rtnetlink messages that attach XDP programs.
//! The modules above this one see only safe functions that return `io::Result`.

pub mod error;
pub mod netlink;
pub mod os;
