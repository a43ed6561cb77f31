//! Addresses as fault filters: the exact CIDRs a set of addresses makes,
//! and a fault template narrowed to one remote CIDR (partitions,
//! service-to-service faults).

use std::{collections::BTreeSet, net::IpAddr};

use faultd_proto::{agent::v1 as apb, coordinator::v1 as pb};

/// The fewest CIDRs covering exactly `addrs`: host prefixes merged while
/// two siblings make up their parent, so no address outside the set is
/// covered.
pub fn aggregate(addrs: impl IntoIterator<Item = IpAddr>) -> Vec<String> {
    // (is_v6, network bits, prefix length), an address in the low bits.
    let mut set: BTreeSet<(bool, u128, u8)> = addrs
        .into_iter()
        .map(|a| match a {
            IpAddr::V4(v4) => (false, u128::from(u32::from(v4)), 32),
            IpAddr::V6(v6) => (true, u128::from(v6), 128),
        })
        .collect();
    loop {
        let merge = set.iter().find_map(|&(v6, net, len)| {
            if len == 0 {
                return None;
            }
            let bit = if v6 {
                128 - u32::from(len)
            } else {
                32 - u32::from(len)
            };
            let step = 1u128 << bit;
            // Only the lower sibling starts a merge, with its upper one.
            (net & step == 0 && set.contains(&(v6, net | step, len)))
                .then_some((v6, net, len, step))
        });
        let Some((v6, net, len, step)) = merge else {
            break;
        };
        set.remove(&(v6, net, len));
        set.remove(&(v6, net | step, len));
        set.insert((v6, net, len - 1));
    }
    set.into_iter()
        .map(|(v6, net, len)| {
            if v6 {
                format!("{}/{len}", std::net::Ipv6Addr::from(net))
            } else {
                #[expect(
                    clippy::cast_possible_truncation,
                    reason = "IPv4 networks are built from u32s"
                )]
                let v4 = std::net::Ipv4Addr::from(net as u32);
                format!("{v4}/{len}")
            }
        })
        .collect()
}

/// `template` with `filter` as its packet filter (and `direction`, for
/// the packet kinds, when given).
pub fn filtered(
    template: &pb::fault_template::Kind,
    filter: apb::PacketFilter,
    direction: Option<apb::Direction>,
) -> pb::fault_template::Kind {
    use pb::fault_template::Kind;
    let dir = |d: i32| direction.map_or(d, i32::from);
    match template {
        Kind::Loss(l) => Kind::Loss(apb::LossFault {
            direction: dir(l.direction),
            filter: Some(filter),
            ..l.clone()
        }),
        Kind::Latency(l) => Kind::Latency(apb::LatencyFault {
            direction: dir(l.direction),
            filter: Some(filter),
            ..l.clone()
        }),
        Kind::Bandwidth(b) => Kind::Bandwidth(apb::BandwidthFault {
            direction: dir(b.direction),
            filter: Some(filter),
            ..b.clone()
        }),
        Kind::Syscall(s) => Kind::Syscall(apb::SyscallFault {
            filter: Some(filter),
            ..s.clone()
        }),
    }
}

/// A template's own packet filter, if any.
pub fn filter_of(template: &pb::fault_template::Kind) -> Option<&apb::PacketFilter> {
    use pb::fault_template::Kind;
    match template {
        Kind::Loss(l) => l.filter.as_ref(),
        Kind::Latency(l) => l.filter.as_ref(),
        Kind::Bandwidth(b) => b.filter.as_ref(),
        Kind::Syscall(s) => s.filter.as_ref(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    #[test]
    fn aggregation_covers_exactly_the_addresses() {
        assert_eq!(aggregate([ip("10.0.0.1")]), ["10.0.0.1/32"]);
        assert_eq!(aggregate([ip("10.0.0.2"), ip("10.0.0.3")]), ["10.0.0.2/31"]);
        // .1 and .2 are not siblings: merging would cover .0 or .3.
        assert_eq!(
            aggregate([ip("10.0.0.1"), ip("10.0.0.2")]),
            ["10.0.0.1/32", "10.0.0.2/32"]
        );
        let quad: Vec<IpAddr> = (4..8).map(|i| ip(&format!("10.0.0.{i}"))).collect();
        assert_eq!(aggregate(quad), ["10.0.0.4/30"]);
        assert_eq!(
            aggregate([ip("fd00::1"), ip("10.0.0.1"), ip("10.0.0.1")]),
            ["10.0.0.1/32", "fd00::1/128"]
        );
    }
}
