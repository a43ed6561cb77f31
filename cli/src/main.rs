//! `faultctl`: talks to the faultd agent on this node over its Unix socket,
//! or to the faultd coordinator over mutual TLS.

use std::io::{self, Write as _};
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::Context as _;
use clap::{CommandFactory as _, Parser as _};
use faultctl::args::{Cli, Command, ExperimentCommand, OutputFormat, RevertArgs};
use faultctl::client::{
    CoordinatorError, EXIT_FAILURE, connect_coordinator, exit_code, status_line,
};
use faultctl::output::{
    CapabilitiesView, EventView, ExperimentView, FaultView, HaltView, ReportView, RevertAllView,
    RevertView, StatusView, capabilities_table, event_line, experiment_table, experiments_table,
    fault_table, json, report_table, status_table, write_plot,
};
use faultctl::{ConnectError, connect};
use faultd_proto::{agent::v1 as pb, coordinator::v1 as cpb};

/// Why a run failed; each kind is reported and exits differently.
enum Failure {
    Connect(ConnectError),
    Coordinator(CoordinatorError),
    Rpc(tonic::Status),
    Other(anyhow::Error),
}

impl From<tonic::Status> for Failure {
    fn from(status: tonic::Status) -> Self {
        Self::Rpc(status)
    }
}

impl From<anyhow::Error> for Failure {
    fn from(err: anyhow::Error) -> Self {
        Self::Other(err)
    }
}

// One request per run: a single-threaded runtime is plenty.
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Rpc(status)) => {
            eprintln!("{}", status_line(&status));
            ExitCode::from(exit_code(&status))
        }
        Err(Failure::Connect(err)) => {
            eprintln!("error: {err}");
            ExitCode::from(EXIT_FAILURE)
        }
        Err(Failure::Coordinator(err)) => {
            eprintln!("error: {err}");
            ExitCode::from(EXIT_FAILURE)
        }
        Err(Failure::Other(err)) => {
            eprintln!("error: {err:#}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// Exits with a usage error for a flag combination clap cannot check,
/// attributed to subcommand `path` (e.g. ["experiment", "create"]).
fn usage_error(path: &[&str], err: impl std::fmt::Display) -> ! {
    let mut cmd = Cli::command();
    cmd.build();
    let mut sub = cmd;
    for name in path {
        let Some(next) = sub.find_subcommand(name).cloned() else {
            break;
        };
        sub = next;
    }
    sub.error(clap::error::ErrorKind::ArgumentConflict, err)
        .exit()
}

async fn run(cli: Cli) -> Result<(), Failure> {
    if cli.command.is_coordinator() {
        let text = run_coordinator(cli).await?;
        write_stdout(&text)?;
        return Ok(());
    }
    // Check flag combinations before touching the socket, so a bad command
    // line is a usage error even when the agent is down.
    let request = match &cli.command {
        Command::Loss(loss) => Some(("loss", loss.to_request())),
        Command::Syscall(sys) => Some(("syscall", sys.to_request())),
        Command::Latency(l) => Some(("latency", l.to_request())),
        Command::Bandwidth(b) => Some(("bandwidth", b.to_request())),
        _ => None,
    };
    let apply = request
        .map(|(sub_name, request)| request.unwrap_or_else(|err| usage_error(&[sub_name], err)));
    let mut client = connect(&cli.socket).await.map_err(Failure::Connect)?;
    let out = cli.output;
    let now = SystemTime::now();
    let text = match cli.command {
        Command::Loss(_) | Command::Syscall(_) | Command::Latency(_) | Command::Bandwidth(_) => {
            let request = apply.context("internal: the fault request was not built")?;
            let response = client.apply_fault(request).await?.into_inner();
            let fault = response
                .fault
                .context("the agent's ApplyFault response has no fault")?;
            if response.updated {
                let id = fault.spec.as_ref().map_or("", |s| s.id.as_str());
                eprintln!("note: updated the existing fault {id}");
            }
            render_faults(out, &[fault], now, false)?
        }
        Command::List => {
            let faults = client
                .list_faults(pb::ListFaultsRequest {})
                .await?
                .into_inner()
                .faults;
            render_faults(out, &faults, now, true)?
        }
        Command::Get { id } => {
            let fault = client
                .get_fault(pb::GetFaultRequest { id })
                .await?
                .into_inner();
            render_faults(out, &[fault], now, false)?
        }
        Command::Revert(RevertArgs { all: true, .. }) => {
            let reverted = client
                .revert_all(pb::RevertAllRequest {})
                .await?
                .into_inner()
                .reverted;
            match out {
                OutputFormat::Json => to_json(&RevertAllView { reverted })?,
                OutputFormat::Table => format!(
                    "reverted {reverted} fault{}\n",
                    if reverted == 1 { "" } else { "s" }
                ),
            }
        }
        Command::Revert(RevertArgs { id, .. }) => {
            // clap's required "which" group guarantees an id without --all.
            let id = id.context("revert needs an ID or --all")?;
            let response = client
                .revert_fault(pb::RevertFaultRequest { id: id.clone() })
                .await?
                .into_inner();
            let view = RevertView {
                id,
                existed: response.existed,
                fault: response.fault.as_ref().map(|f| FaultView::new(f, now)),
            };
            match out {
                OutputFormat::Json => to_json(&view)?,
                OutputFormat::Table if !view.existed => {
                    format!("no fault {} (nothing to revert)\n", view.id)
                }
                OutputFormat::Table => {
                    let mut text = format!("reverted {}\n", view.id);
                    if let Some(fault) = view.fault {
                        text.push_str(&fault_table(&[fault]));
                    }
                    text
                }
            }
        }
        Command::Experiment(_)
        | Command::Halt { .. }
        | Command::Resume
        | Command::Status
        | Command::ReloadPolicy => {
            unreachable!("coordinator commands are run by run_coordinator")
        }
        Command::Caps => {
            let caps = client
                .get_capabilities(pb::GetCapabilitiesRequest {})
                .await?
                .into_inner();
            let view = CapabilitiesView::from(&caps);
            match out {
                OutputFormat::Json => to_json(&view)?,
                OutputFormat::Table => capabilities_table(&view),
            }
        }
    };
    write_stdout(&text)?;
    Ok(())
}

/// The coordinator's commands.
async fn run_coordinator(cli: Cli) -> Result<String, Failure> {
    let spec = match &cli.command {
        Command::Experiment(ExperimentCommand::Create(create)) => Some(
            create
                .to_spec()
                .unwrap_or_else(|err| usage_error(&["experiment", "create"], err)),
        ),
        Command::Experiment(ExperimentCommand::Partition(p)) => Some(
            p.to_spec()
                .unwrap_or_else(|err| usage_error(&["experiment", "partition"], err)),
        ),
        Command::Experiment(ExperimentCommand::Run { file, .. }) => Some(
            faultctl::args::file::read(file)
                .unwrap_or_else(|err| usage_error(&["experiment", "run"], err)),
        ),
        _ => None,
    };
    let mut client = connect_coordinator(&cli.coordinator).map_err(Failure::Coordinator)?;
    let out = cli.output;
    let now = SystemTime::now();
    let one = |x: &cpb::Experiment| -> anyhow::Result<String> {
        Ok(match out {
            OutputFormat::Json => to_json(&ExperimentView::from(x))?,
            OutputFormat::Table => experiment_table(x, now),
        })
    };
    Ok(match cli.command {
        Command::Experiment(ExperimentCommand::Create(_) | ExperimentCommand::Partition(_)) => {
            let x = client
                .create_experiment(cpb::CreateExperimentRequest {
                    spec,
                    dry_run: false,
                })
                .await?
                .into_inner();
            let text = one(&x)?;
            if x.state == i32::from(cpb::ExperimentState::Failed) {
                // Applied nowhere; say so on the way out, with the reason.
                write_stdout(&text)?;
                return Err(Failure::Rpc(tonic::Status::failed_precondition(format!(
                    "experiment failed: {}",
                    x.end_reason
                ))));
            }
            text
        }
        Command::Experiment(ExperimentCommand::Get { id }) => one(&client
            .get_experiment(cpb::GetExperimentRequest { id })
            .await?
            .into_inner())?,
        Command::Experiment(ExperimentCommand::List { state }) => {
            let experiments = client
                .list_experiments(cpb::ListExperimentsRequest {
                    states: state
                        .into_iter()
                        .map(|s| cpb::ExperimentState::from(s).into())
                        .collect(),
                })
                .await?
                .into_inner()
                .experiments;
            match out {
                OutputFormat::Json => to_json(
                    &experiments
                        .iter()
                        .map(ExperimentView::from)
                        .collect::<Vec<_>>(),
                )?,
                OutputFormat::Table if experiments.is_empty() => "no experiments\n".to_owned(),
                OutputFormat::Table => experiments_table(&experiments, now),
            }
        }
        Command::Experiment(ExperimentCommand::Stop { id, reason }) => one(&client
            .stop_experiment(cpb::StopExperimentRequest { id, reason })
            .await?
            .into_inner())?,
        Command::Experiment(ExperimentCommand::Run { dry_run, after, .. }) => {
            let x = client
                .create_experiment(cpb::CreateExperimentRequest { spec, dry_run })
                .await?
                .into_inner();
            if dry_run {
                return Ok(one(&x)?);
            }
            let id = x.spec.as_ref().map(|s| s.id.clone()).unwrap_or_default();
            // Follow it to its end, then show how it ended.
            follow(&mut client, &id, out).await?;
            let x = client
                .get_experiment(cpb::GetExperimentRequest { id })
                .await?
                .into_inner();
            let mut text = one(&x)?;
            if x.spec
                .as_ref()
                .is_some_and(|s| !s.stop_conditions.is_empty() || !s.observe.is_empty())
            {
                if !after.is_zero() {
                    eprintln!("waiting {after:?} for the report's after window (--after)");
                    tokio::time::sleep(after).await;
                }
                let r = client
                    .get_experiment_report(cpb::GetExperimentReportRequest {
                        id: x.spec.as_ref().map(|s| s.id.clone()).unwrap_or_default(),
                        before: None,
                        after: prost_types::Duration::try_from(after).ok(),
                        step: None,
                    })
                    .await?
                    .into_inner();
                let view = ReportView::from(&r);
                text = match out {
                    OutputFormat::Json => to_json(&view)?,
                    OutputFormat::Table => format!("{text}\n{}", report_table(&view)),
                };
            }
            if x.state != i32::from(cpb::ExperimentState::Completed) {
                write_stdout(&text)?;
                return Err(Failure::Rpc(tonic::Status::aborted(format!(
                    "experiment ended {}: {}",
                    faultctl::output::state_name(x.state),
                    x.end_reason
                ))));
            }
            text
        }
        Command::Experiment(ExperimentCommand::Report {
            id,
            before,
            after,
            step,
            plot,
        }) => {
            let r = client
                .get_experiment_report(cpb::GetExperimentReportRequest {
                    id,
                    before: prost_types::Duration::try_from(before).ok(),
                    after: prost_types::Duration::try_from(after).ok(),
                    step: step.and_then(|d| prost_types::Duration::try_from(d).ok()),
                })
                .await?
                .into_inner();
            let view = ReportView::from(&r);
            if let Some(path) = &plot {
                write_plot(&view, path)
                    .map_err(|e| Failure::Other(anyhow::anyhow!("--plot: {e}")))?;
            }
            match out {
                OutputFormat::Json => to_json(&view)?,
                OutputFormat::Table => {
                    let mut text = report_table(&view);
                    if let Some(path) = &plot {
                        text.push_str(&format!("\nchart: {}\n", path.display()));
                    }
                    text
                }
            }
        }
        Command::Experiment(ExperimentCommand::Watch { id }) => {
            follow(&mut client, &id, out).await?;
            String::new()
        }
        Command::Halt { reason } => {
            let h = client
                .halt_all(cpb::HaltAllRequest { reason })
                .await?
                .into_inner();
            let view = HaltView {
                stopped: h.stopped,
                reverted: h.reverted,
                unreachable: h.unreachable,
            };
            match out {
                OutputFormat::Json => to_json(&view)?,
                OutputFormat::Table => {
                    let mut text = format!(
                        "halted: stopped {} experiments, reverted {} faults; new experiments are \
                         refused until `faultctl resume`\n",
                        view.stopped, view.reverted
                    );
                    if !view.unreachable.is_empty() {
                        text.push_str(&format!(
                            "unreachable agents (their faults end with their leases): {}\n",
                            view.unreachable.join(", ")
                        ));
                    }
                    text
                }
            }
        }
        Command::Resume => {
            let r = client.resume(cpb::ResumeRequest {}).await?.into_inner();
            match out {
                OutputFormat::Json => to_json(&serde_json::json!({ "was_halted": r.was_halted }))?,
                OutputFormat::Table if r.was_halted => {
                    "resumed: experiments are accepted again\n".to_owned()
                }
                OutputFormat::Table => "not halted; nothing to resume\n".to_owned(),
            }
        }
        Command::Status => {
            let s = client
                .get_status(cpb::GetStatusRequest {})
                .await?
                .into_inner();
            let view = StatusView::from(&s);
            match out {
                OutputFormat::Json => to_json(&view)?,
                OutputFormat::Table => status_table(&view),
            }
        }
        Command::ReloadPolicy => {
            let r = client
                .reload_policy(cpb::ReloadPolicyRequest {})
                .await?
                .into_inner();
            match out {
                OutputFormat::Json => {
                    to_json(&serde_json::json!({ "policy_sha256": r.policy_sha256 }))?
                }
                OutputFormat::Table => format!("policy reloaded: sha256 {}\n", r.policy_sha256),
            }
        }
        _ => unreachable!("agent commands are run by run"),
    })
}

/// Prints an experiment's events as they come, until it ends.
async fn follow(
    client: &mut faultd_proto::coordinator::v1::coordinator_client::CoordinatorClient<
        tonic::transport::Channel,
    >,
    id: &str,
    out: OutputFormat,
) -> Result<(), Failure> {
    let mut events = client
        .watch_experiment(cpb::WatchExperimentRequest { id: id.to_owned() })
        .await?
        .into_inner();
    while let Some(ev) = events.message().await? {
        let line = match out {
            OutputFormat::Json => {
                let mut l =
                    serde_json::to_string(&EventView::from(&ev)).context("encoding JSON output")?;
                l.push('\n');
                l
            }
            OutputFormat::Table => event_line(&ev),
        };
        write_stdout(&line)?;
    }
    Ok(())
}

/// `list` prints a JSON array; `get`, `loss` print a single object.
fn render_faults(
    out: OutputFormat,
    faults: &[pb::Fault],
    now: SystemTime,
    as_list: bool,
) -> anyhow::Result<String> {
    let views: Vec<FaultView> = faults.iter().map(|f| FaultView::new(f, now)).collect();
    Ok(match (out, as_list, views.as_slice()) {
        (OutputFormat::Json, false, [one]) => to_json(one)?,
        (OutputFormat::Json, _, _) => to_json(&views)?,
        (OutputFormat::Table, true, []) => "no faults\n".to_owned(),
        (OutputFormat::Table, _, _) => fault_table(&views),
    })
}

fn to_json<T: serde::Serialize>(value: &T) -> anyhow::Result<String> {
    json(value).context("encoding JSON output")
}

/// Writes the output, treating a closed pipe (`faultctl list | head`) as
/// success rather than panicking like `print!` would.
fn write_stdout(text: &str) -> anyhow::Result<()> {
    let mut stdout = io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(err) if err.kind() != io::ErrorKind::BrokenPipe => {
            Err(err).context("writing to stdout")
        }
        _ => Ok(()),
    }
}
