//! Runs the shared-memory benchmark (what `bypass bench shm` prints):
//! `cargo run -p bypass-shm --release --example shm_bench [-- --quick] [-- --json]`.

#[cfg(not(loom))]
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = if args.iter().any(|a| a == "--quick") {
        bypass_shm::bench::BenchOptions::quick()
    } else {
        bypass_shm::bench::BenchOptions::default()
    };
    match bypass_shm::bench::run(&opts) {
        Ok(report) if args.iter().any(|a| a == "--json") => println!("{}", report.to_json()),
        Ok(report) => print!("{report}"),
        Err(e) => {
            eprintln!("shm benchmark failed: {e}");
            std::process::exit(1);
        }
    }
}

#[cfg(loom)]
fn main() {}
