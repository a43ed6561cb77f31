//! The agent's start-up contract: a bad config or flag exits with status 64
//! (EX_USAGE) and names the key; a second agent on the node refuses to start.

use std::time::Duration;

use faultd_tests::{AgentGuard, AgentOptions, require_root};

fn exit_code_and_log(opts: AgentOptions) -> (Option<i32>, String) {
    let mut agent = AgentGuard::start(opts);
    let status = agent.wait_exit(Duration::from_secs(20));
    (status.code(), agent.log())
}

#[test]
fn a_bad_config_exits_64_naming_the_key() {
    if !require_root() {
        return;
    }
    for (toml, needle) in [
        ("[limits]\nmax_faults = 0\n", "limits.max_faults"),
        ("[limits]\nmax_duration = \"soon\"\n", "max_duration"),
        (
            "[state]\nlock_file = \"relative.lock\"\n",
            "state.lock_file",
        ),
        ("[safety]\nunknown_key = true\n", "unknown_key"),
    ] {
        let (code, log) = exit_code_and_log(AgentOptions {
            config_toml: Some(toml.into()),
            ..Default::default()
        });
        assert_eq!(code, Some(64), "{toml}: {log}");
        assert!(log.contains(needle), "{toml}: log lacks {needle:?}: {log}");
    }
    let (code, log) = exit_code_and_log(AgentOptions {
        extra_args: vec!["--max-duration".into(), "forever".into()],
        ..Default::default()
    });
    assert_eq!(code, Some(2), "clap rejects a bad flag value: {log}");
    assert!(log.contains("--max-duration"), "{log}");
}

#[test]
fn one_agent_per_node() {
    if !require_root() {
        return;
    }
    let mut first = AgentGuard::start(AgentOptions::default());
    first.wait_ready();
    let (code, log) = exit_code_and_log(AgentOptions::default());
    assert_eq!(code, Some(1), "{log}");
    assert!(
        log.contains("another faultd holds") && log.contains(&first.pid().to_string()),
        "{log}"
    );
}
