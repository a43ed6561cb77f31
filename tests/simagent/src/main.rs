//! `faultd-simagent`: N agents in one process, each with its own node name,
//! cgroup scope, certificate and mutual-TLS port, running faultd's real
//! gRPC service, authorization, manager and cgroup resolution, over an
//! in-memory datapath instead of the kernel.
//!
//! One kernel cannot host a hundred real agents (each loads and verifies
//! its own programs); the coordinator's cost per agent (handshakes, target
//! listing, applies, renewals) is the same against these. The kernel's part
//! of an apply is measured with real agents, at smaller counts, in the same
//! benchmark. This binary is for `cargo xtask bench coordinator` only.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::Context as _;
use clap::Parser;
use faultd_agent::{
    backend::{LsmScope, SysBackends},
    caps,
    datapath::{Datapath, DatapathError, Entry, Hook, KernelObject, Table},
    manager::{Manager, Policy, SystemClock},
    service::{Access, AgentService, Auditor, Shared},
    target::CgroupFs,
};
use faultd_common::FaultCounters;
use faultd_proto::{agent::v1::agent_server::AgentServer, tls};

#[derive(Debug, Parser)]
struct Flags {
    /// How many agents.
    #[arg(long)]
    count: usize,
    /// Agent i (from 1) listens on listen-ip:base-port+i-1.
    #[arg(long, default_value = "127.0.0.1")]
    listen_ip: IpAddr,
    #[arg(long, default_value_t = 17443)]
    base_port: u16,
    /// The directory holding node-<i>.pem and node-<i>.key per agent.
    #[arg(long)]
    certs: PathBuf,
    /// The CA of the coordinator's client certificate.
    #[arg(long)]
    ca: PathBuf,
    /// Agent i's scope is <scope-root>/node-<i> (relative to the cgroup mount).
    #[arg(long)]
    scope_root: String,
    #[arg(long, default_value = "coordinator.faultd")]
    coordinator_identity: String,
}

/// The kernel, as the manager sees it, kept in memory.
#[derive(Debug, Default)]
struct SimDatapath {
    entries: HashMap<(u64, Table), Entry>,
    links: HashMap<(u64, Hook), ()>,
}

impl Datapath for SimDatapath {
    fn set_rules(&mut self, cgroup_id: u64, entry: &Entry) -> Result<(), DatapathError> {
        self.entries.insert((cgroup_id, entry.table), entry.clone());
        Ok(())
    }

    fn remove_rules(&mut self, table: Table, cgroup_id: u64) -> Result<(), DatapathError> {
        self.entries.remove(&(cgroup_id, table));
        Ok(())
    }

    fn set_levels(&mut self, _: u64) -> Result<(), DatapathError> {
        Ok(())
    }

    fn attach(&mut self, cgroup_id: u64, _: &Path, hook: Hook) -> Result<(), DatapathError> {
        self.links.insert((cgroup_id, hook), ());
        Ok(())
    }

    fn detach(&mut self, cgroup_id: u64, hook: Hook) -> Result<(), DatapathError> {
        self.links.remove(&(cgroup_id, hook));
        Ok(())
    }

    fn reset_counters(&mut self, _: u32) -> Result<(), DatapathError> {
        Ok(())
    }

    fn counters(&self, _: u32) -> Result<FaultCounters, DatapathError> {
        Ok(FaultCounters::default())
    }

    fn programs(&self) -> Vec<KernelObject> {
        Vec::new()
    }

    fn maps(&self) -> Vec<KernelObject> {
        Vec::new()
    }

    fn sys_backends(&self) -> SysBackends {
        SysBackends {
            cgroup_hooks: true,
            lsm: Some(LsmScope::Cgroup),
            kprobe: false,
            path_filter: true,
        }
    }
}

fn main() -> anyhow::Result<()> {
    let flags = Flags::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("runtime")?;
    rt.block_on(run(flags))
}

async fn run(flags: Flags) -> anyhow::Result<()> {
    let cgroups = CgroupFs::detect().context("the cgroup v2 mount")?;
    // The capabilities of this kernel, probed once (what the managers'
    // checks read); the datapath itself is simulated.
    let caps = caps::probe();
    for i in 1..=flags.count {
        let name = format!("node-{i}");
        let files = tls::TlsFiles {
            ca: flags.ca.clone(),
            cert: flags.certs.join(format!("{name}.pem")),
            key: flags.certs.join(format!("{name}.key")),
        };
        let config = tls::server_config(&files).with_context(|| format!("{name} TLS"))?;
        let policy = Policy {
            max_duration: Duration::from_secs(3600),
            max_faults: 1024,
            max_lease_ttl: Duration::from_secs(300),
            scope: format!("{}/{name}", flags.scope_root),
            protected: Vec::new(),
            self_cgroup: None,
            allow_protected: false,
        };
        let manager = Manager::new(
            policy,
            SimDatapath::default(),
            cgroups.clone(),
            SystemClock,
            caps.clone(),
        );
        let shared = Shared::new(
            manager,
            caps.clone(),
            cgroups.mount().to_path_buf(),
            Access {
                coordinators: vec![flags.coordinator_identity.clone()],
                readers: Vec::new(),
            },
            Auditor {
                node: name.clone(),
                log: None,
            },
        );
        let port = flags.base_port + u16::try_from(i - 1).context("too many agents")?;
        let addr = SocketAddr::new(flags.listen_ip, port);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        let incoming = tls::incoming(listener, config, tls::LISTENER_LIMITS, |_, _| {});
        tokio::spawn(Shared::expiry_loop(
            Arc::clone(&shared),
            std::future::pending(),
        ));
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(AgentServer::new(AgentService::new(shared)))
                .serve_with_incoming(incoming),
        );
    }
    eprintln!("faultd-simagent: {} agents serving", flags.count);
    std::future::pending::<()>().await;
    Ok(())
}
