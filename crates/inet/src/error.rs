//! Errors of the socket API: a kind, and a message that says what to do about it.

use std::fmt;

/// Why a socket call failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Error {
    /// The handle names no socket (never opened, or already closed).
    InvalidHandle,
    /// The handle names a socket of another kind (a UDP socket given to a TCP call, a
    /// listener given to `tcp_send`, ...).
    WrongSocketKind,
    /// Nothing can be done now without blocking: no room in the send buffer, nothing received.
    WouldBlock,
    /// The local address and port are already bound.
    AddressInUse,
    /// Every ephemeral port towards this peer is taken.
    NoPortsAvailable,
    /// The socket table is full ([`crate::StackConfig::max_sockets`]).
    TooManySockets,
    /// The call does not fit the socket's state (e.g. sending on a connection not yet
    /// established, or after `tcp_shutdown`).
    InvalidState,
    /// An address or argument the stack cannot use (port 0 where one is needed, a broadcast
    /// peer for TCP, ...).
    InvalidArgument,
    /// No route to the destination: it is outside the interface's subnet and no gateway is set.
    Unreachable,
    /// The datagram is larger than the link can carry without fragmentation.
    MessageTooLong,
    /// The peer reset the connection.
    ConnectionReset,
    /// The peer refused the connection (it answered the SYN with a RST).
    ConnectionRefused,
    /// The connection gave up after its maximum number of retransmissions.
    TimedOut,
    /// The peer closed its side of the stream: every byte it sent has been read.
    EndOfStream,
}

impl Error {
    /// A stable snake_case name.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Error::InvalidHandle => "invalid_handle",
            Error::WrongSocketKind => "wrong_socket_kind",
            Error::WouldBlock => "would_block",
            Error::AddressInUse => "address_in_use",
            Error::NoPortsAvailable => "no_ports_available",
            Error::TooManySockets => "too_many_sockets",
            Error::InvalidState => "invalid_state",
            Error::InvalidArgument => "invalid_argument",
            Error::Unreachable => "unreachable",
            Error::MessageTooLong => "message_too_long",
            Error::ConnectionReset => "connection_reset",
            Error::ConnectionRefused => "connection_refused",
            Error::TimedOut => "timed_out",
            Error::EndOfStream => "end_of_stream",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let msg = match self {
            Error::InvalidHandle => "invalid_handle: no such socket (was it closed already?)",
            Error::WrongSocketKind => {
                "wrong_socket_kind: this call does not apply to this kind of socket"
            }
            Error::WouldBlock => "would_block: retry when the socket's waker fires",
            Error::AddressInUse => "address_in_use: pick another local port or close the owner",
            Error::NoPortsAvailable => {
                "no_ports_available: every ephemeral port is in use; close connections first"
            }
            Error::TooManySockets => {
                "too_many_sockets: the socket table is full; close sockets or raise max_sockets"
            }
            Error::InvalidState => "invalid_state: the connection is not in a state for this call",
            Error::InvalidArgument => "invalid_argument: address or port not usable here",
            Error::Unreachable => {
                "unreachable: destination outside the subnet and no gateway configured"
            }
            Error::MessageTooLong => "message_too_long: datagram larger than the link MTU allows",
            Error::ConnectionReset => "connection_reset: the peer reset the connection",
            Error::ConnectionRefused => "connection_refused: nothing listens on the peer's port",
            Error::TimedOut => "timed_out: the peer stopped answering; retransmissions gave up",
            Error::EndOfStream => "end_of_stream: the peer closed its side; nothing more to read",
        };
        f.write_str(msg)
    }
}

impl std::error::Error for Error {}

/// Result of a socket call.
pub type Result<T> = std::result::Result<T, Error>;
