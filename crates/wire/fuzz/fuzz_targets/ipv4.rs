//! IPv4: parsing never panics, with or without checksum verification; what
//! parses re-emits to a header that parses to the same representation.
#![no_main]

use bypass_wire::{ChecksumCapabilities, Ipv4Packet, Ipv4Repr};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(packet) = Ipv4Packet::new_checked(data) else {
        return;
    };
    let payload = packet.payload();
    let _ = packet.options();
    let _ = Ipv4Repr::parse(&packet, &ChecksumCapabilities::default());
    let Ok(repr) = Ipv4Repr::parse(&packet, &ChecksumCapabilities::ignored()) else {
        return;
    };
    let _ = repr.to_string();
    assert_eq!(repr.payload_len, payload.len());
    let caps = ChecksumCapabilities::default();
    let mut out = vec![0u8; repr.buffer_len()];
    let mut out_packet = Ipv4Packet::new_unchecked(&mut out[..]);
    repr.emit(&mut out_packet, &caps);
    out_packet.payload_mut().copy_from_slice(payload);
    let reparsed = Ipv4Packet::new_checked(&out[..]).expect("emitted header checks");
    assert_eq!(Ipv4Repr::parse(&reparsed, &caps), Ok(repr));
    assert_eq!(reparsed.payload(), payload);
});
