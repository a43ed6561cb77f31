//! Partitions: the faults that cut side A off from side B. The agents
//! report each target's addresses (those of the network namespace its
//! processes are in); every target of one side gets one fault per CIDR of
//! the other side's addresses, filtered to that CIDR, so traffic within a
//! side and to anything outside both sides is untouched.
//!
//! Dropping (loss 100%):
//! - both ways: each side's targets drop packets to and from the other
//!   side, egress and ingress, so neither the targets nor anything else at
//!   the other side's addresses gets through;
//! - A to B: A's targets drop what they send to B, B's targets drop what
//!   arrives from A; B's packets still reach A.
//!
//! Refusing: connect() to the other side fails with ECONNREFUSED (both
//! sides' targets, or A's only for A to B).

use std::net::IpAddr;

use faultd_proto::{agent::v1 as apb, coordinator::v1 as pb};

use crate::{
    addresses::{aggregate, filtered},
    experiment::PartitionSpec,
    select::Candidate,
};

/// Most CIDRs one side's addresses may need: each is a fault on every
/// target of the other side, and an agent takes at most 8 faults per cgroup
/// (its own and its ancestors').
pub const MAX_PEER_CIDRS: usize = 8;

/// A target of one side and the addresses it is reached by.
#[derive(Clone, Debug, PartialEq)]
pub struct Member {
    pub candidate: Candidate,
    pub addresses: Vec<IpAddr>,
}

/// Each target that gets faults, with its faults (`template` with
/// direction and filter filled in), side A's first.
pub fn plan(
    spec: &PartitionSpec,
    template: &pb::fault_template::Kind,
    a: &[Member],
    b: &[Member],
) -> Result<Vec<(Candidate, Vec<pb::fault_template::Kind>)>, String> {
    for (name, side) in [("a", a), ("b", b)] {
        if side.is_empty() {
            return Err(format!("spec.partition.{name} matches no target"));
        }
        if let Some(m) = side.iter().find(|m| m.addresses.is_empty()) {
            return Err(format!(
                "target {} on node {} (side {name}) has no address to filter on",
                m.candidate.cgroup_path, m.candidate.node
            ));
        }
    }
    for m in a {
        if let Some(o) = b.iter().find(|o| {
            o.candidate.node == m.candidate.node
                && o.candidate.cgroup_path == m.candidate.cgroup_path
        }) {
            return Err(format!(
                "target {} on node {} is on both sides",
                o.candidate.cgroup_path, o.candidate.node
            ));
        }
        for addr in &m.addresses {
            if let Some(o) = b.iter().find(|o| o.addresses.contains(addr)) {
                return Err(format!(
                    "address {addr} is both side a's (target {} on node {}) and side b's (target {} \
                     on node {}): a partition by address cannot separate them",
                    m.candidate.cgroup_path,
                    m.candidate.node,
                    o.candidate.cgroup_path,
                    o.candidate.node
                ));
            }
        }
    }
    let cidrs = |name: &str, side: &[Member]| {
        let c = aggregate(side.iter().flat_map(|m| m.addresses.iter().copied()));
        if c.len() > MAX_PEER_CIDRS {
            Err(format!(
                "side {name}'s addresses need {} CIDRs (at most {MAX_PEER_CIDRS}: each is one fault \
                 on every target of the other side): {}",
                c.len(),
                c.join(", ")
            ))
        } else {
            Ok(c)
        }
    };
    let (a_cidrs, b_cidrs) = (cidrs("a", a)?, cidrs("b", b)?);
    let both = apb::Direction::Both;
    let (a_dir, b_dir) = if spec.one_way {
        (apb::Direction::Egress, apb::Direction::Ingress)
    } else {
        (both, both)
    };
    let mut out = Vec::new();
    for m in a {
        out.push((m.candidate.clone(), faults(template, a_dir, &b_cidrs)));
    }
    // Refusing connect() acts at the caller: one way needs nothing at B.
    if !(spec.one_way && spec.refuse_connect) {
        for m in b {
            out.push((m.candidate.clone(), faults(template, b_dir, &a_cidrs)));
        }
    }
    Ok(out)
}

fn faults(
    template: &pb::fault_template::Kind,
    direction: apb::Direction,
    cidrs: &[String],
) -> Vec<pb::fault_template::Kind> {
    cidrs
        .iter()
        .map(|cidr| {
            let filter = apb::PacketFilter {
                protocol: apb::Protocol::Any.into(),
                remote_cidr: cidr.clone(),
                ..Default::default()
            };
            filtered(template, filter, Some(direction))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    fn member(node: &str, cgroup: &str, addrs: &[&str]) -> Member {
        Member {
            candidate: Candidate {
                node: node.into(),
                target: apb::Target::default(),
                cgroup_path: cgroup.into(),
                namespace: None,
            },
            addresses: addrs.iter().map(|a| ip(a)).collect(),
        }
    }

    fn drop_template() -> pb::fault_template::Kind {
        pb::fault_template::Kind::Loss(apb::LossFault {
            probability_ppm: 1_000_000,
            direction: apb::Direction::Both.into(),
            filter: None,
        })
    }

    fn spec(one_way: bool, refuse_connect: bool) -> PartitionSpec {
        PartitionSpec {
            b: crate::experiment::Selector {
                node_names: Vec::new(),
                node_labels: Default::default(),
                targets: Vec::new(),
                pods: None,
            },
            one_way,
            refuse_connect,
        }
    }

    /// (node, direction, remote cidr) of each planned loss fault.
    fn shape(plan: &[(Candidate, Vec<pb::fault_template::Kind>)]) -> Vec<(String, i32, String)> {
        plan.iter()
            .flat_map(|(c, faults)| {
                faults.iter().map(move |f| match f {
                    pb::fault_template::Kind::Loss(l) => (
                        c.node.clone(),
                        l.direction,
                        l.filter.clone().expect("filter").remote_cidr,
                    ),
                    pb::fault_template::Kind::Syscall(s) => (
                        c.node.clone(),
                        -1,
                        s.filter.clone().expect("filter").remote_cidr,
                    ),
                    _ => unreachable!(),
                })
            })
            .collect()
    }

    #[test]
    fn both_ways_filters_each_side_to_the_other() {
        let a = [
            member("n1", "app", &["10.0.0.1"]),
            member("n3", "app", &["10.0.0.3"]),
        ];
        let b = [member("n2", "app", &["10.0.0.2"])];
        let p = plan(&spec(false, false), &drop_template(), &a, &b).expect("plan");
        let both = i32::from(apb::Direction::Both);
        assert_eq!(
            shape(&p),
            [
                ("n1".into(), both, "10.0.0.2/32".into()),
                ("n3".into(), both, "10.0.0.2/32".into()),
                ("n2".into(), both, "10.0.0.1/32".into()),
                ("n2".into(), both, "10.0.0.3/32".into()),
            ]
        );
        let one_way = plan(&spec(true, false), &drop_template(), &a, &b).expect("plan");
        let (eg, ing) = (
            i32::from(apb::Direction::Egress),
            i32::from(apb::Direction::Ingress),
        );
        assert_eq!(
            shape(&one_way),
            [
                ("n1".into(), eg, "10.0.0.2/32".into()),
                ("n3".into(), eg, "10.0.0.2/32".into()),
                ("n2".into(), ing, "10.0.0.1/32".into()),
                ("n2".into(), ing, "10.0.0.3/32".into()),
            ]
        );
        let refuse = pb::fault_template::Kind::Syscall(apb::SyscallFault {
            operation: apb::SyscallOperation::Connect.into(),
            errno: "ECONNREFUSED".into(),
            probability_ppm: 1_000_000,
            ..Default::default()
        });
        // Refusing one way acts only at A's callers.
        let p = plan(&spec(true, true), &refuse, &a, &b).expect("plan");
        assert_eq!(
            shape(&p),
            [
                ("n1".into(), -1, "10.0.0.2/32".into()),
                ("n3".into(), -1, "10.0.0.2/32".into()),
            ]
        );
    }

    #[test]
    fn sides_that_cannot_be_separated_are_refused() {
        let t = drop_template();
        let a = [member("n1", "app", &["10.0.0.1"])];
        let err = plan(&spec(false, false), &t, &a, &[]).expect_err("refused");
        assert!(err.contains("spec.partition.b matches no target"), "{err}");
        let same_ns = [member("n1", "db", &["10.0.0.1"])];
        let err = plan(&spec(false, false), &t, &a, &same_ns).expect_err("refused");
        assert!(err.contains("address 10.0.0.1 is both side a's"), "{err}");
        let err = plan(&spec(false, false), &t, &a, &a).expect_err("refused");
        assert!(err.contains("is on both sides"), "{err}");
        let none = [member("n2", "app", &[])];
        let err = plan(&spec(false, false), &t, &a, &none).expect_err("refused");
        assert!(err.contains("has no address"), "{err}");
        // Nine scattered addresses need nine CIDRs: too many faults.
        let many: Vec<Member> = (0..9)
            .map(|i| member("n2", &format!("app{i}"), &[&format!("10.1.{i}.1")]))
            .collect();
        let err = plan(&spec(false, false), &t, &a, &many).expect_err("refused");
        assert!(err.contains("side b's addresses need 9 CIDRs"), "{err}");
    }
}
