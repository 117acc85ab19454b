//! Where `ncrx send` puts its datagrams: UDP sockets (one per distinct source address of
//! the targets), frames in a pcap file built as netpoll builds them, or, with `--reliable`,
//! the queue of the reliable senders.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::SystemTime;

use netpoll_frame::{FrameBuilder, FrameConfig, MacAddr};
use pcap_file::pcap::{PcapPacket, PcapWriter};

use crate::capture;
use crate::cli::{OwnedTarget, SendArgs};
use crate::error::Failure;
use crate::net;

/// Where datagrams go: UDP sockets, or frames in a pcap file.
pub(super) enum Sink {
    /// `--reliable`: whole messages go to the thread running the reliable senders.
    Reliable(mpsc::SyncSender<Vec<u8>>),
    Udp {
        /// Per target: the socket (shared by targets with the same local address) and the
        /// destination.
        sockets: Vec<(usize, SocketAddr)>,
        bound: Vec<(SocketAddr, UdpSocket)>,
    },
    Pcap {
        path: PathBuf,
        writer: PcapWriter<BufWriter<File>>,
        builders: Vec<FrameBuilder>,
        /// The machine-wide IPv4 id counter (shared by all targets, as the kernel's).
        ip_id: u16,
        frame: Vec<u8>,
    },
}

impl Sink {
    pub(super) fn open(args: &SendArgs) -> Result<Self, Failure> {
        let targets = &args.target.targets;
        if let Some(path) = &args.pcap {
            let mut builders = Vec::new();
            for (index, target) in targets.iter().enumerate() {
                let Some(local_ip) = target.local_ip else {
                    return Err(Failure::Usage(format!(
                        "--pcap needs the source IP of target {} in --target (src-ip after '@')",
                        index + 1
                    )));
                };
                let mut config = FrameConfig::new(local_ip, target.remote_ip);
                config.source_mac = target.local_mac.unwrap_or(MacAddr::ZERO);
                config.destination_mac = target.remote_mac;
                config.source_port = target.local_port;
                config.destination_port = target.remote_port;
                let builder = FrameBuilder::new(&config)
                    .map_err(|e| Failure::Usage(format!("target {}: {e}", index + 1)))?;
                builders.push(builder);
            }
            let file = File::create(path).map_err(|source| Failure::File {
                what: "cannot create",
                path: path.clone(),
                source,
            })?;
            let writer = PcapWriter::new(BufWriter::new(file))
                .map_err(|e| capture::pcap_write_failure(path, e))?;
            return Ok(Sink::Pcap {
                path: path.clone(),
                writer,
                builders,
                ip_id: args.ip_id,
                frame: vec![0; 2048],
            });
        }
        let (bound, sockets) = bind_targets(targets)?;
        Ok(Sink::Udp { sockets, bound })
    }

    pub(super) fn send(&mut self, target: usize, payload: &[u8]) -> Result<(), Failure> {
        match self {
            // Messages, not datagrams, go to the reliable senders (see `send_extended`).
            Sink::Reliable(_) => Ok(()),
            Sink::Udp { sockets, bound } => {
                let (socket, to) = sockets[target];
                bound[socket]
                    .1
                    .send_to(payload, to)
                    .map_err(|source| Failure::Socket {
                        what: "cannot send to",
                        addr: to,
                        source,
                    })?;
                Ok(())
            }
            Sink::Pcap {
                path,
                writer,
                builders,
                ip_id,
                frame,
            } => {
                let len = builders[target]
                    .build_with_ip_id(*ip_id, payload, frame)
                    .map_err(|e| Failure::Usage(format!("cannot build a frame: {e}")))?;
                *ip_id = ip_id.wrapping_add(1);
                let timestamp = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default();
                let packet = PcapPacket::new(timestamp, len as u32, &frame[..len]);
                writer
                    .write_packet(&packet)
                    .map_err(|e| capture::pcap_write_failure(path, e))?;
                Ok(())
            }
        }
    }

    pub(super) fn finish(self) -> Result<(), Failure> {
        if let Sink::Pcap { path, writer, .. } = self {
            writer
                .into_writer()
                .flush()
                .map_err(|source| Failure::File {
                    what: "cannot write",
                    path,
                    source,
                })?;
        }
        Ok(())
    }
}

/// The local address a target sends from: its source IP, or the wildcard of the target's
/// address family, and its source port.
fn local_address(target: &OwnedTarget) -> SocketAddr {
    let ip = target.local_ip.unwrap_or(match target.remote_ip {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    });
    SocketAddr::new(ip, target.local_port)
}

/// Sockets bound for sending, with their local address.
pub(super) type BoundSockets = Vec<(SocketAddr, UdpSocket)>;

/// Binds one socket per distinct local address of `targets` (targets with the same source
/// address and port share it): the sockets, and per target its socket's index and
/// destination.
pub(super) fn bind_targets(
    targets: &[OwnedTarget],
) -> Result<(BoundSockets, Vec<(usize, SocketAddr)>), Failure> {
    let mut bound: Vec<(SocketAddr, UdpSocket)> = Vec::new();
    let mut sockets = Vec::new();
    for target in targets {
        let local = local_address(target);
        let index = if let Some(index) = bound.iter().position(|(addr, _)| *addr == local) {
            index
        } else {
            bound.push((local, net::bind_sender(local)?));
            bound.len() - 1
        };
        sockets.push((index, SocketAddr::new(target.remote_ip, target.remote_port)));
    }
    Ok((bound, sockets))
}
