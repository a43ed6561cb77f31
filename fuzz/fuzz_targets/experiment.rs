//! Experiments from outside: an experiment file (YAML, `faultctl experiment
//! run FILE`) through faultctl's parser, and CreateExperiment's spec as it
//! arrives on the wire; both through the coordinator's conversion and
//! validation, and the policy's check of the spec. The first byte picks the
//! form.
#![no_main]

use std::sync::OnceLock;

use faultd_coordinator::{experiment::ExperimentSpec, policy::Policy};
use faultd_proto::coordinator::v1 as pb;
use libfuzzer_sys::fuzz_target;
use prost::Message as _;

/// The policy the coordinator's tests start from: limits on everything.
fn policy() -> &'static Policy {
    static POLICY: OnceLock<Policy> = OnceLock::new();
    POLICY.get_or_init(|| {
        Policy::parse(faultd_fuzz::POLICY, std::path::Path::new("policy.toml"))
            .expect("the fuzz policy is valid")
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let spec = if which % 2 == 0 {
        let Ok(text) = std::str::from_utf8(rest) else {
            return;
        };
        match faultctl::args::file::parse("experiment.yaml", text) {
            Ok(spec) => spec,
            Err(_) => return,
        }
    } else {
        match pb::CreateExperimentRequest::decode(rest) {
            Ok(pb::CreateExperimentRequest {
                spec: Some(spec), ..
            }) => spec,
            _ => return,
        }
    };
    if let Ok(spec) = ExperimentSpec::try_from(spec) {
        let _ = policy().check_spec(&spec);
    }
});
