//! Runs the storage benchmark and prints its table (or JSON with `--json`).
//!
//! ```text
//! cargo run --release -p bypass-storage --example bench_storage -- \
//!     [--path FILE] [--size-mib N] [--runtime-secs S] [--depths 1,8,32,128] [--no-fio]
//!     [--no-page-cache] [--rounds N] [--json]
//! ```

use std::time::Duration;

use bypass_storage::{bench, BenchOptions};

fn main() {
    let mut opts = BenchOptions::default();
    let mut json = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next().unwrap_or_else(|| {
                eprintln!("{arg} needs a value");
                std::process::exit(2)
            })
        };
        match arg.as_str() {
            "--path" => opts.path = Some(value().into()),
            "--size-mib" => opts.size = parse::<u64>(&value()) << 20,
            "--runtime-secs" => opts.runtime = Duration::from_secs_f64(parse(&value())),
            "--depths" => opts.depths = value().split(',').map(parse).collect(),
            "--no-fio" => opts.fio = false,
            "--no-page-cache" => opts.page_cache = false,
            "--rounds" => opts.rounds = parse(&value()),
            "--json" => json = true,
            _ => {
                eprintln!("unknown argument {arg}; see the example's doc comment");
                std::process::exit(2)
            }
        }
    }
    match bench(&opts) {
        Ok(report) if json => println!("{}", report.to_json()),
        Ok(report) => print!("{report}"),
        Err(e) => {
            eprintln!("bench storage: {e}");
            std::process::exit(1)
        }
    }
}

fn parse<T: std::str::FromStr>(s: &str) -> T {
    s.trim().parse().unwrap_or_else(|_| {
        eprintln!("cannot parse '{s}' as a number");
        std::process::exit(2)
    })
}
