//! Storage queues through the public API: files as queues of a LibOs, next to sockets.

use std::path::PathBuf;
use std::time::Duration;

use bypass::{Config, ErrorKind, FileOptions, LibOs, LibOsName, OpCode, QValue, SocketKind};

const LONG: Option<Duration> = Some(Duration::from_secs(20));

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("bypass-storage-queue-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn libos() -> LibOs {
    LibOs::new(Config::with_libos(LibOsName::Kernel)).expect("kernel libOS starts")
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn push_at_and_pop_at_round_trip_every_byte_buffered_and_direct() {
    let dir = Scratch::new("roundtrip");
    let mut libos = libos();
    for direct in [false, true] {
        let path = dir.0.join(format!("f-{direct}"));
        let qd = libos
            .open_file(&path, &FileOptions::new().direct(direct).create(true))
            .unwrap();
        // Extents of 4 KiB, 64 KiB + 4 KiB (two pool chunks) and 1 MiB, all aligned.
        let extents = [
            (0u64, 4096usize, 1u8),
            (8192, 69_632, 2),
            (1 << 20, 1 << 20, 3),
        ];
        let mut tokens = Vec::new();
        for &(offset, len, seed) in &extents {
            let sga = libos.sga_from_slice(&pattern(len, seed)).unwrap();
            tokens.push(libos.push_at(qd, sga, offset).unwrap());
        }
        for (qt, &(_, len, _)) in tokens.into_iter().zip(&extents) {
            let r = libos.wait(qt, LONG).unwrap();
            assert_eq!(r.opcode, OpCode::PushAt);
            assert!(
                matches!(r.value, QValue::Pushed { bytes } if bytes == len),
                "{r:?}"
            );
        }
        let qt = libos.sync(qd).unwrap();
        let r = libos.wait(qt, LONG).unwrap();
        assert_eq!(r.opcode, OpCode::Sync);
        assert!(matches!(r.value, QValue::Synced), "{r:?}");
        for &(offset, len, seed) in &extents {
            let qt = libos.pop_at(qd, offset, len).unwrap();
            let r = libos.wait(qt, LONG).unwrap();
            assert_eq!(r.opcode, OpCode::PopAt);
            assert_eq!(r.into_sga().unwrap().to_vec(), pattern(len, seed));
        }
        assert_eq!(libos.file_len(qd).unwrap(), 2 << 20);
        libos.close(qd).unwrap();
        let on_disk = std::fs::read(&path).unwrap();
        for &(offset, len, seed) in &extents {
            assert_eq!(&on_disk[offset as usize..][..len], &pattern(len, seed)[..]);
        }
    }
}

#[test]
fn a_small_direct_push_from_the_frame_pool_is_realigned() {
    let dir = Scratch::new("realign");
    let mut libos = libos();
    let qd = libos
        .open_file(dir.0.join("f"), &FileOptions::new().create(true))
        .unwrap();
    // 512 B comes from the frame pool (buffers start after headroom): still accepted.
    let data = pattern(512, 9);
    let qt = libos.push_at(qd, libos.sga_from_slice(&data).unwrap(), 0);
    match qt {
        Ok(qt) => {
            libos.wait(qt, LONG).unwrap().ok().unwrap();
            let qt = libos.pop_at(qd, 0, 512).unwrap();
            let r = libos.wait(qt, LONG).unwrap();
            assert_eq!(r.into_sga().unwrap().to_vec(), data);
        }
        // A device with 4 KiB logical blocks refuses 512 B, with a message that says why.
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::InvalidArgument);
            assert!(e.message().contains("multiple of"), "{e}");
        }
    }
    // A misaligned offset is refused before anything is submitted.
    let e = libos
        .push_at(qd, libos.sga_from_slice(&pattern(4096, 1)).unwrap(), 100)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert!(e.message().contains("direct(false)"), "{e}");
}

#[test]
fn storage_and_socket_tokens_mix_in_one_wait_any() {
    let dir = Scratch::new("mix");
    let mut libos = libos();
    let path = dir.0.join("f");
    std::fs::write(&path, pattern(8192, 4)).unwrap();
    let file = libos
        .open_file(&path, &FileOptions::new().direct(false))
        .unwrap();
    let udp = libos.socket(SocketKind::Datagram).unwrap();
    libos.bind(udp, "127.0.0.1:0".parse().unwrap()).unwrap();
    let sock_pop = libos.pop(udp).unwrap();
    let file_pop = libos.pop_at(file, 4096, 4096).unwrap();
    let (i, r) = libos.wait_any(&[sock_pop, file_pop], LONG).unwrap();
    assert_eq!(
        i, 1,
        "the file read completes; nothing was sent to the socket"
    );
    assert_eq!(r.qd, file);
    assert_eq!(r.into_sga().unwrap().to_vec(), &pattern(8192, 4)[4096..]);
    assert!(!libos.is_done(sock_pop).unwrap());
    // Now the socket gets a datagram and a file write runs alongside.
    let me = libos.local_addr(udp).unwrap();
    let sender = libos.socket(SocketKind::Datagram).unwrap();
    let send = libos
        .pushto(sender, libos.sga_from_slice(b"ping").unwrap(), me)
        .unwrap();
    let write = libos
        .push_at(file, libos.sga_from_slice(b"tail").unwrap(), 8192)
        .unwrap();
    let mut pending = vec![sock_pop, send, write];
    let mut seen = Vec::new();
    while !pending.is_empty() {
        let (i, r) = libos.wait_any(&pending, LONG).unwrap();
        pending.remove(i);
        if r.opcode == OpCode::Pop {
            assert_eq!(r.into_sga().unwrap().to_vec(), b"ping");
            seen.push("pop");
        } else {
            r.ok().unwrap();
            seen.push("other");
        }
    }
    assert_eq!(seen.len(), 3);
    assert_eq!(libos.file_len(file).unwrap(), 8196);
}

#[test]
fn socket_calls_on_a_file_and_file_calls_on_a_socket_are_refused() {
    let dir = Scratch::new("kinds");
    let mut libos = libos();
    let file = libos
        .open_file(
            dir.0.join("f"),
            &FileOptions::new().direct(false).create(true),
        )
        .unwrap();
    let e = libos.pop(file).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::WrongQueueKind);
    assert!(e.message().contains("pop_at"), "{e}");
    let e = libos
        .push(file, libos.sga_from_slice(b"x").unwrap())
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::WrongQueueKind);
    let sock = libos.socket(SocketKind::Stream).unwrap();
    let e = libos.pop_at(sock, 0, 10).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::WrongQueueKind);
    assert!(e.message().contains("open_file"), "{e}");
    let e = libos
        .open_file(dir.0.join("missing"), &FileOptions::new())
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert_eq!(
        libos.pop_at(file, 0, 0).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    // Closing with a read in flight: the read completes, then the file is closed.
    let qt = libos.pop_at(file, 0, 10).unwrap();
    libos.close(file).unwrap();
    let r = libos.wait(qt, LONG).unwrap();
    assert_eq!(r.into_sga().unwrap().len(), 0, "the file is empty");
    assert_eq!(
        libos.pop_at(file, 0, 10).unwrap_err().kind(),
        ErrorKind::BadQueue
    );
}

#[test]
fn blocking_waits_complete_file_operations() {
    let dir = Scratch::new("block");
    let mut config = Config::with_libos(LibOsName::Kernel);
    config.poll = bypass::PollMode::Block;
    let mut libos = LibOs::new(config).unwrap();
    let qd = libos
        .open_file(dir.0.join("f"), &FileOptions::new().create(true))
        .unwrap();
    for i in 0..16u64 {
        let data = pattern(8192, i as u8);
        let qt = libos
            .push_at(qd, libos.sga_from_slice(&data).unwrap(), i * 8192)
            .unwrap();
        libos.wait(qt, LONG).unwrap().ok().unwrap();
        let qt = libos.pop_at(qd, i * 8192, 8192).unwrap();
        let r = libos.wait(qt, LONG).unwrap();
        assert_eq!(r.into_sga().unwrap().to_vec(), data);
    }
    let qt = libos.sync(qd).unwrap();
    assert!(matches!(
        libos.wait(qt, LONG).unwrap().value,
        QValue::Synced
    ));
}

#[test]
fn the_storage_section_starts_a_pinned_sqpoll_thread() {
    let dir = Scratch::new("sqpoll");
    let cpu = (std::thread::available_parallelism().map_or(1, |n| n.get()) - 1) as u32;
    let config = Config::from_toml(&format!(
        "[storage]\nsqpoll_cpu = {cpu}\nsqpoll_idle_ms = 20\nfixed_buffers = false\nring_entries = 64\n"
    ))
    .unwrap();
    assert_eq!(config.storage.sqpoll_cpu, Some(cpu));
    let mut libos = LibOs::new(config).unwrap();
    let qd = libos
        .open_file(dir.0.join("f"), &FileOptions::new().create(true))
        .unwrap();
    let data = pattern(4096, 5);
    let qt = libos
        .push_at(qd, libos.sga_from_slice(&data).unwrap(), 0)
        .unwrap();
    libos.wait(qt, LONG).unwrap().ok().unwrap();
    let qt = libos.pop_at(qd, 0, 4096).unwrap();
    assert_eq!(
        libos.wait(qt, LONG).unwrap().into_sga().unwrap().to_vec(),
        data
    );
    // The poller is a thread of this process, pinned where the configuration said.
    let pinned = std::fs::read_dir("/proc/self/task")
        .unwrap()
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.starts_with("iou-sqp"))
        })
        .filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok())
        .any(|status| {
            status.lines().any(|l| {
                l.strip_prefix("Cpus_allowed_list:").map(str::trim) == Some(&cpu.to_string())
            })
        });
    assert!(pinned, "no SQPOLL thread pinned to CPU {cpu}");
    // docs/config.toml documents the section with its defaults.
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/config.toml"),
    )
    .unwrap();
    let bypass_part = &doc[..doc.find("\n[cli]").unwrap_or(doc.len())];
    let documented = Config::from_toml(bypass_part).unwrap();
    assert_eq!(documented.storage, bypass::StorageSection::default());
    // Bad values are configuration errors.
    let e = Config::from_toml("[storage]\nring_entries = 0\n").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config);
    assert!(e.message().contains("storage.ring_entries"), "{e}");
}

/// A small ext4 file system on a loop device over a scratch image, mounted for one test; the
/// kernel can shut it down (`EXT4_IOC_SHUTDOWN`), after which every read and write of its files
/// fails with EIO. Dropping it unmounts it, detaches the loop device and removes the image,
/// even when the test fails.
///
/// (A device-mapper `error` target would fail a chosen range of one device instead, but needs
/// device-mapper in the kernel; a shut-down file system needs only loop devices and ext4.)
struct FailingFs {
    mount: PathBuf,
    /// Dropped after the file system is unmounted and the loop device detached.
    _scratch: Scratch,
    loop_dev: Option<String>,
    mounted: bool,
}

/// `EXT4_IOC_SHUTDOWN` (`_IOR('X', 125, __u32)`), and its flag that skips flushing the journal.
const EXT4_IOC_SHUTDOWN: libc::c_ulong = 0x8004_587D;
const EXT4_GOING_FLAGS_NOLOGFLUSH: u32 = 2;

impl FailingFs {
    /// `Err(why)` when this machine cannot make one (not root, no mkfs.ext4, no loop devices).
    fn new(tag: &str) -> Result<FailingFs, String> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return Err("needs root".into());
        }
        let scratch = Scratch::new(tag);
        let image = scratch.0.join("ext4.img");
        let mount = scratch.0.join("mnt");
        std::fs::create_dir_all(&mount).map_err(|e| e.to_string())?;
        std::fs::File::create(&image)
            .and_then(|f| f.set_len(16 << 20))
            .map_err(|e| format!("creating the image: {e}"))?;
        let mut fs = FailingFs {
            mount,
            _scratch: scratch,
            loop_dev: None,
            mounted: false,
        };
        run("mkfs.ext4", &["-q", "-F", path_str(&image)?])?;
        let dev = run("losetup", &["--find", "--show", path_str(&image)?])?;
        fs.loop_dev = Some(dev.trim().to_string());
        let dev = fs.loop_dev.clone().unwrap_or_default();
        run("mount", &["-t", "ext4", &dev, path_str(&fs.mount)?])?;
        fs.mounted = true;
        Ok(fs)
    }

    /// Shuts the file system down: from now on the kernel fails its I/O with EIO.
    fn shut_down(&self) {
        let dir = std::fs::File::open(&self.mount).unwrap();
        let flags = EXT4_GOING_FLAGS_NOLOGFLUSH;
        // SAFETY: the descriptor is open for the call's duration; the ioctl reads one u32
        // through the pointer, which points to a live local.
        let rc = unsafe {
            libc::ioctl(
                std::os::fd::AsRawFd::as_raw_fd(&dir),
                EXT4_IOC_SHUTDOWN,
                &flags,
            )
        };
        assert_eq!(
            rc,
            0,
            "EXT4_IOC_SHUTDOWN: {}",
            std::io::Error::last_os_error()
        );
    }
}

impl Drop for FailingFs {
    fn drop(&mut self) {
        // A ring that just went away may hold its registered files a little longer (the
        // kernel tears rings down asynchronously): retry, then detach lazily. A loop device
        // still in use is detached by the kernel once its last user lets go.
        if self.mounted {
            if let Ok(m) = path_str(&self.mount) {
                let unmounted = (0..20).any(|_| {
                    run("umount", &[m]).is_ok() || {
                        std::thread::sleep(Duration::from_millis(100));
                        false
                    }
                });
                if !unmounted {
                    let _ = run("umount", &["-l", m]);
                }
            }
        }
        if let Some(dev) = &self.loop_dev {
            let _ = run("losetup", &["-d", dev]);
        }
    }
}

fn path_str(p: &std::path::Path) -> Result<&str, String> {
    p.to_str()
        .ok_or_else(|| format!("{} is not UTF-8", p.display()))
}

/// Runs a command; its standard output, or why it failed.
fn run(cmd: &str, args: &[&str]) -> Result<String, String> {
    let out = std::process::Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| format!("needs {cmd} ({e})"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn a_kernel_eio_fails_only_its_own_tokens_with_an_io_error() {
    let fs = match FailingFs::new("eio") {
        Ok(fs) => fs,
        Err(why) => {
            println!("SKIPPED a_kernel_eio_fails_only_its_own_tokens_with_an_io_error: {why}");
            return;
        }
    };
    let dir = Scratch::new("eio-healthy");
    let mut libos = libos();
    let opts = FileOptions::new().create(true); // O_DIRECT
    let victim = libos.open_file(fs.mount.join("victim"), &opts).unwrap();
    let healthy = libos.open_file(dir.0.join("healthy"), &opts).unwrap();
    for (qd, seed) in [(victim, 1u8), (healthy, 2)] {
        let qt = libos
            .push_at(qd, libos.sga_from_slice(&pattern(8192, seed)).unwrap(), 0)
            .unwrap();
        libos.wait(qt, LONG).unwrap().ok().unwrap();
    }
    let qt = libos.pop_at(victim, 0, 4096).unwrap();
    assert_eq!(
        libos.wait(qt, LONG).unwrap().into_sga().unwrap().to_vec(),
        pattern(4096, 1),
        "the file system works before it is shut down"
    );

    fs.shut_down();
    // In flight together: two operations the kernel fails with EIO, two it serves.
    let failing = [
        libos.pop_at(victim, 4096, 4096).unwrap(),
        libos
            .push_at(victim, libos.sga_from_slice(&pattern(4096, 3)).unwrap(), 0)
            .unwrap(),
    ];
    let serving = [
        libos.pop_at(healthy, 0, 8192).unwrap(),
        libos
            .push_at(
                healthy,
                libos.sga_from_slice(&pattern(4096, 4)).unwrap(),
                8192,
            )
            .unwrap(),
    ];
    for qt in failing {
        let r = libos.wait(qt, LONG).unwrap();
        assert_eq!(r.qd, victim);
        let QValue::Failed(e) = r.value else {
            panic!("an operation on a shut-down file system succeeded: {r:?}")
        };
        assert_eq!(e.kind(), ErrorKind::Io, "{e}");
        assert!(e.message().contains("victim"), "names the file: {e}");
    }
    let r = libos.wait(serving[0], LONG).unwrap();
    assert_eq!(r.into_sga().unwrap().to_vec(), pattern(8192, 2));
    let r = libos.wait(serving[1], LONG).unwrap();
    assert!(matches!(r.value, QValue::Pushed { bytes: 4096 }), "{r:?}");

    // The LibOs carries on: the failed queue keeps failing cleanly, the other keeps working.
    let again = libos.pop_at(victim, 0, 4096).unwrap();
    let QValue::Failed(e) = libos.wait(again, LONG).unwrap().value else {
        panic!("a read of a shut-down file system succeeded")
    };
    assert_eq!(e.kind(), ErrorKind::Io, "{e}");
    let qt = libos.pop_at(healthy, 8192, 4096).unwrap();
    assert_eq!(
        libos.wait(qt, LONG).unwrap().into_sga().unwrap().to_vec(),
        pattern(4096, 4)
    );
    libos.close(victim).unwrap();
    libos.close(healthy).unwrap();
}
