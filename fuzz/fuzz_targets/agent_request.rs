//! ApplyFault requests as they arrive on the wire: protobuf decoding, then
//! the conversion and validation every fault kind and filter goes through
//! (`faultd_agent::api::apply_request`). A spec that passes must survive
//! the trip back to protobuf and in again unchanged (what ListFaults and
//! GetFault show is what was applied).
#![no_main]

use faultd_agent::api::{apply_request, spec_to_pb};
use faultd_proto::agent::v1 as pb;
use libfuzzer_sys::fuzz_target;
use prost::Message as _;

fuzz_target!(|data: &[u8]| {
    let Ok(req) = pb::ApplyFaultRequest::decode(data) else {
        return;
    };
    if let Ok((spec, _lease)) = apply_request(req) {
        let again = apply_request(pb::ApplyFaultRequest {
            spec: Some(spec_to_pb(&spec)),
            lease: None,
        });
        assert_eq!(again.map(|(s, _)| s).as_ref(), Ok(&spec), "round trip");
    }
});
