//! `faultd`: the node agent binary. Reads config, takes the node lock,
//! removes leftovers of a dead instance, loads the eBPF programs and serves
//! the API on a Unix socket (and, when configured, over mutual TLS) until
//! SIGTERM/SIGINT, then reverts every fault.

mod listen;
mod run;
mod system;

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use clap::Parser;
use faultd_agent::config::{Config, EX_USAGE, LogFormat};
use tracing::error;

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
    /// This node's name (overrides node.name; default the hostname).
    #[arg(long)]
    node_name: Option<String>,
    /// The cgroup subtree this agent may target (overrides cgroup.scope).
    #[arg(long)]
    cgroup_scope: Option<String>,
    /// Audit log file (overrides audit.path).
    #[arg(long)]
    audit_log: Option<PathBuf>,
    /// DEVELOPMENT ONLY: also serve the API on this TCP address WITHOUT TLS
    /// OR AUTHENTICATION. Anyone who can reach it can inject faults. Never
    /// use it on a machine others can reach.
    #[arg(long, value_name = "ADDR")]
    dev_insecure_plaintext_tcp: Option<SocketAddr>,
    /// Print the default config with comments and exit.
    #[arg(long)]
    print_config: bool,
    /// Check the config (with the flags above applied) and exit: 0 when
    /// valid, 64 naming the key.
    #[arg(long)]
    check_config: bool,
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
    if flags.check_config {
        match &flags.config {
            Some(path) => println!("faultd: {} is valid", path.display()),
            None => println!("faultd: the defaults are valid"),
        }
        return ExitCode::SUCCESS;
    }
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
    match runtime.block_on(run::run(config, flags.dev_insecure_plaintext_tcp)) {
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
    if let Some(v) = &flags.node_name {
        config.node.name = v.clone();
    }
    if let Some(v) = &flags.cgroup_scope {
        config.cgroup.scope = v.clone();
    }
    if let Some(v) = &flags.audit_log {
        config.audit.path = v.clone();
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
