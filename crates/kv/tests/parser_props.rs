//! Properties of the RESP parser: no input makes it panic or hold more than its limits; a valid
//! request parses the same however its bytes are split.

use bypass_kv::resp::{request, Parser, ParserLimits};
use proptest::prelude::*;

const LIMITS: ParserLimits = ParserLimits {
    max_bulk: 4096,
    max_elements: 64,
    max_inline: 1024,
    max_request: 16 << 10,
};

/// Feeds `pieces` in order; returns the requests parsed and whether an error ended it.
fn feed(pieces: &[&[u8]]) -> (Vec<Vec<Vec<u8>>>, bool, usize) {
    let mut p = Parser::new(LIMITS);
    let mut out = Vec::new();
    let mut peak = 0;
    for piece in pieces {
        let mut input = *piece;
        loop {
            match p.next(&mut input) {
                Ok(Some(cmd)) => out.push(cmd.to_vecs()),
                Ok(None) => break,
                Err(_) => return (out, true, peak.max(p.buffered())),
            }
            peak = peak.max(p.buffered());
        }
        assert!(
            input.is_empty(),
            "a piece is consumed whole unless a request completes"
        );
        peak = peak.max(p.buffered());
    }
    (out, false, peak)
}

fn split_at_points(bytes: &[u8], mut points: Vec<usize>) -> Vec<&[u8]> {
    points.iter_mut().for_each(|p| *p %= bytes.len() + 1);
    points.sort_unstable();
    let mut pieces = Vec::new();
    let mut at = 0;
    for p in points {
        pieces.push(&bytes[at..p]);
        at = p;
    }
    pieces.push(&bytes[at..]);
    pieces
}

fn arg() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..40),
        prop::collection::vec(any::<u8>(), 0..2000),
        Just(b"\r\n".to_vec()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_bytes_never_panic_and_stay_bounded(
        bytes in prop::collection::vec(any::<u8>(), 0..4096),
        points in prop::collection::vec(any::<usize>(), 0..8),
    ) {
        let (_, _, peak) = feed(&split_at_points(&bytes, points));
        // The request limit, plus the bookkeeping of 64 arguments and a header line.
        prop_assert!(peak <= 2 * LIMITS.max_request + 64 * 16 + LIMITS.max_inline * 2, "{peak}");
    }

    #[test]
    fn random_resp_like_bytes_never_panic(
        parts in prop::collection::vec(prop_oneof![
            Just(b"*".to_vec()), Just(b"$".to_vec()), Just(b"\r\n".to_vec()), Just(b"-".to_vec()),
            Just(b"3".to_vec()), Just(b"99999999999".to_vec()), Just(b"0".to_vec()),
            Just(b"\"".to_vec()), Just(b"'".to_vec()), Just(b"\\".to_vec()), Just(b" ".to_vec()),
            prop::collection::vec(any::<u8>(), 0..5),
        ], 0..64),
        points in prop::collection::vec(any::<usize>(), 0..8),
    ) {
        let bytes = parts.concat();
        feed(&split_at_points(&bytes, points));
    }

    #[test]
    fn a_valid_request_parses_the_same_however_it_is_split(
        requests in prop::collection::vec(prop::collection::vec(arg(), 1..6), 1..6),
        points in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let mut bytes = Vec::new();
        for r in &requests {
            request(&mut bytes, r.iter().map(Vec::as_slice));
        }
        let (whole, failed, _) = feed(&[&bytes]);
        prop_assert!(!failed);
        prop_assert_eq!(&whole, &requests);
        let (split, failed, _) = feed(&split_at_points(&bytes, points));
        prop_assert!(!failed);
        prop_assert_eq!(&split, &requests);
        // Byte by byte, the extreme split.
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        let (single, failed, _) = feed(&singles);
        prop_assert!(!failed);
        prop_assert_eq!(&single, &requests);
    }

    #[test]
    fn inline_words_parse_the_same_however_they_are_split(
        words in prop::collection::vec("[a-zA-Z0-9:_]{1,12}", 1..8),
        points in prop::collection::vec(any::<usize>(), 0..6),
    ) {
        let line = format!("{}\r\n", words.join("  "));
        let (got, failed, _) = feed(&split_at_points(line.as_bytes(), points));
        prop_assert!(!failed);
        let want: Vec<Vec<u8>> = words.iter().map(|w| w.as_bytes().to_vec()).collect();
        prop_assert_eq!(got, vec![want]);
    }
}
