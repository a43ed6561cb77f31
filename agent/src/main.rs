//! `faultd`: the node agent binary. Reads config, takes the node lock,
//! removes leftovers of a dead instance, loads the eBPF programs and serves
//! the API on a Unix socket until SIGTERM/SIGINT, then reverts every fault.

use std::{
    fs,
    io::Write as _,
    os::unix::fs::{DirBuilderExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use anyhow::{Context as _, bail};
use clap::Parser;
use faultd_agent::{
    caps,
    cleanup::remove_leftovers,
    config::{Config, EX_USAGE, LogFormat},
    datapath::ebpf::EbpfDatapath,
    error::error_chain,
    manager::{Manager, Policy, SystemClock},
    service::{AgentService, Shared},
    target::CgroupFs,
};
use faultd_proto::agent::v1::agent_server::AgentServer;
use nix::fcntl::{Flock, FlockArg};
use tokio::{net::UnixListener, signal::unix::SignalKind};
use tokio_stream::wrappers::UnixListenerStream;
use tracing::{error, info, warn};

#[derive(Debug, Parser)]
#[command(
    name = "faultd",
    version,
    about = "eBPF fault injection agent for targeted cgroups"
)]
struct Flags {
    /// TOML config file; every key is optional (see --print-config).
    #[arg(long, env = "FAULTD_CONFIG")]
    config: Option<PathBuf>,
    /// Unix socket to serve the API on (overrides server.socket).
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Runtime state directory (overrides state.dir).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Node-wide lock file (overrides state.lock_file).
    #[arg(long)]
    lock_file: Option<PathBuf>,
    /// Most concurrent faults (overrides limits.max_faults).
    #[arg(long)]
    max_faults: Option<u32>,
    /// Longest fault, e.g. 1h (overrides limits.max_duration).
    #[arg(long, value_parser = parse_duration)]
    max_duration: Option<Duration>,
    /// cgroup v2 mount (overrides cgroup.mount; detected by default).
    #[arg(long)]
    cgroup_mount: Option<PathBuf>,
    /// Log format (overrides log.format).
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
    /// Print the default config with comments and exit.
    #[arg(long)]
    print_config: bool,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    faultd_agent::duration::parse(s).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let flags = Flags::parse();
    if flags.print_config {
        print!("{}", Config::default_toml());
        return ExitCode::SUCCESS;
    }
    let config = match load_config(&flags) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("faultd: {e:#}");
            return ExitCode::from(EX_USAGE as u8);
        }
    };
    init_tracing(config.log.format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error!(error = %e, "starting the async runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load_config(flags: &Flags) -> anyhow::Result<Config> {
    let mut config = match &flags.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if let Some(v) = &flags.socket {
        config.server.socket = v.clone();
    }
    if let Some(v) = &flags.state_dir {
        config.state.dir = v.clone();
    }
    if let Some(v) = &flags.lock_file {
        config.state.lock_file = v.clone();
    }
    if let Some(v) = flags.max_faults {
        config.limits.max_faults = v;
    }
    if let Some(v) = flags.max_duration {
        config.limits.max_duration = v;
    }
    if let Some(v) = &flags.cgroup_mount {
        config.cgroup.mount = Some(v.clone());
    }
    if let Some(v) = flags.log_format {
        config.log.format = v;
    }
    config.validate()?;
    Ok(config)
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    // `init` also routes the `log` crate (aya, aya-log) into tracing.
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&config.state.dir)
        .with_context(|| format!("creating state dir {}", config.state.dir.display()))?;
    let _lock = take_node_lock(&config.state.lock_file)?;

    let cgroups = match &config.cgroup.mount {
        Some(mount) => CgroupFs::new(mount.clone(), PathBuf::from("/proc")),
        None => CgroupFs::detect().context("finding the cgroup v2 mount")?,
    };
    info!(mount = %cgroups.mount().display(), "cgroup v2");

    match remove_leftovers(cgroups.mount()) {
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
    match faultd_agent::qdisc::restore_leftovers(&qdisc_records) {
        Ok(0) => {}
        Ok(n) => warn!(
            devices = n,
            "restored root qdiscs a previous faultd replaced"
        ),
        Err(e) => warn!(error = %error_chain(&e), "restoring qdiscs of a previous faultd"),
    }

    raise_memlock_limit();
    raise_nofile_limit();
    let mut caps = caps::probe();
    let datapath = EbpfDatapath::load(config.limits.max_faults, config.syscall.lsm_attach)
        .map_err(|e| anyhow::anyhow!(error_chain(&e)))
        .context("loading the eBPF programs")?
        .with_qdiscs(faultd_agent::qdisc::QdiscManager::new(qdisc_records));
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
        protected: config.safety.protected_cgroups.clone(),
        self_cgroup,
        allow_protected: config.safety.allow_protected_targets,
    };
    let mount = cgroups.mount().to_path_buf();
    let shared = Shared::new(
        Manager::new(policy, datapath, cgroups, SystemClock, caps.clone()),
        caps,
        mount,
    );

    let listener = bind_socket(&config.server.socket)?;
    info!(socket = %config.server.socket.display(), "serving faultd.agent.v1");

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let expiry = tokio::spawn(Shared::expiry_loop(
        Arc::clone(&shared),
        wait_stop(stop_rx.clone()),
    ));
    let mut server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(AgentServer::new(AgentService::new(Arc::clone(&shared))))
            .serve_with_incoming_shutdown(UnixListenerStream::new(listener), wait_stop(stop_rx)),
    );
    let served = tokio::select! {
        () = shutdown_signal() => None,
        r = &mut server => Some(r),
    };

    // Stop taking faults first, so none lands after the revert below; then
    // revert; then give open connections a moment to finish before exiting.
    shared.close();
    let _ = stop_tx.send(true);
    match shared.revert_all().await {
        Ok(n) => info!(reverted = n, "reverted every fault"),
        Err(e) => error!(error = %error_chain(&e), "reverting faults at shutdown"),
    }
    let served = match served {
        Some(r) => r,
        None => match tokio::time::timeout(Duration::from_secs(5), server).await {
            Ok(r) => r,
            Err(_) => {
                warn!("clients still connected after 5 s; closing");
                Ok(Ok(()))
            }
        },
    };
    let _ = expiry.await;
    let _ = fs::remove_file(&config.server.socket);
    served.context("server task")?.context("serving the API")?;
    info!("faultd stopped");
    Ok(())
}

use std::sync::Arc;

async fn wait_stop(mut rx: tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

async fn shutdown_signal() {
    let term = tokio::signal::unix::signal(SignalKind::terminate());
    let int = tokio::signal::unix::signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => info!("SIGTERM: reverting faults and stopping"),
                _ = int.recv() => info!("SIGINT: reverting faults and stopping"),
            }
        }
        (Err(e), _) | (_, Err(e)) => {
            error!(error = %e, "installing signal handlers; stop with SIGKILL only");
            std::future::pending::<()>().await;
        }
    }
}

/// One agent per node. The lock file records the holder's pid for the error
/// message; the flock, not the content, is the lock, and it dies with us.
fn take_node_lock(path: &Path) -> anyhow::Result<Flock<fs::File>> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .with_context(|| format!("opening lock file {}", path.display()))?;
    let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => lock,
        Err((_, errno)) => {
            let holder = fs::read_to_string(path).unwrap_or_default();
            bail!(
                "another faultd holds {} (pid {}): {errno}; one agent runs per node",
                path.display(),
                holder.trim()
            );
        }
    };
    lock.set_len(0).context("truncating lock file")?;
    write!(&mut *lock, "{}", std::process::id()).context("writing lock file")?;
    Ok(lock)
}

/// Binds the API socket with mode 0600 from the start (umask), so there is
/// no window in which another user could connect.
fn bind_socket(path: &Path) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    if path.exists() {
        // We hold the node lock, so no live agent serves this socket.
        fs::remove_file(path)
            .with_context(|| format!("removing stale socket {}", path.display()))?;
    }
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let listener = UnixListener::bind(path);
    nix::sys::stat::umask(old);
    let listener = listener.with_context(|| format!("binding {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
        .with_context(|| format!("chmod 0600 {}", path.display()))?;
    Ok(listener)
}

/// Every attachment is a bpf link fd the agent holds, so faults need file
/// descriptors: take the whole hard limit, as the soft default (often 1024)
/// would cap the agent near that many attachments.
fn raise_nofile_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                warn!(error = %e, soft, hard, "raising RLIMIT_NOFILE; faults beyond the soft limit will fail to attach");
            }
        }
        Ok(_) => {}
        Err(e) => warn!(error = %e, "reading RLIMIT_NOFILE"),
    }
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK (kernel/bpf/syscall.c,
/// `bpf_map_charge_memlock`, replaced by memcg accounting in 5.11).
fn raise_memlock_limit() {
    let memcg_accounted = aya::util::KernelVersion::current()
        .is_ok_and(|v| v >= aya::util::KernelVersion::new(5, 11, 0));
    if memcg_accounted {
        return;
    }
    let r = nix::sys::resource::setrlimit(
        nix::sys::resource::Resource::RLIMIT_MEMLOCK,
        nix::sys::resource::RLIM_INFINITY,
        nix::sys::resource::RLIM_INFINITY,
    );
    if let Err(e) = r {
        warn!(error = %e, "raising RLIMIT_MEMLOCK; map creation may fail on kernels before 5.11");
    }
}
