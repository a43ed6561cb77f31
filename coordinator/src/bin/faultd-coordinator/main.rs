//! `faultd-coordinator`: serves `faultd.coordinator.v1` over mutual TLS,
//! drives the inventory's agents, and reconciles with them at start.
//!
//! SIGHUP reloads the policy. SIGTERM/SIGINT stop serving and leave
//! running experiments to their leases: a coordinator restarted within the
//! lease ttl resumes them, a later one finds their faults ended and records
//! the experiments as aborted.

use std::{path::PathBuf, process::ExitCode, sync::Arc};

use anyhow::Context as _;
use clap::Parser;
use faultd_coordinator::{
    agents::GrpcAgents,
    config::{Config, EX_USAGE, LogFormat},
    engine::{Engine, Settings},
    inventory::{Discovery, Inventory},
    kubernetes::{self, Kubernetes},
    policy::Policy,
    service::{Access, CoordinatorService},
    store::Store,
};
use faultd_proto::{audit::AuditLog, coordinator::v1::coordinator_server::CoordinatorServer, tls};
use rand::SeedableRng as _;
use serde_json::json;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};

#[derive(Debug, Parser)]
#[command(
    name = "faultd-coordinator",
    version,
    about = "Runs chaos experiments across faultd agents within blast-radius limits"
)]
struct Flags {
    /// The coordinator's TOML config.
    #[arg(long, env = "FAULTD_COORDINATOR_CONFIG")]
    config: PathBuf,
    /// Log format (overrides log.format).
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
    /// Check the config (and the inventory and policy files it names, when
    /// they are readable here) and exit: 0 when valid, 64 naming the key.
    #[arg(long)]
    check_config: bool,
}

fn main() -> ExitCode {
    let flags = Flags::parse();
    let config = match Config::load(&flags.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("faultd-coordinator: {e}");
            return ExitCode::from(EX_USAGE as u8);
        }
    };
    if flags.check_config {
        let files = config
            .agents
            .inventory
            .iter()
            .filter(|p| p.exists())
            .map(|p| Inventory::load(p).map(drop))
            .chain(
                Some(&config.policy.path)
                    .filter(|p| p.exists())
                    .map(|p| Policy::load(p).map(drop)),
            )
            .collect::<Result<Vec<()>, _>>();
        return match files {
            Ok(_) => {
                println!("faultd-coordinator: {} is valid", flags.config.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("faultd-coordinator: {e}");
                ExitCode::from(EX_USAGE as u8)
            }
        };
    }
    init_tracing(flags.log_format.unwrap_or(config.log.format));
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

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    let discovery: Arc<dyn Discovery> = match (&config.agents.inventory, &config.kubernetes) {
        (Some(path), _) => Arc::new(Inventory::load(path).context("agents.inventory")?),
        (None, Some(k)) => {
            let client = kubernetes::client(k).await?;
            let k8s = Kubernetes::start(client, k.clone()).await?;
            info!(
                namespace = %k.agent_namespace,
                "agents, pods and services from the Kubernetes API"
            );
            Arc::new(k8s)
        }
        (None, None) => anyhow::bail!("agents.inventory: no source of agents"),
    };
    let policy = Policy::load(&config.policy.path).context("policy.path")?;
    info!(agents = discovery.inventory().agents.len(), policy_sha256 = %policy.1, "starting");
    let store = Store::open(&config.store.path).context("store.path")?;
    let client_tls = tls::client_config(&config.agents.tls()).context("agents TLS")?;
    let agents = GrpcAgents::new(
        Arc::clone(&discovery),
        client_tls,
        config.agents.call_timeout,
    )
    .context("agent channels")?;
    let mut settings = Settings::new(config.agents.lease_ttl, Some(config.policy.path.clone()));
    let telemetry = Arc::new(faultd_coordinator::telemetry::Telemetry::new(&config.name));
    settings.telemetry = Arc::clone(&telemetry);
    if let Some(p) = &config.prometheus {
        info!(url = %p.url, interval = ?p.interval, grace = ?p.grace, "stop conditions through Prometheus");
        settings.metrics = Some(std::sync::Arc::new(
            faultd_coordinator::conditions::Prometheus::new(&p.url, p.timeout),
        ));
        settings.metrics_every = p.interval;
        settings.metrics_grace = p.grace;
    }
    let engine = Engine::new(
        agents,
        store,
        discovery,
        policy,
        settings,
        rand::rngs::StdRng::from_os_rng(),
    );
    {
        let engine = engine.clone();
        telemetry.count_experiments_with(Arc::new(move || engine.count_by_state()));
    }
    let findings = engine
        .recover()
        .await
        .context("reconciling with the agents")?;
    info!(findings = findings.len(), "reconciled with the agents");

    let audit = AuditLog::open(&config.audit.path).context("audit.path")?;
    let server_tls = tls::server_config(&config.server.tls()).context("server TLS")?;
    let listener = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("binding {}", config.server.listen))?;
    let rejected_log = Arc::new(AuditLog::open(&config.audit.path).context("audit.path")?);
    let name = config.name.clone();
    let incoming = tls::incoming(
        listener,
        server_tls,
        tls::LISTENER_LIMITS,
        move |peer, why| {
            warn!(peer = %peer, "refused a TLS client: {why}");
            let _ = rejected_log.call(
                "faultd-coordinator",
                &name,
                &format!("tls@{peer}"),
                "tls-handshake",
                json!({}),
                Err(&tonic::Status::unauthenticated(why)),
            );
        },
    );
    let service = CoordinatorService::new(
        engine.clone(),
        Access {
            operators: config.server.operators.clone(),
            readers: config.server.readers.clone(),
        },
        Some(audit),
        config.name.clone(),
    );
    info!(listen = %config.server.listen, "serving faultd.coordinator.v1 over mutual TLS 1.3");

    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    if let Some(addr) = config.server.health_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("server.health_listen: binding {addr}"))?;
        info!(listen = %addr, "serving grpc.health.v1 alone, for probes");
        let mut stop = stop_rx.clone();
        let health =
            faultd_proto::ops::health_only::<CoordinatorServer<CoordinatorService<GrpcAgents>>>()
                .await;
        tokio::spawn(health.serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            async move {
                let _ = stop.wait_for(|s| *s).await;
            },
        ));
    }
    if let Some(addr) = config.metrics.listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("metrics.listen: binding {addr}"))?;
        info!(listen = %addr, "serving Prometheus metrics at /metrics");
        let mut stop = stop_rx.clone();
        tokio::spawn(faultd_proto::ops::serve_metrics(
            listener,
            Arc::new(move || telemetry.encode()),
            async move {
                let _ = stop.wait_for(|s| *s).await;
            },
        ));
    }
    let router = faultd_proto::ops::with_standard_services::<
        _,
        CoordinatorServer<CoordinatorService<GrpcAgents>>,
    >(
        faultd_proto::ops::server_builder().add_service(
            CoordinatorServer::new(service)
                .max_decoding_message_size(faultd_proto::ops::MAX_REQUEST_BYTES),
        ),
    )
    .await
    .context("the standard gRPC services")?;
    let server = tokio::spawn(router.serve_with_incoming_shutdown(incoming, async move {
        let _ = stop_rx.wait_for(|s| *s).await;
    }));
    // systemd (Type=notify): ready once serving; the watchdog is fed while
    // the store answers (every decision goes through it).
    match faultd_proto::ops::notify::send("READY=1\nSTATUS=serving") {
        Ok(true) => info!("told systemd we are ready"),
        Ok(false) => {}
        Err(e) => warn!(error = %e, "sd_notify READY"),
    }
    if let Some(every) = faultd_proto::ops::notify::watchdog() {
        let engine = engine.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every / 2).await;
                let probe = engine.clone();
                let alive = tokio::time::timeout(
                    every / 2,
                    tokio::task::spawn_blocking(move || probe.count_by_state()),
                )
                .await
                .is_ok_and(|r| r.is_ok());
                if alive {
                    if let Err(e) = faultd_proto::ops::notify::send("WATCHDOG=1") {
                        warn!(error = %e, "sd_notify WATCHDOG");
                    }
                } else {
                    warn!("the store did not answer within half the watchdog interval");
                }
            }
        });
    }
    let mut hup = signal(SignalKind::hangup()).context("SIGHUP handler")?;
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    loop {
        tokio::select! {
            _ = hup.recv() => match engine.reload_policy() {
                Ok(sha) => info!(sha256 = %sha, "SIGHUP: policy reloaded"),
                Err(e) => warn!(error = %e, "SIGHUP: the policy file is bad; the old policy stays"),
            },
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    let _ = faultd_proto::ops::notify::send("STOPPING=1");
    info!(
        running = engine.running_count(),
        "stopping; running experiments are left to their leases"
    );
    let _ = stop_tx.send(true);
    match tokio::time::timeout(std::time::Duration::from_secs(5), server).await {
        Ok(Ok(r)) => r.context("serving the API")?,
        Ok(Err(e)) => warn!(error = %e, "server task"),
        Err(_) => warn!("clients still connected after 5 s; closing"),
    }
    Ok(())
}
