//! Stress test of the agent's bookkeeping: thousands of concurrent ApplyFault
//! and RevertFault calls from many clients on hundreds of cgroups, then a check
//! that the agent's answer (ListFaults), the kernel's rules map and the kernel's
//! links all describe exactly the faults the clients last asked for, and that
//! RevertAll leaves nothing behind. Root only; prints SKIP otherwise.
//!
//! Each client owns a disjoint set of fault ids, so "the last request per id"
//! is well defined whatever the interleaving. The request sequence of every
//! client comes from a seeded RNG: the seed is printed, and
//! `FAULTD_STRESS_SEED=<seed>` replays the same requests (the interleaving
//! between clients still varies).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use faultd_proto::agent::v1::{self as pb, agent_client::AgentClient};
use faultd_tests::{
    AgentGuard, AgentOptions, CgroupGuard,
    bpf::{bpftool_json, links_of_programs_named, map_entries},
    faults::Loss,
    require_root,
    stats::assert_no_loss,
    traffic::{udp_send, udp_sink},
};
use rand::{Rng, SeedableRng, rngs::StdRng};
use tonic::{Code, transport::Channel};

const FLAT: usize = 180;
const PARENTS: usize = 20;
const CHILDREN_PER_PARENT: usize = 5;
const CLIENTS: usize = 32;
const IDS_PER_CLIENT: usize = 16;
const OPS_PER_CLIENT: usize = 150;
/// faultd_common::MAX_RULES_PER_CGROUP: the most faults (a cgroup's own and its
/// ancestors') that may cover one cgroup; beyond it ApplyFault is refused with
/// RESOURCE_EXHAUSTED.
const MAX_OVERLAP: usize = 8;
/// One apply in this many goes to the first parent's subtree rather than to a
/// cgroup picked uniformly, so that subtree runs into MAX_OVERLAP and the
/// refused-and-rolled-back path runs under concurrency too.
const HOT_ONE_IN: u32 = 10;
const FAULT_DURATION: Duration = Duration::from_secs(600);

/// One test cgroup, by index into the test's list.
#[derive(Debug)]
struct Target {
    path: String,
    id: u64,
    parent: Option<usize>,
}

/// What a client last successfully applied for one fault id.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Expected {
    target: usize,
    ppm: u32,
    direction: pb::Direction,
    /// Remote port range as the agent reports it back (max = min for a single
    /// port), or None for no filter.
    ports: Option<(u32, u32)>,
}

impl Expected {
    fn covers(&self, hook: Hook) -> bool {
        matches!(
            (self.direction, hook),
            (pb::Direction::Both, _)
                | (pb::Direction::Egress, Hook::Egress)
                | (pb::Direction::Ingress, Hook::Ingress)
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Hook {
    Egress,
    Ingress,
}

impl Hook {
    const ALL: [Hook; 2] = [Hook::Egress, Hook::Ingress];

    /// bpftool's name for the attach type.
    fn attach_type(self) -> &'static str {
        match self {
            Hook::Egress => "cgroup_inet_egress",
            Hook::Ingress => "cgroup_inet_ingress",
        }
    }
}

#[derive(Debug, Default)]
struct ClientReport {
    /// Last successful request per id: Some = applied, None = reverted (or
    /// never applied).
    last: BTreeMap<String, Option<Expected>>,
    applies: usize,
    reverts: usize,
    /// ApplyFault refused with RESOURCE_EXHAUSTED (too many overlapping faults).
    exhausted: usize,
    latencies: Vec<Duration>,
}

/// The id of the agent's rules map, as GetCapabilities reports it.
async fn rules_map_id(control: &mut AgentClient<Channel>) -> u32 {
    let caps = control
        .get_capabilities(pb::GetCapabilitiesRequest {})
        .await
        .expect("GetCapabilities")
        .into_inner();
    caps.maps
        .iter()
        .find(|m| m.name == "FAULTD_RULES")
        .unwrap_or_else(|| panic!("no FAULTD_RULES among {:?}", caps.maps))
        .id
}

fn fault_id(client: usize, k: usize) -> String {
    format!("stress-c{client:02}-f{k:02}")
}

fn random_request(rng: &mut StdRng, targets: &[Target], hot: &[usize]) -> Expected {
    let target = if rng.random_ratio(1, HOT_ONE_IN) {
        hot[rng.random_range(0..hot.len())]
    } else {
        rng.random_range(0..targets.len())
    };
    let direction = [
        pb::Direction::Egress,
        pb::Direction::Ingress,
        pb::Direction::Both,
    ][rng.random_range(0..3)];
    let ports = rng.random_ratio(1, 4).then(|| {
        let min = rng.random_range(1..=u32::from(u16::MAX));
        // Half single ports (sent as max = 0), half ranges.
        let max = if rng.random_bool(0.5) {
            0
        } else {
            rng.random_range(min..=u32::from(u16::MAX))
        };
        (min, max)
    });
    Expected {
        target,
        ppm: rng.random_range(1..=1_000_000),
        direction,
        ports,
    }
}

fn request(id: &str, targets: &[Target], e: &Expected) -> pb::ApplyFaultRequest {
    let mut loss = Loss::new(id, &targets[e.target].path, e.ppm)
        .direction(e.direction)
        .duration(FAULT_DURATION);
    if let Some((min, max)) = e.ports {
        loss = loss.filter(pb::PacketFilter {
            protocol: pb::Protocol::Udp as i32,
            remote_cidr: String::new(),
            remote_port_min: min,
            remote_port_max: max,
        });
    }
    loss.request()
}

/// One client: OPS_PER_CLIENT requests in sequence on its own connection.
/// Besides recording the last request per id, it checks what the agent says
/// about the previous state: ApplyFault's `updated` and RevertFault's `existed`
/// must match this client's own record, since no one else touches its ids.
async fn run_client(
    mut client: AgentClient<Channel>,
    index: usize,
    seed: u64,
    targets: Arc<Vec<Target>>,
    hot: Arc<Vec<usize>>,
) -> Result<ClientReport, String> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut report = ClientReport {
        last: (0..IDS_PER_CLIENT)
            .map(|k| (fault_id(index, k), None))
            .collect(),
        latencies: Vec::with_capacity(OPS_PER_CLIENT),
        ..ClientReport::default()
    };
    for op in 0..OPS_PER_CLIENT {
        let id = fault_id(index, rng.random_range(0..IDS_PER_CLIENT));
        let before = report.last[&id].clone();
        let context = |what: &str| format!("client {index} (seed {seed}) op {op} on {id}: {what}");
        if rng.random_ratio(2, 3) {
            let wanted = random_request(&mut rng, &targets, &hot);
            let started = Instant::now();
            let result = client.apply_fault(request(&id, &targets, &wanted)).await;
            report.latencies.push(started.elapsed());
            match result {
                Ok(response) => {
                    report.applies += 1;
                    let response = response.into_inner();
                    if response.updated != before.is_some() {
                        return Err(context(&format!(
                            "ApplyFault said updated = {} but the id was {}",
                            response.updated,
                            if before.is_some() {
                                "active"
                            } else {
                                "not active"
                            }
                        )));
                    }
                    let got = response.fault.and_then(|f| f.target);
                    let want = &targets[wanted.target];
                    if got.as_ref().map(|t| (t.cgroup_path.as_str(), t.cgroup_id))
                        != Some((want.path.as_str(), want.id))
                    {
                        return Err(context(&format!(
                            "ApplyFault resolved {got:?}, expected {} (id {})",
                            want.path, want.id
                        )));
                    }
                    report.last.insert(id, Some(wanted));
                }
                // Legitimate refusal: nothing changed, `before` stays the last
                // state of this id.
                Err(status) if status.code() == Code::ResourceExhausted => {
                    report.exhausted += 1;
                }
                Err(status) => return Err(context(&format!("ApplyFault failed: {status:?}"))),
            }
        } else {
            let started = Instant::now();
            let result = client
                .revert_fault(pb::RevertFaultRequest { id: id.clone() })
                .await;
            report.latencies.push(started.elapsed());
            let response = result
                .map_err(|status| context(&format!("RevertFault failed: {status:?}")))?
                .into_inner();
            report.reverts += 1;
            if response.existed != before.is_some() {
                return Err(context(&format!(
                    "RevertFault said existed = {} but the id was {}",
                    response.existed,
                    if before.is_some() {
                        "active"
                    } else {
                        "not active"
                    }
                )));
            }
            report.last.insert(id, None);
        }
    }
    Ok(report)
}

/// The cgroups faults cover `target` through: itself and its ancestors.
fn covering(targets: &[Target], target: usize) -> impl Iterator<Item = usize> + '_ {
    std::iter::successors(Some(target), |&t| targets[t].parent)
}

/// Expected entries of FAULTD_RULES: cgroup id -> number of rules (own faults
/// plus every targeted ancestor's).
fn expected_rules(targets: &[Target], expected: &BTreeMap<String, Expected>) -> BTreeMap<u64, u32> {
    let mut own = vec![0u32; targets.len()];
    for e in expected.values() {
        own[e.target] += 1;
    }
    (0..targets.len())
        .filter(|&t| own[t] > 0)
        .map(|t| (targets[t].id, covering(targets, t).map(|c| own[c]).sum()))
        .collect()
}

/// Expected links as (cgroup id, attach type): a cgroup gets a program for a
/// direction when one of its own faults covers that direction and no ancestor
/// has an own fault covering it (descendants are covered by the kernel's
/// effective-program inheritance, kernel/bpf/cgroup.c: compute_effective_progs).
fn expected_links(
    targets: &[Target],
    expected: &BTreeMap<String, Expected>,
) -> BTreeSet<(u64, &'static str)> {
    let own_covers =
        |t: usize, hook: Hook| expected.values().any(|e| e.target == t && e.covers(hook));
    let mut out = BTreeSet::new();
    for t in 0..targets.len() {
        for hook in Hook::ALL {
            if own_covers(t, hook) && !covering(targets, t).skip(1).any(|a| own_covers(a, hook)) {
                out.insert((targets[t].id, hook.attach_type()));
            }
        }
    }
    out
}

/// The faults as the agent lists them, in the same shape as [`Expected`].
fn listed(targets: &[Target], faults: &[pb::Fault]) -> BTreeMap<String, Expected> {
    let by_path: BTreeMap<&str, usize> = targets
        .iter()
        .enumerate()
        .map(|(i, t)| (t.path.as_str(), i))
        .collect();
    faults
        .iter()
        .map(|f| {
            let spec = f.spec.as_ref().expect("listed fault has a spec");
            let Some(pb::target::Kind::CgroupPath(requested)) =
                spec.target.as_ref().and_then(|t| t.kind.clone())
            else {
                panic!(
                    "{}: target is not a cgroup path: {:?}",
                    spec.id, spec.target
                );
            };
            let resolved = f
                .target
                .as_ref()
                .expect("listed fault has a resolved target");
            assert_eq!(
                resolved.cgroup_path, requested,
                "{}: resolved path differs from the requested one",
                spec.id
            );
            assert_eq!(
                f.state,
                pb::FaultState::Active as i32,
                "{}: listed fault not active",
                spec.id
            );
            let target = *by_path
                .get(requested.as_str())
                .unwrap_or_else(|| panic!("{}: unknown target {requested}", spec.id));
            assert_eq!(
                resolved.cgroup_id, targets[target].id,
                "{}: cgroup id of {requested}",
                spec.id
            );
            let Some(pb::fault_spec::Kind::Loss(loss)) = &spec.kind else {
                panic!("{}: not a loss fault: {:?}", spec.id, spec.kind);
            };
            let filter = loss.filter.clone().unwrap_or_default();
            let ports = match (filter.remote_port_min, filter.remote_port_max) {
                (0, 0) => None,
                range => Some(range),
            };
            let direction = pb::Direction::try_from(loss.direction)
                .unwrap_or_else(|_| panic!("{}: direction {}", spec.id, loss.direction));
            (
                spec.id.clone(),
                Expected {
                    target,
                    ppm: loss.probability_ppm,
                    direction,
                    ports,
                },
            )
        })
        .collect()
}

/// The port range as the agent reports it: a lone port comes back as min..=min.
fn normalised(mut e: Expected) -> Expected {
    e.ports = e
        .ports
        .map(|(min, max)| (min, if max == 0 { min } else { max }));
    e
}

/// Differences between two maps, at most 20, for a readable failure.
fn diff<V: std::fmt::Debug + PartialEq, K: Ord + std::fmt::Debug>(
    want: &BTreeMap<K, V>,
    got: &BTreeMap<K, V>,
) -> String {
    let keys: BTreeSet<&K> = want.keys().chain(got.keys()).collect();
    let lines: Vec<String> = keys
        .into_iter()
        .filter(|k| want.get(k) != got.get(k))
        .map(|k| format!("  {k:?}: want {:?}, got {:?}", want.get(k), got.get(k)))
        .collect();
    let more = lines.len().saturating_sub(20);
    let mut out = lines.into_iter().take(20).collect::<Vec<_>>().join("\n");
    if more > 0 {
        out.push_str(&format!("\n  ... and {more} more"));
    }
    out
}

/// Bytes of a `bpftool -j map dump` key or value: a list of "0x.." strings.
fn hex_bytes(value: &serde_json::Value) -> Vec<u8> {
    value
        .as_array()
        .and_then(|bytes| {
            bytes
                .iter()
                .map(|b| {
                    let s = b.as_str()?;
                    u8::from_str_radix(s.trim_start_matches("0x"), 16).ok()
                })
                .collect()
        })
        .unwrap_or_else(|| panic!("not a bpftool byte list: {value}"))
}

/// FAULTD_RULES as cgroup id -> `CgroupRules::count` (the first u32 of the
/// value), read through bpftool.
fn kernel_rules(map_id: u32) -> BTreeMap<u64, u32> {
    let entries: Vec<serde_json::Value> = bpftool_json(&["map", "dump", "id", &map_id.to_string()]);
    entries
        .iter()
        .map(|entry| {
            let key = hex_bytes(&entry["key"]);
            let value = hex_bytes(&entry["value"]);
            let key: [u8; 8] = key
                .try_into()
                .unwrap_or_else(|k| panic!("rules key is not a u64: {k:?}"));
            let count: [u8; 4] = value
                .get(..4)
                .and_then(|c| c.try_into().ok())
                .unwrap_or_else(|| panic!("rules value too short: {value:?}"));
            (u64::from_ne_bytes(key), u32::from_ne_bytes(count))
        })
        .collect()
}

fn kernel_links() -> BTreeMap<(u64, String), usize> {
    let mut out = BTreeMap::new();
    for link in links_of_programs_named("faultd_") {
        let key = (
            link.cgroup_id
                .unwrap_or_else(|| panic!("faultd link without a cgroup: {link:?}")),
            link.attach_type.clone().unwrap_or_default(),
        );
        *out.entry(key).or_insert(0) += 1;
    }
    out
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i]
}

fn seed() -> u64 {
    match std::env::var("FAULTD_STRESS_SEED") {
        Ok(s) => s
            .parse()
            .unwrap_or_else(|e| panic!("FAULTD_STRESS_SEED={s:?}: {e}")),
        Err(_) => SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_apply_and_revert_leave_agent_and_kernel_in_step() {
    if !require_root() {
        return;
    }
    let seed = seed();
    println!("seed {seed} (replay the requests with FAULTD_STRESS_SEED={seed})");

    // Cgroups: FLAT flat ones, then PARENTS trees of a parent and its
    // children. The first tree is the hot spot.
    let mut guards = Vec::with_capacity(FLAT + PARENTS * (1 + CHILDREN_PER_PARENT));
    let mut targets = Vec::with_capacity(guards.capacity());
    let mut hot = Vec::new();
    let mut push = |guard: CgroupGuard, parent: Option<usize>| {
        targets.push(Target {
            path: guard.relative_str().to_owned(),
            id: guard.id(),
            parent,
        });
        guards.push(guard);
        targets.len() - 1
    };
    for _ in 0..FLAT {
        push(CgroupGuard::new("stress-flat"), None);
    }
    for p in 0..PARENTS {
        let parent = CgroupGuard::new("stress-tree");
        let children: Vec<CgroupGuard> = (0..CHILDREN_PER_PARENT)
            .map(|c| parent.child(&format!("c{c}")))
            .collect();
        let parent_index = push(parent, None);
        if p == 0 {
            hot.push(parent_index);
        }
        for child in children {
            let child_index = push(child, Some(parent_index));
            if p == 0 {
                hot.push(child_index);
            }
        }
    }
    let targets = Arc::new(targets);
    let hot = Arc::new(hot);
    assert_eq!(targets.len(), FLAT + PARENTS * (1 + CHILDREN_PER_PARENT));

    let mut agent = AgentGuard::start(AgentOptions {
        config_toml: Some("[limits]\nmax_faults = 4096\n".to_owned()),
        ..AgentOptions::default()
    });
    agent.wait_ready();
    let mut control = agent.client().await;
    assert!(
        links_of_programs_named("faultd_").is_empty(),
        "faultd links exist before the test: is another agent running?"
    );

    // The storm.
    let mut clients = Vec::with_capacity(CLIENTS);
    for _ in 0..CLIENTS {
        clients.push(agent.client().await);
    }
    let started = Instant::now();
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, client)| {
            tokio::spawn(run_client(
                client,
                i,
                seed.wrapping_add(i as u64),
                Arc::clone(&targets),
                Arc::clone(&hot),
            ))
        })
        .collect();
    let mut reports = Vec::with_capacity(CLIENTS);
    let mut failures = Vec::new();
    for task in tasks {
        match task.await.expect("client task panicked") {
            Ok(report) => reports.push(report),
            Err(e) => failures.push(e),
        }
    }
    let wall = started.elapsed();
    assert!(
        failures.is_empty(),
        "{} of {CLIENTS} clients failed:\n{}",
        failures.len(),
        failures.join("\n")
    );

    let applies: usize = reports.iter().map(|r| r.applies).sum();
    let reverts: usize = reports.iter().map(|r| r.reverts).sum();
    let exhausted: usize = reports.iter().map(|r| r.exhausted).sum();
    let ops = applies + reverts + exhausted;
    assert_eq!(ops, CLIENTS * OPS_PER_CLIENT);
    let mut latencies: Vec<Duration> = reports
        .iter()
        .flat_map(|r| r.latencies.iter().copied())
        .collect();
    latencies.sort_unstable();
    println!(
        "{ops} ops ({applies} applied, {exhausted} refused as exhausted, {reverts} reverted) \
         from {CLIENTS} clients in {wall:.2?}: {:.0} ops/s; latency p50 {:.2?} p99 {:.2?} max {:.2?}",
        ops as f64 / wall.as_secs_f64(),
        quantile(&latencies, 0.5),
        quantile(&latencies, 0.99),
        quantile(&latencies, 1.0),
    );

    let expected: BTreeMap<String, Expected> = reports
        .into_iter()
        .flat_map(|r| r.last)
        .filter_map(|(id, e)| Some((id, normalised(e?))))
        .collect();
    // The agent must have kept every cgroup within MAX_OVERLAP; if this fails,
    // it accepted a request it should have refused.
    let mut own = vec![0usize; targets.len()];
    for e in expected.values() {
        own[e.target] += 1;
    }
    for (t, target) in targets.iter().enumerate() {
        let overlap: usize = covering(&targets, t).map(|c| own[c]).sum();
        assert!(
            own[t] == 0 || overlap <= MAX_OVERLAP,
            "{} is covered by {overlap} faults, more than {MAX_OVERLAP}",
            target.path
        );
    }

    // (a) The agent's record is the last request per id.
    let faults = control
        .list_faults(pb::ListFaultsRequest {})
        .await
        .expect("ListFaults")
        .into_inner()
        .faults;
    let got = listed(&targets, &faults);
    assert!(
        got == expected,
        "ListFaults differs from the last request per id:\n{}",
        diff(&expected, &got)
    );

    // (b) The kernel holds exactly the active faults.
    let rules_map = rules_map_id(&mut control).await;
    let want_rules = expected_rules(&targets, &expected);
    let got_rules = kernel_rules(rules_map);
    assert!(
        got_rules == want_rules,
        "FAULTD_RULES (cgroup id -> rule count) differs from the active faults:\n{}",
        diff(&want_rules, &got_rules)
    );
    assert_eq!(map_entries(rules_map), want_rules.len());

    let want_links: BTreeMap<(u64, String), usize> = expected_links(&targets, &expected)
        .into_iter()
        .map(|(id, hook)| ((id, hook.to_owned()), 1))
        .collect();
    let got_links = kernel_links();
    assert!(
        got_links == want_links,
        "links (cgroup id, attach type) -> count differ from the topmost targets:\n{}",
        diff(&want_links, &got_links)
    );
    let targeted: BTreeSet<usize> = expected.values().map(|e| e.target).collect();
    println!(
        "after the storm: {} active faults on {} cgroups; {} rules entries; {} links \
         ({} egress, {} ingress)",
        expected.len(),
        targeted.len(),
        got_rules.len(),
        want_links.len(),
        want_links
            .keys()
            .filter(|(_, t)| t == Hook::Egress.attach_type())
            .count(),
        want_links
            .keys()
            .filter(|(_, t)| t == Hook::Ingress.attach_type())
            .count(),
    );

    // Behaviour after the storm: an uncovered cgroup loses nothing, and a new
    // 100% fault on it drops everything and detaches cleanly.
    if let Some(bystander) = (0..FLAT).find(|t| !targeted.contains(t)) {
        let guard = &guards[bystander];
        let sink = udp_sink(None, "127.0.0.1:0");
        let sent = udp_send(
            Some(guard),
            SocketAddr::from(([127, 0, 0, 1], sink.port())),
            2000,
            20_000,
        );
        assert_no_loss(
            "uncovered cgroup after the storm",
            sent.sent,
            sink.stop().received,
        );

        control
            .apply_fault(
                Loss::new("stress-spot", guard.relative_str(), 1_000_000)
                    .duration(FAULT_DURATION)
                    .request(),
            )
            .await
            .expect("ApplyFault stress-spot");
        let sink = udp_sink(None, "127.0.0.1:0");
        let sent = udp_send(
            Some(guard),
            SocketAddr::from(([127, 0, 0, 1], sink.port())),
            2000,
            20_000,
        );
        assert_eq!(
            sink.stop().received,
            0,
            "100% egress loss on {} after the storm ({} sent)",
            guard.relative_str(),
            sent.sent
        );
        assert_eq!(
            links_of_programs_named("faultd_").len(),
            want_links.len() + 1
        );
        let reverted = control
            .revert_fault(pb::RevertFaultRequest {
                id: "stress-spot".into(),
            })
            .await
            .expect("RevertFault stress-spot")
            .into_inner();
        assert!(reverted.existed);
        assert_eq!(kernel_links(), want_links, "stress-spot's link detached");
    } else {
        println!("every flat cgroup is targeted; skipping the traffic spot check");
    }

    // (c) RevertAll leaves nothing behind.
    let reverted = control
        .revert_all(pb::RevertAllRequest {})
        .await
        .expect("RevertAll")
        .into_inner()
        .reverted;
    assert_eq!(reverted as usize, expected.len());
    let left = control
        .list_faults(pb::ListFaultsRequest {})
        .await
        .expect("ListFaults")
        .into_inner()
        .faults;
    assert!(
        left.is_empty(),
        "{} faults left after RevertAll",
        left.len()
    );
    let links = links_of_programs_named("faultd_");
    assert!(links.is_empty(), "links left after RevertAll: {links:?}");
    let rules = kernel_rules(rules_map);
    assert!(rules.is_empty(), "rules left after RevertAll: {rules:?}");
    assert_eq!(map_entries(rules_map), 0);

    let status = agent.stop();
    assert!(status.success(), "faultd exit status {status}");
}

/// `limits.max_faults` under a burst: 64 concurrent applies, each from its
/// own connection to its own cgroup, against a limit of 10. Exactly 10
/// succeed, every other one is RESOURCE_EXHAUSTED naming the limit, and
/// the agent, the rules map and the links describe the 10.
#[tokio::test]
async fn max_faults_holds_under_concurrent_applies() {
    const LIMIT: usize = 10;
    const APPLIES: usize = 64;
    if !require_root() {
        return;
    }
    let parent = CgroupGuard::new("max-faults");
    let targets: Vec<CgroupGuard> = (0..APPLIES)
        .map(|i| parent.child(&format!("c{i}")))
        .collect();
    let mut agent = AgentGuard::start(AgentOptions {
        config_toml: Some(format!("[limits]\nmax_faults = {LIMIT}\n")),
        ..AgentOptions::default()
    });
    agent.wait_ready();
    let mut calls = Vec::new();
    for (i, t) in targets.iter().enumerate() {
        let mut c = agent.client().await;
        let req = Loss::new(&format!("burst-{i}"), t.relative_str(), 1_000).request();
        calls.push(tokio::spawn(async move { c.apply_fault(req).await }));
    }
    let (mut ok, mut refused) = (0, 0);
    for call in calls {
        match call.await.expect("join") {
            Ok(_) => ok += 1,
            Err(s) => {
                assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
                assert!(s.message().contains("max_faults"), "{}", s.message());
                refused += 1;
            }
        }
    }
    let mut control = agent.client().await;
    let listed = control
        .list_faults(pb::ListFaultsRequest {})
        .await
        .expect("list")
        .into_inner()
        .faults;
    let rules = map_entries(rules_map_id(&mut control).await);
    println!(
        "{ok} applied, {refused} refused; {} listed, {rules} rules map entries",
        listed.len()
    );
    assert_eq!((ok, refused), (LIMIT, APPLIES - LIMIT));
    assert_eq!(listed.len(), LIMIT);
    assert_eq!(rules, LIMIT);
    agent.stop();
}
