//! What the device examples share.

use bypass_devices::af_packet::{AfPacket, PacketConfig};
use bypass_devices::af_xdp::{AfXdp, XdpConfig, XdpMode};
use bypass_devices::Device;

/// Opens the device `kind` names on `interface`, or exits with a message.
pub fn open(kind: &str, interface: &str) -> Box<dyn Device> {
    let opened: Result<Box<dyn Device>, _> = match kind {
        "xdp-generic" | "xdp-driver" => {
            let mode = if kind == "xdp-generic" {
                XdpMode::Generic
            } else {
                XdpMode::Driver
            };
            let config = XdpConfig {
                mode,
                mode_fallback: false,
                ..XdpConfig::new(interface)
            };
            AfXdp::open(&config).map(|d| Box::new(d) as Box<dyn Device>)
        }
        "packet-v2" => {
            AfPacket::open(&PacketConfig::new(interface)).map(|d| Box::new(d) as Box<dyn Device>)
        }
        "packet-v3" => AfPacket::open(&PacketConfig::throughput(interface))
            .map(|d| Box::new(d) as Box<dyn Device>),
        other => {
            eprintln!("unknown kind {other}: use xdp-generic, xdp-driver, packet-v2 or packet-v3");
            std::process::exit(2);
        }
    };
    opened.unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(1);
    })
}
