//! `cargo xtask certs`: a development CA, the certificates a coordinator,
//! its agents and its operators present to each other, and configs that use
//! them for a coordinator and its agents on this machine (loopback only).
//! For trying faultd out; production certificates come from the site's own
//! CA (or cert-manager), and production agents listen on the node's address.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use faultd_tests::certs::DevCa;

#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Where to write them.
    #[arg(long, default_value = "target/dev-certs")]
    pub out: PathBuf,
    /// Agents to issue certificates for, by node name (repeatable).
    #[arg(long = "node", default_values_t = ["node-1".to_owned()])]
    pub nodes: Vec<String>,
    /// Extra names on the coordinator's certificate (DNS names or IP
    /// addresses clients connect to), besides coordinator.faultd and
    /// localhost.
    #[arg(long = "coordinator-name")]
    pub coordinator_names: Vec<String>,
}

/// The identities the files name (certificate SANs the daemons authorize).
pub const COORDINATOR_ID: &str = "coordinator.faultd";
pub const OPERATOR_ID: &str = "operator.faultd";
pub const READER_ID: &str = "reader.faultd";
/// The development coordinator's API port; agent i (from 0) listens on
/// `AGENT_BASE_PORT + i`, all on 127.0.0.1.
pub const COORDINATOR_PORT: u16 = 7400;
pub const AGENT_BASE_PORT: u16 = 7443;

pub fn run(opts: &Options) -> anyhow::Result<()> {
    anyhow::ensure!(!opts.nodes.is_empty(), "--node: at least one node");
    let out = if opts.out.is_absolute() {
        opts.out.clone()
    } else {
        crate::util::workspace_root().join(&opts.out)
    };
    let ca = DevCa::new(&out, "dev");
    let mut coordinator_ids = vec![COORDINATOR_ID, "localhost"];
    coordinator_ids.extend(opts.coordinator_names.iter().map(String::as_str));
    ca.issue("coordinator", &coordinator_ids);
    for node in &opts.nodes {
        ca.issue(node, &[node.as_str()]);
    }
    ca.issue("operator", &[OPERATOR_ID]);
    ca.issue("reader", &[READER_ID]);
    check(&out, &opts.nodes)?;
    let files = configs(&out, &opts.nodes);
    for (name, text) in &files {
        fs::write(out.join(name), text).with_context(|| format!("writing {name}"))?;
    }
    let p = |name: &str| out.join(name).display().to_string();
    println!(
        "wrote a development CA, certificates and configs into {}\n",
        out.display()
    );
    let several = opts.nodes.len() > 1;
    if several {
        println!(
            "(one agent per node in production; on one machine each needs its own socket, state and lock)"
        );
    }
    for node in &opts.nodes {
        let own = if several {
            format!(
                " --socket /run/faultd/{node}.sock --state-dir /run/faultd/{node} \
                 --lock-file /run/faultd/{node}.lock"
            )
        } else {
            String::new()
        };
        println!(
            "agent {node}:  faultd --config {}{own}",
            p(&format!("agent-{node}.toml"))
        );
    }
    println!(
        "coordinator:  faultd-coordinator --config {}",
        p("coordinator.toml")
    );
    println!("faultctl as an operator:");
    println!(
        "  export FAULTD_COORDINATOR=localhost:{COORDINATOR_PORT} FAULTD_TLS_CA={} \
         FAULTD_TLS_CERT={} FAULTD_TLS_KEY={}",
        p("dev-ca.pem"),
        p("operator.pem"),
        p("operator.key")
    );
    Ok(())
}

/// The agents' and the coordinator's configs, by file name.
fn configs(out: &Path, nodes: &[String]) -> Vec<(String, String)> {
    let p = |name: &str| out.join(name).display().to_string();
    let mut files = Vec::new();
    let mut inventory =
        String::from("# The coordinator's static inventory: where each node's agent listens.\n");
    for (i, node) in nodes.iter().enumerate() {
        let port = AGENT_BASE_PORT + u16::try_from(i).unwrap_or(u16::MAX - AGENT_BASE_PORT);
        files.push((
            format!("agent-{node}.toml"),
            format!(
                "# faultd on {node}: the local Unix socket as usual, plus a mutual-TLS\n\
                 # listener the coordinator drives. Loopback only: a development setup.\n\
                 [node]\nname = \"{node}\"\n\n\
                 [server.tls]\nlisten = \"127.0.0.1:{port}\"\nca = \"{ca}\"\ncert = \"{cert}\"\n\
                 key = \"{key}\"\ncoordinator_identities = [\"{COORDINATOR_ID}\"]\n\
                 reader_identities = [\"{READER_ID}\"]\n\n\
                 [audit]\npath = \"{audit}\"\n",
                ca = p("dev-ca.pem"),
                cert = p(&format!("{node}.pem")),
                key = p(&format!("{node}.key")),
                audit = p(&format!("agent-{node}-audit.jsonl")),
            ),
        ));
        inventory.push_str(&format!(
            "\n[[agent]]\nnode = \"{node}\"\naddress = \"127.0.0.1:{port}\"\n"
        ));
    }
    files.push(("inventory.toml".into(), inventory));
    files.push((
        "policy.toml".into(),
        "# Blast-radius policy (reloaded on SIGHUP and by `faultctl reload-policy`).\n\
         [limits]\nmax_node_fraction = 1.0\nmax_duration = \"10m\"\nmax_loss_percent = 50.0\n\
         max_delay = \"2s\"\n"
            .into(),
    ));
    files.push((
        "coordinator.toml".into(),
        format!(
            "name = \"dev-coordinator\"\n\n\
             [server]\nlisten = \"127.0.0.1:{COORDINATOR_PORT}\"\nca = \"{ca}\"\n\
             cert = \"{cert}\"\nkey = \"{key}\"\noperators = [\"{OPERATOR_ID}\"]\n\
             readers = [\"{READER_ID}\"]\n\n\
             [agents]\ninventory = \"{inventory}\"\nca = \"{ca}\"\ncert = \"{cert}\"\n\
             key = \"{key}\"\nlease_ttl = \"15s\"\n\n\
             [store]\npath = \"{store}\"\n\n[policy]\npath = \"{policy}\"\n\n\
             [audit]\npath = \"{audit}\"\n",
            ca = p("dev-ca.pem"),
            cert = p("coordinator.pem"),
            key = p("coordinator.key"),
            inventory = p("inventory.toml"),
            store = p("coordinator.sqlite"),
            policy = p("policy.toml"),
            audit = p("coordinator-audit.jsonl"),
        ),
    ));
    files
}

/// Loads what was written, as the daemons will.
fn check(out: &Path, nodes: &[String]) -> anyhow::Result<()> {
    let files = |name: &str| faultd_proto::tls::TlsFiles {
        ca: out.join("dev-ca.pem"),
        cert: out.join(format!("{name}.pem")),
        key: out.join(format!("{name}.key")),
    };
    faultd_proto::tls::server_config(&files("coordinator"))?;
    faultd_proto::tls::client_config(&files("coordinator"))?;
    faultd_proto::tls::client_config(&files("operator"))?;
    for node in nodes {
        faultd_proto::tls::server_config(&files(node))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_certificates_and_configs_that_load() {
        let dir = tempfile::tempdir().expect("tempdir");
        run(&Options {
            out: dir.path().to_owned(),
            nodes: vec!["web-1".into(), "web-2".into()],
            coordinator_names: vec!["10.0.0.5".into()],
        })
        .expect("certs");
        for f in [
            "dev-ca.pem",
            "coordinator.pem",
            "web-1.key",
            "web-2.pem",
            "operator.pem",
            "reader.key",
            "agent-web-1.toml",
            "agent-web-2.toml",
            "coordinator.toml",
            "inventory.toml",
            "policy.toml",
        ] {
            assert!(dir.path().join(f).is_file(), "{f}");
        }
        // Every file a config names exists or is created by the daemon
        // (store, audit logs); each agent listens on its own port.
        let inventory = fs::read_to_string(dir.path().join("inventory.toml")).expect("inventory");
        assert!(
            inventory.contains("address = \"127.0.0.1:7443\""),
            "{inventory}"
        );
        assert!(
            inventory.contains("address = \"127.0.0.1:7444\""),
            "{inventory}"
        );
        for (name, text) in configs(dir.path(), &["web-1".into(), "web-2".into()]) {
            toml_paths(&text).for_each(|path| {
                let created = path.ends_with(".sqlite") || path.ends_with(".jsonl");
                assert!(
                    created || Path::new(path).is_file(),
                    "{name} names {path}, which was not written"
                );
            });
        }
    }

    /// The absolute paths quoted in a config.
    fn toml_paths(text: &str) -> impl Iterator<Item = &str> {
        text.split('"').filter(|s| s.starts_with('/'))
    }
}
