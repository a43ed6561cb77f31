//! Parsers for command-line values. Each is a pure function usable as a clap
//! `value_parser`, so a bad value becomes a clap error naming the flag.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

/// A drop probability of 100% in parts per million, the unit of
/// `LossFault.probability_ppm`.
pub const PPM_MAX: u32 = 1_000_000;

/// Why a `--percent` value was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PercentError {
    #[error("`{input}` is not a decimal number like 30 or 0.5")]
    NotANumber { input: String },
    #[error("`{input}` has more than 9 decimal places")]
    TooPrecise { input: String },
    #[error("`{input}` is out of range: a percentage must be between 0.0001 and 100")]
    OutOfRange { input: String },
}

/// Parses a percentage ("30", "0.5", "12.5%") into parts per million, rounded
/// to the nearest ppm (half up): 30 -> 300000, 0.0001 -> 1.
///
/// The decimal is parsed exactly rather than through `f64`, so values such as
/// 0.0003 do not land one ppm off through binary rounding.
pub fn parse_percent(input: &str) -> Result<u32, PercentError> {
    let not_a_number = || PercentError::NotANumber {
        input: input.to_owned(),
    };
    let text = input.trim();
    let text = text.strip_suffix('%').unwrap_or(text).trim_end();
    let (int_part, frac_part) = text.split_once('.').unwrap_or((text, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (int_part.is_empty() && frac_part.is_empty())
        || !all_digits(int_part)
        || !all_digits(frac_part)
    {
        return Err(not_a_number());
    }
    if frac_part.len() > 9 {
        return Err(PercentError::TooPrecise {
            input: input.to_owned(),
        });
    }
    // The value in units of 1e-9 percent. More than 3 integer digits is out of
    // range anyway; checking length first keeps the arithmetic from overflowing.
    let int_part = int_part.trim_start_matches('0');
    if int_part.len() > 3 {
        return Err(PercentError::OutOfRange {
            input: input.to_owned(),
        });
    }
    let int: u64 = if int_part.is_empty() {
        0
    } else {
        int_part.parse().map_err(|_| not_a_number())?
    };
    let frac: u64 = if frac_part.is_empty() {
        0
    } else {
        let digits: u64 = frac_part.parse().map_err(|_| not_a_number())?;
        digits * 10u64.pow(9 - frac_part.len() as u32)
    };
    let nano_percent = int * 1_000_000_000 + frac;
    // 1 ppm is 0.0001% = 100_000 nano-percent.
    const NANO_PERCENT_PER_PPM: u64 = 100_000;
    if !(NANO_PERCENT_PER_PPM..=100 * 1_000_000_000).contains(&nano_percent) {
        return Err(PercentError::OutOfRange {
            input: input.to_owned(),
        });
    }
    let ppm = (nano_percent + NANO_PERCENT_PER_PPM / 2) / NANO_PERCENT_PER_PPM;
    u32::try_from(ppm).map_err(|_| PercentError::OutOfRange {
        input: input.to_owned(),
    })
}

/// Formats parts per million as a percentage without trailing zeros:
/// 300000 -> "30", 125000 -> "12.5", 1 -> "0.0001".
pub fn format_ppm(ppm: u32) -> String {
    let int = ppm / 10_000;
    let frac = ppm % 10_000;
    if frac == 0 {
        return int.to_string();
    }
    let frac = format!("{frac:04}");
    format!("{int}.{}", frac.trim_end_matches('0'))
}

/// Why a `--duration` value was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("empty duration: use e.g. 60s, 2m, 1h30m or 500ms")]
    Empty,
    #[error("`{number}` has no unit: use e.g. {number}s, {number}m or {number}ms")]
    MissingUnit { input: String, number: String },
    #[error("`{input}`: expected a number before `{rest}`")]
    MissingNumber { input: String, rest: String },
    #[error("`{input}`: unknown unit `{unit}` (use d, h, m, s, ms, us or ns)")]
    UnknownUnit { input: String, unit: String },
    #[error("`{input}` is too long")]
    Overflow { input: String },
    #[error("a duration must be longer than zero")]
    Zero,
}

/// Parses a duration made of integer components with units, in any order:
/// "60s", "2m", "1h30m", "500ms", "1d". Units: d, h, m, s, ms, us (or µs), ns.
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let text = input.trim();
    if text.is_empty() {
        return Err(DurationError::Empty);
    }
    let overflow = || DurationError::Overflow {
        input: input.to_owned(),
    };
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits_end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits_end == 0 {
            return Err(DurationError::MissingNumber {
                input: input.to_owned(),
                rest: rest.to_owned(),
            });
        }
        let (number, after) = rest.split_at(digits_end);
        let unit_end = after
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_end);
        if unit.is_empty() {
            return Err(DurationError::MissingUnit {
                input: input.to_owned(),
                number: number.to_owned(),
            });
        }
        let n: u64 = number.parse().map_err(|_| overflow())?;
        let part = match unit {
            "d" => n.checked_mul(86_400).map(Duration::from_secs),
            "h" => n.checked_mul(3_600).map(Duration::from_secs),
            "m" => n.checked_mul(60).map(Duration::from_secs),
            "s" => Some(Duration::from_secs(n)),
            "ms" => Some(Duration::from_millis(n)),
            "us" | "µs" => Some(Duration::from_micros(n)),
            "ns" => Some(Duration::from_nanos(n)),
            _ => {
                return Err(DurationError::UnknownUnit {
                    input: input.to_owned(),
                    unit: unit.to_owned(),
                });
            }
        }
        .ok_or_else(overflow)?;
        total = total.checked_add(part).ok_or_else(overflow)?;
        rest = after;
    }
    if total.is_zero() {
        return Err(DurationError::Zero);
    }
    Ok(total)
}

/// Formats a duration the way [`parse_duration`] reads it, dropping
/// sub-second parts above one second: 5400s -> "1h30m", 0.5s -> "500ms".
pub fn format_duration(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        return format!("{}ms", d.as_millis());
    }
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3_600, secs % 3_600 / 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 || out.is_empty() {
        out.push_str(&format!("{s}s"));
    }
    out
}

/// An inclusive remote port range; `min == max` for a single port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub min: u16,
    pub max: u16,
}

impl PortRange {
    /// The `(remote_port_min, remote_port_max)` pair of `PacketFilter`, where
    /// a max of 0 means "min only".
    pub fn to_proto(self) -> (u32, u32) {
        if self.min == self.max {
            (u32::from(self.min), 0)
        } else {
            (u32::from(self.min), u32::from(self.max))
        }
    }

    /// The inverse of [`PortRange::to_proto`]; `None` for "any port" or
    /// values a port cannot take.
    pub fn from_proto(min: u32, max: u32) -> Option<Self> {
        let min = u16::try_from(min).ok().filter(|&p| p != 0)?;
        let max = if max == 0 {
            min
        } else {
            u16::try_from(max).ok()?
        };
        Some(Self { min, max })
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.min == self.max {
            write!(f, "{}", self.min)
        } else {
            write!(f, "{}-{}", self.min, self.max)
        }
    }
}

/// Why a `--port` value was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    #[error("`{input}` is not a port (1-65535) or a range like 8000-8080")]
    Invalid { input: String },
    #[error("port 0 cannot be matched: ports are 1-65535")]
    Zero,
    #[error("`{input}`: the range is backwards, the first port must not exceed the second")]
    Backwards { input: String },
}

/// Parses "5432" or "8000-8080" (inclusive).
pub fn parse_port_range(input: &str) -> Result<PortRange, PortError> {
    let invalid = || PortError::Invalid {
        input: input.to_owned(),
    };
    let port = |s: &str| -> Result<u16, PortError> {
        let s = s.trim();
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid());
        }
        match s.parse::<u16>() {
            Ok(0) => Err(PortError::Zero),
            Ok(p) => Ok(p),
            Err(_) => Err(invalid()),
        }
    };
    let (min, max) = match input.split_once('-') {
        Some((a, b)) => (port(a)?, port(b)?),
        None => {
            let p = port(input)?;
            (p, p)
        }
    };
    if min > max {
        return Err(PortError::Backwards {
            input: input.to_owned(),
        });
    }
    Ok(PortRange { min, max })
}

/// An IPv4 or IPv6 network. A bare address is a single host (/32 or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix_len: u8,
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

/// Why a `--dst` value was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("`{input}` is not an IPv4 or IPv6 address or CIDR like 10.0.0.0/8")]
    Invalid { input: String },
    #[error("`{input}`: prefix length must be at most {max}")]
    PrefixTooLong { input: String, max: u8 },
    #[error("`{input}` has bits set after the prefix; did you mean {network}?")]
    HostBits { input: String, network: Cidr },
}

/// Parses "10.0.0.0/8", "fd00::/8" or a bare address ("1.2.3.4" = 1.2.3.4/32).
///
/// Host bits after the prefix are rejected rather than masked: "10.1.2.3/8"
/// is more likely a typo for a /32 or a /24 than a request for all of 10/8.
pub fn parse_cidr(input: &str) -> Result<Cidr, CidrError> {
    let invalid = || CidrError::Invalid {
        input: input.to_owned(),
    };
    let text = input.trim();
    let (addr, len) = match text.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (text, None),
    };
    let addr = IpAddr::from_str(addr).map_err(|_| invalid())?;
    let max: u8 = if addr.is_ipv4() { 32 } else { 128 };
    let prefix_len = match len {
        None => max,
        Some(l) if !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()) => {
            let l: u16 = l.parse().map_err(|_| invalid())?;
            u8::try_from(l)
                .ok()
                .filter(|&l| l <= max)
                .ok_or(CidrError::PrefixTooLong {
                    input: input.to_owned(),
                    max,
                })?
        }
        Some(_) => return Err(invalid()),
    };
    let network = Cidr {
        addr: mask(addr, prefix_len),
        prefix_len,
    };
    if network.addr != addr {
        return Err(CidrError::HostBits {
            input: input.to_owned(),
            network,
        });
    }
    Ok(network)
}

fn mask(addr: IpAddr, prefix_len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let mask = u32::MAX
                .checked_shl(32 - u32::from(prefix_len))
                .unwrap_or(0);
            IpAddr::V4((bits & mask).into())
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let mask = u128::MAX
                .checked_shl(128 - u32::from(prefix_len))
                .unwrap_or(0);
            IpAddr::V6((bits & mask).into())
        }
    }
}

/// Why a `--id` value was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("an id must be 1 to 128 characters, got {len}")]
    Length { len: usize },
    #[error("`{input}`: an id may only contain A-Z a-z 0-9 . _ : -")]
    Charset { input: String },
}

/// Checks a fault id against the rule in `FaultSpec.id`: 1 to 128 characters
/// of `[A-Za-z0-9._:-]`.
pub fn parse_fault_id(input: &str) -> Result<String, IdError> {
    if input.is_empty() || input.len() > 128 {
        return Err(IdError::Length { len: input.len() });
    }
    if !input
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
    {
        return Err(IdError::Charset {
            input: input.to_owned(),
        });
    }
    Ok(input.to_owned())
}

/// A fresh id like `loss-1a2b3c4d`, from the process id, the clock and std's
/// per-process random hash keys, so two invocations in the same nanosecond
/// still differ.
pub fn generate_id(kind: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    h.write_u128(nanos);
    let v = h.finish();
    format!("{kind}-{:08x}", (v ^ (v >> 32)) as u32)
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, reason = "tests")]

    use super::*;

    #[test]
    fn percent_to_ppm() {
        assert_eq!(parse_percent("30").unwrap(), 300_000);
        assert_eq!(parse_percent("30%").unwrap(), 300_000);
        assert_eq!(parse_percent("100").unwrap(), PPM_MAX);
        assert_eq!(parse_percent("100.0").unwrap(), PPM_MAX);
        assert_eq!(parse_percent("0.0001").unwrap(), 1);
        assert_eq!(parse_percent(".5").unwrap(), 5_000);
        assert_eq!(parse_percent("12.5").unwrap(), 125_000);
        assert_eq!(parse_percent("0.0003").unwrap(), 3);
        assert_eq!(parse_percent("033").unwrap(), 330_000);
        // Rounds to the nearest ppm, half up.
        assert_eq!(parse_percent("0.00014").unwrap(), 1);
        assert_eq!(parse_percent("0.00015").unwrap(), 2);
        assert_eq!(parse_percent("99.99995").unwrap(), PPM_MAX);
    }

    #[test]
    fn percent_bounds() {
        for bad in [
            "0",
            "0.0",
            "0.00009",
            "100.0000001",
            "101",
            "1000",
            "99999999999",
        ] {
            assert!(
                matches!(parse_percent(bad), Err(PercentError::OutOfRange { .. })),
                "{bad}"
            );
        }
        for bad in [
            "", "%", ".", "-1", "+1", "1e2", "NaN", "inf", "3 0", "1.2.3",
        ] {
            assert!(
                matches!(parse_percent(bad), Err(PercentError::NotANumber { .. })),
                "{bad}"
            );
        }
        assert!(matches!(
            parse_percent("1.0000000001"),
            Err(PercentError::TooPrecise { .. })
        ));
    }

    #[test]
    fn ppm_formatting() {
        assert_eq!(format_ppm(300_000), "30");
        assert_eq!(format_ppm(125_000), "12.5");
        assert_eq!(format_ppm(1), "0.0001");
        assert_eq!(format_ppm(PPM_MAX), "100");
        for s in ["30", "12.5", "0.0001", "100", "0.25"] {
            assert_eq!(format_ppm(parse_percent(s).unwrap()), s);
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("60s").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5_400));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(
            parse_duration("1m500ms").unwrap(),
            Duration::from_millis(60_500)
        );
        assert_eq!(parse_duration("1d").unwrap(), Duration::from_secs(86_400));
        assert_eq!(parse_duration("30m1h").unwrap(), Duration::from_secs(5_400));
        assert_eq!(parse_duration("250us").unwrap(), Duration::from_micros(250));
        assert_eq!(parse_duration(" 10s ").unwrap(), Duration::from_secs(10));
    }

    #[test]
    fn bad_durations() {
        assert_eq!(parse_duration(""), Err(DurationError::Empty));
        assert_eq!(parse_duration("0s"), Err(DurationError::Zero));
        assert!(matches!(
            parse_duration("60"),
            Err(DurationError::MissingUnit { .. })
        ));
        assert!(matches!(
            parse_duration("1h30"),
            Err(DurationError::MissingUnit { .. })
        ));
        assert!(matches!(
            parse_duration("s"),
            Err(DurationError::MissingNumber { .. })
        ));
        assert!(matches!(
            parse_duration("1.5s"),
            Err(DurationError::UnknownUnit { .. })
        ));
        assert!(matches!(
            parse_duration("5x"),
            Err(DurationError::UnknownUnit { .. })
        ));
        assert!(matches!(
            parse_duration("-5s"),
            Err(DurationError::MissingNumber { .. })
        ));
        assert!(matches!(
            parse_duration("99999999999999999999s"),
            Err(DurationError::Overflow { .. })
        ));
        assert!(matches!(
            parse_duration("18446744073709551615d"),
            Err(DurationError::Overflow { .. })
        ));
    }

    #[test]
    fn duration_formatting_round_trips() {
        assert_eq!(format_duration(Duration::from_secs(5_400)), "1h30m");
        assert_eq!(format_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(format_duration(Duration::from_millis(60_500)), "1m");
        assert_eq!(format_duration(Duration::from_secs(3_601)), "1h1s");
        assert_eq!(format_duration(Duration::ZERO), "0ms");
        for s in ["2m", "1h30m", "500ms", "2h3m4s", "45s"] {
            assert_eq!(format_duration(parse_duration(s).unwrap()), s);
        }
    }

    #[test]
    fn ports() {
        assert_eq!(
            parse_port_range("5432").unwrap(),
            PortRange {
                min: 5432,
                max: 5432
            }
        );
        assert_eq!(
            parse_port_range("8000-8080").unwrap(),
            PortRange {
                min: 8000,
                max: 8080
            }
        );
        assert_eq!(
            parse_port_range("1-65535").unwrap(),
            PortRange { min: 1, max: 65535 }
        );
        assert_eq!(parse_port_range("0"), Err(PortError::Zero));
        assert_eq!(parse_port_range("0-10"), Err(PortError::Zero));
        for bad in [
            "",
            "-",
            "65536",
            "80-",
            "-80",
            "a",
            "80-90-100",
            "+80",
            "1-70000",
        ] {
            assert!(
                matches!(parse_port_range(bad), Err(PortError::Invalid { .. })),
                "{bad}"
            );
        }
        assert!(matches!(
            parse_port_range("90-80"),
            Err(PortError::Backwards { .. })
        ));
    }

    #[test]
    fn port_proto_encoding() {
        assert_eq!(PortRange { min: 53, max: 53 }.to_proto(), (53, 0));
        assert_eq!(PortRange { min: 80, max: 90 }.to_proto(), (80, 90));
        assert_eq!(
            PortRange::from_proto(53, 0),
            Some(PortRange { min: 53, max: 53 })
        );
        assert_eq!(
            PortRange::from_proto(80, 90),
            Some(PortRange { min: 80, max: 90 })
        );
        assert_eq!(PortRange::from_proto(0, 0), None);
        assert_eq!(PortRange { min: 53, max: 53 }.to_string(), "53");
        assert_eq!(PortRange { min: 80, max: 90 }.to_string(), "80-90");
    }

    #[test]
    fn cidrs() {
        assert_eq!(parse_cidr("10.0.0.0/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(parse_cidr("1.2.3.4").unwrap().to_string(), "1.2.3.4/32");
        assert_eq!(parse_cidr("fd00::/8").unwrap().to_string(), "fd00::/8");
        assert_eq!(parse_cidr("::1").unwrap().to_string(), "::1/128");
        assert_eq!(parse_cidr("0.0.0.0/0").unwrap().to_string(), "0.0.0.0/0");
        assert!(matches!(
            parse_cidr("10.1.2.3/8"),
            Err(CidrError::HostBits { network, .. }) if network.to_string() == "10.0.0.0/8"
        ));
        assert!(matches!(
            parse_cidr("10.0.0.0/33"),
            Err(CidrError::PrefixTooLong { max: 32, .. })
        ));
        assert!(matches!(
            parse_cidr("fd00::/129"),
            Err(CidrError::PrefixTooLong { max: 128, .. })
        ));
        for bad in [
            "",
            "10.0.0",
            "10.0.0.0/",
            "10.0.0.0/x",
            "host.example",
            "10.0.0.0/-1",
        ] {
            assert!(
                matches!(parse_cidr(bad), Err(CidrError::Invalid { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn ids() {
        assert_eq!(parse_fault_id("db-loss:1.a_b").unwrap(), "db-loss:1.a_b");
        assert!(matches!(
            parse_fault_id(""),
            Err(IdError::Length { len: 0 })
        ));
        assert!(matches!(
            parse_fault_id(&"a".repeat(129)),
            Err(IdError::Length { len: 129 })
        ));
        assert!(parse_fault_id(&"a".repeat(128)).is_ok());
        assert!(matches!(
            parse_fault_id("a b"),
            Err(IdError::Charset { .. })
        ));
        assert!(matches!(
            parse_fault_id("a/b"),
            Err(IdError::Charset { .. })
        ));
    }

    #[test]
    fn generated_ids_are_valid_and_distinct() {
        let a = generate_id("loss");
        let b = generate_id("loss");
        assert_ne!(a, b);
        for id in [a, b] {
            assert!(id.starts_with("loss-"), "{id}");
            let hex = &id["loss-".len()..];
            assert_eq!(hex.len(), 8, "{id}");
            assert!(hex.bytes().all(|c| c.is_ascii_hexdigit()), "{id}");
            assert!(parse_fault_id(&id).is_ok());
        }
    }
}
