//! rtnetlink replies as the agent decodes them: message framing, nlmsgerr
//! with extended-ack TLVs, and the link, address, qdisc and filter dumps
//! the qdisc manager reads back. Requests use sequence number 1 here.
#![no_main]

use faultd_agent::qdisc::netlink::decode_dump;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = decode_dump(data, 1);
});
