//! Socket handles, readiness interests and the wakers registered on them.

use std::task::Waker;

/// Names a socket of a [`crate::Stack`]. A handle stays invalid after its socket is freed,
/// even if the slot is reused (the generation differs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SocketHandle {
    pub(crate) index: u32,
    pub(crate) generation: u32,
}

impl SocketHandle {
    /// A number unique among live sockets (for logs and tables above the stack).
    pub fn index(&self) -> u32 {
        self.index
    }
}

/// What a task waits for on a socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Interest {
    /// Data, end of stream or an error can be read (`tcp_recv`, `udp_recv_from`).
    Readable,
    /// Room in the send buffer, or an error (`tcp_send`, `udp_send_to`).
    Writable,
    /// A connection waits in a listener's accept queue (`tcp_accept`).
    Acceptable,
    /// A connect finished: established, refused, reset or timed out.
    Connected,
    /// The connection reached CLOSED or TIME-WAIT, or failed.
    Closed,
}

impl Interest {
    pub const ALL: [Interest; 5] = [
        Interest::Readable,
        Interest::Writable,
        Interest::Acceptable,
        Interest::Connected,
        Interest::Closed,
    ];
}

/// One waker per interest; waking takes it (a task registers again when it waits again).
#[derive(Default, Debug)]
pub(crate) struct Wakers {
    slots: [Option<Waker>; 5],
}

impl Wakers {
    pub fn register(&mut self, interest: Interest, waker: &Waker) {
        let slot = &mut self.slots[interest as usize];
        match slot {
            Some(w) if w.will_wake(waker) => {}
            _ => *slot = Some(waker.clone()),
        }
    }

    pub fn wake(&mut self, interest: Interest) {
        if let Some(w) = self.slots[interest as usize].take() {
            w.wake();
        }
    }

    pub fn wake_all(&mut self) {
        for i in Interest::ALL {
            self.wake(i);
        }
    }
}
