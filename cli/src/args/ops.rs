//! The syscall operations `--op` takes: the proto's `SyscallOperation`
//! values, named and documented from the .proto file itself, so the list
//! and its help never drift from what the agent accepts.

use std::sync::OnceLock;

use clap::builder::{PossibleValue, TypedValueParser};
use faultd_proto::agent::v1::SyscallOperation;

const PREFIX: &str = "SYSCALL_OPERATION_";

/// (command-line name, help, value) for every operation but UNSPECIFIED.
pub fn operations() -> &'static [(String, String, SyscallOperation)] {
    static OPS: OnceLock<Vec<(String, String, SyscallOperation)>> = OnceLock::new();
    OPS.get_or_init(|| {
        faultd_proto::enum_docs(faultd_proto::AGENT_PROTO, "SyscallOperation")
            .into_iter()
            .filter_map(|(name, doc)| {
                let op = SyscallOperation::from_str_name(&name)?;
                if op == SyscallOperation::Unspecified {
                    return None;
                }
                let short = name.strip_prefix(PREFIX)?.to_ascii_lowercase();
                Some((short, doc, op))
            })
            .collect()
    })
}

/// `--op NAME`, parsed into the proto's enum.
#[derive(Clone, Copy, Debug, Default)]
pub struct OperationParser;

impl TypedValueParser for OperationParser {
    type Value = SyscallOperation;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<Self::Value, clap::Error> {
        let text = value.to_string_lossy();
        if let Some((_, _, op)) = operations().iter().find(|(name, _, _)| *name == text) {
            return Ok(*op);
        }
        let mut err = clap::Error::new(clap::error::ErrorKind::InvalidValue).with_cmd(cmd);
        if let Some(arg) = arg {
            err.insert(
                clap::error::ContextKind::InvalidArg,
                clap::error::ContextValue::String(arg.to_string()),
            );
        }
        err.insert(
            clap::error::ContextKind::InvalidValue,
            clap::error::ContextValue::String(text.into_owned()),
        );
        err.insert(
            clap::error::ContextKind::ValidValue,
            clap::error::ContextValue::Strings(
                operations().iter().map(|(n, _, _)| n.clone()).collect(),
            ),
        );
        Err(err)
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        Some(Box::new(operations().iter().map(|(name, doc, _)| {
            PossibleValue::new(name.as_str()).help(doc.as_str())
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_proto_operation_is_offered_with_its_doc() {
        let ops = operations();
        assert_eq!(ops.len(), 13);
        assert_eq!(ops[0].0, "connect");
        assert_eq!(ops[0].2, SyscallOperation::Connect);
        assert!(ops.iter().all(|(_, doc, _)| !doc.is_empty()), "{ops:?}");
        assert!(
            ops.iter()
                .any(|(n, d, _)| n == "open" && d.contains("BPF LSM"))
        );
    }
}
