//! Devices: where Ethernet frames enter and leave the user-space stack.
//!
//! A [`Device`] moves whole Ethernet frames, held in [`Buffer`]s, in batches. It knows nothing
//! about IP or TCP beyond what an offload it announces takes (where a checksum goes, the size
//! to cut a segment at, both told per frame by the stack). The stack above it (`bypass-inet`)
//! is generic over this trait, so the same code runs over an in-memory simulated wire, AF_XDP,
//! AF_PACKET rings or a TAP interface.
//!
//! A device that can do more than move frames (complete checksums, cut large TCP segments
//! into MTU-sized ones) says so in its [`DeviceCaps`] and takes or reports a [`FrameOffload`]
//! next to each frame through [`Device::tx_burst_offload`] and [`Device::rx_burst_offload`];
//! the plain [`Device::rx_burst`] and [`Device::tx_burst`] move ordinary frames as before.

pub mod hub;
pub mod sim;

pub mod af_packet;
pub mod af_xdp;
pub mod bpf;
pub mod netns;
mod offload;
mod sys;
pub mod tap;
pub mod topo;

pub use offload::{FrameChecksum, FrameOffload};
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
    /// The device takes a [`FrameOffload`] with each frame it sends
    /// ([`Device::tx_burst_offload`]) and completes the TCP or UDP checksums marked
    /// [`FrameChecksum::Partial`], so software writes only the pseudo-header sum; it reports
    /// one with each frame it receives ([`Device::rx_burst_offload`]), saying whether the
    /// frame's transport checksum still needs verifying. Off by default.
    pub frame_offloads: bool,
    /// TCP segmentation offload: the largest TCP/IPv4 packet (IPv4 header included, above
    /// the MTU) the device takes in one frame and cuts into segments itself, at the
    /// [`FrameOffload::tcp_segment_size`] of that frame; such a frame comes from
    /// [`Device::large_frame_pool`]. A device that offers it may also deliver received
    /// TCP/IPv4 packets up to this size whole (a sender's segmentation offload or a
    /// receiver's coalescing left them so), again in buffers of its large-frame pool.
    /// Needs `frame_offloads`. 0 (the default): none, every frame fits the MTU both ways.
    pub tcp_segmentation_max: usize,
}

impl Default for DeviceCaps {
    fn default() -> Self {
        DeviceCaps {
            mtu: 1500,
            max_burst: 32,
            rx_checksum_offload: false,
            tx_checksum_offload: false,
            frame_offloads: false,
            tcp_segmentation_max: 0,
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

    /// The pool of chunks large enough for frames over the MTU, on a device whose caps offer
    /// TCP segmentation ([`DeviceCaps::tcp_segmentation_max`]): the stack builds the large
    /// segments it sends there, and the device delivers the large frames it receives in it.
    /// `None` (the default) on other devices.
    fn large_frame_pool(&self) -> Option<&BufferPool> {
        None
    }

    /// [`Device::rx_burst`] that also appends one [`FrameOffload`] per received frame to
    /// `offloads`, in the same order. A device without [`DeviceCaps::frame_offloads`] (the
    /// default implementation) reports the default for each: the checksum is software's to
    /// verify.
    fn rx_burst_offload(
        &mut self,
        frames: &mut Vec<Buffer>,
        offloads: &mut Vec<FrameOffload>,
        max: usize,
    ) -> usize {
        let n = self.rx_burst(frames, max);
        offloads.resize(offloads.len() + n, FrameOffload::default());
        n
    }

    /// [`Device::tx_burst`] where `offloads[i]` says what to do with `frames[i]`; an offload
    /// leaves `offloads` together with its frame. Only offloads the device's caps announce may
    /// be asked for: the default implementation, for devices without them, sends the frames
    /// as they are.
    fn tx_burst_offload(
        &mut self,
        frames: &mut Vec<Buffer>,
        offloads: &mut Vec<FrameOffload>,
    ) -> usize {
        debug_assert_eq!(frames.len(), offloads.len(), "one offload per frame");
        debug_assert!(
            offloads.iter().all(|o| *o == FrameOffload::default()),
            "an offload asked of a device without frame offloads"
        );
        let n = self.tx_burst(frames);
        offloads.drain(..n);
        n
    }
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
    fn large_frame_pool(&self) -> Option<&BufferPool> {
        (**self).large_frame_pool()
    }
    fn rx_burst_offload(
        &mut self,
        frames: &mut Vec<Buffer>,
        offloads: &mut Vec<FrameOffload>,
        max: usize,
    ) -> usize {
        (**self).rx_burst_offload(frames, offloads, max)
    }
    fn tx_burst_offload(
        &mut self,
        frames: &mut Vec<Buffer>,
        offloads: &mut Vec<FrameOffload>,
    ) -> usize {
        (**self).tx_burst_offload(frames, offloads)
    }
}
