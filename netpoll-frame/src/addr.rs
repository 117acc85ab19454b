//! Link-layer values a netpoll target is configured with: MAC addresses and 802.1Q tags.

use core::fmt;
use core::str::FromStr;

/// A 48-bit Ethernet MAC address.
///
/// Displays and parses in the kernel's `%pM` form, six colon-separated hex pairs, as written
/// in the `netconsole=` parameter's `tgt-macaddr`:
///
/// ```
/// use netpoll_frame::MacAddr;
///
/// let mac: MacAddr = "52:54:00:12:34:57".parse()?;
/// assert_eq!(mac.octets(), [0x52, 0x54, 0x00, 0x12, 0x34, 0x57]);
/// assert_eq!(mac.to_string(), "52:54:00:12:34:57");
/// assert!("52:54:00:12:34".parse::<MacAddr>().is_err());
/// # Ok::<(), netpoll_frame::MacAddrParseError>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// `ff:ff:ff:ff:ff:ff`, netconsole's default target MAC.
    pub const BROADCAST: Self = Self([0xff; 6]);
    /// `00:00:00:00:00:00`.
    pub const ZERO: Self = Self([0; 6]);

    /// The six bytes, in wire order.
    pub const fn octets(self) -> [u8; 6] {
        self.0
    }

    /// Whether this is the broadcast address.
    pub fn is_broadcast(self) -> bool {
        self == Self::BROADCAST
    }
}

impl From<[u8; 6]> for MacAddr {
    fn from(octets: [u8; 6]) -> Self {
        Self(octets)
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, octet) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str(":")?;
            }
            write!(f, "{octet:02x}")?;
        }
        Ok(())
    }
}

/// Why a string is not a MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid MAC address: expected six colon-separated pairs of hex digits like 52:54:00:12:34:56"
)]
pub struct MacAddrParseError;

impl FromStr for MacAddr {
    type Err = MacAddrParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut octets = [0u8; 6];
        let mut parts = s.split(':');
        for octet in &mut octets {
            let part = parts.next().ok_or(MacAddrParseError)?;
            if part.len() != 2 {
                return Err(MacAddrParseError);
            }
            *octet = u8::from_str_radix(part, 16).map_err(|_| MacAddrParseError)?;
        }
        if parts.next().is_some() {
            return Err(MacAddrParseError);
        }
        Ok(Self(octets))
    }
}

/// An IEEE 802.1Q tag's control information: priority, drop eligibility and VLAN id.
///
/// ```
/// use netpoll_frame::VlanTag;
///
/// let tag = VlanTag::new(100).with_priority(5);
/// assert_eq!(tag.tci(), 0xA064);
/// assert_eq!(VlanTag::from_tci(0xA064), tag);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct VlanTag {
    /// VLAN id, 12 bits (values above 4095 are cut to 12 bits when written).
    pub vid: u16,
    /// Priority code point, 3 bits.
    pub priority: u8,
    /// Drop eligible indicator.
    pub drop_eligible: bool,
}

impl VlanTag {
    /// A tag for VLAN `vid` with priority 0.
    pub const fn new(vid: u16) -> Self {
        Self {
            vid: vid & 0x0fff,
            priority: 0,
            drop_eligible: false,
        }
    }

    /// The same tag with priority `priority` (3 bits).
    #[must_use]
    pub const fn with_priority(mut self, priority: u8) -> Self {
        self.priority = priority & 0x7;
        self
    }

    /// Decodes a TCI as it appears on the wire.
    pub const fn from_tci(tci: u16) -> Self {
        Self {
            vid: tci & 0x0fff,
            priority: (tci >> 13) as u8,
            drop_eligible: tci & 0x1000 != 0,
        }
    }

    /// The TCI as written on the wire.
    pub const fn tci(self) -> u16 {
        ((self.priority as u16 & 0x7) << 13)
            | ((self.drop_eligible as u16) << 12)
            | (self.vid & 0x0fff)
    }
}
