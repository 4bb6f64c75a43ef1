//! `struct virtio_net_hdr`: the 10 bytes a packet socket with `PACKET_VNET_HDR` puts in front
//! of every frame it exchanges with the kernel, in both rings and in `sendmsg`/`recvmsg`.
//!
//! Layout (`include/uapi/linux/virtio_net.h`; packet sockets use the legacy, native-endian
//! form, `vio_le()` in `net/packet/af_packet.c`):
//!
//! ```text
//! 0  flags        u8   NEEDS_CSUM (1), DATA_VALID (2)
//! 1  gso_type     u8   NONE (0), TCPV4 (1), UDP (3), TCPV6 (4), UDP_L4 (5); | ECN (0x80)
//! 2  hdr_len      u16  Ethernet + IP + transport header bytes
//! 4  gso_size     u16  payload bytes per segment
//! 6  csum_start   u16  where the checksummed range starts (from the Ethernet header)
//! 8  csum_offset  u16  where the checksum field is, from csum_start
//! ```
//!
//! On transmit the kernel (`virtio_net_hdr_to_skb`) turns NEEDS_CSUM into a partial
//! checksum it completes, and a GSO type into a segmentation it performs (in software if the
//! interface cannot); a TCP GSO frame must have NEEDS_CSUM with `csum_offset` 16. On receive
//! (`virtio_net_hdr_from_skb`) it reports a partial checksum as NEEDS_CSUM, a verified one as
//! DATA_VALID, and a packet a sender's GSO left whole with its GSO type and size.

use crate::{FrameChecksum, FrameOffload};

/// `sizeof(struct virtio_net_hdr)`.
pub const LEN: usize = 10;

const F_NEEDS_CSUM: u8 = 1;
const F_DATA_VALID: u8 = 2;
const GSO_NONE: u8 = 0;
const GSO_TCPV4: u8 = 1;
const GSO_ECN: u8 = 0x80;

/// The header that asks the kernel for `offload` on a transmitted frame.
pub fn encode(offload: &FrameOffload) -> [u8; LEN] {
    let mut h = [0u8; LEN];
    if let FrameChecksum::Partial { start, offset } = offload.checksum {
        h[0] = F_NEEDS_CSUM;
        h[6..8].copy_from_slice(&start.to_ne_bytes());
        h[8..10].copy_from_slice(&offset.to_ne_bytes());
    }
    if offload.tcp_segment_size > 0 {
        h[1] = GSO_TCPV4;
        h[2..4].copy_from_slice(&offload.header_len.to_ne_bytes());
        h[4..6].copy_from_slice(&offload.tcp_segment_size.to_ne_bytes());
    } else {
        h[1] = GSO_NONE;
    }
    h
}

/// What the kernel says about a received frame. Unknown flags are ignored; a GSO type other
/// than TCP over IPv4 (none reaches an IPv4-only stack as TCP) leaves the segment size 0.
pub fn decode(h: &[u8; LEN]) -> FrameOffload {
    let u16_at = |at: usize| u16::from_ne_bytes([h[at], h[at + 1]]);
    let checksum = if h[0] & F_NEEDS_CSUM != 0 {
        FrameChecksum::Partial {
            start: u16_at(6),
            offset: u16_at(8),
        }
    } else if h[0] & F_DATA_VALID != 0 {
        FrameChecksum::Verified
    } else {
        FrameChecksum::Software
    };
    let (tcp_segment_size, header_len) = if h[1] & !GSO_ECN == GSO_TCPV4 {
        (u16_at(4), u16_at(2))
    } else {
        (0, 0)
    };
    FrameOffload {
        checksum,
        tcp_segment_size,
        header_len,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ordinary_frame_has_an_all_zero_header() {
        assert_eq!(encode(&FrameOffload::default()), [0; LEN]);
        assert_eq!(decode(&[0; LEN]), FrameOffload::default());
    }

    #[test]
    fn a_tcp_segmentation_request_has_the_kernels_layout() {
        let offload = FrameOffload {
            checksum: FrameChecksum::Partial {
                start: 34,
                offset: 16,
            },
            tcp_segment_size: 1448,
            header_len: 66,
        };
        let h = encode(&offload);
        let mut want = [0u8; LEN];
        want[0] = 1; // VIRTIO_NET_HDR_F_NEEDS_CSUM
        want[1] = 1; // VIRTIO_NET_HDR_GSO_TCPV4
        want[2..4].copy_from_slice(&66u16.to_ne_bytes());
        want[4..6].copy_from_slice(&1448u16.to_ne_bytes());
        want[6..8].copy_from_slice(&34u16.to_ne_bytes());
        want[8..10].copy_from_slice(&16u16.to_ne_bytes());
        assert_eq!(h, want);
        assert_eq!(decode(&h), offload);
    }

    #[test]
    fn received_headers_are_read_as_the_kernel_writes_them() {
        // DATA_VALID: a checksum verified before the frame reached us.
        let mut h = [0u8; LEN];
        h[0] = 2;
        assert_eq!(decode(&h).checksum, FrameChecksum::Verified);
        assert!(decode(&h).checksum_trusted());
        // NEEDS_CSUM wins over DATA_VALID, and TCPV4 with ECN still names a TCP segment.
        h[0] = 3;
        h[1] = 0x81;
        h[4..6].copy_from_slice(&1460u16.to_ne_bytes());
        h[6..8].copy_from_slice(&34u16.to_ne_bytes());
        h[8..10].copy_from_slice(&16u16.to_ne_bytes());
        let o = decode(&h);
        assert_eq!(
            o.checksum,
            FrameChecksum::Partial {
                start: 34,
                offset: 16
            }
        );
        assert_eq!(o.tcp_segment_size, 1460);
        // A UDP (or IPv6) GSO packet is no TCP/IPv4 segment; an unknown flag changes nothing.
        h[0] = 0x40;
        h[1] = 5;
        assert_eq!(decode(&h), FrameOffload::default());
        assert!(!decode(&h).checksum_trusted());
    }
}
