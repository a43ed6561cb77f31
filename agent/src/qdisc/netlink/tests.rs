//! Message encodings checked against the kernel's layouts.

use super::*;

#[test]
fn qdisc_message_round_trips() {
    let fq = FqOptions {
        plimit: Some(100_000),
        flow_plimit: Some(50_000),
        horizon_us: Some(600_000_000),
        horizon_drop: Some(0),
    };
    let msg = encode_qdisc(
        RTM_NEWQDISC,
        NLM_F_REQUEST | NLM_F_CREATE,
        7,
        3,
        TC_H_ROOT,
        0xfa17_0000,
        Some("fq"),
        Some(&fq),
    );
    assert_eq!(msg.len() % 4, 0);
    let parsed = messages(&msg);
    assert_eq!(parsed.len(), 1);
    let (ty, flags, seq, payload) = parsed[0];
    assert_eq!(
        (ty, flags, seq),
        (RTM_NEWQDISC, NLM_F_REQUEST | NLM_F_CREATE, 7)
    );
    let q = decode_qdisc(payload).expect("decodes");
    assert_eq!(
        q,
        Qdisc {
            ifindex: 3,
            handle: 0xfa17_0000,
            parent: TC_H_ROOT,
            kind: "fq".into(),
            fq: Some(fq),
        }
    );
    // The header's length covers the message: 16 + tcmsg 20 + kind "fq\0"
    // padded to 8 + options (4 + 8 + 8 + 8 + 8 (u8 padded)).
    assert_eq!(msg.len(), 16 + 20 + 8 + 4 + 8 + 8 + 8 + 8);
}

#[test]
fn error_with_extended_ack_text() {
    // nlmsgerr: errno -2, the request header (CAP_ACK), then a MSG TLV.
    let mut payload = (-2i32).to_ne_bytes().to_vec();
    payload.extend_from_slice(&[0u8; NLMSG_HDR]);
    push_attr(
        &mut payload,
        NLMSGERR_ATTR_MSG,
        b"Cannot delete qdisc with handle of zero\0",
    );
    let (errno, text) = decode_error(NLM_F_ACK_TLVS, &payload).expect("decodes");
    assert_eq!(errno, -2);
    assert_eq!(
        text.as_deref(),
        Some("Cannot delete qdisc with handle of zero")
    );
    let (errno, text) = decode_error(0, &0i32.to_ne_bytes()).expect("ack");
    assert_eq!((errno, text), (0, None));
}

#[test]
fn ifb_message_has_index_name_and_kind() {
    let msg = encode_new_ifb(9, "fdifb0", 0x0fa1_7000);
    assert_eq!(msg.len() % 4, 0);
    let parsed = messages(&msg);
    let (ty, flags, seq, payload) = parsed[0];
    assert_eq!(ty, RTM_NEWLINK);
    assert_eq!(seq, 9);
    assert_eq!(flags, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL);
    let link = decode_link(payload).expect("decodes");
    assert_eq!(link.ifindex, 0x0fa1_7000);
    assert_eq!(link.name, "fdifb0");
    assert_eq!(link.flags, IFF_UP);
    // change mask: IFF_UP only.
    assert_eq!(u32_of(&payload[12..16]), Some(IFF_UP));
    let linkinfo = attrs(&payload[IFINFOMSG..])
        .into_iter()
        .find(|(t, _)| *t == IFLA_LINKINFO)
        .expect("IFLA_LINKINFO");
    assert_eq!(attrs(linkinfo.1), vec![(IFLA_INFO_KIND, &b"ifb"[..])]);
}

/// The layout `tc filter add dev lo ingress pref 64023 handle 0xfa17
/// bpf fd F name N action mirred egress redirect dev fdifb0` sends.
#[test]
fn redirect_filter_message_nests_the_mirred_action() {
    let msg = encode_redirect_filter(3, 1, 0xfa17, 0xfa17, 42, "faultd_tc_mark", 0x0fa1_7000);
    assert_eq!(msg.len() % 4, 0);
    let (ty, flags, seq, payload) = messages(&msg)[0];
    assert_eq!((ty, seq), (RTM_NEWTFILTER, 3));
    assert_eq!(flags, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL);
    assert_eq!(
        i32::from_ne_bytes(payload[4..8].try_into().expect("4 bytes")),
        1
    );
    assert_eq!(u32_of(&payload[8..12]), Some(0xfa17));
    assert_eq!(u32_of(&payload[12..16]), Some(TC_PARENT_INGRESS));
    // Preference high, ETH_P_ALL in network order low.
    assert_eq!(
        u32_of(&payload[16..20]),
        Some((0xfa17 << 16) | u32::from(3u16.to_be()))
    );
    assert_eq!(decode_filter(payload), Some((0xfa17, 0xfa17, "bpf".into())));
    let top = attrs(&payload[TCMSG..]);
    let opts = top
        .iter()
        .find(|(t, _)| *t == TCA_OPTIONS)
        .expect("options")
        .1;
    let opts = attrs(opts);
    let get =
        |list: &[(u16, &[u8])], ty| list.iter().find(|(t, _)| *t == ty).map(|(_, v)| v.to_vec());
    assert_eq!(get(&opts, TCA_BPF_FD), Some(42u32.to_ne_bytes().to_vec()));
    assert_eq!(get(&opts, TCA_BPF_NAME), Some(b"faultd_tc_mark\0".to_vec()));
    let acts = get(&opts, TCA_BPF_ACT).expect("actions");
    let first = get(&attrs(&acts), 1).expect("action 1");
    let action = attrs(&first);
    assert_eq!(get(&action, TCA_ACT_KIND), Some(b"mirred\0".to_vec()));
    let mirred = get(&action, TCA_ACT_OPTIONS).expect("mirred options");
    let parms = get(&attrs(&mirred), TCA_MIRRED_PARMS).expect("tc_mirred");
    assert_eq!(parms.len(), 28, "struct tc_mirred");
    let word = |i: usize| i32::from_ne_bytes(parms[4 * i..4 * i + 4].try_into().expect("4 bytes"));
    assert_eq!(word(2), TC_ACT_STOLEN);
    assert_eq!(word(5), TCA_EGRESS_REDIR);
    assert_eq!(word(6), 0x0fa1_7000);
}

#[test]
fn addresses_skip_link_and_host_scope_and_prefer_local() {
    let msg = |family: u8, scope: u8, attrs: &[(u16, &[u8])]| {
        let mut b = vec![family, 24, 0, scope, 2, 0, 0, 0];
        for (ty, v) in attrs {
            push_attr(&mut b, *ty, v);
        }
        b
    };
    let v4 = |a: [u8; 4]| a.to_vec();
    let global = msg(2, 0, &[(IFA_ADDRESS, &v4([10, 0, 0, 2]))]);
    assert_eq!(
        decode_addr(&global),
        Some("10.0.0.2".parse().expect("address"))
    );
    // Point-to-point: IFA_ADDRESS is the peer, IFA_LOCAL ours.
    let ptp = msg(
        2,
        0,
        &[
            (IFA_ADDRESS, &v4([10, 9, 9, 9])),
            (IFA_LOCAL, &v4([10, 0, 0, 3])),
        ],
    );
    assert_eq!(
        decode_addr(&ptp),
        Some("10.0.0.3".parse().expect("address"))
    );
    let host = msg(2, 254, &[(IFA_LOCAL, &v4([127, 0, 0, 1]))]);
    assert_eq!(decode_addr(&host), None);
    let mut ll = [0u8; 16];
    ll[..2].copy_from_slice(&[0xfe, 0x80]);
    assert_eq!(decode_addr(&msg(10, 253, &[(IFA_ADDRESS, &ll)])), None);
    let mut v6 = [0u8; 16];
    v6[..2].copy_from_slice(&[0xfd, 0x00]);
    v6[15] = 1;
    assert_eq!(
        decode_addr(&msg(10, 0, &[(IFA_ADDRESS, &v6)])),
        Some("fd00::1".parse().expect("address"))
    );
}

#[test]
fn handles_print_like_tc() {
    assert_eq!(handle_text(0), "0:");
    assert_eq!(handle_text(0xfa17_0000), "fa17:");
    assert_eq!(handle_text(0xfa17_0003), "fa17:3");
}

/// Inputs the `netlink` fuzz target found crashing the decoder, kept in
/// fuzz/regressions/netlink: each decodes or is refused, without a panic.
#[test]
fn fuzz_regressions_do_not_panic() {
    for data in crate::fuzz_regressions("netlink") {
        let _ = decode_dump(&data, 1);
    }
}

/// An nlmsgerr whose errno is i32::MIN (no positive counterpart) is a
/// malformed reply, not a panic; a real one is the kernel's error.
#[test]
fn an_errno_without_a_positive_value_is_malformed() {
    let reply = |errno: i32| {
        let mut payload = errno.to_ne_bytes().to_vec();
        payload.extend([0u8; NLMSG_HDR]);
        encode(NLMSG_ERROR, 0, 1, |b| b.extend(&payload))
    };
    assert!(matches!(
        decode_dump(&reply(i32::MIN), 1),
        Err(NetlinkError::Malformed {
            what: "nlmsgerr errno",
            ..
        })
    ));
    assert!(matches!(
        decode_dump(&reply(-17), 1),
        Err(NetlinkError::Kernel { ref source, .. }) if source.raw_os_error() == Some(17)
    ));
    assert!(matches!(
        decode_dump(&reply(5), 1),
        Err(NetlinkError::Malformed { .. })
    ));
}
