//! Just enough rtnetlink to list links and qdiscs and to add and delete a
//! root fq or mq qdisc, over a raw `NETLINK_ROUTE` socket (no `tc` binary:
//! the agent must not depend on what is installed on the node, and `tc`'s
//! output is not an API).
//!
//! Message layouts: include/uapi/linux/netlink.h (`nlmsghdr`, `nlmsgerr`),
//! rtnetlink.h (`tcmsg`, `ifinfomsg`, `rtattr`), pkt_sched.h (`TCA_FQ_*`).

use std::{
    fs::File,
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

pub const RTM_GETLINK: u16 = 18;
pub const RTM_NEWLINK: u16 = 16;
pub const RTM_DELLINK: u16 = 17;
pub const RTM_NEWQDISC: u16 = 36;
pub const RTM_DELQDISC: u16 = 37;
pub const RTM_GETQDISC: u16 = 38;
pub const RTM_NEWTFILTER: u16 = 44;
pub const RTM_DELTFILTER: u16 = 45;
pub const RTM_GETTFILTER: u16 = 46;
const RTM_NEWADDR: u16 = 20;
const RTM_GETADDR: u16 = 22;

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
pub const NLM_F_REPLACE: u16 = 0x100;
pub const NLM_F_EXCL: u16 = 0x200;
pub const NLM_F_CREATE: u16 = 0x400;
/// In an `NLMSG_ERROR`: extended-ack attributes follow.
const NLM_F_ACK_TLVS: u16 = 0x200;
const NLMSGERR_ATTR_MSG: u16 = 1;
const SOL_NETLINK: i32 = 270;
const NETLINK_CAP_ACK: i32 = 10;
const NETLINK_EXT_ACK: i32 = 11;

const TCA_KIND: u16 = 1;
const TCA_OPTIONS: u16 = 2;
const IFLA_IFNAME: u16 = 3;
/// struct ifaddrmsg: family, prefixlen, flags, scope (u8 each), index (u32).
const IFADDRMSG: usize = 8;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
/// RT_SCOPE_LINK (include/uapi/linux/rtnetlink.h): link-local and, above
/// it, host (loopback) addresses, which peers cannot reach this namespace by.
const RT_SCOPE_LINK: u8 = 253;
const IFLA_NUM_TX_QUEUES: u16 = 31;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
/// Set on nested attributes (include/uapi/linux/netlink.h).
const NLA_F_NESTED: u16 = 0x8000;
/// NLA_F_NESTED: iproute2 sets it on TCA_OPTIONS; the kernel accepts both.
const NLA_TYPE_MASK: u16 = 0x3fff;

pub const TCA_FQ_PLIMIT: u16 = 1;
pub const TCA_FQ_FLOW_PLIMIT: u16 = 2;
pub const TCA_FQ_HORIZON: u16 = 14;
pub const TCA_FQ_HORIZON_DROP: u16 = 15;

/// `TC_H_ROOT`: the parent of a root qdisc.
pub const TC_H_ROOT: u32 = 0xffff_ffff;
/// `TC_H_CLSACT` (= `TC_H_INGRESS`): the parent of a clsact or ingress
/// qdisc, whose handle is `ffff:`.
pub const TC_H_CLSACT: u32 = 0xffff_fff1;
pub const CLSACT_HANDLE: u32 = 0xffff_0000;
/// `TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_INGRESS)` and `..._EGRESS`: where
/// filters of a clsact qdisc hang (`tc filter add dev X ingress`; an
/// ingress qdisc accepts the first as well, net/sched/sch_ingress.c).
pub const TC_PARENT_INGRESS: u32 = 0xffff_fff2;
pub const TC_PARENT_EGRESS: u32 = 0xffff_fff3;

/// cls_bpf attributes (include/uapi/linux/pkt_cls.h).
const TCA_BPF_ACT: u16 = 1;
const TCA_BPF_FD: u16 = 6;
const TCA_BPF_NAME: u16 = 7;
/// Actions (include/uapi/linux/pkt_cls.h, tc_act/tc_mirred.h).
const TCA_ACT_KIND: u16 = 1;
const TCA_ACT_OPTIONS: u16 = 2;
const TCA_MIRRED_PARMS: u16 = 2;
const TCA_EGRESS_REDIR: i32 = 1;
const TC_ACT_STOLEN: i32 = 4;
/// `ETH_P_ALL`, network byte order in `tcm_info`'s low half.
const ETH_P_ALL: u16 = 0x0003;
pub const IFF_UP: u32 = 0x1;

const NLMSG_HDR: usize = 16;
const TCMSG: usize = 20;
const IFINFOMSG: usize = 16;

/// One qdisc as `RTM_GETQDISC` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Qdisc {
    pub ifindex: i32,
    pub handle: u32,
    pub parent: u32,
    pub kind: String,
    /// fq's options, when `kind` is fq.
    pub fq: Option<FqOptions>,
}

/// The fq options faultd cares about (absent attributes stay None).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FqOptions {
    pub plimit: Option<u32>,
    pub flow_plimit: Option<u32>,
    /// Microseconds.
    pub horizon_us: Option<u32>,
    pub horizon_drop: Option<u8>,
}

/// One network device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub ifindex: i32,
    pub name: String,
    pub flags: u32,
    pub num_tx_queues: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("{op}: {source}")]
    Io {
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("{op}: {source}{}", .message.as_deref().map(|m| format!(" ({m})")).unwrap_or_default())]
    Kernel {
        op: &'static str,
        source: io::Error,
        /// The kernel's extended-ack text, e.g. "Cannot delete qdisc with
        /// handle of zero".
        message: Option<String>,
    },
    #[error("{op}: malformed reply: {what}")]
    Malformed {
        op: &'static str,
        what: &'static str,
    },
}

/// A `NETLINK_ROUTE` socket bound to one network namespace (a netlink
/// socket belongs to the namespace it was created in, net/netlink/af_netlink.c
/// `__netlink_create`, and keeps it whatever thread uses it later).
#[derive(Debug)]
pub struct Rtnl {
    fd: OwnedFd,
    seq: u32,
}

impl Rtnl {
    /// A socket in the caller's namespace.
    pub fn open() -> Result<Self, NetlinkError> {
        // SAFETY: plain syscall; the result is checked below.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(NetlinkError::Io {
                op: "socket(AF_NETLINK)",
                source: io::Error::last_os_error(),
            });
        }
        // SAFETY: `fd` is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        for opt in [NETLINK_CAP_ACK, NETLINK_EXT_ACK] {
            let one: libc::c_int = 1;
            // SAFETY: valid fd, pointer to a c_int of the given size.
            // Failure only costs the kernel's error text (pre-4.12 kernels).
            unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    SOL_NETLINK,
                    opt,
                    (&raw const one).cast(),
                    size_of::<libc::c_int>() as libc::socklen_t,
                );
            }
        }
        Ok(Self { fd, seq: 1 })
    }

    /// A socket in the namespace of `netns` (an nsfs file such as
    /// /proc/PID/ns/net). setns(2) changes only the calling thread, so a
    /// short-lived thread enters the namespace, creates the socket and
    /// exits; the agent's own threads never leave their namespace.
    pub fn open_in(netns: &File) -> Result<Self, NetlinkError> {
        let ns = netns.try_clone().map_err(|source| NetlinkError::Io {
            op: "dup netns fd",
            source,
        })?;
        std::thread::spawn(move || {
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| {
                NetlinkError::Io {
                    op: "setns(CLONE_NEWNET)",
                    source: io::Error::from(e),
                }
            })?;
            Self::open()
        })
        .join()
        .unwrap_or_else(|_| {
            Err(NetlinkError::Io {
                op: "netns thread",
                source: io::Error::other("panicked"),
            })
        })
    }

    pub fn links(&mut self) -> Result<Vec<Link>, NetlinkError> {
        let msg = encode(
            RTM_GETLINK,
            NLM_F_REQUEST | NLM_F_DUMP,
            self.next_seq(),
            |b| {
                b.extend_from_slice(&[0u8; IFINFOMSG]);
            },
        );
        let mut links = Vec::new();
        self.transact("RTM_GETLINK", &msg, true, |ty, payload| {
            if ty == RTM_NEWLINK
                && let Some(l) = decode_link(payload)
            {
                links.push(l);
            }
        })?;
        Ok(links)
    }

    /// The namespace's addresses other peers can reach it by: global and
    /// site scope, IPv4 and IPv6, each once, in the kernel's order.
    pub fn addresses(&mut self) -> Result<Vec<std::net::IpAddr>, NetlinkError> {
        let msg = encode(
            RTM_GETADDR,
            NLM_F_REQUEST | NLM_F_DUMP,
            self.next_seq(),
            |b| {
                b.extend_from_slice(&[0u8; IFADDRMSG]);
            },
        );
        let mut out = Vec::new();
        self.transact("RTM_GETADDR", &msg, true, |ty, payload| {
            if ty == RTM_NEWADDR
                && let Some(a) = decode_addr(payload)
                && !out.contains(&a)
            {
                out.push(a);
            }
        })?;
        Ok(out)
    }

    pub fn qdiscs(&mut self) -> Result<Vec<Qdisc>, NetlinkError> {
        let msg = encode(
            RTM_GETQDISC,
            NLM_F_REQUEST | NLM_F_DUMP,
            self.next_seq(),
            |b| {
                b.extend_from_slice(&[0u8; TCMSG]);
            },
        );
        let mut qdiscs = Vec::new();
        self.transact("RTM_GETQDISC", &msg, true, |ty, payload| {
            if ty == RTM_NEWQDISC
                && let Some(q) = decode_qdisc(payload)
            {
                qdiscs.push(q);
            }
        })?;
        Ok(qdiscs)
    }

    /// RTM_NEWQDISC with `flags` (NLM_F_CREATE | NLM_F_REPLACE to replace).
    pub fn new_qdisc(
        &mut self,
        ifindex: i32,
        parent: u32,
        handle: u32,
        kind: &str,
        fq: Option<&FqOptions>,
        flags: u16,
    ) -> Result<(), NetlinkError> {
        let msg = encode_qdisc(
            RTM_NEWQDISC,
            NLM_F_REQUEST | NLM_F_ACK | flags,
            self.next_seq(),
            ifindex,
            parent,
            handle,
            Some(kind),
            fq,
        );
        self.transact("RTM_NEWQDISC", &msg, false, |_, _| {})
    }

    pub fn del_qdisc(
        &mut self,
        ifindex: i32,
        parent: u32,
        handle: u32,
    ) -> Result<(), NetlinkError> {
        let msg = encode_qdisc(
            RTM_DELQDISC,
            NLM_F_REQUEST | NLM_F_ACK,
            self.next_seq(),
            ifindex,
            parent,
            handle,
            None,
            None,
        );
        self.transact("RTM_DELQDISC", &msg, false, |_, _| {})
    }

    /// Adds a classic (not direct-action) cls_bpf filter running program
    /// `prog_fd` on the ingress hook of `ifindex`, at preference `prio` with
    /// handle `handle`, whose match redirects the packet to the egress of
    /// device `to_ifindex` (`tc filter add dev X ingress pref P handle H
    /// bpf fd F action mirred egress redirect dev IFB`).
    pub fn new_redirect_filter(
        &mut self,
        ifindex: i32,
        prio: u16,
        handle: u32,
        prog_fd: u32,
        prog_name: &str,
        to_ifindex: i32,
    ) -> Result<(), NetlinkError> {
        let msg = encode_redirect_filter(
            self.next_seq(),
            ifindex,
            prio,
            handle,
            prog_fd,
            prog_name,
            to_ifindex,
        );
        self.transact("RTM_NEWTFILTER", &msg, false, |_, _| {})
    }

    /// Deletes the cls_bpf filter `prio`/`handle` from the ingress hook of
    /// `ifindex`.
    pub fn del_filter(&mut self, ifindex: i32, prio: u16, handle: u32) -> Result<(), NetlinkError> {
        let msg = encode_filter(
            RTM_DELTFILTER,
            NLM_F_REQUEST | NLM_F_ACK,
            self.next_seq(),
            ifindex,
            TC_PARENT_INGRESS,
            prio,
            handle,
            |b| push_attr(b, TCA_KIND, b"bpf\0"),
        );
        self.transact("RTM_DELTFILTER", &msg, false, |_, _| {})
    }

    /// The filters under `parent` of `ifindex`, as (preference, handle,
    /// kind). A dump lists a chain head per preference with handle 0 too.
    pub fn filters(
        &mut self,
        ifindex: i32,
        parent: u32,
    ) -> Result<Vec<(u16, u32, String)>, NetlinkError> {
        let msg = encode_filter(
            RTM_GETTFILTER,
            NLM_F_REQUEST | NLM_F_DUMP,
            self.next_seq(),
            ifindex,
            parent,
            0,
            0,
            |_| {},
        );
        let mut out = Vec::new();
        self.transact("RTM_GETTFILTER", &msg, true, |ty, payload| {
            if ty == RTM_NEWTFILTER
                && let Some(f) = decode_filter(payload)
            {
                out.push(f);
            }
        })?;
        Ok(out)
    }

    /// Creates an ifb device named `name` with interface index `ifindex`,
    /// up (iproute2's `ip link add NAME index N up type ifb`). Fails with
    /// EEXIST/EBUSY when the name or index is taken.
    pub fn new_ifb(&mut self, name: &str, ifindex: i32) -> Result<(), NetlinkError> {
        let msg = encode_new_ifb(self.next_seq(), name, ifindex);
        self.transact("RTM_NEWLINK", &msg, false, |_, _| {})
    }

    /// Deletes the device `ifindex`.
    pub fn del_link(&mut self, ifindex: i32) -> Result<(), NetlinkError> {
        let msg = encode(
            RTM_DELLINK,
            NLM_F_REQUEST | NLM_F_ACK,
            self.next_seq(),
            |b| {
                push_ifinfo(b, ifindex, 0, 0);
            },
        );
        self.transact("RTM_DELLINK", &msg, false, |_, _| {})
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Sends `msg` and reads replies until NLMSG_DONE (dump) or the ack.
    fn transact(
        &mut self,
        op: &'static str,
        msg: &[u8],
        dump: bool,
        mut each: impl FnMut(u16, &[u8]),
    ) -> Result<(), NetlinkError> {
        let seq = u32::from_ne_bytes([msg[8], msg[9], msg[10], msg[11]]);
        // SAFETY: valid fd and buffer; the kernel is the default destination
        // of an unbound... bound-on-send netlink socket.
        let sent = unsafe { libc::send(self.fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
        if sent < 0 {
            return Err(NetlinkError::Io {
                op,
                source: io::Error::last_os_error(),
            });
        }
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // SAFETY: valid fd, writable buffer of the given length.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(NetlinkError::Io { op, source: e });
            }
            let n = usize::try_from(n).unwrap_or(0);
            if read_reply(op, &buf[..n], seq, dump, &mut each)? {
                return Ok(());
            }
        }
    }
}

/// Handles one reply datagram to request `seq`: each message other than
/// NLMSG_DONE and NLMSG_ERROR goes to `each`; messages of other requests
/// are skipped. True once the reply is complete (NLMSG_DONE of a dump, the
/// ack of any other request); a kernel error or a malformed nlmsgerr is an
/// error.
fn read_reply(
    op: &'static str,
    datagram: &[u8],
    seq: u32,
    dump: bool,
    each: &mut impl FnMut(u16, &[u8]),
) -> Result<bool, NetlinkError> {
    for (ty, flags, msg_seq, payload) in messages(datagram) {
        if msg_seq != seq {
            continue;
        }
        match ty {
            NLMSG_DONE => return Ok(true),
            NLMSG_ERROR => {
                let (errno, text) =
                    decode_error(flags, payload).ok_or(NetlinkError::Malformed {
                        op,
                        what: "nlmsgerr",
                    })?;
                if errno == 0 {
                    if !dump {
                        return Ok(true);
                    }
                    continue;
                }
                // A kernel errno is negative and small; i32::MIN has no
                // positive counterpart (found by the `netlink` fuzz target).
                let Some(positive) = errno.checked_neg().filter(|e| *e > 0) else {
                    return Err(NetlinkError::Malformed {
                        op,
                        what: "nlmsgerr errno",
                    });
                };
                return Err(NetlinkError::Kernel {
                    op,
                    source: io::Error::from_raw_os_error(positive),
                    message: text,
                });
            }
            _ => each(ty, payload),
        }
    }
    Ok(false)
}

/// One message of a dump, decoded as the agent's requests decode it.
#[derive(Debug)]
pub enum Dumped {
    Link(Link),
    Address(std::net::IpAddr),
    Qdisc(Qdisc),
    Filter(u16, u32, String),
    /// Another type, or one its decoder refused.
    Other(u16),
}

/// Decodes a datagram the kernel sent in reply to dump request `seq`, with
/// the decoders [`Netlink::links`], [`Netlink::addresses`],
/// [`Netlink::qdiscs`] and [`Netlink::filters`] use: what arrives on the
/// socket is outside input (the fuzz target `netlink` feeds it here).
/// Returns the messages and whether the dump is complete.
pub fn decode_dump(datagram: &[u8], seq: u32) -> Result<(Vec<Dumped>, bool), NetlinkError> {
    let mut out = Vec::new();
    let done = read_reply("dump", datagram, seq, true, &mut |ty, payload| {
        out.push(
            match ty {
                RTM_NEWLINK => decode_link(payload).map(Dumped::Link),
                RTM_NEWADDR => decode_addr(payload).map(Dumped::Address),
                RTM_NEWQDISC => decode_qdisc(payload).map(Dumped::Qdisc),
                RTM_NEWTFILTER => decode_filter(payload).map(|(p, h, k)| Dumped::Filter(p, h, k)),
                _ => None,
            }
            .unwrap_or(Dumped::Other(ty)),
        );
    })?;
    Ok((out, done))
}

/// Splits a datagram into (type, flags, seq, payload) messages.
fn messages(mut buf: &[u8]) -> Vec<(u16, u16, u32, &[u8])> {
    let mut out = Vec::new();
    while buf.len() >= NLMSG_HDR {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len < NLMSG_HDR || len > buf.len() {
            break;
        }
        let ty = u16::from_ne_bytes([buf[4], buf[5]]);
        let flags = u16::from_ne_bytes([buf[6], buf[7]]);
        let seq = u32::from_ne_bytes([buf[8], buf[9], buf[10], buf[11]]);
        out.push((ty, flags, seq, &buf[NLMSG_HDR..len]));
        buf = &buf[align(len).min(buf.len())..];
    }
    out
}

fn align(n: usize) -> usize {
    (n + 3) & !3
}

/// `nlmsgerr`: the negative errno (0 is an ack), then, with
/// NETLINK_CAP_ACK, only the request's header, then extended-ack TLVs.
fn decode_error(flags: u16, payload: &[u8]) -> Option<(i32, Option<String>)> {
    let errno = i32::from_ne_bytes(payload.get(..4)?.try_into().ok()?);
    let mut text = None;
    if flags & NLM_F_ACK_TLVS != 0
        && let Some(tlvs) = payload.get(4 + NLMSG_HDR..)
    {
        for (ty, value) in attrs(tlvs) {
            if ty == NLMSGERR_ATTR_MSG {
                let end = value.iter().position(|b| *b == 0).unwrap_or(value.len());
                text = Some(String::from_utf8_lossy(&value[..end]).into_owned());
            }
        }
    }
    Some((errno, text))
}

/// Iterates `rtattr`s: (type without flag bits, value).
fn attrs(mut buf: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while buf.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([buf[0], buf[1]]));
        let ty = u16::from_ne_bytes([buf[2], buf[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > buf.len() {
            break;
        }
        out.push((ty, &buf[4..len]));
        buf = &buf[align(len).min(buf.len())..];
    }
    out
}

fn push_attr(b: &mut Vec<u8>, ty: u16, value: &[u8]) {
    let len = 4 + value.len();
    b.extend_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_ne_bytes());
    b.extend_from_slice(&ty.to_ne_bytes());
    b.extend_from_slice(value);
    b.resize(align(b.len()), 0);
}

/// A whole message: header (length patched in) then the body.
fn encode(ty: u16, flags: u16, seq: u32, body: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut b = Vec::with_capacity(128);
    b.extend_from_slice(&0u32.to_ne_bytes());
    b.extend_from_slice(&ty.to_ne_bytes());
    b.extend_from_slice(&flags.to_ne_bytes());
    b.extend_from_slice(&seq.to_ne_bytes());
    b.extend_from_slice(&0u32.to_ne_bytes());
    body(&mut b);
    let len = u32::try_from(b.len()).unwrap_or(u32::MAX);
    b[..4].copy_from_slice(&len.to_ne_bytes());
    b
}

#[expect(clippy::too_many_arguments, reason = "one field per tcmsg member")]
pub fn encode_qdisc(
    ty: u16,
    flags: u16,
    seq: u32,
    ifindex: i32,
    parent: u32,
    handle: u32,
    kind: Option<&str>,
    fq: Option<&FqOptions>,
) -> Vec<u8> {
    encode(ty, flags, seq, |b| {
        // tcmsg: family, pad, pad, ifindex, handle, parent, info.
        b.extend_from_slice(&[libc::AF_UNSPEC as u8, 0, 0, 0]);
        b.extend_from_slice(&ifindex.to_ne_bytes());
        b.extend_from_slice(&handle.to_ne_bytes());
        b.extend_from_slice(&parent.to_ne_bytes());
        b.extend_from_slice(&0u32.to_ne_bytes());
        if let Some(kind) = kind {
            let mut k = kind.as_bytes().to_vec();
            k.push(0);
            push_attr(b, TCA_KIND, &k);
        }
        if let Some(fq) = fq {
            let mut opts = Vec::new();
            if let Some(v) = fq.plimit {
                push_attr(&mut opts, TCA_FQ_PLIMIT, &v.to_ne_bytes());
            }
            if let Some(v) = fq.flow_plimit {
                push_attr(&mut opts, TCA_FQ_FLOW_PLIMIT, &v.to_ne_bytes());
            }
            if let Some(v) = fq.horizon_us {
                push_attr(&mut opts, TCA_FQ_HORIZON, &v.to_ne_bytes());
            }
            if let Some(v) = fq.horizon_drop {
                push_attr(&mut opts, TCA_FQ_HORIZON_DROP, &[v]);
            }
            push_attr(b, TCA_OPTIONS, &opts);
        }
    })
}

/// A tcmsg for a filter: `tcm_info` holds the preference (high half) and
/// the protocol (low half, network order), net/sched/cls_api.c
/// `tc_new_tfilter`.
#[expect(clippy::too_many_arguments, reason = "one field per tcmsg member")]
fn encode_filter(
    ty: u16,
    flags: u16,
    seq: u32,
    ifindex: i32,
    parent: u32,
    prio: u16,
    handle: u32,
    attrs: impl FnOnce(&mut Vec<u8>),
) -> Vec<u8> {
    encode(ty, flags, seq, |b| {
        b.extend_from_slice(&[libc::AF_UNSPEC as u8, 0, 0, 0]);
        b.extend_from_slice(&ifindex.to_ne_bytes());
        b.extend_from_slice(&handle.to_ne_bytes());
        b.extend_from_slice(&parent.to_ne_bytes());
        let info = (u32::from(prio) << 16) | u32::from(ETH_P_ALL.to_be());
        b.extend_from_slice(&info.to_ne_bytes());
        attrs(b);
    })
}

pub fn encode_redirect_filter(
    seq: u32,
    ifindex: i32,
    prio: u16,
    handle: u32,
    prog_fd: u32,
    prog_name: &str,
    to_ifindex: i32,
) -> Vec<u8> {
    encode_filter(
        RTM_NEWTFILTER,
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        seq,
        ifindex,
        TC_PARENT_INGRESS,
        prio,
        handle,
        |b| {
            push_attr(b, TCA_KIND, b"bpf\0");
            // struct tc_mirred: tc_gen (index, capab, action, refcnt,
            // bindcnt), eaction, ifindex. Redirect: TC_ACT_STOLEN, as
            // iproute2's m_mirred.c sets it.
            let mut parms = Vec::with_capacity(28);
            parms.extend_from_slice(&0u32.to_ne_bytes());
            parms.extend_from_slice(&0u32.to_ne_bytes());
            parms.extend_from_slice(&TC_ACT_STOLEN.to_ne_bytes());
            parms.extend_from_slice(&0i32.to_ne_bytes());
            parms.extend_from_slice(&0i32.to_ne_bytes());
            parms.extend_from_slice(&TCA_EGRESS_REDIR.to_ne_bytes());
            parms.extend_from_slice(&to_ifindex.to_ne_bytes());
            let mut mirred = Vec::new();
            push_attr(&mut mirred, TCA_MIRRED_PARMS, &parms);
            let mut action = Vec::new();
            push_attr(&mut action, TCA_ACT_KIND, b"mirred\0");
            push_attr(&mut action, TCA_ACT_OPTIONS | NLA_F_NESTED, &mirred);
            // Actions are numbered from 1 in the order they run.
            let mut actions = Vec::new();
            push_attr(&mut actions, 1 | NLA_F_NESTED, &action);
            let mut name = prog_name.as_bytes().to_vec();
            name.push(0);
            let mut opts = Vec::new();
            push_attr(&mut opts, TCA_BPF_FD, &prog_fd.to_ne_bytes());
            push_attr(&mut opts, TCA_BPF_NAME, &name);
            push_attr(&mut opts, TCA_BPF_ACT | NLA_F_NESTED, &actions);
            push_attr(b, TCA_OPTIONS | NLA_F_NESTED, &opts);
        },
    )
}

/// (preference, handle, kind) of an RTM_NEWTFILTER.
fn decode_filter(payload: &[u8]) -> Option<(u16, u32, String)> {
    let tc = payload.get(..TCMSG)?;
    let handle = u32_of(&tc[8..12])?;
    let info = u32_of(&tc[16..20])?;
    let kind = attrs(&payload[TCMSG..])
        .into_iter()
        .find(|(ty, _)| *ty == TCA_KIND)
        .map(|(_, v)| cstr(v))
        .unwrap_or_default();
    Some(((info >> 16) as u16, handle, kind))
}

/// ifinfomsg: family, pad, type, index, flags, change.
fn push_ifinfo(b: &mut Vec<u8>, ifindex: i32, flags: u32, change: u32) {
    b.extend_from_slice(&[libc::AF_UNSPEC as u8, 0, 0, 0]);
    b.extend_from_slice(&ifindex.to_ne_bytes());
    b.extend_from_slice(&flags.to_ne_bytes());
    b.extend_from_slice(&change.to_ne_bytes());
}

/// RTM_NEWLINK for an ifb: the index in `ifinfomsg` is the one to give it
/// (net/core/rtnetlink.c, `rtnl_create_link` takes `ifi_index`), IFF_UP in
/// flags and change brings it up (`rtnl_configure_link`).
pub fn encode_new_ifb(seq: u32, name: &str, ifindex: i32) -> Vec<u8> {
    encode(
        RTM_NEWLINK,
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        seq,
        |b| {
            push_ifinfo(b, ifindex, IFF_UP, IFF_UP);
            let mut n = name.as_bytes().to_vec();
            n.push(0);
            push_attr(b, IFLA_IFNAME, &n);
            let mut info = Vec::new();
            push_attr(&mut info, IFLA_INFO_KIND, b"ifb");
            push_attr(b, IFLA_LINKINFO | NLA_F_NESTED, &info);
        },
    )
}

fn u32_of(v: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(v.get(..4)?.try_into().ok()?))
}

fn cstr(v: &[u8]) -> String {
    let end = v.iter().position(|b| *b == 0).unwrap_or(v.len());
    String::from_utf8_lossy(&v[..end]).into_owned()
}

pub fn decode_qdisc(payload: &[u8]) -> Option<Qdisc> {
    let tc = payload.get(..TCMSG)?;
    let ifindex = i32::from_ne_bytes(tc[4..8].try_into().ok()?);
    let handle = u32_of(&tc[8..12])?;
    let parent = u32_of(&tc[12..16])?;
    let mut kind = String::new();
    let mut options: &[u8] = &[];
    for (ty, value) in attrs(&payload[TCMSG..]) {
        match ty {
            TCA_KIND => kind = cstr(value),
            TCA_OPTIONS => options = value,
            _ => {}
        }
    }
    let fq = (kind == "fq").then(|| {
        let mut o = FqOptions::default();
        for (ty, value) in attrs(options) {
            match ty {
                TCA_FQ_PLIMIT => o.plimit = u32_of(value),
                TCA_FQ_FLOW_PLIMIT => o.flow_plimit = u32_of(value),
                TCA_FQ_HORIZON => o.horizon_us = u32_of(value),
                TCA_FQ_HORIZON_DROP => o.horizon_drop = value.first().copied(),
                _ => {}
            }
        }
        o
    });
    Some(Qdisc {
        ifindex,
        handle,
        parent,
        kind,
        fq,
    })
}

fn decode_link(payload: &[u8]) -> Option<Link> {
    let ifi = payload.get(..IFINFOMSG)?;
    let ifindex = i32::from_ne_bytes(ifi[4..8].try_into().ok()?);
    let flags = u32_of(&ifi[8..12])?;
    let mut name = String::new();
    let mut num_tx_queues = 1;
    for (ty, value) in attrs(&payload[IFINFOMSG..]) {
        match ty {
            IFLA_IFNAME => name = cstr(value),
            IFLA_NUM_TX_QUEUES => num_tx_queues = u32_of(value).unwrap_or(1),
            _ => {}
        }
    }
    Some(Link {
        ifindex,
        name,
        flags,
        num_tx_queues,
    })
}

/// The addresses of the network namespace `cgroup`'s processes are in
/// (its first process's, or the agent's own when it has none: see
/// [`crate::netns::target_netns`]), as [`Rtnl::addresses`] lists them.
pub fn target_addresses(cgroup: &std::path::Path) -> Result<Vec<std::net::IpAddr>, NetlinkError> {
    let ns = crate::netns::target_netns(cgroup).map_err(|e| NetlinkError::Io {
        op: "opening the target's network namespace",
        source: io::Error::other(e.to_string()),
    })?;
    Rtnl::open_in(&ns.file)?.addresses()
}

/// An RTM_NEWADDR message's address, if its scope is below link. IPv4
/// prefers IFA_LOCAL: on point-to-point devices IFA_ADDRESS is the peer's
/// (include/uapi/linux/if_addr.h).
fn decode_addr(payload: &[u8]) -> Option<std::net::IpAddr> {
    let ifa = payload.get(..IFADDRMSG)?;
    let (family, scope) = (ifa[0], ifa[3]);
    if scope >= RT_SCOPE_LINK {
        return None;
    }
    let (mut local, mut address) = (None, None);
    for (ty, value) in attrs(&payload[IFADDRMSG..]) {
        let ip = match (i32::from(family), value.len()) {
            (libc::AF_INET, 4) => std::net::IpAddr::from(<[u8; 4]>::try_from(value).ok()?),
            (libc::AF_INET6, 16) => std::net::IpAddr::from(<[u8; 16]>::try_from(value).ok()?),
            _ => continue,
        };
        match ty {
            IFA_LOCAL => local = Some(ip),
            IFA_ADDRESS => address = Some(ip),
            _ => {}
        }
    }
    local.or(address)
}

/// `major:minor` as tc prints handles ("fa17:", "0:").
pub fn handle_text(handle: u32) -> String {
    let (major, minor) = (handle >> 16, handle & 0xffff);
    if minor == 0 {
        format!("{major:x}:")
    } else {
        format!("{major:x}:{minor:x}")
    }
}

#[cfg(test)]
mod tests;
