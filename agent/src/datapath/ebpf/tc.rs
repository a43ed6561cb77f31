//! Ingress delay: the tc programs (TCX links, so they die with the agent),
//! the ifb they feed, and socket tagging switched on while it is in use.

use std::{
    fs::File,
    os::fd::{AsFd as _, AsRawFd as _},
    path::Path,
};

use aya::{
    Ebpf,
    maps::Array,
    programs::{
        LinkOrder, ProgramError, SchedClassifier, TcAttach, TcAttachType, tc::SchedClassifierLink,
    },
};
use faultd_common::{IFB_IFINDEX, IFB_INDEX, names};
use tracing::{info, warn};

use super::EbpfDatapath;
use crate::{datapath::DatapathError, error::error_chain};

/// Loads the two tc programs of ingress latency.
fn load_tc(ebpf: &mut Ebpf) -> Result<(), String> {
    for name in [names::TC_INGRESS_PROG, names::TC_MARK_PROG] {
        let prog: &mut SchedClassifier = ebpf
            .program_mut(name)
            .ok_or_else(|| format!("no program {name}"))?
            .try_into()
            .map_err(|e: ProgramError| format!("{name}: {e}"))?;
        prog.load()
            .map_err(|e| format!("loading {name}: {}", error_chain(&e)))?;
    }
    Ok(())
}

/// Turns socket tagging and the tc ingress program on (the ifb's index)
/// or off (0): they cost nothing while no fault delays ingress.
fn set_ifb(ebpf: &mut Ebpf, on: bool) -> Result<(), String> {
    let mut ifb: Array<_, u32> = Array::try_from(
        ebpf.map_mut(names::IFB_MAP)
            .ok_or_else(|| format!("no map {}", names::IFB_MAP))?,
    )
    .map_err(|e| format!("{}: {e}", names::IFB_MAP))?;
    let value = if on { IFB_IFINDEX } else { 0 };
    ifb.set(IFB_INDEX, &value, 0)
        .map_err(|e| format!("{}: {e}", names::IFB_MAP))
}

/// Attaches `prog` with TCX on ingress of every device in `devices` of the
/// namespace `netns`. TCX takes the ifindex in the caller's namespace
/// (kernel/bpf/tcx.c, `tcx_link_attach`), so a short-lived thread enters it;
/// the links are fds and stay valid wherever they are used from. On error
/// the links made so far are dropped (detached).
fn attach_tc_in(
    prog: &mut SchedClassifier,
    netns: &File,
    netns_ino: u64,
    devices: &[(i32, String)],
) -> Result<Vec<SchedClassifierLink>, DatapathError> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                nix::sched::setns(netns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| {
                    DatapathError::Ingress(format!("setns(CLONE_NEWNET) into {netns_ino}: {e}"))
                })?;
                let mut links = Vec::new();
                for (ifindex, name) in devices {
                    let index = u32::try_from(*ifindex).unwrap_or(0);
                    let attached = prog
                        .attach(
                            index,
                            TcAttach::Tcx {
                                attach_type: TcAttachType::Ingress,
                                order: LinkOrder::default(),
                            },
                        )
                        .and_then(|id| prog.take_link(id));
                    match attached {
                        Ok(link) => links.push(link),
                        Err(source) => {
                            return Err(DatapathError::AttachTc {
                                device: name.clone(),
                                netns: netns_ino,
                                source: Box::new(source),
                            });
                        }
                    }
                }
                Ok(links)
            })
            .join()
            .unwrap_or_else(|_| Err(DatapathError::Ingress("attach thread panicked".into())))
    })
}

impl EbpfDatapath {
    /// Makes packets delivered to the cgroup at `path` go through the tc
    /// ingress program and faultd's ifb (see `Datapath::acquire_ingress`).
    pub(super) fn acquire_tc_ingress(
        &mut self,
        fault_id: &str,
        path: &Path,
    ) -> Result<(), DatapathError> {
        let loaded = self.tc.get_or_insert_with(|| {
            load_tc(&mut self.ebpf)
                .inspect_err(|why| warn!(reason = %why, "ingress delay unavailable"))
        });
        if let Err(why) = loaded {
            // The verifier log can be long; the first line says why (the
            // agent's log holds the whole of it).
            let first = why.lines().next().unwrap_or_default();
            return Err(DatapathError::Ingress(format!(
                "the tc ingress program is not loaded on this kernel ({first})"
            )));
        }
        let Some(q) = self.qdiscs.as_mut() else {
            return Err(DatapathError::Ingress(
                "no qdisc manager (fq unavailable)".into(),
            ));
        };
        let ifindex = i32::try_from(IFB_IFINDEX).unwrap_or(i32::MAX);
        let mark_fd = match self
            .ebpf
            .program(names::TC_MARK_PROG)
            .map(<&SchedClassifier>::try_from)
        {
            Some(Ok(p)) => p
                .fd()
                .map(|fd| fd.as_fd().as_raw_fd())
                .map_err(|e| DatapathError::Ingress(format!("{}: {e}", names::TC_MARK_PROG)))?,
            _ => {
                return Err(DatapathError::Missing {
                    kind: "program",
                    name: names::TC_MARK_PROG,
                });
            }
        };
        let mark_fd = u32::try_from(mark_fd).unwrap_or(u32::MAX);
        let Some(ns) = q.acquire_ifb(fault_id, path, ifindex, (mark_fd, names::TC_MARK_PROG))?
        else {
            return Ok(());
        };
        let devices: Vec<(i32, String)> = ns
            .devices
            .into_iter()
            .filter(|(i, _)| *i != ifindex)
            .collect();
        let prog: &mut SchedClassifier = match self
            .ebpf
            .program_mut(names::TC_INGRESS_PROG)
            .map(TryInto::try_into)
        {
            Some(Ok(p)) => p,
            _ => {
                q.release_ifb(fault_id, |_| {});
                return Err(DatapathError::Missing {
                    kind: "program",
                    name: names::TC_INGRESS_PROG,
                });
            }
        };
        match attach_tc_in(prog, &ns.netns, ns.netns_ino, &devices) {
            Ok(links) => {
                info!(
                    netns = ns.netns_ino,
                    devices = %devices.iter().map(|(_, n)| n.as_str()).collect::<Vec<_>>().join(","),
                    "attached the tc ingress program (TCX) for ingress latency"
                );
                self.tc_links.insert(ns.netns_ino, links);
                if let Err(why) = set_ifb(&mut self.ebpf, true) {
                    self.release_tc_ingress(fault_id);
                    return Err(DatapathError::Ingress(why));
                }
                Ok(())
            }
            Err(e) => {
                q.release_ifb(fault_id, |_| {});
                Err(e)
            }
        }
    }

    pub(super) fn release_tc_ingress(&mut self, fault_id: &str) {
        let Some(q) = self.qdiscs.as_mut() else {
            return;
        };
        let links = &mut self.tc_links;
        // Detach before the ifb goes, so no packet is redirected to a
        // device that no longer exists.
        q.release_ifb(fault_id, |ino| {
            links.remove(&ino);
        });
        if self.tc_links.is_empty()
            && matches!(self.tc, Some(Ok(())))
            && let Err(why) = set_ifb(&mut self.ebpf, false)
        {
            warn!(reason = %why, "turning socket tagging off");
        }
    }
}
