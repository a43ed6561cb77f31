//! `faultctl`: talks to the faultd agent on this node over its Unix socket.

use std::io::{self, Write as _};
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::Context as _;
use clap::{CommandFactory as _, Parser as _};
use faultctl::cli::{Cli, Command, OutputFormat, RevertArgs};
use faultctl::client::{EXIT_FAILURE, exit_code, status_line};
use faultctl::output::{
    CapabilitiesView, FaultView, RevertAllView, RevertView, capabilities_table, fault_table, json,
};
use faultctl::{ConnectError, connect};
use faultd_proto::agent::v1 as pb;

/// Why a run failed; each kind is reported and exits differently.
enum Failure {
    Connect(ConnectError),
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
        Err(Failure::Other(err)) => {
            eprintln!("error: {err:#}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    // Check flag combinations before touching the socket, so a bad command
    // line is a usage error even when the agent is down.
    let request = match &cli.command {
        Command::Loss(loss) => Some(("loss", loss.to_request())),
        Command::Syscall(sys) => Some(("syscall", sys.to_request())),
        Command::Latency(l) => Some(("latency", l.to_request())),
        Command::Bandwidth(b) => Some(("bandwidth", b.to_request())),
        _ => None,
    };
    let apply = request.map(|(sub_name, request)| {
        request.unwrap_or_else(|err| {
            let mut cmd = Cli::command();
            cmd.build();
            match cmd.find_subcommand_mut(sub_name) {
                Some(sub) => sub
                    .error(clap::error::ErrorKind::ArgumentConflict, err)
                    .exit(),
                None => cmd
                    .error(clap::error::ErrorKind::ArgumentConflict, err)
                    .exit(),
            }
        })
    });
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
