//! TCP with options: parsing never panics; what parses re-emits to a
//! segment that parses to the same representation (SACK blocks that do not
//! fit next to the other options may be dropped, last first).
#![no_main]

use bypass_wire::{ChecksumCapabilities, Ipv4Address, TcpPacket, TcpRepr, TCP_MAX_HEADER_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let src = Ipv4Address::new(10, 0, 0, 1);
    let dst = Ipv4Address::new(10, 0, 0, 2);
    let Ok(packet) = TcpPacket::new_checked(data) else {
        return;
    };
    let _ = packet.segment_len();
    for option in packet.options_iter() {
        let _ = option;
    }
    let _ = TcpRepr::parse(&packet, src, dst, &ChecksumCapabilities::default());
    let Ok(repr) = TcpRepr::parse(&packet, src, dst, &ChecksumCapabilities::ignored()) else {
        return;
    };
    let _ = repr.to_string();
    assert!(repr.window_scale.is_none_or(|ws| ws <= 14));
    assert_eq!(repr.ack_number.is_some(), repr.flags.ack());
    assert!(repr.header_len() <= TCP_MAX_HEADER_LEN && repr.header_len() % 4 == 0);

    let caps = ChecksumCapabilities::default();
    let mut out = vec![0u8; repr.buffer_len()];
    repr.emit(&mut TcpPacket::new_unchecked(&mut out[..]), src, dst, &caps);
    let reparsed = TcpPacket::new_checked(&out[..]).expect("emitted segment checks");
    let again = TcpRepr::parse(&reparsed, src, dst, &caps).expect("emitted segment parses");
    assert_eq!(again.segment_len(), repr.segment_len());
    let kept = again.sack_ranges.iter().flatten().count();
    let mut expected = repr;
    for slot in expected.sack_ranges.iter_mut().skip(kept) {
        *slot = None;
    }
    assert_eq!(again, expected);
});
