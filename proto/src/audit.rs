//! The audit log: one JSON line per mutating call (and per refused
//! connection), appended to a file: who, what, when, and the outcome.
//!
//! Lines are written with one `write` on a file opened with O_APPEND, so
//! concurrent writers never interleave within a line, and synced before
//! the call returns, so what was done is on disk before the caller hears
//! it was done.

use std::{
    fs::{File, OpenOptions},
    io::{self, Write as _},
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
    sync::Mutex,
    time::SystemTime,
};

use serde::Serialize;

/// One audited action.
#[derive(Clone, Debug, Serialize)]
pub struct Record<'a> {
    /// RFC 3339, UTC.
    pub time: String,
    /// "faultd" or "faultd-coordinator".
    pub service: &'a str,
    /// The daemon's node name (agents) or instance name (coordinator).
    pub node: &'a str,
    /// The caller (`Caller`'s display form).
    pub who: String,
    /// The RPC, e.g. "ApplyFault", or "tls-handshake".
    pub action: &'a str,
    /// What the call was about: ids, targets, the spec.
    pub what: serde_json::Value,
    /// "ok", "denied" or "error".
    pub outcome: &'a str,
    /// The gRPC code name for denials and errors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// The error's message, or what happened.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// RFC 3339 time of `t` in UTC, to the microsecond.
pub fn timestamp(t: SystemTime) -> String {
    humantime::format_rfc3339_micros(t).to_string()
}

#[derive(Debug, thiserror::Error)]
#[error("audit log {path}: {source}")]
pub struct AuditError {
    pub path: String,
    #[source]
    pub source: io::Error,
}

/// An append-only audit file.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    file: Mutex<File>,
}

impl AuditLog {
    /// Opens (creating, mode 0600) `path` for appending.
    pub fn open(path: &Path) -> Result<Self, AuditError> {
        let err = |source| AuditError {
            path: path.display().to_string(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(err)?;
        Ok(Self {
            path: path.to_owned(),
            file: Mutex::new(file),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// One line for a call: ok, or the status it failed with ("denied" for
    /// PermissionDenied and Unauthenticated, else "error").
    pub fn call(
        &self,
        service: &str,
        node: &str,
        who: &str,
        action: &str,
        what: serde_json::Value,
        result: Result<(), &tonic::Status>,
    ) -> Result<(), AuditError> {
        let (outcome, code, detail) = match result {
            Ok(()) => ("ok", None, String::new()),
            Err(s) => (
                if matches!(
                    s.code(),
                    tonic::Code::PermissionDenied | tonic::Code::Unauthenticated
                ) {
                    "denied"
                } else {
                    "error"
                },
                Some(format!("{:?}", s.code())),
                s.message().to_owned(),
            ),
        };
        self.write(&Record {
            time: timestamp(SystemTime::now()),
            service,
            node,
            who: who.to_owned(),
            action,
            what,
            outcome,
            code,
            detail,
        })
    }

    /// Appends `record` as one line and syncs it.
    pub fn write(&self, record: &Record<'_>) -> Result<(), AuditError> {
        let err = |source| AuditError {
            path: self.path.display().to_string(),
            source,
        };
        let mut line = serde_json::to_vec(record).map_err(|e| err(io::Error::other(e)))?;
        line.push(b'\n');
        let file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        (&*file).write_all(&line).map_err(err)?;
        file.sync_data().map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_append_as_json() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/audit.jsonl");
        let log = AuditLog::open(&path).expect("open");
        for outcome in ["ok", "denied"] {
            log.write(&Record {
                time: timestamp(SystemTime::UNIX_EPOCH),
                service: "faultd",
                node: "n1",
                who: "unix:uid=0".into(),
                action: "ApplyFault",
                what: serde_json::json!({"id": "f1"}),
                outcome,
                code: (outcome == "denied").then(|| "PermissionDenied".into()),
                detail: String::new(),
            })
            .expect("write");
        }
        drop(log);
        let text = std::fs::read_to_string(&path).expect("read");
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["time"], "1970-01-01T00:00:00.000000Z");
        assert_eq!(lines[1]["outcome"], "denied");
        assert_eq!(lines[1]["code"], "PermissionDenied");
        assert!(lines[0].get("code").is_none());
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
