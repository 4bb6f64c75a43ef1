//! Helpers shared by the integration tests that run the queue API end to end.

use std::time::{Duration, Instant};

use bypass::{ErrorKind, LibOs, QDesc, QValue};

/// Accepts `conns` connections on `listener` and echoes each until end of stream, all from one
/// `wait_any` loop; returns the bytes echoed. A wait longer than `wait` fails the test.
pub fn echo_server(libos: &mut LibOs, listener: QDesc, conns: usize, wait: Duration) -> u64 {
    let mut echoed = 0u64;
    let mut tokens = vec![libos.accept(listener).unwrap()];
    let (mut accepted, mut open) = (0, 0);
    while accepted < conns || open > 0 {
        let (i, r) = libos.wait_any(&tokens, Some(wait)).unwrap_or_else(|e| {
            panic!("the echo server waited {wait:?} ({accepted} of {conns} accepted, {open} open): {e}")
        });
        tokens.swap_remove(i);
        match r.value {
            QValue::Accepted { qd, .. } => {
                accepted += 1;
                open += 1;
                tokens.push(libos.pop(qd).unwrap());
                if accepted < conns {
                    tokens.push(libos.accept(listener).unwrap());
                }
            }
            QValue::Popped { sga, .. } => {
                echoed += sga.len() as u64;
                tokens.push(libos.push(r.qd, sga).unwrap());
                tokens.push(libos.pop(r.qd).unwrap());
            }
            QValue::Pushed { .. } => {}
            QValue::EndOfStream => {
                open -= 1;
                // Its other pending operations complete with Canceled below.
                libos.close(r.qd).unwrap();
            }
            QValue::Failed(e) if e.kind() == ErrorKind::Canceled => {}
            other => panic!("the echo server got {other:?}"),
        }
    }
    echoed
}

/// Keeps polling for `d`, so frames still queued (FINs, last ACKs) leave before the LibOs goes.
pub fn linger(libos: &mut LibOs, d: Duration) {
    let end = Instant::now() + d;
    while Instant::now() < end {
        libos.poll().expect("the libOS polls");
    }
}
