//! The coordinator's crash-safe record: experiments (as their
//! `faultd.coordinator.v1.Experiment` message), their events, and the halt
//! flag, in SQLite.
//!
//! Each change is one transaction in WAL mode with `synchronous = FULL`:
//! committed means on disk, so after kill -9 a restart sees every
//! experiment and fault it had acknowledged (sqlite.org/wal.html,
//! "Durability"). An experiment is written before its faults are applied,
//! so a crash mid-apply leaves a record to clean up from.

use std::path::Path;

use faultd_proto::coordinator::v1 as pb;
use prost::Message as _;
use rusqlite::{Connection, OptionalExtension as _, params};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("store: {op}: {source}")]
    Sql {
        op: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error("store: {what} of {id} does not decode: {source}")]
    Decode {
        what: &'static str,
        id: String,
        #[source]
        source: prost::DecodeError,
    },
}

fn sql(op: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |source| StoreError::Sql { op, source }
}

#[derive(Debug)]
pub struct Store {
    conn: Connection,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS experiments (
    id TEXT PRIMARY KEY,
    state INTEGER NOT NULL,
    created_at_ns INTEGER NOT NULL,
    message BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    experiment_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    message BLOB NOT NULL,
    PRIMARY KEY (experiment_id, seq)
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
";

/// States from which an experiment still holds (or may hold) faults.
pub const UNFINISHED: [pb::ExperimentState; 2] =
    [pb::ExperimentState::Applying, pb::ExperimentState::Running];

impl Store {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let open_err = |source| StoreError::Open {
            path: path.display().to_string(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| {
                open_err(rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
                    Some(format!("creating {}: {e}", dir.display())),
                ))
            })?;
        }
        let conn = Connection::open(path).map_err(open_err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(sql("journal_mode = WAL"))?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(sql("synchronous = FULL"))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(sql("busy_timeout"))?;
        conn.execute_batch(SCHEMA)
            .map_err(sql("creating the schema"))?;
        Ok(Self { conn })
    }

    /// Writes `experiment` (replacing its previous version) and appends
    /// `events`, in one transaction.
    pub fn record(
        &mut self,
        experiment: Option<&pb::Experiment>,
        events: &[pb::ExperimentEvent],
    ) -> Result<(), StoreError> {
        let tx = self.conn.transaction().map_err(sql("begin"))?;
        if let Some(e) = experiment {
            let id = e.spec.as_ref().map(|s| s.id.as_str()).unwrap_or_default();
            let created = e.created_at.map_or(0, |t| {
                t.seconds.saturating_mul(1_000_000_000) + i64::from(t.nanos)
            });
            tx.execute(
                "INSERT INTO experiments (id, state, created_at_ns, message) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(id) DO UPDATE SET state = excluded.state, message = excluded.message",
                params![id, e.state, created, e.encode_to_vec()],
            )
            .map_err(sql("writing an experiment"))?;
        }
        for ev in events {
            tx.execute(
                "INSERT INTO events (experiment_id, seq, message) VALUES (?1, ?2, ?3)",
                params![ev.experiment_id, seq_sql(ev.seq), ev.encode_to_vec()],
            )
            .map_err(sql("appending an event"))?;
        }
        tx.commit().map_err(sql("commit"))
    }

    /// How many experiments are in each state (lowercase names), all
    /// states listed.
    pub fn count_by_state(&self) -> Result<Vec<(&'static str, u64)>, StoreError> {
        use pb::ExperimentState as S;
        let mut stmt = self
            .conn
            .prepare_cached("SELECT state, COUNT(*) FROM experiments GROUP BY state")
            .map_err(sql("counting experiments"))?;
        let counted: Vec<(i32, i64)> = stmt
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .and_then(Iterator::collect)
            .map_err(sql("counting experiments"))?;
        Ok([
            (S::Applying, "applying"),
            (S::Running, "running"),
            (S::Completed, "completed"),
            (S::Stopped, "stopped"),
            (S::Aborted, "aborted"),
            (S::Failed, "failed"),
        ]
        .into_iter()
        .map(|(s, name)| {
            let n = counted
                .iter()
                .find(|(state, _)| *state == s as i32)
                .map_or(0, |(_, n)| u64::try_from(*n).unwrap_or(0));
            (name, n)
        })
        .collect())
    }

    pub fn experiment(&self, id: &str) -> Result<Option<pb::Experiment>, StoreError> {
        let blob: Option<Vec<u8>> = self
            .conn
            .query_row(
                "SELECT message FROM experiments WHERE id = ?1",
                params![id],
                |r| r.get(0),
            )
            .optional()
            .map_err(sql("reading an experiment"))?;
        blob.map(|b| decode_experiment(id, &b)).transpose()
    }

    /// Experiments in `states` (all when empty), oldest first.
    pub fn experiments(&self, states: &[i32]) -> Result<Vec<pb::Experiment>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, state, message FROM experiments ORDER BY created_at_ns, id")
            .map_err(sql("listing experiments"))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i32>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                ))
            })
            .map_err(sql("listing experiments"))?;
        let mut out = Vec::new();
        for row in rows {
            let (id, state, blob) = row.map_err(sql("listing experiments"))?;
            if states.is_empty() || states.contains(&state) {
                out.push(decode_experiment(&id, &blob)?);
            }
        }
        Ok(out)
    }

    /// The experiment's events after `after` (by seq), in order.
    pub fn events(&self, id: &str, after: u64) -> Result<Vec<pb::ExperimentEvent>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT message FROM events WHERE experiment_id = ?1 AND seq > ?2 ORDER BY seq",
            )
            .map_err(sql("reading events"))?;
        let rows = stmt
            .query_map(params![id, seq_sql(after)], |r| r.get::<_, Vec<u8>>(0))
            .map_err(sql("reading events"))?;
        rows.map(|row| {
            let blob = row.map_err(sql("reading events"))?;
            pb::ExperimentEvent::decode(blob.as_slice()).map_err(|source| StoreError::Decode {
                what: "an event",
                id: id.to_owned(),
                source,
            })
        })
        .collect()
    }

    /// The last event's seq of the experiment, 0 when it has none.
    pub fn last_seq(&self, id: &str) -> Result<u64, StoreError> {
        let seq: i64 = self
            .conn
            .query_row(
                "SELECT COALESCE(MAX(seq), 0) FROM events WHERE experiment_id = ?1",
                params![id],
                |r| r.get(0),
            )
            .map_err(sql("reading the last event"))?;
        Ok(u64::try_from(seq).unwrap_or(0))
    }

    pub fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.conn
            .query_row("SELECT value FROM meta WHERE key = ?1", params![key], |r| {
                r.get(0)
            })
            .optional()
            .map_err(sql("reading meta"))
    }

    pub fn set_meta(&mut self, key: &str, value: Option<&str>) -> Result<(), StoreError> {
        match value {
            Some(v) => self.conn.execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                params![key, v],
            ),
            None => self
                .conn
                .execute("DELETE FROM meta WHERE key = ?1", params![key]),
        }
        .map(|_| ())
        .map_err(sql("writing meta"))
    }
}

/// SQLite integers are signed; event seqs count from 1 and stay far below
/// 2^63.
fn seq_sql(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

fn decode_experiment(id: &str, blob: &[u8]) -> Result<pb::Experiment, StoreError> {
    pb::Experiment::decode(blob).map_err(|source| StoreError::Decode {
        what: "the experiment",
        id: id.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exp(id: &str, state: pb::ExperimentState, secs: i64) -> pb::Experiment {
        pb::Experiment {
            spec: Some(pb::ExperimentSpec {
                id: id.into(),
                ..Default::default()
            }),
            state: state.into(),
            created_at: Some(prost_types::Timestamp {
                seconds: secs,
                nanos: 0,
            }),
            ..Default::default()
        }
    }

    fn event(id: &str, seq: u64) -> pb::ExperimentEvent {
        pb::ExperimentEvent {
            experiment_id: id.into(),
            seq,
            ..Default::default()
        }
    }

    #[test]
    fn experiments_events_and_meta_survive_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db/state.db");
        {
            let mut s = Store::open(&path).expect("open");
            s.record(
                Some(&exp("b", pb::ExperimentState::Running, 2)),
                &[event("b", 1), event("b", 2)],
            )
            .expect("b");
            s.record(Some(&exp("a", pb::ExperimentState::Applying, 1)), &[])
                .expect("a");
            s.record(
                Some(&exp("b", pb::ExperimentState::Completed, 2)),
                &[event("b", 3)],
            )
            .expect("b again");
            s.set_meta("halted", Some("reason")).expect("meta");
        }
        let s = Store::open(&path).expect("reopen");
        let all = s.experiments(&[]).expect("list");
        let ids: Vec<&str> = all
            .iter()
            .map(|e| e.spec.as_ref().expect("spec").id.as_str())
            .collect();
        assert_eq!(ids, ["a", "b"], "oldest first");
        let unfinished = s
            .experiments(&UNFINISHED.map(i32::from))
            .expect("unfinished");
        assert_eq!(unfinished.len(), 1);
        assert_eq!(
            s.experiment("b").expect("get").map(|e| e.state),
            Some(pb::ExperimentState::Completed.into())
        );
        assert_eq!(s.events("b", 1).expect("events").len(), 2);
        assert_eq!(s.last_seq("b").expect("seq"), 3);
        assert_eq!(s.last_seq("a").expect("seq"), 0);
        assert_eq!(s.meta("halted").expect("meta").as_deref(), Some("reason"));
    }

    #[test]
    fn a_duplicate_event_fails_the_whole_transaction() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = Store::open(&dir.path().join("s.db")).expect("open");
        s.record(None, &[event("x", 1)]).expect("first");
        let err = s.record(
            Some(&exp("x", pb::ExperimentState::Running, 1)),
            &[event("x", 1)],
        );
        assert!(err.is_err());
        assert!(s.experiment("x").expect("get").is_none(), "rolled back");
    }
}
