//! Which nodes and targets an experiment hits: nodes by name and labels
//! from the inventory, targets as the agents list them, then the mode's
//! random choice among them.

use faultd_proto::agent::v1 as apb;
use rand::{Rng, seq::index::sample};

use crate::{
    experiment::{Mode, Selector},
    inventory::{Agent, Inventory},
};

/// The inventory's nodes the selector names (all when it names none) and
/// whose labels include every selector label.
pub fn nodes<'a>(inventory: &'a Inventory, selector: &Selector) -> Vec<&'a Agent> {
    inventory
        .agents
        .iter()
        .filter(|a| selector.node_names.is_empty() || selector.node_names.contains(&a.node))
        .filter(|a| {
            selector
                .node_labels
                .iter()
                .all(|(k, v)| a.labels.get(k) == Some(v))
        })
        .collect()
}

/// A target one agent listed.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    pub node: String,
    pub target: apb::Target,
    pub cgroup_path: String,
    /// The pod's namespace, when the target is (or is inside) a pod the
    /// Kubernetes API lists.
    pub namespace: Option<String>,
}

/// The uid of the pod whose cgroup `path` is or is inside, as the kubelet
/// names pod cgroups: `pod<uid>` with the cgroupfs driver
/// (`kubepods/burstable/pod1f0c…`), `kubepods-<qos>-pod<uid with '_' for
/// '-'>.slice` with the systemd driver.
pub fn pod_uid_in(path: &str) -> Option<String> {
    path.split('/').find_map(|component| {
        let component = component.strip_suffix(".slice").unwrap_or(component);
        let at = component.rfind("pod")?;
        if at != 0 && !component[..at].ends_with('-') {
            return None;
        }
        let uid = component[at + 3..].replace('_', "-");
        let hex_groups: Vec<&str> = uid.split('-').collect();
        let shape = [8, 4, 4, 4, 12];
        (hex_groups.len() == 5
            && hex_groups
                .iter()
                .zip(shape)
                .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit())))
        .then_some(uid)
    })
}

/// `mode`'s choice of `n` among `candidates`, in a stable order (node,
/// then cgroup path) so a seeded generator gives the same choice.
pub fn choose(
    mut candidates: Vec<Candidate>,
    n: usize,
    mode: Mode,
    rng: &mut impl Rng,
) -> Vec<Candidate> {
    candidates.sort_by(|a, b| (&a.node, &a.cgroup_path).cmp(&(&b.node, &b.cgroup_path)));
    if matches!(mode, Mode::All) || n >= candidates.len() {
        return candidates;
    }
    let mut picked: Vec<usize> = sample(rng, candidates.len(), n).into_vec();
    picked.sort_unstable();
    picked.into_iter().map(|i| candidates[i].clone()).collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use rand::{SeedableRng as _, rngs::StdRng};

    use super::*;

    fn candidates(n: usize) -> Vec<Candidate> {
        (0..n)
            .map(|i| Candidate {
                node: format!("n{}", i % 3),
                target: apb::Target::default(),
                cgroup_path: format!("app/{i}"),
                namespace: None,
            })
            .collect()
    }

    #[test]
    fn nodes_by_name_and_labels() {
        let inv: Inventory = toml::from_str(
            r#"
[[agent]]
node = "a"
address = "x:1"
labels = { zone = "1", role = "web" }
[[agent]]
node = "b"
address = "x:2"
labels = { zone = "2", role = "web" }
[[agent]]
node = "c"
address = "x:3"
"#,
        )
        .expect("inventory");
        let sel = |names: &[&str], labels: &[(&str, &str)]| Selector {
            node_names: names.iter().map(|s| (*s).to_owned()).collect(),
            node_labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>(),
            targets: Vec::new(),
            pods: None,
        };
        let names = |v: Vec<&Agent>| v.iter().map(|a| a.node.clone()).collect::<Vec<_>>();
        assert_eq!(names(nodes(&inv, &sel(&[], &[]))), ["a", "b", "c"]);
        assert_eq!(
            names(nodes(&inv, &sel(&[], &[("role", "web")]))),
            ["a", "b"]
        );
        assert_eq!(
            names(nodes(&inv, &sel(&["b", "c"], &[("role", "web")]))),
            ["b"]
        );
    }

    #[test]
    fn pod_uids_from_both_cgroup_drivers() {
        let uid = "1f0c8a3e-2b4d-4e6f-8a9b-0c1d2e3f4a5b";
        assert_eq!(
            pod_uid_in(
                "kubepods.slice/kubepods-burstable.slice/\
                 kubepods-burstable-pod1f0c8a3e_2b4d_4e6f_8a9b_0c1d2e3f4a5b.slice/\
                 cri-containerd-0123abcd.scope"
            )
            .as_deref(),
            Some(uid)
        );
        assert_eq!(
            pod_uid_in(&format!("kubepods/besteffort/pod{uid}/0123abcd")).as_deref(),
            Some(uid)
        );
        assert_eq!(pod_uid_in("system.slice/ipod.service"), None);
        assert_eq!(pod_uid_in("kubepods.slice/kubepods-podnotauid.slice"), None);
    }

    #[test]
    fn choices_are_the_asked_number_of_distinct_candidates() {
        let mut rng = StdRng::seed_from_u64(7);
        for n in 1..=10 {
            let chosen = choose(candidates(10), n, Mode::Fixed(n as u32), &mut rng);
            assert_eq!(chosen.len(), n);
            let mut paths: Vec<&str> = chosen.iter().map(|c| c.cgroup_path.as_str()).collect();
            paths.dedup();
            assert_eq!(paths.len(), n, "distinct");
        }
        assert_eq!(choose(candidates(4), 4, Mode::All, &mut rng).len(), 4);
        // Over many draws every candidate gets chosen: the choice is random,
        // not the first n.
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            for c in choose(candidates(10), 1, Mode::One, &mut rng) {
                seen.insert(c.cgroup_path);
            }
        }
        assert_eq!(seen.len(), 10);
    }
}
