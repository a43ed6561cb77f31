//! The names a target is given by: cgroup paths, systemd unit names, pod
//! uids and container ids, checked and normalised before any lookup, and
//! the escapes of /proc/self/mountinfo.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

use super::TargetError;

/// PATH_MAX: the kernel refuses longer paths anyway; rejecting early gives a clear message.
pub(super) const MAX_PATH_LEN: usize = 4096;
/// systemd's own limit for unit names (`UNIT_NAME_MAX` in src/basic/unit-name.h).
pub(super) const MAX_UNIT_LEN: usize = 256;
pub(super) const UNIT_SUFFIXES: [&str; 6] =
    [".service", ".scope", ".slice", ".socket", ".mount", ".swap"];
/// Long enough that a prefix collision among the containers of one pod is unlikely,
/// and the length `docker ps` and `crictl ps` print.
pub(super) const MIN_CONTAINER_ID_LEN: usize = 12;
/// Prefixes of container cgroups: cri-containerd (containerd + systemd driver), crio
/// (CRI-O, both drivers), docker (docker / cri-dockerd + systemd driver). The
/// cgroupfs driver with containerd uses the bare id.
pub(super) const CONTAINER_DIR_PREFIXES: [&str; 3] = ["cri-containerd-", "crio-", "docker-"];
/// CRI-O's monitor process gets a cgroup whose id part is the container's own id, so
/// it must be excluded or every CRI-O container id would be ambiguous.
pub(super) const CRIO_CONMON_PREFIX: &str = "crio-conmon-";

/// Decodes the `\ooo` octal escapes the kernel uses for space, tab, newline and
/// backslash in mountinfo (fs/proc_namespace.c `mangle()`).
pub(super) fn unescape_mountinfo(field: &str) -> PathBuf {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escape = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match escape {
            Some(d) => {
                let value = d.iter().fold(0_u32, |acc, b| acc * 8 + u32::from(b - b'0'));
                out.push(u8::try_from(value).unwrap_or(b'?'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    PathBuf::from(OsString::from_vec(out))
}

/// Returns the path without its leading '/', or why it is not a safe relative path.
pub(super) fn validate_cgroup_path<'a>(
    field: &'static str,
    path: &'a str,
) -> Result<&'a str, TargetError> {
    let invalid = |reason: String| TargetError::InvalidTarget { field, reason };
    if path.len() > MAX_PATH_LEN {
        return Err(invalid(format!(
            "path is {} bytes long, the limit is {MAX_PATH_LEN}",
            path.len()
        )));
    }
    if path.contains('\0') {
        return Err(invalid(format!("path {path:?} contains a NUL byte")));
    }
    let relative = path.strip_prefix('/').unwrap_or(path);
    if relative.is_empty() {
        return Ok(relative);
    }
    for component in relative.split('/') {
        match component {
            "" => return Err(invalid(format!("path {path:?} has an empty component"))),
            "." | ".." => {
                return Err(invalid(format!(
                    "path {path:?} contains {component:?}; cgroup paths must be plain"
                )));
            }
            _ => {}
        }
    }
    Ok(relative)
}

pub(super) fn validate_unit_name(unit: &str) -> Result<(), TargetError> {
    let invalid = |reason: String| TargetError::InvalidTarget {
        field: "spec.target.systemd_unit",
        reason,
    };
    if unit.len() > MAX_UNIT_LEN {
        return Err(invalid(format!(
            "unit name is {} bytes long, the limit is {MAX_UNIT_LEN}",
            unit.len()
        )));
    }
    // Same alphabet as systemd's `unit_name_is_valid()` (VALID_CHARS plus '@' and
    // '\' for escapes), which also keeps '/' out so the name is one component.
    if let Some(c) = unit
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || ":_.@-\\".contains(*c)))
    {
        return Err(invalid(format!(
            "unit name {unit:?} contains {c:?}; allowed are A-Z a-z 0-9 : _ . @ - \\"
        )));
    }
    let has_stem = UNIT_SUFFIXES
        .iter()
        .any(|s| unit.strip_suffix(s).is_some_and(|stem| !stem.is_empty()));
    if !has_stem {
        return Err(invalid(format!(
            "unit name {unit:?} must be a name followed by one of {}",
            UNIT_SUFFIXES.join(" ")
        )));
    }
    Ok(())
}

/// Returns the uid lowercased with dashes, e.g. "8d9f7c2e-4b1a-...". Kubelet writes
/// the uid with dashes (cgroupfs driver) or underscores (systemd driver, where '-'
/// separates slice levels); static pods have 32 hex digits without either.
pub(super) fn normalize_pod_uid(uid: &str) -> Result<String, TargetError> {
    let valid = match uid.len() {
        32 => uid.bytes().all(|b| b.is_ascii_hexdigit()),
        36 => uid.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-' || b == b'_',
            _ => b.is_ascii_hexdigit(),
        }),
        _ => false,
    };
    if !valid {
        return Err(TargetError::InvalidTarget {
            field: "spec.target.pod.uid",
            reason: format!(
                "{uid:?} is not a pod uid (a UUID of 36 characters with dashes, or 32 hex digits)"
            ),
        });
    }
    Ok(uid.to_ascii_lowercase().replace('_', "-"))
}

/// Accepts the forms kubectl shows in `status.containerStatuses[].containerID`
/// ("containerd://<id>") as well as bare ids and their unique prefixes.
pub(super) fn normalize_container_id(raw: &str) -> Result<String, TargetError> {
    let id = raw
        .split_once("://")
        .map_or(raw, |(_, id)| id)
        .to_ascii_lowercase();
    let reason = if id.len() < MIN_CONTAINER_ID_LEN || id.len() > 64 {
        format!(
            "{raw:?} must have between {MIN_CONTAINER_ID_LEN} and 64 hex digits after any runtime:// prefix"
        )
    } else if !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        format!("{raw:?} is not hexadecimal after any runtime:// prefix")
    } else {
        return Ok(id);
    };
    Err(TargetError::InvalidTarget {
        field: "spec.target.pod.container_id",
        reason,
    })
}

/// The container id in a container cgroup's name, or None for anything else
/// (CRI-O conmon cgroups, stray directories).
pub(super) fn container_dir_id(name: &str) -> Option<String> {
    if name.starts_with(CRIO_CONMON_PREFIX) {
        return None;
    }
    let stem = name.strip_suffix(".scope").unwrap_or(name);
    let id = CONTAINER_DIR_PREFIXES
        .iter()
        .find_map(|prefix| stem.strip_prefix(prefix))
        .unwrap_or(stem);
    (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_ascii_lowercase())
}
