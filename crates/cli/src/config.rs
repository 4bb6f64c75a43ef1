//! The configuration file: the keys of [`bypass::Config`] at the top level, and a `[cli]`
//! section with defaults for the flags of `bypass echo`. Flags given on the command line win
//! over the file. Unknown keys are errors in both parts. See `docs/config.toml`.

use std::net::SocketAddrV4;
use std::path::Path;

use serde::Deserialize;

use crate::error::CliError;

/// Defaults for `bypass echo serve` / `bypass echo run` flags. `bypass bench`, `demo` and
/// `doctor` take flags only.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct CliSection {
    /// `echo serve --listen`.
    pub listen: Option<String>,
    /// `echo run --connect`.
    pub connect: Option<String>,
    /// `echo run --size`, bytes per message.
    pub size: Option<usize>,
    /// `echo run --count`, messages in total.
    pub count: Option<u64>,
    /// `echo run --conns`.
    pub conns: Option<usize>,
    /// `echo run --duration`, seconds.
    pub duration: Option<f64>,
    /// `echo run --rate`, messages per second (open loop).
    pub rate: Option<f64>,
    /// `echo serve|run --udp`.
    pub udp: Option<bool>,
}

/// The whole file.
#[derive(Clone, Debug, Default)]
pub(crate) struct FileConfig {
    pub bypass: bypass::Config,
    pub cli: CliSection,
}

impl FileConfig {
    pub(crate) fn load(path: &Path) -> Result<FileConfig, CliError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            CliError::new(format!(
                "cannot read configuration file {}: {e}",
                path.display()
            ))
            .hint("check the path given to --config")
        })?;
        FileConfig::parse(&text).map_err(|e| e.context(path.display()))
    }

    pub(crate) fn parse(text: &str) -> Result<FileConfig, CliError> {
        let malformed = |e: &dyn std::fmt::Display| {
            CliError::new(format!("malformed configuration: {e}"))
                .hint("see docs/config.toml for every key and its allowed values")
        };
        let mut table: toml::Table = toml::from_str(text).map_err(|e| malformed(&e))?;
        let cli = match table.remove("cli") {
            Some(v) => CliSection::deserialize(v).map_err(|e| malformed(&format!("[cli]: {e}")))?,
            None => CliSection::default(),
        };
        let rest = toml::to_string(&table).map_err(|e| malformed(&e))?;
        let bypass = bypass::Config::from_toml(&rest)?;
        if let Some(a) = &cli.listen {
            parse_addr(a).map_err(|e| malformed(&format!("cli.listen: {e}")))?;
        }
        if let Some(a) = &cli.connect {
            parse_addr(a).map_err(|e| malformed(&format!("cli.connect: {e}")))?;
        }
        Ok(FileConfig { bypass, cli })
    }
}

/// Parses `IP:PORT` (IPv4), with a message that shows the expected form.
pub(crate) fn parse_addr(s: &str) -> Result<SocketAddrV4, String> {
    s.parse()
        .map_err(|_| format!("'{s}' is not an IPv4 address and port such as 127.0.0.1:7000"))
}

/// Parses a libOS name, listing the choices when it is unknown.
pub(crate) fn parse_libos(s: &str) -> Result<bypass::LibOsName, String> {
    s.parse()
        .map_err(|e: bypass::Error| e.message().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_configuration_parses_with_every_key() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/config.toml");
        let text = std::fs::read_to_string(path).expect("docs/config.toml exists");
        let file = FileConfig::parse(&text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            file.bypass,
            bypass::Config::default(),
            "the example shows the defaults"
        );
        let cli = file.cli;
        assert_eq!(cli.listen.as_deref(), Some("127.0.0.1:7000"));
        assert_eq!(cli.connect.as_deref(), Some("127.0.0.1:7000"));
        assert_eq!(cli.size, Some(64));
        assert_eq!(cli.count, Some(10_000));
        assert_eq!(cli.conns, Some(1));
        assert_eq!(cli.udp, Some(false));
        // Every key of bypass::Config appears in the example (uncommented).
        let table: toml::Table = toml::from_str(&text).unwrap();
        for key in [
            "libos", "poll", "pool", "limits", "net", "sim", "tcp", "cli",
        ] {
            assert!(table.contains_key(key), "docs/config.toml lacks '{key}'");
        }
        for key in ["frames", "large", "huge_pages"] {
            assert!(
                table["pool"].get(key).is_some(),
                "docs/config.toml lacks pool.{key}"
            );
        }
        for key in ["max_operations", "max_queues", "max_push_bytes"] {
            assert!(
                table["limits"].get(key).is_some(),
                "docs/config.toml lacks limits.{key}"
            );
        }
        // Keys without a default appear commented out; the others are set.
        for key in ["ip", "gateway", "iface", "netns"] {
            assert!(
                text.contains(&format!("# {key} = ")),
                "docs/config.toml lacks net.{key}"
            );
        }
        for key in ["xdp_mode", "packet_ring", "packet_offload"] {
            assert!(
                table["net"].get(key).is_some(),
                "docs/config.toml lacks net.{key}"
            );
        }
        for key in ["wire", "loss", "seed", "checksum_offload"] {
            assert!(
                table["sim"].get(key).is_some(),
                "docs/config.toml lacks sim.{key}"
            );
        }
        for key in [
            "nagle",
            "delayed_ack_us",
            "send_buffer",
            "recv_buffer",
            "congestion",
            "time_wait_ms",
            "max_retries",
            "sack",
            "timestamps",
            "window_scaling",
        ] {
            assert!(
                table["tcp"].get(key).is_some(),
                "docs/config.toml lacks tcp.{key}"
            );
        }
    }

    #[test]
    fn bad_files_name_the_problem() {
        let e = FileConfig::parse("libos = 'warp'").unwrap_err().to_string();
        assert!(e.contains("warp") && e.contains("kernel"), "{e}");
        let e = FileConfig::parse("[cli]\nsizee = 3")
            .unwrap_err()
            .to_string();
        assert!(e.contains("sizee"), "{e}");
        let e = FileConfig::parse("[cli]\nlisten = 'nowhere'")
            .unwrap_err()
            .to_string();
        assert!(e.contains("cli.listen") && e.contains("nowhere"), "{e}");
        let e = FileConfig::parse("libos = ").unwrap_err().to_string();
        assert!(e.contains("malformed"), "{e}");
        let ok = FileConfig::parse("poll = 'block'\n[cli]\nsize = 9").unwrap();
        assert_eq!(ok.bypass.poll, bypass::PollMode::Block);
        assert_eq!(ok.cli.size, Some(9));
    }
}
