//! The records file: every device change written before it is made, and
//! undone from it by the next start after a crash.

use std::{io, path::Path};

use serde::{Deserialize, Serialize};
use tracing::warn;

use super::{
    FILTER_HANDLE, FILTER_PREF, QdiscError,
    netlink::{CLSACT_HANDLE, Rtnl, TC_H_CLSACT, TC_PARENT_EGRESS, TC_PARENT_INGRESS},
    ops::restore_device,
};
use crate::{error::error_chain, netns::find_netns};

/// One device faultd changed, as persisted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Inode and device of the namespace's nsfs file: its identity.
    pub netns_ino: u64,
    pub netns_dev: u64,
    /// A process that was in the namespace, to find it again.
    pub pid_hint: u32,
    pub ifindex: i32,
    pub ifname: String,
    /// What was there: kind and handle ("noqueue", 0).
    pub replaced_kind: String,
    pub replaced_handle: u32,
    /// "fq" or "mq".
    pub installed_kind: String,
}

/// An ifb device faultd created for ingress latency, as persisted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IfbRecord {
    pub netns_ino: u64,
    pub netns_dev: u64,
    pub pid_hint: u32,
    pub ifindex: i32,
    pub ifname: String,
    /// Devices that may hold faultd's redirect filter (written before it
    /// is added).
    #[serde(default)]
    pub filters: Vec<i32>,
    /// Devices whose clsact qdisc faultd created for that filter.
    #[serde(default)]
    pub clsacts: Vec<i32>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct RecordsFile {
    pub(super) devices: Vec<Record>,
    /// Absent in files written before ingress latency existed.
    #[serde(default)]
    pub(super) ifbs: Vec<IfbRecord>,
}

pub(super) fn write_records(path: &Path, file: &RecordsFile) -> Result<(), QdiscError> {
    let err = |source| QdiscError::Records {
        path: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let text = serde_json::to_vec_pretty(file).map_err(|e| err(io::Error::other(e)))?;
    // Write-then-rename so a crash never leaves a half-written file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// Deletes what a recorded ifb set-up added: faultd's redirect filters
/// (found by preference, handle and kind), the clsact qdiscs faultd created
/// when nothing else uses them, and the ifb if the namespace still has a
/// device of that index and name (so nobody else's device is ever deleted).
pub(super) fn delete_ifb(r: &IfbRecord) -> Result<(), QdiscError> {
    let Some(ns) = find_netns(r.netns_ino, r.netns_dev, r.pid_hint) else {
        return Ok(());
    };
    let nl = |device: String| move |source| QdiscError::Netlink { device, source };
    let mut rtnl = Rtnl::open_in(&ns).map_err(nl(r.ifname.clone()))?;
    let links = rtnl.links().map_err(nl(r.ifname.clone()))?;
    let name_of = |index: i32| {
        links
            .iter()
            .find(|l| l.ifindex == index)
            .map_or_else(|| format!("ifindex {index}"), |l| l.name.clone())
    };
    for &index in &r.filters {
        if !links.iter().any(|l| l.ifindex == index) {
            continue;
        }
        let ours = rtnl
            .filters(index, TC_PARENT_INGRESS)
            .map_err(nl(name_of(index)))?
            .into_iter()
            .any(|(pref, handle, kind)| {
                pref == FILTER_PREF && handle == FILTER_HANDLE && kind == "bpf"
            });
        if ours {
            rtnl.del_filter(index, FILTER_PREF, FILTER_HANDLE)
                .map_err(nl(name_of(index)))?;
        }
    }
    let qdiscs = if r.clsacts.is_empty() {
        Vec::new()
    } else {
        rtnl.qdiscs().map_err(nl(r.ifname.clone()))?
    };
    for &index in &r.clsacts {
        let has_clsact = qdiscs
            .iter()
            .any(|q| q.ifindex == index && q.parent == TC_H_CLSACT && q.kind == "clsact");
        if !has_clsact {
            continue;
        }
        let mut used = false;
        for parent in [TC_PARENT_INGRESS, TC_PARENT_EGRESS] {
            used |= !rtnl
                .filters(index, parent)
                .map_err(nl(name_of(index)))?
                .is_empty();
        }
        if used {
            warn!(
                device = %name_of(index),
                "keeping the clsact qdisc faultd created: filters were added to it since"
            );
        } else {
            rtnl.del_qdisc(index, TC_H_CLSACT, CLSACT_HANDLE)
                .map_err(nl(name_of(index)))?;
        }
    }
    if links
        .iter()
        .any(|l| l.ifindex == r.ifindex && l.name == r.ifname)
    {
        rtnl.del_link(r.ifindex).map_err(nl(r.ifname.clone()))?;
    }
    Ok(())
}

pub(super) fn restore_record(r: &Record) -> Result<(), QdiscError> {
    let Some(ns) = find_netns(r.netns_ino, r.netns_dev, r.pid_hint) else {
        // The namespace is gone, and its devices with it.
        return Ok(());
    };
    let mut rtnl = Rtnl::open_in(&ns).map_err(|source| QdiscError::Netlink {
        device: r.ifname.clone(),
        source,
    })?;
    restore_device(&mut rtnl, r.ifindex)
        .map(|_| ())
        .map_err(|source| QdiscError::Netlink {
            device: r.ifname.clone(),
            source,
        })
}

/// Runs `undo` on each record, logging each outcome; returns how many
/// succeeded and the records that did not (kept for the next start).
fn undo_each<R>(
    records: Vec<R>,
    undo: impl Fn(&R) -> Result<(), QdiscError>,
    where_: impl Fn(&R) -> (&str, u64),
    done: &str,
    failed: &str,
) -> (usize, Vec<R>) {
    let mut ok = 0;
    let mut kept = Vec::new();
    for r in records {
        let (device, netns) = where_(&r);
        match undo(&r) {
            Ok(()) => {
                ok += 1;
                warn!(device, netns, "{done}");
            }
            Err(e) => {
                warn!(device, netns, error = %error_chain(&e), "{failed}");
                kept.push(r);
            }
        }
    }
    (ok, kept)
}

/// Restores every device a previous agent recorded (it died before its
/// faults ended). Returns the number of devices restored.
pub fn restore_leftovers(records: &Path) -> Result<usize, QdiscError> {
    let text = match std::fs::read(records) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(source) => {
            return Err(QdiscError::Records {
                path: records.display().to_string(),
                source,
            });
        }
    };
    let file: RecordsFile = serde_json::from_slice(&text).map_err(|e| QdiscError::Records {
        path: records.display().to_string(),
        source: io::Error::other(e),
    })?;
    let (ifbs_done, kept_ifbs) = undo_each(
        file.ifbs,
        delete_ifb,
        |r| (&r.ifname, r.netns_ino),
        "deleted the ifb a previous faultd created",
        "deleting a previous faultd's ifb; kept in the records",
    );
    let (devices_done, kept) = undo_each(
        file.devices,
        restore_record,
        |r| (&r.ifname, r.netns_ino),
        "restored the root qdisc a previous faultd replaced",
        "restoring a previous faultd's qdisc; kept in the records",
    );
    let restored = ifbs_done + devices_done;
    write_records(
        records,
        &RecordsFile {
            devices: kept,
            ifbs: kept_ifbs,
        },
    )?;
    Ok(restored)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qdisc::IFB_NAME;

    #[test]
    fn records_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("qdiscs.json");
        let r = Record {
            netns_ino: 4026531840,
            netns_dev: 4,
            pid_hint: 1,
            ifindex: 1,
            ifname: "lo".into(),
            replaced_kind: "noqueue".into(),
            replaced_handle: 0,
            installed_kind: "fq".into(),
        };
        let ifb = ifb_record(4026531840, vec![2]);
        write_records(
            &path,
            &RecordsFile {
                devices: vec![r.clone()],
                ifbs: vec![ifb.clone()],
            },
        )
        .expect("write");
        let back: RecordsFile =
            serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("parse");
        assert_eq!(back.devices, vec![r]);
        assert_eq!(back.ifbs, vec![ifb]);
    }

    /// An ifb in namespace `netns_ino` with filters on devices 1 and 2 and
    /// clsact qdiscs added on `clsacts`.
    fn ifb_record(netns_ino: u64, clsacts: Vec<i32>) -> IfbRecord {
        IfbRecord {
            netns_ino,
            netns_dev: 4,
            pid_hint: 1,
            ifindex: faultd_common::IFB_IFINDEX as i32,
            ifname: IFB_NAME.into(),
            filters: vec![1, 2],
            clsacts,
        }
    }

    #[test]
    fn records_without_ifbs_still_parse() {
        // Files written before ingress latency existed.
        let back: RecordsFile = serde_json::from_str(r#"{"devices":[]}"#).expect("parse");
        assert!(back.devices.is_empty() && back.ifbs.is_empty());
    }
}
