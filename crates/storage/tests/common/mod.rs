//! Helpers shared by the storage tests: scratch directories removed on drop, a seeded PRNG.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use bypass_runtime::{BufferPool, PoolConfig};
use bypass_storage::{Engine, EngineConfig};

/// A fresh directory on the same file system as the build (so O_DIRECT works), removed with
/// everything in it when dropped, even if the test panics.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let base = option_env!("CARGO_TARGET_TMPDIR")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let dir = base.join(format!("bypass-storage-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// xorshift64*: small, seeded, reproducible.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub fn fill(&mut self, out: &mut [u8]) {
        for b in out {
            *b = self.next() as u8;
        }
    }
}

/// An engine over a pool of `chunks` 64 KiB buffers.
pub fn engine(chunks: usize, config: &EngineConfig) -> Engine {
    let pool = BufferPool::new(&PoolConfig::large(chunks)).expect("pool");
    Engine::new(config, pool).expect("engine")
}

/// A tiny tmpfs mounted for one test (to fill a file system cheaply), unmounted on drop (lazily,
/// so it goes even if a file on it is still open), even if the test panics.
pub struct TinyFs {
    dir: TempDir,
}

impl TinyFs {
    /// Mounts a tmpfs of `bytes` on a fresh directory; `None` if this process may not mount.
    pub fn mount(tag: &str, bytes: usize) -> Option<TinyFs> {
        let dir = TempDir::new(tag);
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status();
        match status {
            Ok(s) if s.success() => Some(TinyFs { dir }),
            _ => None,
        }
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for TinyFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}
