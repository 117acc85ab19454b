//! The `netconsole=` kernel/module parameter.
//!
//! ```text
//!  netconsole=[+][r][src-port]@[src-ip]/[<dev>],[tgt-port]@<tgt-ip>/[tgt-macaddr][;<next target>]*
//!             │  │  └ default 6665   │      │      └ default 6666  │         └ default ff:ff:ff:ff:ff:ff
//!             │  │                   │      └ name (default eth0), or a MAC (contains ':')
//!             │  │                   └ optional; IPv6 when it contains ':'
//!             │  └ release prepend (needs +)
//!             └ extended
//!
//!  example: +r6665@192.0.2.1/eth0,6666@192.0.2.2/52:54:00:12:34:57;6667@/,6668@2001:db8::2/
//! ```
//!
//! At most 256 characters in all (`MAX_PARAM_LENGTH`). The same syntax configures netoops
//! (with other default ports). [`Target`]'s `Display` writes every field explicitly, so
//! formatting then parsing gives the same target back.

use core::fmt;
use core::net::IpAddr;
use core::str::FromStr;

use netpoll_frame::MacAddr;

/// Longest parameter the kernel accepts (`MAX_PARAM_LENGTH`).
pub const MAX_PARAM_LENGTH: usize = 256;
/// Interface names are at most 15 bytes (`IFNAMSIZ` - 1).
pub const MAX_DEVICE_NAME: usize = 15;
/// Default local port (`netconsole=`'s `src-port`): the port netpoll sends from, defined
/// once, in `netpoll-frame`.
pub const DEFAULT_LOCAL_PORT: u16 = netpoll_frame::NETCONSOLE_SOURCE_PORT;
/// Default remote port (`tgt-port`), where receivers listen: defined once, in
/// `netpoll-frame`.
pub const DEFAULT_REMOTE_PORT: u16 = netpoll_frame::NETCONSOLE_DESTINATION_PORT;
/// Default device.
pub const DEFAULT_DEVICE: &str = "eth0";

/// Why a `netconsole=` value was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParamError {
    /// Longer than 256 characters.
    #[error("parameter longer than 256 characters")]
    TooLong,
    /// A separator (`@`, `/`, `,`) is missing.
    #[error("missing '{0}'")]
    Missing(char),
    /// A port is not a decimal u16.
    #[error("bad port")]
    BadPort,
    /// An IP address does not parse.
    #[error("bad IP address")]
    BadIp,
    /// A MAC address does not parse.
    #[error("bad MAC address")]
    BadMac,
    /// The interface name is longer than 15 bytes or empty where one is required.
    #[error("bad interface name")]
    BadDevice,
    /// Local and remote addresses are of different IP versions.
    #[error("local and remote IP versions differ")]
    IpVersionMismatch,
    /// `r` without `+`.
    #[error("release prepend requires extended mode (+)")]
    ReleaseNeedsExtended,
}

/// The local interface: by name, or (newer kernels) by MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device<'a> {
    /// Interface name (`eth0`).
    Name(&'a str),
    /// Interface MAC address.
    Mac(MacAddr),
}

/// One netconsole target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Target<'a> {
    /// `+`: extended records.
    pub extended: bool,
    /// `r`: release prepend.
    pub release: bool,
    /// Source UDP port.
    pub local_port: u16,
    /// Source IP, when given (otherwise the interface's).
    pub local_ip: Option<IpAddr>,
    /// Interface.
    pub device: Device<'a>,
    /// Destination UDP port.
    pub remote_port: u16,
    /// Destination IP.
    pub remote_ip: IpAddr,
    /// Destination MAC.
    pub remote_mac: MacAddr,
}

impl<'a> Target<'a> {
    /// A target with every default and the given remote IP.
    pub const fn new(remote_ip: IpAddr) -> Self {
        Target {
            extended: false,
            release: false,
            local_port: DEFAULT_LOCAL_PORT,
            local_ip: None,
            device: Device::Name(DEFAULT_DEVICE),
            remote_port: DEFAULT_REMOTE_PORT,
            remote_ip,
            remote_mac: MacAddr::BROADCAST,
        }
    }

    /// Parses one target (no `;`).
    pub fn parse(spec: &'a str) -> Result<Self, ParamError> {
        let mut rest = spec;
        let extended = if let Some(r) = rest.strip_prefix('+') {
            rest = r;
            true
        } else {
            false
        };
        let release = if let Some(r) = rest.strip_prefix('r') {
            if !extended {
                return Err(ParamError::ReleaseNeedsExtended);
            }
            rest = r;
            true
        } else {
            false
        };
        let (local_port, r) = split_once(rest, '@')?;
        let local_port = parse_port(local_port, DEFAULT_LOCAL_PORT)?;
        let (local_ip, r) = split_once(r, '/')?;
        let local_ip = if local_ip.is_empty() {
            None
        } else {
            Some(IpAddr::from_str(local_ip).map_err(|_| ParamError::BadIp)?)
        };
        let (device, r) = split_once(r, ',')?;
        let device = if device.is_empty() {
            Device::Name(DEFAULT_DEVICE)
        } else if device.contains(':') {
            Device::Mac(MacAddr::from_str(device).map_err(|_| ParamError::BadMac)?)
        } else if device.len() > MAX_DEVICE_NAME {
            return Err(ParamError::BadDevice);
        } else {
            Device::Name(device)
        };
        let (remote_port, r) = split_once(r, '@')?;
        let remote_port = parse_port(remote_port, DEFAULT_REMOTE_PORT)?;
        let (remote_ip, mac) = split_once(r, '/')?;
        let remote_ip = IpAddr::from_str(remote_ip).map_err(|_| ParamError::BadIp)?;
        if local_ip.is_some_and(|l| l.is_ipv6() != remote_ip.is_ipv6()) {
            return Err(ParamError::IpVersionMismatch);
        }
        let remote_mac = if mac.is_empty() {
            MacAddr::BROADCAST
        } else {
            MacAddr::from_str(mac).map_err(|_| ParamError::BadMac)?
        };
        Ok(Target {
            extended,
            release,
            local_port,
            local_ip,
            device,
            remote_port,
            remote_ip,
            remote_mac,
        })
    }
}

fn split_once(s: &str, sep: char) -> Result<(&str, &str), ParamError> {
    s.split_once(sep).ok_or(ParamError::Missing(sep))
}

fn parse_port(s: &str, default: u16) -> Result<u16, ParamError> {
    if s.is_empty() {
        return Ok(default);
    }
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParamError::BadPort);
    }
    s.parse().map_err(|_| ParamError::BadPort)
}

impl fmt::Display for Target<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.extended {
            f.write_str("+")?;
        }
        if self.release {
            f.write_str("r")?;
        }
        write!(f, "{}@", self.local_port)?;
        if let Some(ip) = self.local_ip {
            write!(f, "{ip}")?;
        }
        match self.device {
            Device::Name(name) => write!(f, "/{name},")?,
            Device::Mac(mac) => write!(f, "/{mac},")?,
        }
        write!(
            f,
            "{}@{}/{}",
            self.remote_port, self.remote_ip, self.remote_mac
        )
    }
}

/// Parses a whole `netconsole=` value: one or more targets separated by `;`.
///
/// ```
/// use netconsole_proto::param::{parse_targets, Device};
///
/// let targets: Vec<_> = parse_targets("+r@/,@192.0.2.2/;6667@/eth1,6668@2001:db8::2/")?
///     .collect::<Result<_, _>>()?;
/// assert!(targets[0].extended && targets[0].release);
/// assert_eq!((targets[0].local_port, targets[0].remote_port), (6665, 6666));
/// assert_eq!(targets[1].device, Device::Name("eth1"));
/// assert!(targets[1].remote_ip.is_ipv6());
/// # Ok::<(), netconsole_proto::param::ParamError>(())
/// ```
pub fn parse_targets(
    value: &str,
) -> Result<impl Iterator<Item = Result<Target<'_>, ParamError>>, ParamError> {
    if value.len() > MAX_PARAM_LENGTH {
        return Err(ParamError::TooLong);
    }
    Ok(value.split(';').map(Target::parse))
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn capture_configurations() {
        let t = Target::parse("6665@192.0.2.1/eth0,6666@192.0.2.2/52:54:00:12:34:57").unwrap();
        assert!(!t.extended);
        assert_eq!(t.local_ip, Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))));
        assert_eq!(t.remote_mac, MacAddr([0x52, 0x54, 0, 0x12, 0x34, 0x57]));
        let t = Target::parse("+r6665@2001:db8::1/eth0,6666@2001:db8::2/").unwrap();
        assert!(t.extended && t.release);
        assert_eq!(
            t.remote_ip,
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2))
        );
        assert_eq!(t.remote_mac, MacAddr::BROADCAST);
    }

    #[test]
    fn defaults_and_device_mac() {
        let t = Target::parse("@/,@10.0.0.1/").unwrap();
        assert_eq!(t, Target::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))));
        let t = Target::parse("@/00:11:22:33:44:55,@10.0.0.1/").unwrap();
        assert_eq!(
            t.device,
            Device::Mac(MacAddr([0, 0x11, 0x22, 0x33, 0x44, 0x55]))
        );
    }

    #[test]
    fn errors() {
        assert_eq!(
            Target::parse("r@/,@10.0.0.1/"),
            Err(ParamError::ReleaseNeedsExtended)
        );
        assert_eq!(
            Target::parse("6665/eth0,10.0.0.1/"),
            Err(ParamError::Missing('@'))
        );
        assert_eq!(Target::parse("@/,@10.0.0.1"), Err(ParamError::Missing('/')));
        assert_eq!(
            Target::parse("@/eth0@10.0.0.1/"),
            Err(ParamError::Missing(','))
        );
        assert_eq!(
            Target::parse("70000@/,@10.0.0.1/"),
            Err(ParamError::BadPort)
        );
        assert_eq!(Target::parse("1a@/,@10.0.0.1/"), Err(ParamError::BadPort));
        assert_eq!(Target::parse("@/,@10.0.0.256/"), Err(ParamError::BadIp));
        assert_eq!(Target::parse("@/,@10.0.0.1/zz"), Err(ParamError::BadMac));
        assert_eq!(
            Target::parse("@10.0.0.2/,@2001:db8::2/"),
            Err(ParamError::IpVersionMismatch)
        );
        assert_eq!(
            Target::parse("@/a-very-long-interface,@10.0.0.1/"),
            Err(ParamError::BadDevice)
        );
        assert!(matches!(
            parse_targets(&"x".repeat(257)),
            Err(ParamError::TooLong)
        ));
    }

    #[test]
    fn display_round_trips() {
        for spec in [
            "+r6665@192.0.2.1/eth0,6666@192.0.2.2/52:54:00:12:34:57",
            "@/,@10.0.0.1/",
            "+7000@2001:db8::1/00:11:22:33:44:55,7001@2001:db8::2/",
        ] {
            let t = Target::parse(spec).unwrap();
            let text = t.to_string();
            assert_eq!(Target::parse(&text).unwrap(), t, "{text}");
        }
        assert_eq!(
            Target::parse("@/,@10.0.0.1/").unwrap().to_string(),
            "6665@/eth0,6666@10.0.0.1/ff:ff:ff:ff:ff:ff"
        );
    }
}
