use super::*;
use crate::ethernet::{EtherType, EthernetFrame, EthernetRepr};
use crate::ipv4::{Ipv4Packet, Ipv4Repr};
use proptest::prelude::*;

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

// A handshake and a 5-byte write captured on a Linux loopback interface
// (whole Ethernet frames, zero MACs): 127.0.0.1:37286 -> 127.0.0.1:5555.
// Loopback offloads the TCP checksum, so in the first four the field holds
// the pseudo-header sum the device would complete (CHECKSUM_PARTIAL); the
// last one, a pure ACK, carries a full checksum.
const SYN: &str = "00000000000000000000000008004500003c21b3400040061b077f0000017f00000191a615b390988b2c00000000a002ffd7fe3000000204ffd70402080af051d0e4000000000103030a";
const SYN_ACK: &str = "00000000000000000000000008004500003c0000400040063cba7f0000017f00000115b391a6bdd9b0e090988b2da012ffcbfe3000000204ffd70402080a7fc3c47ff051d0e40103030a";
const ACK: &str = "00000000000000000000000008004500003421b4400040061b0e7f0000017f00000191a615b390988b2dbdd9b0e180100040fe2800000101080af051d0e47fc3c47f";
const DATA: &str = "00000000000000000000000008004500003921b5400040061b087f0000017f00000191a615b390988b2dbdd9b0e180180040fe2d00000101080af051d0e47fc3c47f68656c6c6f";
const FINAL_ACK: &str = "0000000000000000000000000800450000340000400040063cc27f0000017f00000191a615b390988b33bdd9b0e2801000403ec500000101080af051d2117fc3c5ac";

const LO: Ipv4Address = Ipv4Address::new(127, 0, 0, 1);

/// Walk a captured frame down to the TCP segment bytes, checking the
/// Ethernet and IPv4 layers on the way.
fn segment_of(frame: &[u8]) -> &[u8] {
    let eth = EthernetFrame::new_checked(frame).unwrap();
    let eth_repr = EthernetRepr::parse(&eth).unwrap();
    assert_eq!(eth_repr.ethertype, EtherType::Ipv4);
    let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
    let ip_repr = Ipv4Repr::parse(&ip, &ChecksumCapabilities::default()).unwrap();
    assert_eq!(ip_repr.next_header, IpProtocol::Tcp);
    assert_eq!((ip_repr.src_addr, ip_repr.dst_addr), (LO, LO));
    ip.payload()
}

fn no_tcp_checksum() -> ChecksumCapabilities {
    ChecksumCapabilities {
        tcp: crate::Checksum::None,
        ..ChecksumCapabilities::default()
    }
}

#[test]
fn captured_syn() {
    let frame = unhex(SYN);
    let seg = segment_of(&frame);
    let packet = TcpPacket::new_checked(seg).unwrap();
    // CHECKSUM_PARTIAL: the field is the folded pseudo-header sum.
    assert_eq!(
        packet.checksum(),
        checksum::pseudo_header(LO, LO, IpProtocol::Tcp, seg.len() as u32)
    );
    assert_eq!(
        TcpRepr::parse(&packet, LO, LO, &ChecksumCapabilities::default()),
        Err(Error::BadChecksum)
    );
    let repr = TcpRepr::parse(&packet, LO, LO, &no_tcp_checksum()).unwrap();
    assert_eq!(
        repr,
        TcpRepr {
            src_port: 37286,
            dst_port: 5555,
            flags: TcpFlags::SYN,
            seq_number: TcpSeqNumber(0x9098_8b2c),
            ack_number: None,
            window_len: 65495,
            window_scale: Some(10),
            max_seg_size: Some(65495),
            sack_permitted: true,
            sack_ranges: [None; 3],
            timestamp: Some(TcpTimestamp {
                tsval: 0xf051_d0e4,
                tsecr: 0
            }),
            payload: &[],
        }
    );
    assert_eq!(repr.segment_len(), 1);
    assert_eq!(packet.segment_len(), 1);
    assert_eq!(
        repr.to_string(),
        "TCP src=37286 dst=5555 seq=2425916204 win=65495 flags=S len=0 mss=65495 ws=10 sackOK ts=4031893732/0"
    );

    // With the checksum completed, it verifies and re-emits byte for byte.
    let mut fixed = seg.to_vec();
    TcpPacket::new_unchecked(&mut fixed[..]).fill_checksum(LO, LO);
    let packet = TcpPacket::new_checked(&fixed[..]).unwrap();
    let reparsed = TcpRepr::parse(&packet, LO, LO, &ChecksumCapabilities::default()).unwrap();
    assert_eq!(reparsed, repr);
    let mut out = vec![0u8; repr.buffer_len()];
    repr.emit(
        &mut TcpPacket::new_unchecked(&mut out[..]),
        LO,
        LO,
        &ChecksumCapabilities::default(),
    );
    assert_eq!(out, fixed);
}

/// Emitting what was parsed reproduces the captured bytes (Linux and this
/// crate lay options out the same way), checksum aside.
fn reemits_identically(hex: &str) -> TcpRepr<'static> {
    let frame: &'static [u8] = Box::leak(unhex(hex).into_boxed_slice());
    let seg = segment_of(frame);
    let packet = TcpPacket::new_checked(seg).unwrap();
    let repr = TcpRepr::parse(&packet, LO, LO, &no_tcp_checksum()).unwrap();
    assert_eq!(repr.header_len(), packet.header_len() as usize);
    let mut out = vec![0u8; repr.buffer_len()];
    repr.emit(
        &mut TcpPacket::new_unchecked(&mut out[..]),
        LO,
        LO,
        &ChecksumCapabilities::ignored(),
    );
    let mut expected = seg.to_vec();
    expected[16..18].fill(0);
    assert_eq!(out, expected);
    repr
}

#[test]
fn captured_handshake_and_data_reemit() {
    let syn_ack = reemits_identically(SYN_ACK);
    assert_eq!(syn_ack.flags, TcpFlags::SYN | TcpFlags::ACK);
    assert_eq!(syn_ack.ack_number, Some(TcpSeqNumber(0x9098_8b2d)));
    assert_eq!(
        syn_ack.to_string().split(" len").next().unwrap(),
        "TCP src=5555 dst=37286 seq=3185160416 ack=2425916205 win=65483 flags=SA"
    );

    let ack = reemits_identically(ACK);
    assert_eq!(ack.flags, TcpFlags::ACK);
    assert_eq!(ack.window_len, 64);
    assert_eq!(ack.timestamp.map(|t| t.tsecr), Some(0x7fc3_c47f));
    assert_eq!(ack.segment_len(), 0);

    let data = reemits_identically(DATA);
    assert_eq!(data.flags, TcpFlags::PSH | TcpFlags::ACK);
    assert_eq!(data.payload, b"hello");
    assert_eq!(data.segment_len(), 5);
    assert_eq!(data.seq_number, ack.seq_number);
}

#[test]
fn captured_full_checksum_verifies() {
    let frame = unhex(FINAL_ACK);
    let seg = segment_of(&frame);
    let packet = TcpPacket::new_checked(seg).unwrap();
    assert!(packet.verify_checksum(LO, LO));
    let repr = TcpRepr::parse(&packet, LO, LO, &ChecksumCapabilities::default()).unwrap();
    let mut out = vec![0u8; repr.buffer_len()];
    repr.emit(
        &mut TcpPacket::new_unchecked(&mut out[..]),
        LO,
        LO,
        &ChecksumCapabilities::default(),
    );
    assert_eq!(out, seg);
}

/// A SYN header with `options` (already a multiple of 4) and a valid
/// checksum.
fn syn_with_options(options: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; 20 + options.len()];
    {
        let mut p = TcpPacket::new_unchecked(&mut buf[..]);
        p.set_src_port(1000);
        p.set_dst_port(80);
        p.set_seq_number(TcpSeqNumber(7));
        p.set_header_len((20 + options.len()) as u8);
        p.set_flags(TcpFlags::SYN);
        p.set_window_len(1024);
        p.options_mut().copy_from_slice(options);
        p.fill_checksum(LO, LO);
    }
    buf
}

fn parse_options(options: &[u8]) -> Result<TcpRepr<'static>> {
    let buf: &'static [u8] = Box::leak(syn_with_options(options).into_boxed_slice());
    let p = TcpPacket::new_checked(buf)?;
    TcpRepr::parse(&p, LO, LO, &ChecksumCapabilities::default())
}

#[test]
fn option_edge_cases() {
    // Unknown kind 30 (MPTCP) with 4 bytes of data is skipped.
    let r = parse_options(&[30, 6, 1, 2, 3, 4, 2, 4, 5, 0xb4, 1, 1]).unwrap();
    assert_eq!(r.max_seg_size, Some(1460));
    // End of List stops parsing: the garbage after it is padding.
    let r = parse_options(&[2, 4, 5, 0xb4, 0, 0xff, 0xff, 0xff]).unwrap();
    assert_eq!(r.max_seg_size, Some(1460));
    // Window scale above 14 is taken as 14.
    let r = parse_options(&[1, 3, 3, 15]).unwrap();
    assert_eq!(r.window_scale, Some(14));
    // Four SACK blocks (no timestamps): the first three are kept.
    let mut opts = vec![1, 1, 5, 34];
    for i in 0..8u32 {
        opts.extend((i * 100).to_be_bytes());
    }
    let r = parse_options(&opts).unwrap();
    assert_eq!(
        r.sack_ranges,
        [Some((0, 100)), Some((200, 300)), Some((400, 500))]
    );
    // All-NOP and all-EOL option areas are fine.
    assert!(parse_options(&[1; 40]).is_ok());
    assert!(parse_options(&[0; 40]).is_ok());

    // Malformed lengths.
    for bad in [
        &[2, 0, 0, 0][..],                     // length 0
        &[2, 1, 0, 0],                         // length 1
        &[30, 5, 0, 0],                        // runs past the area
        &[1, 1, 1, 2],                         // kind without a length byte
        &[2, 3, 5, 1],                         // MSS with length 3
        &[3, 4, 7, 1],                         // WS with length 4
        &[4, 3, 0, 1],                         // SACK-Permitted with length 3
        &[8, 8, 0, 0, 0, 0, 0, 0],             // TS with length 8
        &[5, 2, 1, 1],                         // SACK with no block
        &[5, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], // SACK with a partial block
    ] {
        assert_eq!(parse_options(bad), Err(Error::BadOption), "{bad:?}");
    }
}

#[test]
fn options_iter_and_option_emit() {
    let opts = [2, 4, 5, 0xb4, 1, 3, 3, 7, 4, 2, 0, 0];
    let items: Vec<_> = TcpOptionsIter::new(&opts).collect::<Result<_>>().unwrap();
    assert_eq!(
        items,
        [
            TcpOption::MaxSegmentSize(1460),
            TcpOption::NoOperation,
            TcpOption::WindowScale(7),
            TcpOption::SackPermitted,
            TcpOption::EndOfList,
        ]
    );
    let mut out = [0u8; 12];
    let mut rest = &mut out[..];
    for item in &items {
        rest = item.emit(rest);
    }
    assert_eq!(rest.len(), 1);
    assert_eq!(out, opts);
    let bad: Vec<_> = TcpOptionsIter::new(&[1, 2, 0]).collect();
    assert_eq!(bad, [Ok(TcpOption::NoOperation), Err(Error::BadOption)]);
}

#[test]
fn rejects_with_reasons() {
    let caps = ChecksumCapabilities::default();
    let good = syn_with_options(&[2, 4, 5, 0xb4]);
    assert_eq!(
        TcpPacket::new_checked(&good[..19]).unwrap_err(),
        Error::Truncated
    );
    assert_eq!(
        TcpPacket::new_checked(&good[..23]).unwrap_err(),
        Error::Truncated
    );

    let mut b = good.clone();
    b[12] = 0x40;
    assert_eq!(
        TcpPacket::new_checked(&b[..]).unwrap_err(),
        Error::BadHeaderLen
    );

    let mut b = good.clone();
    b[22] ^= 1;
    let p = TcpPacket::new_checked(&b[..]).unwrap();
    assert_eq!(TcpRepr::parse(&p, LO, LO, &caps), Err(Error::BadChecksum));

    let mut b = good.clone();
    {
        let mut p = TcpPacket::new_unchecked(&mut b[..]);
        p.set_dst_port(0);
        p.fill_checksum(LO, LO);
    }
    let p = TcpPacket::new_checked(&b[..]).unwrap();
    assert_eq!(TcpRepr::parse(&p, LO, LO, &caps), Err(Error::Malformed));
}

fn base_repr() -> TcpRepr<'static> {
    TcpRepr {
        src_port: 49152,
        dst_port: 80,
        flags: TcpFlags::ACK,
        seq_number: TcpSeqNumber(1),
        ack_number: Some(TcpSeqNumber(2)),
        window_len: 512,
        window_scale: None,
        max_seg_size: None,
        sack_permitted: false,
        sack_ranges: [None; 3],
        timestamp: None,
        payload: b"",
    }
}

#[test]
fn header_len_fits_option_space() {
    // Every option at once: SACK blocks are trimmed to what fits in 40 bytes.
    let repr = TcpRepr {
        window_scale: Some(7),
        max_seg_size: Some(1460),
        sack_permitted: true,
        sack_ranges: [Some((1, 2)), Some((3, 4)), Some((5, 6))],
        timestamp: Some(TcpTimestamp { tsval: 1, tsecr: 2 }),
        ..base_repr()
    };
    assert_eq!(repr.header_len(), TCP_MAX_HEADER_LEN);
    let mut buf = vec![0u8; repr.buffer_len()];
    repr.emit(
        &mut TcpPacket::new_unchecked(&mut buf[..]),
        LO,
        LO,
        &ChecksumCapabilities::default(),
    );
    let p = TcpPacket::new_checked(&buf[..]).unwrap();
    let parsed = TcpRepr::parse(&p, LO, LO, &ChecksumCapabilities::default()).unwrap();
    assert_eq!(parsed.sack_ranges, [Some((1, 2)), Some((3, 4)), None]);

    // Timestamps with three SACK blocks: exactly 40 bytes (RFC 2018 §3).
    let repr = TcpRepr {
        sack_ranges: [Some((1, 2)), Some((3, 4)), Some((5, 6))],
        timestamp: Some(TcpTimestamp { tsval: 1, tsecr: 2 }),
        ..base_repr()
    };
    assert_eq!(repr.header_len(), 60);
    assert_eq!(base_repr().header_len(), 20);
}

#[test]
fn emit_ack_bit_follows_ack_number() {
    let repr = TcpRepr {
        flags: TcpFlags::SYN,
        ack_number: Some(TcpSeqNumber(5)),
        ..base_repr()
    };
    let mut buf = vec![0u8; repr.buffer_len()];
    repr.emit(
        &mut TcpPacket::new_unchecked(&mut buf[..]),
        LO,
        LO,
        &ChecksumCapabilities::default(),
    );
    assert_eq!(
        TcpPacket::new_checked(&buf[..]).unwrap().flags(),
        TcpFlags::SYN | TcpFlags::ACK
    );

    let repr = TcpRepr {
        flags: TcpFlags::RST | TcpFlags::ACK,
        ack_number: None,
        ..base_repr()
    };
    let mut buf = vec![0u8; repr.buffer_len()];
    repr.emit(
        &mut TcpPacket::new_unchecked(&mut buf[..]),
        LO,
        LO,
        &ChecksumCapabilities::default(),
    );
    let p = TcpPacket::new_checked(&buf[..]).unwrap();
    assert_eq!(p.flags(), TcpFlags::RST);
    assert_eq!(p.ack_number(), TcpSeqNumber(0));
}

#[test]
fn aligned_timestamp_option_is_the_rfc_7323_layout_and_parses_back() {
    let ts = TcpTimestamp {
        tsval: 0x0102_0304,
        tsecr: 0xa0b0_c0d0,
    };
    let bytes = ts.aligned_option();
    assert_eq!(
        bytes,
        [1, 1, 8, 10, 0x01, 0x02, 0x03, 0x04, 0xa0, 0xb0, 0xc0, 0xd0]
    );
    let parsed = parse_options(&bytes).unwrap();
    assert_eq!(parsed.timestamp, Some(ts));
    assert_eq!(parsed.max_seg_size, None);
    // The same option after other options takes the general path and parses the same.
    let mut longer = vec![2, 4, 0x05, 0xb4];
    longer.extend_from_slice(&bytes);
    let parsed = parse_options(&longer).unwrap();
    assert_eq!(parsed.timestamp, Some(ts));
    assert_eq!(parsed.max_seg_size, Some(1460));
}

#[test]
fn seq_number_arithmetic() {
    let a = TcpSeqNumber(u32::MAX - 1);
    let b = a + 4;
    assert_eq!(b, TcpSeqNumber(2));
    assert!(a < b);
    assert!(b > a);
    assert_eq!(b.partial_cmp(&a), Some(Ordering::Greater));
    assert_eq!(b - a, 4);
    assert_eq!(b - 4, a);
    assert_eq!(a.checked_sub(b), None);
    assert_eq!(a.max(b), b);
    assert_eq!(a.min(b), a);
    assert!(TcpSeqNumber(0).in_range(a, b));
    assert!(!b.in_range(a, b));
    let mut c = a;
    c += 2;
    assert_eq!(c, TcpSeqNumber(0));
    assert_eq!(a.wrapping_add(3), TcpSeqNumber(1));
    assert_eq!(
        TcpSeqNumber(5).partial_cmp(&TcpSeqNumber(5)),
        Some(Ordering::Equal)
    );
}

#[test]
#[should_panic(expected = "underflow")]
fn seq_number_negative_distance_panics() {
    let _ = TcpSeqNumber(1) - TcpSeqNumber(2);
}

#[test]
#[should_panic(expected = "overflow")]
fn seq_number_huge_add_panics() {
    let _ = TcpSeqNumber(1) + (1usize << 31);
}

#[test]
fn flags() {
    let mut f = TcpFlags::SYN | TcpFlags::ACK;
    assert!(f.syn() && f.ack() && !f.fin());
    assert_eq!(f.to_string(), "SA");
    assert_eq!(format!("{f:?}"), "TcpFlags(SA)");
    f.remove(TcpFlags::SYN);
    f.insert(TcpFlags::FIN);
    assert_eq!(f.to_string(), "FA");
    f.set(TcpFlags::ACK, false);
    assert_eq!(f, TcpFlags::FIN);
    assert_eq!(TcpFlags::EMPTY.to_string(), "-");
    assert_eq!(TcpFlags::from_bits(0xff).to_string(), "SFRPAUEC");
    assert!(TcpFlags::from_bits(0x12).contains(TcpFlags::SYN));
    assert!((TcpFlags::SYN | TcpFlags::FIN).intersects(TcpFlags::FIN | TcpFlags::RST));
    assert_eq!((!TcpFlags::ACK).bits(), 0xef);
}

#[test]
fn display_sack() {
    let repr = TcpRepr {
        sack_ranges: [Some((10, 20)), Some((30, 40)), None],
        payload: b"xyz",
        ..base_repr()
    };
    assert_eq!(
        repr.to_string(),
        "TCP src=49152 dst=80 seq=1 ack=2 win=512 flags=A len=3 sack=10-20,30-40"
    );
}

// ---- property tests ----

fn arb_sack() -> impl Strategy<Value = [Option<(u32, u32)>; 3]> {
    (0usize..=3, any::<[(u32, u32); 3]>()).prop_map(|(n, blocks)| {
        let mut out = [None; 3];
        for (slot, block) in out.iter_mut().zip(blocks).take(n) {
            *slot = Some(block);
        }
        out
    })
}

prop_compose! {
    fn arb_repr(payload: &'static [u8])(
        src_port in 1u16..,
        dst_port in 1u16..,
        flag_bits in any::<u8>(),
        seq in any::<u32>(),
        ack in proptest::option::of(any::<u32>()),
        window_len in any::<u16>(),
        window_scale in proptest::option::of(0u8..=14),
        max_seg_size in proptest::option::of(any::<u16>()),
        sack_permitted in any::<bool>(),
        sack_ranges in arb_sack(),
        timestamp in proptest::option::of(any::<(u32, u32)>()),
        payload_len in 0..=payload.len(),
    ) -> TcpRepr<'static> {
        let mut flags = TcpFlags::from_bits(flag_bits);
        flags.set(TcpFlags::ACK, ack.is_some());
        TcpRepr {
            src_port,
            dst_port,
            flags,
            seq_number: TcpSeqNumber(seq),
            ack_number: ack.map(TcpSeqNumber),
            window_len,
            window_scale,
            max_seg_size,
            sack_permitted,
            sack_ranges,
            timestamp: timestamp.map(|(tsval, tsecr)| TcpTimestamp { tsval, tsecr }),
            payload: &payload[..payload_len],
        }
    }
}

static PAYLOAD: [u8; 300] = {
    let mut p = [0u8; 300];
    let mut i = 0;
    while i < 300 {
        p[i] = (i * 7 + 3) as u8;
        i += 1;
    }
    p
};

fn arb_option() -> impl Strategy<Value = TcpOption<'static>> {
    static UNKNOWN_DATA: [u8; 8] = [9, 8, 7, 6, 5, 4, 3, 2];
    prop_oneof![
        Just(TcpOption::NoOperation),
        any::<u16>().prop_map(TcpOption::MaxSegmentSize),
        any::<u8>().prop_map(TcpOption::WindowScale),
        Just(TcpOption::SackPermitted),
        (1usize..=4, any::<[(u32, u32); 4]>()).prop_map(|(n, blocks)| {
            let mut r = [None; 4];
            for (slot, b) in r.iter_mut().zip(blocks).take(n) {
                *slot = Some(b);
            }
            TcpOption::SackRange(r)
        }),
        any::<(u32, u32)>()
            .prop_map(|(tsval, tsecr)| TcpOption::Timestamp(TcpTimestamp { tsval, tsecr })),
        (
            (9u8..=255).prop_filter("known kind", |k| *k != kind::TS),
            0usize..=8
        )
            .prop_map(|(kind, n)| TcpOption::Unknown {
                kind,
                data: &UNKNOWN_DATA[..n]
            }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn roundtrip(repr in arb_repr(&PAYLOAD), src in any::<[u8; 4]>(), dst in any::<[u8; 4]>()) {
        let (s, d) = (Ipv4Address(src), Ipv4Address(dst));
        let caps = ChecksumCapabilities::default();
        prop_assert_eq!(repr.header_len() % 4, 0);
        prop_assert!(repr.header_len() <= TCP_MAX_HEADER_LEN);
        let mut buf = vec![0u8; repr.buffer_len()];
        repr.emit(&mut TcpPacket::new_unchecked(&mut buf[..]), s, d, &caps);
        let packet = TcpPacket::new_checked(&buf[..]).unwrap();
        prop_assert_eq!(packet.header_len() as usize, repr.header_len());
        let parsed = TcpRepr::parse(&packet, s, d, &caps).unwrap();
        // Blocks that did not fit are dropped on emit; compare what was sent.
        let mut expected = repr;
        let kept = repr.options_layout().sack_blocks;
        for slot in expected.sack_ranges.iter_mut().skip(kept) {
            *slot = None;
        }
        prop_assert_eq!(parsed, expected);
        prop_assert_eq!(packet.segment_len(), repr.segment_len());
    }

    /// The header written alone, the payload put behind it and the checksum filled over both
    /// give the same bytes as `emit`.
    #[test]
    fn emit_header_then_fill_checksum_equals_emit(repr in arb_repr(&PAYLOAD), src in any::<[u8; 4]>(), dst in any::<[u8; 4]>()) {
        let (s, d) = (Ipv4Address(src), Ipv4Address(dst));
        let mut whole = vec![0u8; repr.buffer_len()];
        repr.emit(&mut TcpPacket::new_unchecked(&mut whole[..]), s, d, &ChecksumCapabilities::default());
        let mut parts = vec![0xeeu8; repr.buffer_len()];
        let header_len = repr.header_len();
        repr.emit_header(&mut parts[..header_len]);
        parts[header_len..].copy_from_slice(repr.payload);
        TcpPacket::new_unchecked(&mut parts[..]).fill_checksum(s, d);
        prop_assert_eq!(parts, whole);
    }

    #[test]
    fn parse_arbitrary_never_panics(buf in proptest::collection::vec(any::<u8>(), 0..100), src in any::<[u8; 4]>(), dst in any::<[u8; 4]>()) {
        for caps in [ChecksumCapabilities::default(), ChecksumCapabilities::ignored()] {
            if let Ok(packet) = TcpPacket::new_checked(&buf[..]) {
                let _ = packet.segment_len();
                for option in packet.options_iter() {
                    let _ = option;
                }
                if let Ok(repr) = TcpRepr::parse(&packet, Ipv4Address(src), Ipv4Address(dst), &caps) {
                    let _ = repr.to_string();
                    prop_assert!(repr.header_len() <= TCP_MAX_HEADER_LEN);
                }
            }
        }
    }

    /// Random bytes in the options area of an otherwise valid header, so
    /// the option parser sees far more than pure noise would reach.
    #[test]
    fn parse_arbitrary_options_never_panics(opts in proptest::collection::vec(any::<u8>(), 0..=10).prop_map(|mut v| { v.resize(v.len() * 4, 1); v })) {
        let _ = parse_options(&opts);
        let _: Vec<_> = TcpOptionsIter::new(&opts).collect();
    }

    #[test]
    fn options_parse_emit_parse(options in proptest::collection::vec(arb_option(), 0..6)) {
        // Lay the options out as a sender might, pad with EOL to 4 bytes.
        let len: usize = options.iter().map(|o| o.buffer_len()).sum();
        prop_assume!(len <= TCP_MAX_OPTIONS_LEN);
        let mut area = vec![0u8; len.div_ceil(4) * 4];
        let mut rest = &mut area[..];
        for o in &options {
            rest = o.emit(rest);
        }
        let items: Vec<_> = TcpOptionsIter::new(&area).collect::<Result<_>>().unwrap();
        prop_assert_eq!(&items[..options.len()], &options[..]);

        let first = parse_options(&area).unwrap();
        let mut buf = vec![0u8; first.buffer_len()];
        first.emit(&mut TcpPacket::new_unchecked(&mut buf[..]), LO, LO, &ChecksumCapabilities::default());
        let p = TcpPacket::new_checked(&buf[..]).unwrap();
        let second = TcpRepr::parse(&p, LO, LO, &ChecksumCapabilities::default()).unwrap();
        let mut expected = first;
        let kept = first.options_layout().sack_blocks;
        for slot in expected.sack_ranges.iter_mut().skip(kept) {
            *slot = None;
        }
        prop_assert_eq!(second, expected);
    }

    #[test]
    fn seq_order_matches_distance(a in any::<u32>(), d in 0usize..(1 << 31)) {
        let a = TcpSeqNumber(a);
        let b = a + d;
        prop_assert_eq!(b - a, d);
        prop_assert!(d == 0 || a < b);
        prop_assert!(b >= a);
        prop_assert_eq!(b - d, a);
    }
}
