//! Devices: where Ethernet frames enter and leave the user-space stack.
//!
//! A [`Device`] moves whole Ethernet frames, held in [`Buffer`]s, in batches. It knows nothing
//! about IP or TCP. The stack above it (`bypass-inet`) is generic over this trait, so the same
//! code runs over an in-memory simulated wire, AF_XDP, AF_PACKET rings or a TAP interface.

pub mod hub;
pub mod sim;

pub mod af_packet;
pub mod af_xdp;
pub mod bpf;
pub mod netns;
mod sys;
pub mod tap;
pub mod topo;

pub use sys::error::{DeviceError, ErrorKind};

use bypass_runtime::{Buffer, BufferPool};

/// What a device can do, read once by the stack at start-up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceCaps {
    /// Largest IP packet (Ethernet payload) the device carries, e.g. 1500.
    pub mtu: usize,
    /// Largest number of frames one `rx_burst`/`tx_burst` call moves efficiently.
    pub max_burst: usize,
    /// The device verifies checksums of received IPv4/TCP/UDP (the stack may skip it).
    pub rx_checksum_offload: bool,
    /// The device fills checksums of transmitted IPv4/TCP/UDP (the stack may leave them zero).
    pub tx_checksum_offload: bool,
}

impl Default for DeviceCaps {
    fn default() -> Self {
        DeviceCaps {
            mtu: 1500,
            max_burst: 32,
            rx_checksum_offload: false,
            tx_checksum_offload: false,
        }
    }
}

/// Counters every device keeps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceStats {
    pub rx_frames: u64,
    pub rx_bytes: u64,
    pub tx_frames: u64,
    pub tx_bytes: u64,
    /// Frames the device dropped on receive (ring full, no buffer, oversized).
    pub rx_dropped: u64,
    /// Frames the device could not send (ring full is not a drop: they stay with the caller).
    pub tx_dropped: u64,
}

/// A network interface driven from user space, frame by frame.
pub trait Device {
    /// Appends up to `max` received frames to `frames`; returns how many. Never blocks.
    fn rx_burst(&mut self, frames: &mut Vec<Buffer>, max: usize) -> usize;

    /// Sends frames from the front of `frames`, in order, and removes the ones the device took;
    /// frames it had no room for stay in `frames` for the next call. Returns how many it took.
    /// Never blocks.
    fn tx_burst(&mut self, frames: &mut Vec<Buffer>) -> usize;

    /// The pool frames to transmit should come from: on devices whose memory is shared with
    /// the NIC (an AF_XDP UMEM), a frame from this pool is sent without a copy.
    fn pool(&self) -> &BufferPool;

    /// The interface's hardware address.
    fn mac(&self) -> [u8; 6];

    fn caps(&self) -> DeviceCaps;

    fn stats(&self) -> DeviceStats;
}

impl<D: Device + ?Sized> Device for Box<D> {
    fn rx_burst(&mut self, frames: &mut Vec<Buffer>, max: usize) -> usize {
        (**self).rx_burst(frames, max)
    }
    fn tx_burst(&mut self, frames: &mut Vec<Buffer>) -> usize {
        (**self).tx_burst(frames)
    }
    fn pool(&self) -> &BufferPool {
        (**self).pool()
    }
    fn mac(&self) -> [u8; 6] {
        (**self).mac()
    }
    fn caps(&self) -> DeviceCaps {
        (**self).caps()
    }
    fn stats(&self) -> DeviceStats {
        (**self).stats()
    }
}
