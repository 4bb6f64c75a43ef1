//! Per-frame offload metadata: what a device does to a frame besides moving it (complete a
//! checksum, cut a TCP segment into MTU-sized ones), or knows about a frame it received
//! (its checksum was verified, or never computed because it came from this host).
//!
//! It travels *next to* the frames ([`crate::Device::tx_burst_offload`],
//! [`crate::Device::rx_burst_offload`]), never inside them: a frame stays a plain Ethernet frame
//! for every user of the device. The fields are those of Linux's `struct virtio_net_hdr`
//! (`include/uapi/linux/virtio_net.h`), which devices such as AF_PACKET with
//! `PACKET_VNET_HDR` put in front of each frame they exchange with the kernel.

/// The state of a frame's transport (TCP or UDP) checksum.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FrameChecksum {
    /// Software's business: complete in the frame on transmit; on receive, nobody verified
    /// it, so the stack must.
    #[default]
    Software,
    /// Only the pseudo-header part is in the frame: the checksum field at `start + offset`
    /// holds the folded (not complemented) sum of the IPv4 pseudo-header, and the one's
    /// complement of the sum from byte `start` to the end of the frame completes it
    /// (`VIRTIO_NET_HDR_F_NEEDS_CSUM`). On transmit the device completes it. On receive the
    /// frame came from this host's kernel, which never computed it: there is nothing to
    /// verify, and the field does not hold the real checksum.
    Partial {
        /// Where the summed range starts, from the start of the frame (the transport header).
        start: u16,
        /// Where the checksum field is, from `start` (16 for TCP, 6 for UDP).
        offset: u16,
    },
    /// Receive only: verified before it reached the stack (`VIRTIO_NET_HDR_F_DATA_VALID`).
    Verified,
}

/// What a device does with, or knows about, one frame.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameOffload {
    pub checksum: FrameChecksum,
    /// For a TCP/IPv4 frame that carries more than one segment's worth of payload: on
    /// transmit, the device cuts the payload into segments of this many bytes (the last may
    /// be shorter), each behind a copy of the headers with its own IPv4 length, identification
    /// and checksum, sequence number and TCP checksum; FIN and PSH stay on the last segment
    /// only. On receive, the size of the segments a sender's offload or a receiver's
    /// coalescing left together (for information). 0: an ordinary frame. On transmit it
    /// needs [`FrameChecksum::Partial`] over the TCP header.
    pub tcp_segment_size: u16,
    /// With `tcp_segment_size`: the bytes of Ethernet, IPv4 and TCP headers (options included)
    /// in front of the payload.
    pub header_len: u16,
}

impl FrameOffload {
    /// Whether the frame's transport checksum need not be verified on receive.
    #[inline]
    pub fn checksum_trusted(&self) -> bool {
        !matches!(self.checksum, FrameChecksum::Software)
    }
}
