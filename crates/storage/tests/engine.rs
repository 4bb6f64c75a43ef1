//! The storage engine through its public API: data integrity, O_DIRECT alignment, batching,
//! fixed buffers, SQPOLL and kernel errors.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use bypass_runtime::{BufferPool, PoolConfig, Sga};
use bypass_storage::{
    Completion, Engine, EngineConfig, ErrorKind, FileId, OpId, OpenOptions, SqPoll,
};
use common::{engine, Rng, TempDir, TinyFs};

const FILE_LEN: u64 = 4 << 20;

fn wait_all(e: &mut Engine, ops: &[OpId]) -> Vec<Completion> {
    ops.iter()
        .map(|&op| e.wait_for(op).expect("operation succeeds"))
        .collect()
}

fn read_bytes(e: &mut Engine, f: FileId, offset: u64, len: usize) -> Vec<u8> {
    let op = e.read(f, offset, len).expect("read accepted");
    match e.wait_for(op).expect("read succeeds") {
        Completion::Read(sga) => sga.to_vec(),
        other => panic!("a read completed as {other:?}"),
    }
}

/// Writes batches of random disjoint extents (several in flight at once, multi-chunk ones as
/// vectored I/O), then reads random extents back and compares every byte with a model.
fn random_extents(config: &EngineConfig, direct: bool, seed: u64) {
    let dir = TempDir::new("extents");
    let mut e = engine(128, config);
    let path = dir.join("data");
    let f = e
        .open(&path, &OpenOptions::new().direct(direct).create(true))
        .expect("open");
    let align = if direct {
        u64::from(e.info(f).unwrap().alignment.offset)
    } else {
        1
    };
    let mut model = vec![0u8; FILE_LEN as usize];
    let mut rng = Rng::new(seed);
    // Establish the file's length with one write of zeroes spanning it.
    e.set_len(f, FILE_LEN).unwrap();

    for round in 0..12 {
        // Writes: up to 8 disjoint extents in flight together.
        let mut ops = Vec::new();
        let slots = 8u64;
        let span = FILE_LEN / slots;
        for s in 0..slots {
            if rng.below(4) == 0 {
                continue;
            }
            let max_len = (span / align).min(300_000 / align.max(1)).max(1);
            let len = (1 + rng.below(max_len)) * align;
            let off_room = (span - len) / align;
            let offset = s * span + rng.below(off_room + 1) * align;
            let mut data = vec![0u8; len as usize];
            rng.fill(&mut data);
            model[offset as usize..(offset + len) as usize].copy_from_slice(&data);
            let sga = Sga::copy_from(e.pool(), &data).expect("pool has room");
            ops.push(e.write(f, offset, sga).expect("write accepted"));
        }
        for (c, op) in wait_all(&mut e, &ops).into_iter().zip(&ops) {
            assert!(
                matches!(c, Completion::Write(n) if n > 0),
                "round {round} op {op:?}: {c:?}"
            );
        }
        // Reads: random extents, several in flight, every byte checked.
        let mut reads = Vec::new();
        for _ in 0..6 {
            let len = (1 + rng.below((400_000 / align).max(1))) * align;
            let offset = rng.below((FILE_LEN - len) / align + 1) * align;
            reads.push((
                offset,
                len,
                e.read(f, offset, len as usize).expect("read accepted"),
            ));
        }
        for (offset, len, op) in reads {
            let Completion::Read(sga) = e.wait_for(op).expect("read succeeds") else {
                panic!("not a read");
            };
            assert_eq!(sga.len() as u64, len);
            assert_eq!(
                sga.to_vec(),
                &model[offset as usize..(offset + len) as usize],
                "round {round}: read of {len} B at {offset} differs (direct={direct})"
            );
        }
    }
    // Finally the whole file, in 1 MiB reads.
    for off in (0..FILE_LEN).step_by(1 << 20) {
        assert_eq!(
            read_bytes(&mut e, f, off, 1 << 20),
            &model[off as usize..][..1 << 20]
        );
    }
    let op = e.fdatasync(f).unwrap();
    assert!(matches!(e.wait_for(op).unwrap(), Completion::Sync));
    assert_eq!(e.stats().in_flight, 0);
    e.close(f).unwrap();
    assert_eq!(
        e.pool().available(),
        128,
        "every buffer went back to the pool"
    );
    // And the bytes are really in the file, as seen by the kernel's ordinary read path.
    assert_eq!(std::fs::read(&path).unwrap(), model);
}

#[test]
fn random_extents_read_back_buffered() {
    random_extents(&EngineConfig::default(), false, 1);
}

#[test]
fn random_extents_read_back_direct() {
    random_extents(&EngineConfig::default(), true, 2);
}

#[test]
fn random_extents_read_back_direct_without_fixed_buffers() {
    let config = EngineConfig {
        register_buffers: false,
        ..EngineConfig::default()
    };
    random_extents(&config, true, 3);
}

#[test]
fn random_extents_read_back_without_deferred_completion_work() {
    let config = EngineConfig {
        defer_taskrun: false,
        ..EngineConfig::default()
    };
    random_extents(&config, true, 5);
}

/// With completion work deferred to this thread, completions appear only after an
/// `io_uring_enter`: `poll` and `spin` must make one when the kernel flags pending work, and
/// make none otherwise.
#[test]
fn deferred_completions_are_posted_by_poll_and_by_spin() {
    let dir = TempDir::new("deferred");
    let path = dir.join("f");
    let data: Vec<u8> = (0..(16 * 4096u32)).map(|i| (i / 4096 + 1) as u8).collect();
    std::fs::write(&path, &data).unwrap();
    let mut e = engine(64, &EngineConfig::default());
    assert!(
        e.defer_taskrun(),
        "this kernel (6.1+) defers completion work to the issuing thread"
    );
    let f = e.open(&path, &OpenOptions::new()).unwrap();
    let check = |i: u64, c: Completion| {
        let Completion::Read(sga) = c else {
            panic!("not a read")
        };
        assert_eq!(sga.to_vec(), vec![i as u8 + 1; 4096], "block {i}");
    };

    // poll: reads complete by polling alone, within a bounded time.
    let ops: Vec<OpId> = (0..8).map(|i| e.read(f, i * 4096, 4096).unwrap()).collect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut done = 0;
    while done < ops.len() {
        assert!(
            std::time::Instant::now() < deadline,
            "poll never posted the deferred completions"
        );
        done += e.poll().unwrap();
    }
    for (i, &op) in ops.iter().enumerate() {
        check(i as u64, e.take(op).unwrap().expect("completed"));
    }
    // Nothing in flight and nothing pending: poll makes no system call.
    let before = e.stats().enter_calls;
    e.poll().unwrap();
    assert_eq!(
        e.stats().enter_calls,
        before,
        "an idle poll enters the kernel"
    );

    // spin: the same, busy-polling.
    let ops: Vec<OpId> = (8..16)
        .map(|i| e.read(f, i * 4096, 4096).unwrap())
        .collect();
    let mut done = 0;
    while done < ops.len() {
        let n = e.spin(Some(std::time::Duration::from_secs(10))).unwrap();
        assert!(n > 0, "spin timed out with reads in flight");
        done += n;
    }
    for (i, &op) in ops.iter().enumerate() {
        check(i as u64 + 8, e.take(op).unwrap().expect("completed"));
    }
}

#[test]
fn random_extents_read_back_with_sqpoll() {
    let config = EngineConfig {
        sqpoll: Some(SqPoll {
            cpu: Some(0),
            idle: std::time::Duration::from_millis(20),
        }),
        ..EngineConfig::default()
    };
    random_extents(&config, true, 4);
}

#[test]
fn dsync_writes_complete_whole_and_read_back_direct_and_buffered() {
    let dir = TempDir::new("dsync");
    for direct in [true, false] {
        let path = dir.join(if direct { "direct" } else { "buffered" });
        let mut e = engine(8, &EngineConfig::default());
        let f = e
            .open(&path, &OpenOptions::new().direct(direct).create(true))
            .unwrap();
        // One chunk and a vectored two-chunk write, both with RWF_DSYNC.
        let a: Vec<u8> = (0..4096u32).map(|i| (i % 253) as u8).collect();
        let b: Vec<u8> = (0..(64 << 10) + 4096u32).map(|i| (i % 241) as u8).collect();
        let wa = e
            .write_dsync(f, 0, Sga::copy_from(e.pool(), &a).unwrap())
            .unwrap();
        let wb = e
            .write_dsync(f, 4096, Sga::copy_from(e.pool(), &b).unwrap())
            .unwrap();
        let done = wait_all(&mut e, &[wa, wb]);
        assert!(matches!(done[0], Completion::Write(4096)), "{:?}", done[0]);
        assert!(
            matches!(done[1], Completion::Write(n) if n == b.len()),
            "{:?}",
            done[1]
        );
        assert_eq!(read_bytes(&mut e, f, 0, 4096), a);
        assert_eq!(read_bytes(&mut e, f, 4096, b.len()), b);
        e.close(f).unwrap();
    }
}

#[test]
fn a_read_past_the_end_returns_the_bytes_that_exist() {
    let dir = TempDir::new("eof");
    let path = dir.join("short");
    let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&path, &data).unwrap();
    let mut e = engine(8, &EngineConfig::default());
    let f = e.open(&path, &OpenOptions::new().direct(false)).unwrap();
    assert_eq!(e.info(f).unwrap().len, 10_000);
    assert_eq!(read_bytes(&mut e, f, 9_000, 5_000), &data[9_000..]);
    assert_eq!(read_bytes(&mut e, f, 20_000, 100), Vec::<u8>::new());
    // O_DIRECT: the file ends inside the last block.
    let f2 = e.open(&path, &OpenOptions::new().direct(true)).unwrap();
    assert_eq!(read_bytes(&mut e, f2, 8192, 4096), &data[8192..]);
    assert_eq!(read_bytes(&mut e, f2, 0, 16384), data);
}

#[test]
fn misaligned_direct_requests_are_rejected_before_submission() {
    let dir = TempDir::new("align");
    let mut e = engine(8, &EngineConfig::default());
    let f = e
        .open(dir.join("d"), &OpenOptions::new().create(true))
        .unwrap();
    let a = e.info(f).unwrap().alignment;
    assert!(a.offset.is_power_of_two() && a.offset >= 512, "{a:?}");
    let before = e.stats();

    let err = e.read(f, 100, 4096).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Misaligned);
    assert!(err.message().contains("offset 100"), "{err}");
    assert!(
        err.message()
            .contains(&format!("multiples of {} B", a.offset)),
        "{err}"
    );
    assert!(err.message().contains("direct(false)"), "{err}");

    let err = e.read(f, 0, 1000).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Misaligned);
    assert!(err.message().contains("length 1000"), "{err}");

    let sga = Sga::copy_from(e.pool(), &[7u8; 4096]).unwrap();
    let err = e.write(f, u64::from(a.offset) / 2 + 1, sga).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Misaligned);

    // A buffer with headroom starts off the memory alignment.
    let frames = BufferPool::new(&PoolConfig::frames(4)).unwrap();
    let mut b = frames.alloc().unwrap();
    b.extend_from_slice(&[1u8; 1024]);
    let err = e.write(f, 0, Sga::from(b)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Misaligned);
    assert!(err.message().contains("segment 0"), "{err}");

    assert_eq!(e.stats(), before, "nothing was submitted");
    assert_eq!(
        e.pool().available(),
        8,
        "rejected reads return their buffers"
    );
    // The same requests are fine without O_DIRECT.
    let g = e
        .open(
            dir.join("b"),
            &OpenOptions::new().direct(false).create(true),
        )
        .unwrap();
    let data: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
    let op = e
        .write(g, 100, Sga::copy_from(e.pool(), &data).unwrap())
        .unwrap();
    assert!(matches!(e.wait_for(op).unwrap(), Completion::Write(1000)));
    assert_eq!(read_bytes(&mut e, g, 100, 1000), data);
}

#[test]
fn without_eager_submit_one_poll_submits_everything_queued_with_one_system_call() {
    let dir = TempDir::new("batch");
    let path = dir.join("f");
    let data: Vec<u8> = (0..(32 * 4096u32)).map(|i| (i / 4096) as u8).collect();
    std::fs::write(&path, &data).unwrap();
    let batched = EngineConfig {
        eager_submit_below: 0,
        ..EngineConfig::default()
    };
    let mut e = engine(64, &batched);
    let f = e.open(&path, &OpenOptions::new()).unwrap();
    let before = e.stats().enter_calls;
    let ops: Vec<OpId> = (0..32)
        .map(|i| e.read(f, i * 4096, 4096).unwrap())
        .collect();
    assert_eq!(
        e.stats().enter_calls,
        before,
        "queueing makes no system call"
    );
    e.poll().unwrap();
    assert_eq!(e.stats().enter_calls, before + 1, "one submit for 32 reads");
    for (i, op) in ops.into_iter().enumerate() {
        let Completion::Read(sga) = e.wait_for(op).unwrap() else {
            panic!("not a read")
        };
        assert_eq!(sga.to_vec(), vec![i as u8; 4096]);
    }
}

#[test]
fn eager_submit_sends_an_operation_at_once_only_while_others_are_in_flight() {
    let dir = TempDir::new("eager");
    let path = dir.join("f");
    let data: Vec<u8> = (0..(8 * 4096u32)).map(|i| (i / 4096) as u8).collect();
    std::fs::write(&path, &data).unwrap();
    let mut e = engine(64, &EngineConfig::default());
    let f = e.open(&path, &OpenOptions::new()).unwrap();
    let before = e.stats().enter_calls;
    // Alone: it waits for the poll (or wait) that submits it.
    let first = e.read(f, 0, 4096).unwrap();
    assert_eq!(
        e.stats().enter_calls,
        before,
        "a lone read is not submitted yet"
    );
    // With another in flight: each goes at once, the first along with the second.
    let rest: Vec<OpId> = (1..8).map(|i| e.read(f, i * 4096, 4096).unwrap()).collect();
    assert_eq!(
        e.stats().enter_calls,
        before + 7,
        "one submit per read after the first"
    );
    e.poll().unwrap();
    assert_eq!(
        e.stats().enter_calls,
        before + 7,
        "nothing was left to submit"
    );
    for (i, op) in std::iter::once(first).chain(rest).enumerate() {
        let Completion::Read(sga) = e.wait_for(op).unwrap() else {
            panic!("not a read")
        };
        assert_eq!(sga.to_vec(), vec![i as u8; 4096]);
    }
}

#[test]
fn fixed_buffers_are_used_only_when_registered() {
    let dir = TempDir::new("fixed");
    let path = dir.join("f");
    std::fs::write(&path, vec![0x5au8; 1 << 17]).unwrap();
    for register in [true, false] {
        let mut e = engine(
            8,
            &EngineConfig {
                register_buffers: register,
                ..EngineConfig::default()
            },
        );
        assert_eq!(e.fixed_buffers(), register);
        let f = e.open(&path, &OpenOptions::new()).unwrap();
        assert_eq!(read_bytes(&mut e, f, 0, 4096), vec![0x5a; 4096]);
        let op = e
            .write(f, 4096, Sga::copy_from(e.pool(), &[0xa5; 4096]).unwrap())
            .unwrap();
        e.wait_for(op).unwrap();
        // Two chunks: a vectored read, never fixed.
        assert_eq!(read_bytes(&mut e, f, 0, 1 << 17)[4096..8192], [0xa5; 4096]);
        let expected = if register { 2 } else { 0 };
        assert_eq!(
            e.stats().fixed_buffer_ios,
            expected,
            "register_buffers={register}"
        );
    }
}

#[test]
fn sqpoll_submits_without_system_calls_while_the_poller_is_awake() {
    let dir = TempDir::new("sqpoll");
    let path = dir.join("f");
    std::fs::write(&path, vec![9u8; 1 << 20]).unwrap();
    let mut e = engine(
        64,
        &EngineConfig {
            sqpoll: Some(SqPoll {
                cpu: None,
                idle: std::time::Duration::from_millis(500),
            }),
            ..EngineConfig::default()
        },
    );
    assert!(e.sqpoll());
    let f = e.open(&path, &OpenOptions::new()).unwrap();
    // Wake the poller once, then run 200 reads by polling only.
    assert_eq!(read_bytes(&mut e, f, 0, 4096), vec![9; 4096]);
    let before = e.stats().enter_calls;
    for i in 0..200u64 {
        let op = e.read(f, (i % 256) * 4096, 4096).unwrap();
        let data = loop {
            e.poll().unwrap();
            if let Some(Completion::Read(sga)) = e.take(op).unwrap() {
                break sga.to_vec();
            }
            std::hint::spin_loop();
        };
        assert_eq!(data, vec![9; 4096]);
    }
    let calls = e.stats().enter_calls - before;
    assert!(
        calls < 20,
        "{calls} system calls for 200 reads under SQPOLL"
    );
}

/// For every SQPOLL thread of this process (other tests may have their own), the CPUs it may
/// run on, as /proc lists them.
fn sqpoll_thread_cpus() -> Vec<String> {
    let mut found = Vec::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return found;
    };
    for task in tasks.flatten() {
        let dir = task.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if !comm.starts_with("iou-sqp") {
            continue;
        }
        let status = std::fs::read_to_string(dir.join("status")).unwrap_or_default();
        if let Some(list) = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        {
            found.push(list.trim().to_string());
        }
    }
    found
}

#[test]
fn the_sqpoll_thread_runs_on_the_cpu_asked_for() {
    let cpu = (std::thread::available_parallelism().map_or(1, |n| n.get()) - 1) as u32;
    let e = engine(
        4,
        &EngineConfig {
            sqpoll: Some(SqPoll {
                cpu: Some(cpu),
                idle: std::time::Duration::from_millis(10),
            }),
            ..EngineConfig::default()
        },
    );
    assert!(e.sqpoll());
    // The thread pins itself when it first runs: give it a moment.
    let mut cpus = sqpoll_thread_cpus();
    for _ in 0..100 {
        if cpus.contains(&cpu.to_string()) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
        cpus = sqpoll_thread_cpus();
    }
    assert!(
        cpus.contains(&cpu.to_string()),
        "SQPOLL threads may run on {cpus:?}"
    );
}

struct CountWake(AtomicUsize);
impl Wake for CountWake {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn a_waker_is_woken_when_its_operation_completes_and_ids_are_spent_once() {
    let dir = TempDir::new("waker");
    let path = dir.join("f");
    std::fs::write(&path, b"0123456789abcdef".repeat(256)).unwrap();
    let mut e = engine(4, &EngineConfig::default());
    let f = e.open(&path, &OpenOptions::new().direct(false)).unwrap();
    let count = Arc::new(CountWake(AtomicUsize::new(0)));
    let waker = Waker::from(count.clone());
    let op = e.read(f, 16, 16).unwrap();
    assert!(e.poll_op(op, &waker).is_pending());
    while count.0.load(Ordering::SeqCst) == 0 {
        e.wait(None).unwrap();
    }
    assert_eq!(count.0.load(Ordering::SeqCst), 1);
    assert!(e.is_done(op));
    let cx = Context::from_waker(&waker);
    match e.poll_op(op, cx.waker()) {
        Poll::Ready(Ok(Completion::Read(sga))) => assert_eq!(sga.to_vec(), b"0123456789abcdef"),
        other => panic!("{other:?}"),
    }
    let err = e.take(op).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.message().contains("already taken"), "{err}");
}

#[test]
fn kernel_errors_come_back_per_operation_with_their_errno() {
    let dir = TempDir::new("errno");
    let path = dir.join("ro");
    std::fs::write(&path, [1u8; 4096]).unwrap();
    let mut e = engine(4, &EngineConfig::default());
    let f = e
        .open(&path, &OpenOptions::new().direct(false).write(false))
        .unwrap();
    let op = e
        .write(f, 0, Sga::copy_from(e.pool(), &[2u8; 4096]).unwrap())
        .unwrap();
    let err = e.wait_for(op).unwrap_err();
    assert_eq!(err.errno(), Some(libc::EBADF));
    assert!(
        err.message().contains("write of 4096 B at offset 0"),
        "{err}"
    );
    // The engine carries on: the next operation on the same file works.
    assert_eq!(read_bytes(&mut e, f, 0, 4096), vec![1u8; 4096]);

    let err = e
        .open(dir.join("missing"), &OpenOptions::new())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(err.errno(), Some(libc::ENOENT));
    assert!(err.message().contains("missing"), "{err}");
}

#[test]
fn a_full_file_system_fails_the_write_with_enospc() {
    let Some(fs) = TinyFs::mount("enospc", 256 << 10) else {
        eprintln!("skipping the ENOSPC check: cannot mount a tmpfs here (needs root)");
        return;
    };
    let mut e = engine(16, &EngineConfig::default());
    let f = e
        .open(
            fs.join("big"),
            &OpenOptions::new().direct(false).create(true),
        )
        .unwrap();
    let data = vec![3u8; 512 << 10];
    let op = e
        .write(f, 0, Sga::copy_from(e.pool(), &data).unwrap())
        .unwrap();
    let err = e.wait_for(op).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NoSpace);
    assert_eq!(err.errno(), Some(libc::ENOSPC));
    assert!(err.message().contains("free space"), "{err}");
    e.close(f).unwrap();
}

#[test]
fn limits_and_bad_ids_are_errors_not_panics() {
    let dir = TempDir::new("limits");
    let path = dir.join("f");
    std::fs::write(&path, [0u8; 8192]).unwrap();
    let mut e = engine(
        2,
        &EngineConfig {
            max_ops: 2,
            max_files: 1,
            ..EngineConfig::default()
        },
    );
    let f = e.open(&path, &OpenOptions::new().direct(false)).unwrap();
    let err = e.open(&path, &OpenOptions::new()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Busy);
    assert!(err.message().contains("max_files"), "{err}");
    // Pool of two chunks: a three-chunk read cannot be served.
    let err = e.read(f, 0, 3 << 16).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Busy);
    let a = e.fsync(f).unwrap();
    let b = e.fdatasync(f).unwrap();
    let err = e.fsync(f).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Busy);
    assert!(err.message().contains("max_ops"), "{err}");
    let err = e.close(f).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Busy);
    e.wait_for(a).unwrap();
    e.wait_for(b).unwrap();
    assert_eq!(e.read(f, 0, 0).unwrap_err().kind(), ErrorKind::InvalidInput);
    e.close(f).unwrap();
    let err = e.read(f, 0, 10).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.message().contains("not open"), "{err}");
}

/// A loop device over a scratch file, detached on drop (even if the test panics).
struct LoopDevice {
    dev: String,
    _dir: TempDir,
}

impl LoopDevice {
    /// `None` if this process may not attach loop devices (needs root).
    fn attach(len: u64) -> Option<LoopDevice> {
        let dir = TempDir::new("loop");
        let backing = dir.join("backing");
        std::fs::File::create(&backing).ok()?.set_len(len).ok()?;
        let out = std::process::Command::new("losetup")
            .args(["--find", "--show", "--sector-size", "4096"])
            .arg(&backing)
            .stderr(std::process::Stdio::null())
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        let dev = String::from_utf8(out.stdout).ok()?.trim().to_string();
        Some(LoopDevice { dev, _dir: dir })
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = std::process::Command::new("losetup")
            .args(["-d", &self.dev])
            .status();
    }
}

#[test]
fn a_block_device_reports_its_size_and_block_size_and_round_trips_data() {
    let Some(lo) = LoopDevice::attach(4 << 20) else {
        eprintln!("skipping the block device check: cannot attach a loop device (needs root)");
        return;
    };
    let mut e = engine(32, &EngineConfig::default());
    let f = e.open(&lo.dev, &OpenOptions::new()).unwrap();
    let info = e.info(f).unwrap().clone();
    assert!(info.block_device);
    assert_eq!(info.len, 4 << 20);
    assert_eq!(
        info.alignment.offset, 4096,
        "the loop device has 4 KiB sectors"
    );
    // 512 B is fine for a 512 B-sector disk, not for this one: refused before submission.
    let err = e.read(f, 512, 4096).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Misaligned);
    let mut rng = Rng::new(7);
    let mut data = vec![0u8; 256 << 10];
    rng.fill(&mut data);
    let op = e
        .write(f, 1 << 20, Sga::copy_from(e.pool(), &data).unwrap())
        .unwrap();
    assert!(matches!(e.wait_for(op).unwrap(), Completion::Write(n) if n == data.len()));
    let op = e.fsync(f).unwrap();
    e.wait_for(op).unwrap();
    assert_eq!(read_bytes(&mut e, f, 1 << 20, data.len()), data);
    // A read across the end of the device returns what exists.
    assert_eq!(read_bytes(&mut e, f, (4 << 20) - 4096, 8192).len(), 4096);
    e.close(f).unwrap();
}
