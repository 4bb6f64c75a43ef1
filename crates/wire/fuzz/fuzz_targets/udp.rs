//! UDP: parsing never panics; what parses re-emits to a datagram that
//! parses to the same representation and payload.
#![no_main]

use bypass_wire::{ChecksumCapabilities, Ipv4Address, UdpPacket, UdpRepr};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first 8 bytes pick the pseudo-header addresses.
    if data.len() < 8 {
        return;
    }
    let src = Ipv4Address([data[0], data[1], data[2], data[3]]);
    let dst = Ipv4Address([data[4], data[5], data[6], data[7]]);
    let data = &data[8..];
    let Ok(packet) = UdpPacket::new_checked(data) else {
        return;
    };
    let payload = packet.payload();
    let _ = UdpRepr::parse(&packet, src, dst, &ChecksumCapabilities::default());
    let Ok(repr) = UdpRepr::parse(&packet, src, dst, &ChecksumCapabilities::ignored()) else {
        return;
    };
    let _ = repr.to_string();
    let caps = ChecksumCapabilities::default();
    let mut out = vec![0u8; repr.buffer_len(payload.len())];
    repr.emit(
        &mut UdpPacket::new_unchecked(&mut out[..]),
        src,
        dst,
        payload.len(),
        |p| p.copy_from_slice(payload),
        &caps,
    );
    let reparsed = UdpPacket::new_checked(&out[..]).expect("emitted datagram checks");
    assert_eq!(UdpRepr::parse(&reparsed, src, dst, &caps), Ok(repr));
    assert_eq!(reparsed.payload(), payload);
});
