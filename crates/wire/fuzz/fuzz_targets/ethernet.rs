//! Ethernet: parsing never panics; what parses re-emits identically.
#![no_main]

use bypass_wire::{EthernetFrame, EthernetRepr};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(frame) = EthernetFrame::new_checked(data) else {
        return;
    };
    let Ok(repr) = EthernetRepr::parse(&frame) else {
        return;
    };
    let _ = repr.to_string();
    let payload = frame.payload();
    let mut out = vec![0u8; repr.buffer_len(payload.len())];
    let mut out_frame = EthernetFrame::new_unchecked(&mut out[..]);
    repr.emit(&mut out_frame);
    out_frame.payload_mut().copy_from_slice(payload);
    assert_eq!(out, data);
});
