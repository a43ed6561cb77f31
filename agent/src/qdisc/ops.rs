//! The rtnetlink operations on one device's root qdisc: install faultd's
//! fq (or mq with an fq per queue), and take it away again.

use super::{
    OUR_HANDLE,
    netlink::{NLM_F_CREATE, NLM_F_REPLACE, NetlinkError, Rtnl, TC_H_ROOT},
    our_fq_options,
};

pub(super) fn install_fq(rtnl: &mut Rtnl, ifindex: i32) -> Result<(), NetlinkError> {
    rtnl.new_qdisc(
        ifindex,
        TC_H_ROOT,
        OUR_HANDLE,
        "fq",
        Some(&our_fq_options()),
        NLM_F_CREATE | NLM_F_REPLACE,
    )
}

pub(super) fn install_mq(rtnl: &mut Rtnl, ifindex: i32, queues: u32) -> Result<(), NetlinkError> {
    rtnl.new_qdisc(
        ifindex,
        TC_H_ROOT,
        OUR_HANDLE,
        "mq",
        None,
        NLM_F_CREATE | NLM_F_REPLACE,
    )?;
    // mq's classes are its tx queues, minor 1..=n (net/sched/sch_mq.c,
    // `mq_queue_get`); each child gets its own fq.
    for q in 1..=queues.min(0xffff) {
        let r = rtnl.new_qdisc(
            ifindex,
            OUR_HANDLE | q,
            0,
            "fq",
            Some(&our_fq_options()),
            NLM_F_CREATE | NLM_F_REPLACE,
        );
        if let Err(e) = r {
            let _ = restore_device(rtnl, ifindex);
            return Err(e);
        }
    }
    Ok(())
}

/// Deletes our root qdisc on `ifindex` if it is still ours.
pub(super) fn restore_device(rtnl: &mut Rtnl, ifindex: i32) -> Result<bool, NetlinkError> {
    let ours = rtnl
        .qdiscs()?
        .into_iter()
        .any(|q| q.ifindex == ifindex && q.parent == TC_H_ROOT && q.handle == OUR_HANDLE);
    if !ours {
        return Ok(false);
    }
    rtnl.del_qdisc(ifindex, TC_H_ROOT, OUR_HANDLE)?;
    Ok(true)
}
