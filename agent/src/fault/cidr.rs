//! Address prefixes for packet and syscall filters.

use std::{fmt, net::IpAddr};

/// An address prefix; the host bits are cleared on construction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpCidr {
    addr: IpAddr,
    prefix: u8,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CidrError {
    #[error("{0:?} is not an IPv4 or IPv6 address")]
    Address(String),
    #[error("prefix length {prefix} is out of range for {family} (0..={max})")]
    Prefix {
        prefix: String,
        family: &'static str,
        max: u8,
    },
}

impl IpCidr {
    pub fn parse(text: &str) -> Result<Self, CidrError> {
        let (addr_text, prefix_text) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr_text
            .trim()
            .parse()
            .map_err(|_| CidrError::Address(addr_text.to_owned()))?;
        let (max, family) = match addr {
            IpAddr::V4(_) => (32, "IPv4"),
            IpAddr::V6(_) => (128, "IPv6"),
        };
        let prefix = match prefix_text {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| CidrError::Prefix {
                    prefix: p.to_owned(),
                    family,
                    max,
                })?,
        };
        let addr = match addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V4((u32::from(a) & mask).into())
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V6((u128::from(a) & mask).into())
            }
        };
        Ok(Self { addr, prefix })
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }
}

impl fmt::Display for IpCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_clears_host_bits_and_defaults_to_a_host_prefix() {
        let c = IpCidr::parse("10.1.2.3/8").expect("valid");
        assert_eq!(c.to_string(), "10.0.0.0/8");
        assert_eq!(
            IpCidr::parse("10.1.2.3").expect("valid").to_string(),
            "10.1.2.3/32"
        );
        assert_eq!(
            IpCidr::parse("fd00::1/16").expect("valid").to_string(),
            "fd00::/16"
        );
        assert_eq!(IpCidr::parse("0.0.0.0/0").expect("valid").prefix(), 0);
    }

    #[test]
    fn cidr_errors_say_what_is_wrong() {
        assert!(matches!(
            IpCidr::parse("10.0.0.0/33"),
            Err(CidrError::Prefix { max: 32, .. })
        ));
        assert!(matches!(
            IpCidr::parse("fd00::/129"),
            Err(CidrError::Prefix { max: 128, .. })
        ));
        assert!(matches!(
            IpCidr::parse("10.0.0/8"),
            Err(CidrError::Address(_))
        ));
        assert!(matches!(
            IpCidr::parse("10.0.0.0/x"),
            Err(CidrError::Prefix { .. })
        ));
    }
}
