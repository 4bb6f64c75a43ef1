//! Our BPF programs, written as eBPF bytecode from Rust, and the `bpf(2)` calls that load and
//! attach them.
//!
//! No clang, no libbpf: each program is a dozen instructions, emitted by a tiny assembler for
//! exactly the instructions it needs (`linux/bpf.h`, "eBPF instruction set").
//!
//! - [`program`], for the AF_XDP device: reads the frame's receive queue and redirects the
//!   frame to the AF_XDP socket registered for that queue in an XSKMAP; frames the
//!   [`XdpFilter`] does not select, and frames of queues without a socket, go on to the
//!   kernel's stack (`XDP_PASS`).
//! - [`ingress_drop_program`], for the AF_PACKET device: attached at tcx ingress
//!   ([`attach_tcx_ingress`]), it drops the frames addressed to the user-space stack's IPv4
//!   address after packet sockets have taken their copy, so the kernel's own stack neither
//!   spends time on them nor answers them.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use crate::sys::os;

// Instruction classes and fields (linux/bpf_common.h, linux/bpf.h).
const BPF_LD: u8 = 0x00;
const BPF_LDX: u8 = 0x01;
const BPF_JMP: u8 = 0x05;
const BPF_JMP32: u8 = 0x06;
const BPF_ALU64: u8 = 0x07;
const BPF_W: u8 = 0x00;
const BPF_H: u8 = 0x08;
const BPF_DW: u8 = 0x18;
const BPF_IMM: u8 = 0x00;
const BPF_MEM: u8 = 0x60;
const BPF_K: u8 = 0x00;
const BPF_X: u8 = 0x08;
const BPF_ADD: u8 = 0x00;
const BPF_MOV: u8 = 0xb0;
const BPF_JA: u8 = 0x00;
const BPF_JEQ: u8 = 0x10;
const BPF_JGT: u8 = 0x20;
const BPF_JNE: u8 = 0x50;
const BPF_CALL: u8 = 0x80;
const BPF_EXIT: u8 = 0x90;
const BPF_PSEUDO_MAP_FD: u8 = 1;

const BPF_FUNC_REDIRECT_MAP: i32 = 51;
const XDP_PASS: i32 = 2;
/// tcx verdicts (`enum tcx_action_base`): go on to the next program or the stack; drop.
const TCX_NEXT: i32 = -1;
const TCX_DROP: i32 = 2;

// bpf(2) commands and types.
const BPF_MAP_CREATE: i32 = 0;
const BPF_MAP_UPDATE_ELEM: i32 = 2;
const BPF_PROG_LOAD: i32 = 5;
const BPF_PROG_GET_FD_BY_ID: i32 = 13;
const BPF_OBJ_GET_INFO_BY_FD: i32 = 15;
const BPF_MAP_TYPE_XSKMAP: u32 = 17;
const BPF_LINK_CREATE: i32 = 28;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
const BPF_TCX_INGRESS: u32 = 46;

/// The name our program is loaded under; a program of this name left attached by a process
/// that died is ours to replace.
pub const PROGRAM_NAME: &str = "bypass_xsk";

/// Registers r0..r10.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reg(pub u8);

pub const R0: Reg = Reg(0);
pub const R1: Reg = Reg(1);
pub const R2: Reg = Reg(2);
pub const R3: Reg = Reg(3);
pub const R4: Reg = Reg(4);
pub const R5: Reg = Reg(5);
pub const R6: Reg = Reg(6);

/// One eBPF instruction (`struct bpf_insn`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    pub code: u8,
    pub dst: u8,
    pub src: u8,
    pub off: i16,
    pub imm: i32,
}

impl Insn {
    /// The 8 bytes the kernel reads: code, dst (low nibble) | src (high nibble), off, imm.
    pub fn to_bytes(self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[0] = self.code;
        b[1] = (self.dst & 0xf) | (self.src << 4);
        b[2..4].copy_from_slice(&self.off.to_le_bytes());
        b[4..8].copy_from_slice(&self.imm.to_le_bytes());
        b
    }
}

/// A jump target, bound to an instruction index later.
#[derive(Clone, Copy, Debug)]
pub struct Label(usize);

/// Size of a memory load.
#[derive(Clone, Copy, Debug)]
pub enum Size {
    U16,
    U32,
}

/// A tiny eBPF assembler: emits instructions, resolves labels.
#[derive(Default)]
pub struct Asm {
    insns: Vec<Insn>,
    labels: Vec<Option<usize>>,
    fixups: Vec<(usize, Label)>,
}

impl Asm {
    pub fn new() -> Asm {
        Asm::default()
    }

    fn emit(&mut self, code: u8, dst: Reg, src: Reg, off: i16, imm: i32) {
        self.insns.push(Insn {
            code,
            dst: dst.0,
            src: src.0,
            off,
            imm,
        });
    }

    pub fn label(&mut self) -> Label {
        self.labels.push(None);
        Label(self.labels.len() - 1)
    }

    /// Binds `label` to the next instruction.
    pub fn bind(&mut self, label: Label) {
        assert!(self.labels[label.0].is_none(), "label bound twice");
        self.labels[label.0] = Some(self.insns.len());
    }

    /// `dst = src` (64-bit).
    pub fn mov(&mut self, dst: Reg, src: Reg) {
        self.emit(BPF_ALU64 | BPF_MOV | BPF_X, dst, src, 0, 0);
    }

    /// `dst = imm` (64-bit, sign-extended).
    pub fn mov_imm(&mut self, dst: Reg, imm: i32) {
        self.emit(BPF_ALU64 | BPF_MOV | BPF_K, dst, R0, 0, imm);
    }

    /// `dst += imm` (64-bit).
    pub fn add_imm(&mut self, dst: Reg, imm: i32) {
        self.emit(BPF_ALU64 | BPF_ADD | BPF_K, dst, R0, 0, imm);
    }

    /// `dst = *(size *)(src + off)`.
    pub fn load(&mut self, size: Size, dst: Reg, src: Reg, off: i16) {
        let sz = match size {
            Size::U16 => BPF_H,
            Size::U32 => BPF_W,
        };
        self.emit(BPF_LDX | BPF_MEM | sz, dst, src, off, 0);
    }

    fn jump(&mut self, code: u8, dst: Reg, src: Reg, imm: i32, target: Label) {
        self.fixups.push((self.insns.len(), target));
        self.emit(code, dst, src, 0, imm);
    }

    /// `goto target`.
    pub fn ja(&mut self, target: Label) {
        self.jump(BPF_JMP | BPF_JA, R0, R0, 0, target);
    }

    /// `if dst > src goto target` (64-bit, unsigned).
    pub fn jgt(&mut self, dst: Reg, src: Reg, target: Label) {
        self.jump(BPF_JMP | BPF_JGT | BPF_X, dst, src, 0, target);
    }

    /// `if (u32)dst == imm goto target`.
    pub fn jeq32_imm(&mut self, dst: Reg, imm: u32, target: Label) {
        self.jump(BPF_JMP32 | BPF_JEQ | BPF_K, dst, R0, imm as i32, target);
    }

    /// `if (u32)dst != imm goto target`.
    pub fn jne32_imm(&mut self, dst: Reg, imm: u32, target: Label) {
        self.jump(BPF_JMP32 | BPF_JNE | BPF_K, dst, R0, imm as i32, target);
    }

    /// `dst = map` (a 64-bit immediate load the kernel rewrites into the map's address).
    pub fn load_map_fd(&mut self, dst: Reg, map_fd: i32) {
        self.emit(
            BPF_LD | BPF_DW | BPF_IMM,
            dst,
            Reg(BPF_PSEUDO_MAP_FD),
            0,
            map_fd,
        );
        self.emit(0, R0, R0, 0, 0);
    }

    /// `r0 = helper(r1, ..., r5)`.
    pub fn call(&mut self, helper: i32) {
        self.emit(BPF_JMP | BPF_CALL, R0, R0, 0, helper);
    }

    pub fn exit(&mut self) {
        self.emit(BPF_JMP | BPF_EXIT, R0, R0, 0, 0);
    }

    /// The program, with every jump's offset resolved (relative to the next instruction).
    ///
    /// # Panics
    /// If a label was used but never bound (a bug in the program text, not in input).
    pub fn finish(mut self) -> Vec<Insn> {
        for &(at, label) in &self.fixups {
            let target = self.labels[label.0].expect("jump to an unbound label");
            let off = target as isize - (at as isize + 1);
            self.insns[at].off = i16::try_from(off).expect("jump too far");
        }
        self.insns
    }
}

/// Which received frames the program hands to the AF_XDP socket; the rest go to the kernel.
///
/// The filters read the untagged Ethernet header only (a VLAN-tagged frame goes to the kernel),
/// and load IPv4 addresses with 4-byte loads at offsets 30 and 38, which are unaligned: fine on
/// x86-64 and arm64, refused by the verifier on architectures without efficient unaligned
/// access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpFilter {
    /// Every frame.
    All,
    /// Frames of one ethertype (e.g. 0x0800 for IPv4).
    EtherType(u16),
    /// IPv4 packets to this address, and ARP packets asking for it: what a user-space stack
    /// owning that address needs, while the kernel keeps everything else.
    Ipv4Dst([u8; 4]),
}

/// Offsets in `struct xdp_md`.
const XDP_MD_DATA: i16 = 0;
const XDP_MD_DATA_END: i16 = 4;
const XDP_MD_RX_QUEUE_INDEX: i16 = 16;

/// The program: filter, then `bpf_redirect_map(xskmap, rx_queue_index, XDP_PASS)`.
pub fn program(filter: XdpFilter, map_fd: i32) -> Vec<Insn> {
    let mut a = Asm::new();
    let pass = a.label();
    let redirect = a.label();
    a.mov(R6, R1); // r6 = ctx
    if filter != XdpFilter::All {
        load_ethertype(&mut a, R6, XDP_MD_DATA, XDP_MD_DATA_END, pass);
        match filter {
            XdpFilter::All => unreachable!("handled above"),
            XdpFilter::EtherType(ty) => {
                a.jne32_imm(R5, u16::from_ne_bytes(ty.to_be_bytes()) as u32, pass);
            }
            XdpFilter::Ipv4Dst(ip) => select_ipv4_dst(&mut a, ip, redirect, pass),
        }
    }
    a.bind(redirect);
    a.load(Size::U32, R2, R6, XDP_MD_RX_QUEUE_INDEX);
    a.load_map_fd(R1, map_fd);
    a.mov_imm(R3, XDP_PASS); // what to return when the queue has no socket
    a.call(BPF_FUNC_REDIRECT_MAP);
    a.exit();
    if filter != XdpFilter::All {
        // The verifier rejects unreachable code: this exists only when something jumps here.
        a.bind(pass);
        a.mov_imm(R0, XDP_PASS);
        a.exit();
    }
    a.finish()
}

/// Loads the frame's start into `r2`, its end into `r3` and its ethertype (as the bytes sit in
/// memory) into `r5`, from the context in `ctx` at offsets `data` and `data_end`; jumps to
/// `short` if the frame is too short for an Ethernet header. Clobbers `r4`.
fn load_ethertype(a: &mut Asm, ctx: Reg, data: i16, data_end: i16, short: Label) {
    a.load(Size::U32, R2, ctx, data);
    a.load(Size::U32, R3, ctx, data_end);
    a.mov(R4, R2);
    a.add_imm(R4, 14);
    a.jgt(R4, R3, short);
    a.load(Size::U16, R5, R2, 12);
}

/// Jumps to `hit` if the frame at `r2` (its end in `r3`, its ethertype in `r5`) is an IPv4
/// packet to `ip` or an ARP packet asking for `ip`, to `miss` otherwise. Clobbers `r4`, `r5`.
fn select_ipv4_dst(a: &mut Asm, ip: [u8; 4], hit: Label, miss: Label) {
    let ipv4 = a.label();
    let ip_word = u32::from_ne_bytes(ip);
    a.jeq32_imm(R5, u16::from_ne_bytes(0x0800u16.to_be_bytes()) as u32, ipv4);
    a.jne32_imm(R5, u16::from_ne_bytes(0x0806u16.to_be_bytes()) as u32, miss);
    // ARP (RFC 826) for IPv4 over Ethernet: target protocol address at 14 + 24, the last
    // field of the packet.
    jump_unless_u32_at(a, 14 + 24, ip_word, miss);
    a.ja(hit);
    // IPv4 (RFC 791): destination address at 14 + 16, the last field of the fixed header.
    a.bind(ipv4);
    jump_unless_u32_at(a, 14 + 16, ip_word, miss);
    a.ja(hit);
}

/// Jumps to `miss` unless the frame at `r2` (its end in `r3`) holds 4 more bytes at `at` and
/// they equal `word` (as the bytes sit in memory). Clobbers `r4`, `r5`.
fn jump_unless_u32_at(a: &mut Asm, at: i16, word: u32, miss: Label) {
    a.mov(R4, R2);
    a.add_imm(R4, i32::from(at) + 4);
    a.jgt(R4, R3, miss);
    a.load(Size::U32, R5, R2, at);
    a.jne32_imm(R5, word, miss);
}

/// Offsets of `data` and `data_end` in `struct __sk_buff`.
const SKB_DATA: i16 = 76;
const SKB_DATA_END: i16 = 80;

/// A tcx ingress program (`BPF_PROG_TYPE_SCHED_CLS`) that drops IPv4 packets to `ip` and ARP
/// packets asking for it (the [`XdpFilter::Ipv4Dst`] selection), and lets everything else go
/// on (`TCX_NEXT`). At ingress it runs after the packet sockets of the interface have taken
/// their copy of the frame, so they still see every frame while the kernel's stack does not
/// see ours.
pub fn ingress_drop_program(ip: [u8; 4]) -> Vec<Insn> {
    let mut a = Asm::new();
    let drop = a.label();
    let next = a.label();
    load_ethertype(&mut a, R1, SKB_DATA, SKB_DATA_END, next);
    select_ipv4_dst(&mut a, ip, drop, next);
    a.bind(drop);
    a.mov_imm(R0, TCX_DROP);
    a.exit();
    a.bind(next);
    a.mov_imm(R0, TCX_NEXT);
    a.exit();
    a.finish()
}

/// Attaches a loaded `SCHED_CLS` program at tcx ingress of interface `ifindex` (in the calling
/// thread's namespace) through a BPF link. The program stays attached as long as the returned
/// link descriptor is open: dropping it, or the process dying, detaches it, so nothing is left
/// behind.
pub fn attach_tcx_ingress(prog: &OwnedFd, ifindex: u32) -> io::Result<OwnedFd> {
    // link_create: prog_fd, target_ifindex, attach_type, flags; tcx.relative_fd and
    // tcx.expected_revision (at 16 and 24) zero: append after whatever is there.
    let fd = Attr::new()
        .u32(0, prog.as_raw_fd() as u32)
        .u32(4, ifindex)
        .u32(8, BPF_TCX_INGRESS)
        .call(BPF_LINK_CREATE)?;
    Ok(os::owned(fd))
}

/// The kind of program [`load_program`] loads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgramKind {
    /// An XDP program ([`program`]).
    Xdp,
    /// A traffic-control program for tcx ([`ingress_drop_program`]).
    SchedCls,
}

/// A `bpf_attr` under construction: zeroed, fields written at their `linux/bpf.h` offsets.
struct Attr([u8; 128]);

impl Attr {
    fn new() -> Attr {
        Attr([0; 128])
    }
    fn u32(mut self, at: usize, v: u32) -> Attr {
        self.0[at..at + 4].copy_from_slice(&v.to_ne_bytes());
        self
    }
    fn u64(mut self, at: usize, v: u64) -> Attr {
        self.0[at..at + 8].copy_from_slice(&v.to_ne_bytes());
        self
    }
    fn name(mut self, at: usize, name: &str) -> Attr {
        let n = name.len().min(15);
        self.0[at..at + n].copy_from_slice(&name.as_bytes()[..n]);
        self
    }
    fn call(mut self, cmd: i32) -> io::Result<i32> {
        os::bpf(cmd, &mut self.0)
    }
}

/// Creates an XSKMAP with `entries` slots (one per receive queue).
pub fn create_xskmap(entries: u32) -> io::Result<OwnedFd> {
    // map_type, key_size, value_size, max_entries, map_flags, inner_map_fd, numa_node, map_name
    let fd = Attr::new()
        .u32(0, BPF_MAP_TYPE_XSKMAP)
        .u32(4, 4)
        .u32(8, 4)
        .u32(12, entries)
        .name(28, "bypass_xsks")
        .call(BPF_MAP_CREATE)?;
    Ok(os::owned(fd))
}

/// `map[key] = value` for a map of u32 keys and u32 values (an XSKMAP: queue -> socket fd).
pub fn map_update(map: &OwnedFd, key: u32, value: u32) -> io::Result<()> {
    let key_bytes = key.to_ne_bytes();
    let value_bytes = value.to_ne_bytes();
    // map_fd, key pointer at 8, value pointer at 16, flags at 24 (BPF_ANY = 0). The pointers
    // stay valid for the call: they point to the locals above.
    Attr::new()
        .u32(0, map.as_raw_fd() as u32)
        .u64(8, key_bytes.as_ptr() as u64)
        .u64(16, value_bytes.as_ptr() as u64)
        .call(BPF_MAP_UPDATE_ELEM)?;
    Ok(())
}

/// Loads a program of `kind` named `name`; on failure the error carries the verifier's log.
pub fn load_program(kind: ProgramKind, name: &str, insns: &[Insn]) -> io::Result<OwnedFd> {
    let prog_type = match kind {
        ProgramKind::Xdp => BPF_PROG_TYPE_XDP,
        ProgramKind::SchedCls => BPF_PROG_TYPE_SCHED_CLS,
    };
    let code: Vec<u8> = insns.iter().flat_map(|i| i.to_bytes()).collect();
    let license = b"GPL\0";
    let attempt = |log: &mut [u8]| {
        // prog_type, insn_cnt, insns, license, log_level, log_size, log_buf, kern_version,
        // prog_flags, prog_name at 48. Pointers refer to `code`, `license` and `log`, which
        // outlive the call.
        Attr::new()
            .u32(0, prog_type)
            .u32(4, insns.len() as u32)
            .u64(8, code.as_ptr() as u64)
            .u64(16, license.as_ptr() as u64)
            .u32(24, if log.is_empty() { 0 } else { 1 })
            .u32(28, log.len() as u32)
            .u64(
                32,
                if log.is_empty() {
                    0
                } else {
                    log.as_mut_ptr() as u64
                },
            )
            .name(48, name)
            .call(BPF_PROG_LOAD)
    };
    match attempt(&mut []) {
        Ok(fd) => Ok(os::owned(fd)),
        Err(e)
            if e.raw_os_error() == Some(libc::EACCES) || e.raw_os_error() == Some(libc::EINVAL) =>
        {
            // Load again with the verifier's log to say why.
            let mut log = vec![0u8; 64 << 10];
            match attempt(&mut log) {
                Ok(fd) => Ok(os::owned(fd)),
                Err(_) => {
                    let end = log.iter().position(|&c| c == 0).unwrap_or(log.len());
                    let text = String::from_utf8_lossy(&log[..end]);
                    let last: Vec<&str> = text.lines().rev().take(3).collect();
                    Err(io::Error::new(
                        e.kind(),
                        format!(
                            "{e}; verifier: {}",
                            last.into_iter().rev().collect::<Vec<_>>().join(" | ")
                        ),
                    ))
                }
            }
        }
        Err(e) => Err(e),
    }
}

/// What `BPF_OBJ_GET_INFO_BY_FD` says about a program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgInfo {
    pub id: u32,
    pub name: String,
}

/// Id and name of a loaded program.
pub fn prog_info(prog: &OwnedFd) -> io::Result<ProgInfo> {
    // struct bpf_prog_info: id at 4, name[16] at 64; we ask for its first 80 bytes.
    let mut info = [0u8; 80];
    Attr::new()
        .u32(0, prog.as_raw_fd() as u32)
        .u32(4, info.len() as u32)
        .u64(8, info.as_mut_ptr() as u64)
        .call(BPF_OBJ_GET_INFO_BY_FD)?;
    let id = u32::from_ne_bytes(info[4..8].try_into().expect("4 bytes"));
    let name = &info[64..80];
    let end = name.iter().position(|&c| c == 0).unwrap_or(name.len());
    Ok(ProgInfo {
        id,
        name: String::from_utf8_lossy(&name[..end]).into_owned(),
    })
}

/// A descriptor for the loaded program with id `id`.
pub fn prog_by_id(id: u32) -> io::Result<OwnedFd> {
    let fd = Attr::new().u32(0, id).call(BPF_PROG_GET_FD_BY_ID)?;
    Ok(os::owned(fd))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instructions_encode_as_the_kernel_reads_them() {
        let mut a = Asm::new();
        a.load(Size::U32, R2, R6, 16);
        a.load_map_fd(R1, 7);
        a.mov_imm(R3, 2);
        a.call(51);
        a.exit();
        let bytes: Vec<[u8; 8]> = a.finish().into_iter().map(Insn::to_bytes).collect();
        assert_eq!(
            bytes,
            vec![
                [0x61, 0x62, 16, 0, 0, 0, 0, 0], // r2 = *(u32 *)(r6 + 16)
                [0x18, 0x11, 0, 0, 7, 0, 0, 0],  // r1 = map fd 7 (pseudo), low half
                [0, 0, 0, 0, 0, 0, 0, 0],        // high half
                [0xb7, 0x03, 0, 0, 2, 0, 0, 0],  // r3 = 2
                [0x85, 0, 0, 0, 51, 0, 0, 0],    // call bpf_redirect_map
                [0x95, 0, 0, 0, 0, 0, 0, 0],     // exit
            ]
        );
    }

    #[test]
    fn jumps_resolve_relative_to_the_next_instruction() {
        let mut a = Asm::new();
        let end = a.label();
        let back = a.label();
        a.bind(back);
        a.jne32_imm(R5, 0xdeadbeef, end); // 0
        a.mov_imm(R0, 1); // 1
        a.ja(back); // 2
        a.bind(end);
        a.exit(); // 3
        let insns = a.finish();
        assert_eq!(insns[0].off, 2);
        assert_eq!(insns[0].code, 0x56);
        assert_eq!(insns[0].imm, 0xdeadbeefu32 as i32);
        assert_eq!(insns[2].off, -3);
    }

    #[test]
    fn every_filter_ends_in_exits_and_jumps_stay_inside() {
        for filter in [
            XdpFilter::All,
            XdpFilter::EtherType(0x0800),
            XdpFilter::Ipv4Dst([10, 77, 1, 1]),
        ] {
            let insns = program(filter, 3);
            assert_eq!(insns.last().unwrap().code, 0x95);
            for (i, insn) in insns.iter().enumerate() {
                let is_jump = insn.code & 0x07 == BPF_JMP || insn.code & 0x07 == BPF_JMP32;
                if is_jump && insn.code & 0xf0 != BPF_CALL && insn.code & 0xf0 != BPF_EXIT {
                    let target = i as isize + 1 + insn.off as isize;
                    assert!(
                        (0..insns.len() as isize).contains(&target),
                        "{filter:?}: insn {i}"
                    );
                }
            }
        }
        // The IPv4 filter compares the address as the bytes sit in the packet.
        let insns = program(XdpFilter::Ipv4Dst([10, 77, 1, 1]), 3);
        assert!(insns
            .iter()
            .any(|i| i.code == 0x56 && i.imm == i32::from_ne_bytes([10, 77, 1, 1])));
    }
}
