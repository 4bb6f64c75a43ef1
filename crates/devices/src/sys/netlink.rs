//! Just enough rtnetlink to attach, query and detach an interface's XDP program.
//!
//! Messages are `nlmsghdr` + `ifinfomsg` + attributes (`linux/netlink.h`, `linux/rtnetlink.h`,
//! `linux/if_link.h`). We build them in a byte vector and parse replies with bounds checks, so
//! nothing here needs `unsafe` beyond the socket calls in [`super::os`].

use std::io;
use std::os::fd::OwnedFd;

use super::os;

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const RTM_SETLINK: u16 = 19;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLA_F_NESTED: u16 = 0x8000;
const NLA_TYPE_MASK: u16 = 0x3fff;
const NETLINK_EXT_ACK: libc::c_int = 11;
const NLMSGERR_ATTR_MSG: u16 = 1;
const NLM_F_ACK_TLVS: u16 = 0x200;
const NLM_F_CAPPED: u16 = 0x100;

const IFLA_XDP: u16 = 43;
const IFLA_XDP_FD: u16 = 1;
const IFLA_XDP_ATTACHED: u16 = 2;
const IFLA_XDP_FLAGS: u16 = 3;
const IFLA_XDP_PROG_ID: u16 = 4;

/// `XDP_FLAGS_SKB_MODE`: generic XDP, run by the core network stack on an skb.
pub const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
/// `XDP_FLAGS_DRV_MODE`: native XDP, run by the driver before any skb exists.
pub const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

const NLMSG_HDRLEN: usize = 16;
const IFINFOMSG_LEN: usize = 16;

/// Where an interface's XDP program runs, as the kernel reports it (`XDP_ATTACHED_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attached {
    None,
    Driver,
    Generic,
    Hardware,
    Multi,
}

/// An interface's XDP state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XdpState {
    pub attached: Attached,
    /// The attached program's id (0 if none or several).
    pub prog_id: u32,
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

struct Message {
    bytes: Vec<u8>,
    /// Start of each open nested attribute.
    nests: Vec<usize>,
}

impl Message {
    fn new(ty: u16, flags: u16, ifindex: u32) -> Message {
        let mut bytes = Vec::with_capacity(64);
        bytes.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_len, set in finish
        bytes.extend_from_slice(&ty.to_ne_bytes());
        bytes.extend_from_slice(&flags.to_ne_bytes());
        bytes.extend_from_slice(&1u32.to_ne_bytes()); // nlmsg_seq
        bytes.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_pid: the kernel
                                                      // ifinfomsg: family, pad, type, index, flags, change
        bytes.extend_from_slice(&[libc::AF_UNSPEC as u8, 0, 0, 0]);
        bytes.extend_from_slice(&(ifindex as i32).to_ne_bytes());
        bytes.extend_from_slice(&0u32.to_ne_bytes());
        bytes.extend_from_slice(&0u32.to_ne_bytes());
        debug_assert_eq!(bytes.len(), NLMSG_HDRLEN + IFINFOMSG_LEN);
        Message {
            bytes,
            nests: Vec::new(),
        }
    }

    fn attr(&mut self, ty: u16, payload: &[u8]) {
        let len = 4 + payload.len();
        self.bytes.extend_from_slice(&(len as u16).to_ne_bytes());
        self.bytes.extend_from_slice(&ty.to_ne_bytes());
        self.bytes.extend_from_slice(payload);
        self.bytes.resize(align4(self.bytes.len()), 0);
    }

    fn begin_nested(&mut self, ty: u16) {
        self.nests.push(self.bytes.len());
        self.bytes.extend_from_slice(&0u16.to_ne_bytes());
        self.bytes
            .extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
    }

    fn end_nested(&mut self) {
        let start = self.nests.pop().expect("end_nested without begin_nested");
        let len = (self.bytes.len() - start) as u16;
        self.bytes[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    }

    fn finish(mut self) -> Vec<u8> {
        assert!(self.nests.is_empty(), "unclosed nested attribute");
        let len = self.bytes.len() as u32;
        self.bytes[0..4].copy_from_slice(&len.to_ne_bytes());
        self.bytes
    }
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Iterates over `(type, payload)` of the attributes in `b`; stops at the first malformed one.
fn attrs(b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut at = 0;
    std::iter::from_fn(move || {
        let len = u16_at(b, at)? as usize;
        let ty = u16_at(b, at + 2)?;
        if len < 4 || at + len > b.len() {
            return None;
        }
        let payload = &b[at + 4..at + len];
        at += align4(len);
        Some((ty & NLA_TYPE_MASK, payload))
    })
}

fn open() -> io::Result<OwnedFd> {
    let fd = os::socket(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE)?;
    // Extended acks carry the kernel's reason in words; best effort (older kernels lack it).
    let _ = os::setsockopt(&fd, libc::SOL_NETLINK, NETLINK_EXT_ACK, &1i32);
    Ok(fd)
}

/// A failed netlink request: the errno and, when the kernel gave one, its reason in words.
#[derive(Debug)]
pub struct NlError {
    pub os: io::Error,
    pub text: String,
}

impl From<io::Error> for NlError {
    fn from(os: io::Error) -> NlError {
        NlError {
            os,
            text: String::new(),
        }
    }
}

/// Turns an `NLMSG_ERROR` payload into `Ok(())` (an ack) or the error with the kernel's text.
fn ack_result(flags: u16, payload: &[u8]) -> Result<(), NlError> {
    let errno =
        u32_at(payload, 0).ok_or_else(|| io::Error::other("truncated netlink error"))? as i32;
    if errno == 0 {
        return Ok(());
    }
    let mut err = NlError::from(io::Error::from_raw_os_error(-errno));
    // The TLVs follow the echoed request: only its header if the kernel capped it.
    let echoed = if flags & NLM_F_CAPPED != 0 {
        NLMSG_HDRLEN
    } else {
        u32_at(payload, 4).unwrap_or(0) as usize
    };
    if flags & NLM_F_ACK_TLVS != 0 {
        if let Some(tlvs) = payload.get(4 + align4(echoed)..) {
            for (ty, value) in attrs(tlvs) {
                if ty == NLMSGERR_ATTR_MSG {
                    let text = value.split(|&c| c == 0).next().unwrap_or(&[]);
                    err.text = String::from_utf8_lossy(text).into_owned();
                }
            }
        }
    }
    Err(err)
}

/// Sends one request and reads replies until the ack (or the error, or `NLMSG_DONE`); calls
/// `on_msg` for every other message.
fn transact(request: Vec<u8>, mut on_msg: impl FnMut(u16, &[u8])) -> Result<(), NlError> {
    let fd = open()?;
    os::send(&fd, &request)?;
    let mut buf = vec![0u8; 32 << 10];
    // rtnetlink answers from within our send; the wait is only for a kernel under load.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let n = loop {
            match os::recv(&fd, &mut buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if std::time::Instant::now() > deadline {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "no rtnetlink reply within 5 s",
                        )
                        .into());
                    }
                    std::thread::sleep(std::time::Duration::from_micros(50));
                }
                other => break other?,
            }
        };
        let mut at = 0;
        while at + NLMSG_HDRLEN <= n {
            let len = u32_at(&buf, at).unwrap_or(0) as usize;
            let ty = u16_at(&buf, at + 4).unwrap_or(0);
            let flags = u16_at(&buf, at + 6).unwrap_or(0);
            if len < NLMSG_HDRLEN || at + len > n {
                return Err(io::Error::other("malformed netlink reply").into());
            }
            let payload = &buf[at + NLMSG_HDRLEN..at + len];
            match ty {
                NLMSG_ERROR => return ack_result(flags, payload),
                NLMSG_DONE => return Ok(()),
                _ => on_msg(ty, payload),
            }
            at += align4(len);
        }
    }
}

/// The XDP program state of interface `ifindex` (in the calling thread's namespace).
pub fn xdp_query(ifindex: u32) -> Result<XdpState, NlError> {
    let msg = Message::new(RTM_GETLINK, NLM_F_REQUEST | NLM_F_ACK, ifindex);
    let mut state = None;
    transact(msg.finish(), |ty, payload| {
        if ty != RTM_NEWLINK || payload.len() < IFINFOMSG_LEN {
            return;
        }
        for (ty, value) in attrs(&payload[IFINFOMSG_LEN..]) {
            if ty != IFLA_XDP {
                continue;
            }
            let mut s = XdpState {
                attached: Attached::None,
                prog_id: 0,
            };
            for (ty, value) in attrs(value) {
                match ty {
                    IFLA_XDP_ATTACHED => {
                        s.attached = match value.first() {
                            Some(1) => Attached::Driver,
                            Some(2) => Attached::Generic,
                            Some(3) => Attached::Hardware,
                            Some(4) => Attached::Multi,
                            _ => Attached::None,
                        }
                    }
                    IFLA_XDP_PROG_ID => s.prog_id = u32_at(value, 0).unwrap_or(0),
                    _ => {}
                }
            }
            state = Some(s);
        }
    })?;
    Ok(state.unwrap_or(XdpState {
        attached: Attached::None,
        prog_id: 0,
    }))
}

/// Attaches program `prog_fd` to `ifindex` in the mode `flags` names (replacing a program
/// already attached in that mode), or detaches it with `prog_fd == -1`.
pub fn xdp_set(ifindex: u32, prog_fd: i32, flags: u32) -> Result<(), NlError> {
    let mut msg = Message::new(RTM_SETLINK, NLM_F_REQUEST | NLM_F_ACK, ifindex);
    msg.begin_nested(IFLA_XDP);
    msg.attr(IFLA_XDP_FD, &prog_fd.to_ne_bytes());
    msg.attr(IFLA_XDP_FLAGS, &flags.to_ne_bytes());
    msg.end_nested();
    transact(msg.finish(), |_, _| {})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_nest_attributes_with_their_lengths() {
        let mut msg = Message::new(RTM_SETLINK, NLM_F_REQUEST, 7);
        msg.begin_nested(IFLA_XDP);
        msg.attr(IFLA_XDP_FD, &(-1i32).to_ne_bytes());
        msg.end_nested();
        let bytes = msg.finish();
        assert_eq!(bytes.len(), 32 + 4 + 8);
        assert_eq!(u32_at(&bytes, 0), Some(44));
        assert_eq!(u32_at(&bytes, 20), Some(7), "ifindex");
        let mut outer = attrs(&bytes[32..]);
        let (ty, inner) = outer.next().unwrap();
        assert_eq!(ty, IFLA_XDP);
        assert_eq!(
            attrs(inner).collect::<Vec<_>>(),
            vec![(IFLA_XDP_FD, &[0xff; 4][..])]
        );
        assert!(outer.next().is_none());
    }

    #[test]
    fn malformed_attributes_end_the_walk_instead_of_panicking() {
        assert_eq!(attrs(&[8, 0, 1, 0, 1]).count(), 0, "length past the end");
        assert_eq!(
            attrs(&[2, 0, 1, 0]).count(),
            0,
            "length shorter than a header"
        );
        assert_eq!(attrs(&[]).count(), 0);
    }
}
