//! ICMPv4: parsing never panics; what parses re-emits identically once the
//! checksum is recomputed.
#![no_main]

use bypass_wire::{ChecksumCapabilities, Icmpv4Packet, Icmpv4Repr};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(packet) = Icmpv4Packet::new_checked(data) else {
        return;
    };
    let _ = Icmpv4Repr::parse(&packet, &ChecksumCapabilities::default());
    let Ok(repr) = Icmpv4Repr::parse(&packet, &ChecksumCapabilities::ignored()) else {
        return;
    };
    let _ = repr.to_string();
    let caps = ChecksumCapabilities::default();
    let mut out = vec![0u8; repr.buffer_len()];
    repr.emit(&mut Icmpv4Packet::new_unchecked(&mut out[..]), &caps);
    let reparsed = Icmpv4Packet::new_checked(&out[..]).expect("emitted message checks");
    assert_eq!(Icmpv4Repr::parse(&reparsed, &caps), Ok(repr));
});
