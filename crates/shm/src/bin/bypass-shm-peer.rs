//! The other side of a channel for this crate's two-process tests: see
//! `bypass_shm::testing::peer_main` for the roles.

#[cfg(not(loom))]
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(bypass_shm::testing::peer_main(&args));
}

#[cfg(loom)]
fn main() {}
