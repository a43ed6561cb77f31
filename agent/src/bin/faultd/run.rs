//! Start-up and shutdown: the order in which the agent takes the node,
//! cleans up after a dead instance, loads its programs, serves, and
//! reverts everything on the way out.

use std::{fs, net::SocketAddr, os::unix::fs::DirBuilderExt as _, path::PathBuf, sync::Arc};

use anyhow::Context as _;
use faultd_agent::{
    caps::{self, Capabilities},
    cleanup::remove_leftovers,
    config::Config,
    datapath::ebpf::EbpfDatapath,
    error::error_chain,
    manager::{Manager, Policy, SystemClock},
    qdisc::{QdiscManager, restore_leftovers},
    service::{Access, Auditor, Shared},
    target::CgroupFs,
};
use faultd_proto::{audit::AuditLog, ops::notify};
use tracing::{error, info, warn};

use crate::{listen, system};

pub async fn run(config: Config, dev_plaintext: Option<SocketAddr>) -> anyhow::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&config.state.dir)
        .with_context(|| format!("creating state dir {}", config.state.dir.display()))?;
    let _lock = system::take_node_lock(&config.state.lock_file)?;
    let node_name = config.node.resolved_name();
    info!(node = %node_name, "faultd starting");

    let cgroups = match &config.cgroup.mount {
        Some(mount) => CgroupFs::new(mount.clone(), PathBuf::from("/proc")),
        None => CgroupFs::detect().context("finding the cgroup v2 mount")?,
    };
    let scope = config.cgroup.scope.trim_matches('/').to_owned();
    info!(mount = %cgroups.mount().display(), scope = %scope, "cgroup v2");

    // Holding the lock, anything of faultd's attached in our part of the
    // tree was left by a dead instance.
    match remove_leftovers(cgroups.mount(), &scope) {
        Ok(r) if r.links_detached + r.legacy_detached > 0 => {
            warn!(
                links = r.links_detached,
                legacy = r.legacy_detached,
                "removed leftovers of a previous faultd"
            );
        }
        Ok(_) => {}
        Err(e) => {
            warn!(error = %error_chain(&e), "looking for leftovers of a previous faultd")
        }
    }

    // Root qdiscs a dead instance replaced for latency faults: put back
    // before anything else, whatever faults follow.
    let qdisc_records = config.state.qdisc_records();
    match restore_leftovers(&qdisc_records) {
        Ok(0) => {}
        Ok(n) => warn!(
            devices = n,
            "restored root qdiscs a previous faultd replaced"
        ),
        Err(e) => warn!(error = %error_chain(&e), "restoring qdiscs of a previous faultd"),
    }

    system::raise_memlock_limit();
    system::raise_nofile_limit();
    let mut caps = caps::probe();
    let datapath = EbpfDatapath::load(config.limits.max_faults, config.syscall.lsm_attach)
        .map_err(|e| anyhow::anyhow!(error_chain(&e)))
        .context("loading the eBPF programs")?
        .with_qdiscs(QdiscManager::new(qdisc_records));
    add_loaded_features(&mut caps, &datapath);
    for f in &caps.features {
        info!(feature = f.name, available = f.available, detail = %f.detail, "capability");
    }

    let self_cgroup = match cgroups.self_cgroup() {
        Ok(c) => Some(c.path),
        Err(e) => {
            warn!(error = %error_chain(&e), "cannot tell the agent's own cgroup; it is not protected");
            None
        }
    };
    let policy = Policy {
        max_duration: config.limits.max_duration,
        max_faults: config.limits.max_faults,
        max_lease_ttl: config.limits.max_lease_ttl,
        scope,
        protected: config.safety.protected_cgroups.clone(),
        self_cgroup,
        allow_protected: config.safety.allow_protected_targets,
    };
    let audit = AuditLog::open(&config.audit.path)
        .map_err(|e| anyhow::anyhow!(error_chain(&e)))
        .context("opening the audit log")?;
    info!(path = %audit.path().display(), "audit log");
    let access = config
        .server
        .tls
        .as_ref()
        .map(|t| Access {
            coordinators: t.coordinator_identities.clone(),
            readers: t.reader_identities.clone(),
        })
        .unwrap_or_default();
    let mount = cgroups.mount().to_path_buf();
    let shared = Shared::new(
        Manager::new(policy, datapath, cgroups, SystemClock, caps.clone()),
        caps,
        mount,
        access,
        Auditor {
            node: node_name,
            log: Some(audit),
        },
    );

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let servers = listen::serve_all(&config, dev_plaintext, &shared, &stop_rx).await?;
    if let Some(addr) = config.metrics.listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("metrics.listen: binding {addr}"))?;
        info!(listen = %addr, "serving Prometheus metrics at /metrics");
        let metrics = Arc::clone(&shared);
        tokio::spawn(faultd_proto::ops::serve_metrics(
            listener,
            Arc::new(move || metrics.metrics().encode()),
            listen::wait_stop(stop_rx.clone()),
        ));
    }
    let expiry = tokio::spawn(Shared::expiry_loop(
        Arc::clone(&shared),
        listen::wait_stop(stop_rx.clone()),
    ));
    // systemd (Type=notify): ready once every listener is bound; the
    // watchdog is fed only while the manager answers, so an agent wedged
    // on its lock is killed and restarted (its faults end with it).
    match notify::send("READY=1\nSTATUS=serving") {
        Ok(true) => info!("told systemd we are ready"),
        Ok(false) => {}
        Err(e) => warn!(error = %e, "sd_notify READY"),
    }
    if let Some(every) = notify::watchdog() {
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every / 2).await;
                let probe = Arc::clone(&shared);
                let alive = tokio::time::timeout(
                    every / 2,
                    tokio::task::spawn_blocking(move || drop(probe.lock())),
                )
                .await
                .is_ok_and(|r| r.is_ok());
                if alive {
                    if let Err(e) = notify::send("WATCHDOG=1") {
                        warn!(error = %e, "sd_notify WATCHDOG");
                    }
                } else {
                    warn!("the manager did not answer within half the watchdog interval");
                }
            }
        });
    }
    let failed = tokio::select! {
        () = system::shutdown_signal() => None,
        r = servers.first_exit() => Some(r),
    };
    let _ = notify::send("STOPPING=1");

    // Stop taking faults first, so none lands after the revert below; then
    // revert; then give open connections a moment to finish before exiting.
    shared.close();
    let _ = stop_tx.send(true);
    match shared.revert_all().await {
        Ok(n) => info!(reverted = n, "reverted every fault"),
        Err(e) => error!(error = %error_chain(&e), "reverting faults at shutdown"),
    }
    servers.finish().await;
    let _ = expiry.await;
    let _ = fs::remove_file(&config.server.socket);
    if let Some(r) = failed {
        r.context("serving the API")?;
    }
    info!("faultd stopped");
    Ok(())
}

/// Adds what loading the programs decided to the probed capabilities.
fn add_loaded_features(caps: &mut Capabilities, datapath: &EbpfDatapath) {
    let loaded = |name, why: Option<&str>, ok: &str| caps::Feature {
        name,
        available: why.is_none(),
        detail: why.map_or_else(|| ok.to_owned(), str::to_owned),
    };
    caps.add(loaded(
        "cgroup_sock_hooks",
        datapath.syscall_unavailable(),
        "connect/bind/sendmsg/socket programs loaded",
    ));
    // Whether BPF LSM works is decided by loading our LSM programs (lockdown
    // or the kernel config can refuse them) after checking that the bpf LSM
    // is active (otherwise they would load and never run).
    let lsm = datapath.lsm_unavailable();
    caps.add(loaded(
        "bpf_lsm",
        lsm,
        "BPF LSM active and faultd's LSM programs loaded",
    ));
    caps.add(loaded(
        "lsm_cgroup",
        datapath.lsm_cgroup_unavailable(),
        "LSM programs loaded as lsm_cgroup: they attach at targeted cgroups only",
    ));
    caps.add(loaded(
        "kprobe_override",
        datapath.kprobe_unavailable(),
        "kprobe programs with bpf_override_return loaded (syscall entry points)",
    ));
    let path = datapath.path_filter_unavailable();
    caps.add(caps::Feature {
        name: "path_filter",
        available: lsm.is_none() && path.is_none(),
        detail: match (lsm, path) {
            (None, None) => "struct file/dentry/inode offsets read from kernel BTF".to_owned(),
            (Some(_), _) => "needs BPF LSM (see bpf_lsm)".to_owned(),
            (None, Some(why)) => why.to_owned(),
        },
    });
}
