//! A multi-node lab on one kernel: each node a network namespace with its
//! own address on a bridge, its own agent (own socket, state directory,
//! lock, node name and `cgroup.scope`, a mutual-TLS listener), and the
//! coordinator in the hub namespace that holds the bridge. The cgroup tree
//! is the host's, so each node owns a subtree and its agent may fault only
//! there; the coordinator reaches every agent over TLS on the bridge.
//!
//! ```text
//!   hub netns: br0 10.77.0.254 ── coordinator :7444
//!     ├─ veth ── node-1 netns: eth0 10.77.0.11 ── faultd :7443, scope faultd-test/lab-…/node-1
//!     ├─ veth ── node-2 netns: eth0 10.77.0.12 ── faultd :7443, scope …/node-2
//!     └─ …
//! ```

use std::{
    fs,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use faultd_proto::{
    agent::v1::{self as apb, agent_client::AgentClient},
    coordinator::v1::{self as cpb, coordinator_client::CoordinatorClient},
    tls::TlsFiles,
};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use tempfile::TempDir;
use tonic::transport::Channel;

use crate::{
    AgentGuard, AgentOptions, CgroupGuard,
    certs::DevCa,
    locate::locate_binary,
    netns::{NetNs, tls_channel_in},
};

/// The agents' TLS port in their namespaces, and the coordinator's.
pub const AGENT_PORT: u16 = 7443;
pub const COORDINATOR_PORT: u16 = 7444;
/// The identities the lab's certificates carry.
pub const COORDINATOR_ID: &str = "coordinator.faultd";
pub const OPERATOR_ID: &str = "operator.faultd";
pub const READER_ID: &str = "reader.faultd";

pub const HUB_ADDR: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 254);

/// The `faultd-coordinator` binary, as [`crate::faultd_bin`] finds faultd.
pub fn coordinator_bin() -> PathBuf {
    locate_binary(
        "FAULTD_COORDINATOR_BIN",
        "faultd-coordinator",
        "cargo build -p faultd-coordinator",
    )
}

/// The `faultctl` binary.
pub fn faultctl_bin() -> PathBuf {
    locate_binary("FAULTCTL_BIN", "faultctl", "cargo build -p faultctl")
}

/// How to build a lab.
#[derive(Clone, Debug)]
pub struct LabOptions {
    pub nodes: usize,
    /// The coordinator's policy file.
    pub policy_toml: String,
    /// The coordinator's lease ttl.
    pub lease_ttl: Duration,
    /// Appended to every agent's config.
    pub agent_toml: String,
    /// Appended to the coordinator's config.
    pub coordinator_toml: String,
    /// Instead of a faultd per node, one `faultd-simagent` process in the
    /// hub serving every node's agent (real service and manager, simulated
    /// kernel), on 127.0.0.1: for scales one kernel cannot host. `nodes`
    /// stays empty; the inventory names them all.
    pub simulated: bool,
}

impl Default for LabOptions {
    fn default() -> Self {
        Self {
            nodes: 3,
            // Tests pick their limits; the defaults would refuse touching
            // more than half of three nodes.
            policy_toml: "[limits]\nmax_node_fraction = 1.0\n".to_owned(),
            lease_ttl: Duration::from_secs(6),
            agent_toml: String::new(),
            coordinator_toml: String::new(),
            simulated: false,
        }
    }
}

/// One node of the lab.
#[derive(Debug)]
pub struct LabNode {
    pub name: String,
    pub addr: Ipv4Addr,
    pub netns: NetNs,
    /// The cgroup subtree the node's agent owns.
    pub scope: CgroupGuard,
    pub agent: AgentGuard,
    pub tls: TlsFiles,
}

impl LabNode {
    pub fn agent_addr(&self) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(self.addr, AGENT_PORT))
    }

    /// Drops every packet between the coordinator and this node (both
    /// ways), as a network partition would.
    pub fn cut_from_coordinator(&self) {
        let hub = HUB_ADDR.to_string();
        self.netns
            .exec("iptables", &["-I", "INPUT", "-s", &hub, "-j", "DROP"]);
        self.netns
            .exec("iptables", &["-I", "OUTPUT", "-d", &hub, "-j", "DROP"]);
    }

    pub fn heal(&self) {
        self.netns.exec("iptables", &["-F"]);
    }

    /// `count` datagrams from `cgroup`, sent inside this node's namespace
    /// to a sink on its loopback: how many `sendto()` calls succeeded, and
    /// the sink's report.
    pub fn udp_to_loopback(
        &self,
        cgroup: &CgroupGuard,
        count: u64,
    ) -> (u64, crate::traffic::SinkReport) {
        use crate::traffic::{SinkOptions, UdpSendOptions, udp_send_with, udp_sink_with};
        let sink = udp_sink_with(
            None,
            "127.0.0.1:0",
            &SinkOptions {
                netns: Some(self.netns.path()),
                ..SinkOptions::default()
            },
        );
        let sent = udp_send_with(
            Some(cgroup),
            &UdpSendOptions {
                netns: Some(self.netns.path()),
                pps: 20_000,
                ..UdpSendOptions::new(SocketAddr::from(([127, 0, 0, 1], sink.port())), count)
            },
        );
        (sent.sent, sink.stop())
    }
}

/// The running coordinator of a lab.
#[derive(Debug)]
pub struct CoordinatorGuard {
    dir: PathBuf,
    config: PathBuf,
    hub: PathBuf,
    child: Option<Child>,
}

impl CoordinatorGuard {
    fn spawn(&mut self) {
        let log = |name: &str| {
            fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.join(name))
                .unwrap_or_else(|e| panic!("opening {name}: {e}"))
        };
        let bin = coordinator_bin();
        let child = Command::new("nsenter")
            .arg(format!("--net={}", self.hub.display()))
            .arg("--")
            .arg(&bin)
            .arg("--config")
            .arg(&self.config)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log("coordinator.stdout.log"))
            .stderr(log("coordinator.log"))
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {}: {e}", bin.display()));
        self.child = Some(child);
    }

    /// Waits until the coordinator logs that it serves.
    ///
    /// # Panics
    /// If it exits first or takes more than 20 s.
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let start_len = self.log().len();
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("faultd-coordinator exited with {status}:\n{}", self.log());
            }
            if self.log()[start_len.min(self.log().len())..]
                .contains("serving faultd.coordinator.v1")
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "faultd-coordinator did not serve within 20 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("coordinator.log")).unwrap_or_default()
    }

    /// kill -9 and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and reap.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            if let Ok(pid) = i32::try_from(c.id()) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            }
            let _ = c.wait();
        }
    }

    /// Starts it again with the same config and store.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart: the coordinator still runs");
        self.spawn();
        self.wait_ready();
    }

    pub fn signal(&self, signal: Signal) {
        if let Some(c) = &self.child
            && let Ok(pid) = i32::try_from(c.id())
        {
            let _ = kill(Pid::from_raw(pid), signal);
        }
    }

    /// Its audit log, one JSON value per line.
    pub fn audit_log(&self) -> Vec<serde_json::Value> {
        fs::read_to_string(self.dir.join("coordinator-audit.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("audit line"))
            .collect()
    }
}

impl Drop for CoordinatorGuard {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- faultd-coordinator log ---\n{}", self.log());
        }
    }
}

/// The `faultd-simagent` binary.
pub fn simagent_bin() -> PathBuf {
    locate_binary(
        "FAULTD_SIMAGENT_BIN",
        "faultd-simagent",
        "cargo build -p faultd-simagent",
    )
}

/// The simulated agents' first port in the hub.
pub const SIM_BASE_PORT: u16 = 17443;

/// A running `faultd-simagent`, killed on drop.
#[derive(Debug)]
struct SimAgents(Child);

impl Drop for SimAgents {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A lab: hub, nodes with agents, a coordinator.
#[derive(Debug)]
pub struct Lab {
    // Dropped in declaration order: the coordinator and the agents before
    // their namespaces and cgroups.
    pub coordinator: CoordinatorGuard,
    pub nodes: Vec<LabNode>,
    /// Held for its Drop, which stops the simulated agents.
    _sim: Option<SimAgents>,
    /// With `simulated`: each node's scope, and an "app" cgroup in each.
    pub sim_cgroups: Vec<CgroupGuard>,
    pub hub: NetNs,
    pub ca: DevCa,
    pub root: CgroupGuard,
    /// Client certificates issued so far, by identity.
    client_certs: std::sync::Mutex<std::collections::HashMap<String, TlsFiles>>,
    dir: TempDir,
}

impl Lab {
    /// Builds the lab and starts everything.
    ///
    /// # Panics
    /// On any set-up failure, with what failed.
    pub fn new(opts: &LabOptions) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("faultd-lab-")
            .tempdir()
            .expect("lab dir");
        let tag = format!("fdl{}", std::process::id());
        let ca = DevCa::new(dir.path(), "lab");
        let root = CgroupGuard::new("lab");
        let hub = NetNs::new(&format!("{tag}h"));
        hub.ip(&["link", "add", "br0", "type", "bridge"]);
        hub.ip(&["addr", "add", &format!("{HUB_ADDR}/24"), "dev", "br0"]);
        hub.ip(&["link", "set", "br0", "up"]);

        let mut nodes = Vec::new();
        let mut inventory = String::new();
        let mut sim_cgroups = Vec::new();
        let mut sim = None;
        if opts.simulated {
            let certs = dir.path().join("sim");
            std::fs::create_dir_all(&certs).expect("sim cert dir");
            let sim_ca = DevCa::new(&certs, "sim");
            for i in 1..=opts.nodes {
                let name = format!("node-{i}");
                sim_ca.issue(&name, &[&name]);
                let scope = root.child(&name);
                sim_cgroups.push(scope.child("app"));
                sim_cgroups.push(scope);
                inventory.push_str(&format!(
                    "[[agent]]\nnode = \"{name}\"\naddress = \"127.0.0.1:{port}\"\n\n",
                    port = SIM_BASE_PORT + u16::try_from(i - 1).expect("fewer than 48000 nodes"),
                ));
            }
            // The simulated agents trust the lab's CA for the coordinator's
            // client certificate; their own come from `sim_ca`, which the
            // coordinator must trust too: one bundle of both.
            let bundle = dir.path().join("ca-bundle.pem");
            let pem = |p: &Path| fs::read_to_string(p).expect("CA pem");
            fs::write(&bundle, pem(ca.ca_pem()) + &pem(sim_ca.ca_pem())).expect("bundle");
            let child = Command::new("nsenter")
                .arg(format!("--net={}", hub.path().display()))
                .arg("--")
                .arg(simagent_bin())
                .arg("--count")
                .arg(opts.nodes.to_string())
                .arg("--base-port")
                .arg(SIM_BASE_PORT.to_string())
                .arg("--certs")
                .arg(&certs)
                .arg("--ca")
                .arg(&bundle)
                .arg("--scope-root")
                .arg(root.relative_str())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(fs::File::create(dir.path().join("simagent.log")).expect("simagent log"))
                .spawn()
                .expect("spawning faultd-simagent");
            sim = Some(SimAgents(child));
            let deadline = Instant::now() + Duration::from_secs(30);
            while !fs::read_to_string(dir.path().join("simagent.log"))
                .unwrap_or_default()
                .contains("agents serving")
            {
                assert!(Instant::now() < deadline, "faultd-simagent did not start");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        for i in (1..=opts.nodes).filter(|_| !opts.simulated) {
            let name = format!("node-{i}");
            let netns = NetNs::new(&format!("{tag}n{i}"));
            let addr = Ipv4Addr::new(
                10,
                77,
                0,
                u8::try_from(10 + i).expect("fewer than 240 nodes"),
            );
            let veth = format!("vh{i}");
            crate::netns::ip(&[
                "link",
                "add",
                &veth,
                "netns",
                hub.name(),
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                netns.name(),
            ]);
            hub.ip(&["link", "set", &veth, "master", "br0", "up"]);
            netns.ip(&["addr", "add", &format!("{addr}/24"), "dev", "eth0"]);
            netns.ip(&["link", "set", "eth0", "up"]);
            let tls = ca.issue(&name, &[&name]);
            let scope = root.child(&name);
            let config = format!(
                "[node]\nname = \"{name}\"\n\n[cgroup]\nscope = \"{scope}\"\n\n[server.tls]\nlisten = \
                 \"{addr}:{AGENT_PORT}\"\nca = \"{ca}\"\ncert = \"{cert}\"\nkey = \"{key}\"\n\
                 coordinator_identities = [\"{COORDINATOR_ID}\"]\nreader_identities = \
                 [\"{READER_ID}\"]\n{extra}",
                scope = scope.relative_str(),
                ca = tls.ca.display(),
                cert = tls.cert.display(),
                key = tls.key.display(),
                extra = opts.agent_toml,
            );
            let mut agent = AgentGuard::start(AgentOptions {
                config_toml: Some(config),
                netns: Some(netns.path()),
                own_lock: true,
                ..AgentOptions::default()
            });
            agent.wait_ready();
            inventory.push_str(&format!(
                "[[agent]]\nnode = \"{name}\"\naddress = \"{addr}:{AGENT_PORT}\"\nlabels = {{ zone = \
                 \"{zone}\", index = \"{i}\" }}\n\n",
                zone = if i % 2 == 1 { "a" } else { "b" },
            ));
            nodes.push(LabNode {
                name,
                addr,
                netns,
                scope,
                agent,
                tls,
            });
        }

        let mut coordinator_tls = ca.issue("coordinator", &[COORDINATOR_ID]);
        if opts.simulated {
            coordinator_tls.ca = dir.path().join("ca-bundle.pem");
        }
        let d = dir.path();
        fs::write(d.join("inventory.toml"), inventory).expect("inventory");
        fs::write(d.join("policy.toml"), &opts.policy_toml).expect("policy");
        let config = format!(
            "name = \"lab-coordinator\"\n\n[server]\nlisten = \"{HUB_ADDR}:{COORDINATOR_PORT}\"\nca = \
             \"{ca}\"\ncert = \"{cert}\"\nkey = \"{key}\"\noperators = [\"{OPERATOR_ID}\"]\nreaders \
             = [\"{READER_ID}\"]\n\n[agents]\ninventory = \"{inv}\"\nca = \"{ca}\"\ncert = \
             \"{cert}\"\nkey = \"{key}\"\nlease_ttl = \"{ttl}ms\"\ncall_timeout = \"{timeout}ms\"\n\n\
             [store]\npath = \"{store}\"\n\n[policy]\npath = \"{policy}\"\n\n[audit]\npath = \
             \"{audit}\"\n{extra}",
            ca = coordinator_tls.ca.display(),
            cert = coordinator_tls.cert.display(),
            key = coordinator_tls.key.display(),
            inv = d.join("inventory.toml").display(),
            ttl = opts.lease_ttl.as_millis(),
            timeout = (opts.lease_ttl / 4).as_millis(),
            store = d.join("coordinator.db").display(),
            policy = d.join("policy.toml").display(),
            audit = d.join("coordinator-audit.jsonl").display(),
            extra = opts.coordinator_toml,
        );
        let config_path = d.join("coordinator.toml");
        fs::write(&config_path, config).expect("coordinator config");
        let mut coordinator = CoordinatorGuard {
            dir: d.to_owned(),
            config: config_path,
            hub: hub.path(),
            child: None,
        };
        coordinator.spawn();
        coordinator.wait_ready();
        Self {
            coordinator,
            nodes,
            _sim: sim,
            sim_cgroups,
            hub,
            ca,
            root,
            client_certs: std::sync::Mutex::default(),
            dir,
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Rewrites the coordinator's policy file (reload it with SIGHUP or
    /// ReloadPolicy).
    pub fn write_policy(&self, toml: &str) {
        fs::write(self.dir.path().join("policy.toml"), toml).expect("policy");
    }

    /// A client certificate from the lab's CA naming `identity`, issued
    /// once and reused: issuing again rewrites the files, and a client
    /// loading them at that moment (faultctl in another thread) could read
    /// one certificate's key with another's certificate.
    pub fn client_cert(&self, identity: &str) -> TlsFiles {
        let mut issued = self.client_certs.lock().unwrap_or_else(|p| p.into_inner());
        issued
            .entry(identity.to_owned())
            .or_insert_with(|| self.ca.issue(&format!("client-{identity}"), &[identity]))
            .clone()
    }

    /// A coordinator client presenting `files`, connected from the hub.
    pub fn coordinator_client_with(&self, files: &TlsFiles) -> CoordinatorClient<Channel> {
        let addr = SocketAddr::V4(SocketAddrV4::new(HUB_ADDR, COORDINATOR_PORT));
        CoordinatorClient::new(tls_channel_in(
            &self.hub.path(),
            addr,
            COORDINATOR_ID,
            files,
        ))
    }

    /// `faultctl` run from the hub against the coordinator as an operator,
    /// with `args` after the connection flags: (exit status, stdout, stderr).
    ///
    /// # Panics
    /// If it cannot be started.
    pub fn faultctl(&self, args: &[&str]) -> (std::process::ExitStatus, String, String) {
        let tls = self.client_cert(OPERATOR_ID);
        let out = Command::new("nsenter")
            .arg(format!("--net={}", self.hub.path().display()))
            .arg("--")
            .arg(faultctl_bin())
            .arg("--coordinator")
            .arg(format!("{HUB_ADDR}:{COORDINATOR_PORT}"))
            .arg("--coordinator-name")
            .arg(COORDINATOR_ID)
            .arg("--ca")
            .arg(&tls.ca)
            .arg("--cert")
            .arg(&tls.cert)
            .arg("--key")
            .arg(&tls.key)
            .args(args)
            .output()
            .expect("running faultctl");
        (
            out.status,
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// A coordinator client as an operator.
    pub fn operator(&self) -> CoordinatorClient<Channel> {
        self.coordinator_client_with(&self.client_cert(OPERATOR_ID))
    }

    /// A cgroup `name` under each node's scope, in node order.
    pub fn children(&self, name: &str) -> Vec<CgroupGuard> {
        self.nodes.iter().map(|n| n.scope.child(name)).collect()
    }

    /// GetExperiment, as an operator.
    ///
    /// # Panics
    /// If the call fails.
    pub async fn experiment(&self, id: &str) -> cpb::Experiment {
        self.operator()
            .get_experiment(cpb::GetExperimentRequest { id: id.into() })
            .await
            .expect("GetExperiment")
            .into_inner()
    }

    /// StopExperiment, as an operator.
    ///
    /// # Panics
    /// If the call fails.
    pub async fn stop_experiment(&self, id: &str) -> cpb::Experiment {
        self.operator()
            .stop_experiment(cpb::StopExperimentRequest {
                id: id.into(),
                reason: "test".into(),
            })
            .await
            .expect("StopExperiment")
            .into_inner()
    }

    /// Waits until experiment `id` is neither applying nor running;
    /// returns it and how long that took.
    ///
    /// # Panics
    /// After `limit`.
    pub async fn wait_ended(&self, id: &str, limit: Duration) -> (cpb::Experiment, Duration) {
        let start = Instant::now();
        loop {
            let x = self.experiment(id).await;
            let running = [
                cpb::ExperimentState::Running,
                cpb::ExperimentState::Applying,
            ]
            .map(i32::from)
            .contains(&x.state);
            if !running {
                return (x, start.elapsed());
            }
            assert!(
                start.elapsed() < limit,
                "experiment {id} still runs after {limit:?}: {x:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every fault every agent holds, asked over each agent's Unix socket:
    /// (node, fault).
    ///
    /// # Panics
    /// If an agent does not answer.
    pub async fn faults_everywhere(&self) -> Vec<(String, apb::Fault)> {
        let mut out = Vec::new();
        for n in &self.nodes {
            let mut c = n.agent.client().await;
            for f in c
                .list_faults(apb::ListFaultsRequest {})
                .await
                .expect("ListFaults")
                .into_inner()
                .faults
            {
                out.push((n.name.clone(), f));
            }
        }
        out
    }

    /// A client of node `i`'s TLS listener presenting `files`, from the hub.
    pub fn agent_over_tls(&self, i: usize, files: &TlsFiles) -> AgentClient<Channel> {
        let node = &self.nodes[i];
        AgentClient::new(tls_channel_in(
            &self.hub.path(),
            node.agent_addr(),
            &node.name,
            files,
        ))
    }
}
