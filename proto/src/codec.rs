//! The codec of both gRPC APIs: prost's, except that a message that does
//! not decode (bad wire format, a string field that is not UTF-8, a
//! truncated field) is the caller's error, `InvalidArgument` naming the
//! message type, not the `Internal` tonic-prost gives it (an internal
//! error tells a caller to retry or page someone; this one tells them to
//! fix the request). Nothing of such a request reaches a handler.

use std::marker::PhantomData;

use prost::Message;
use tonic::{
    Status,
    codec::{BufferSettings, Codec, DecodeBuf, Decoder},
};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// Used by the generated clients and servers (proto/build.rs `codec_path`).
#[derive(Debug)]
pub struct FaultdCodec<T, U>(ProstCodec<T, U>);

impl<T, U> Default for FaultdCodec<T, U> {
    fn default() -> Self {
        Self(ProstCodec::default())
    }
}

impl<T, U> Codec for FaultdCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = FaultdDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        self.0.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        FaultdDecoder {
            inner: self.0.decoder(),
            _pd: PhantomData,
        }
    }
}

#[derive(Debug)]
pub struct FaultdDecoder<U> {
    inner: ProstDecoder<U>,
    _pd: PhantomData<U>,
}

impl<U: Message + Default> Decoder for FaultdDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.inner
            .decode(buf)
            .map_err(|s| invalid_message::<U>(s.message()))
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.inner.buffer_settings()
    }
}

/// "not a valid faultd.agent.v1.ApplyFaultRequest: ..." from the Rust type
/// name (`faultd_proto::agent::v1::ApplyFaultRequest`).
fn invalid_message<U>(detail: &str) -> Status {
    let rust = std::any::type_name::<U>();
    let name = rust.strip_prefix("faultd_proto::").map_or_else(
        || rust.to_owned(),
        |n| format!("faultd.{}", n.replace("::", ".")),
    );
    Status::invalid_argument(format!("the message is not a valid {name}: {detail}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{agent::v1 as apb, coordinator::v1 as cpb};

    #[test]
    fn the_status_names_the_message_type_in_proto_terms() {
        let status = invalid_message::<apb::ApplyFaultRequest>("invalid string value");
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert_eq!(
            status.message(),
            "the message is not a valid faultd.agent.v1.ApplyFaultRequest: invalid string value"
        );
        let status = invalid_message::<cpb::CreateExperimentRequest>("x");
        assert!(
            status
                .message()
                .contains("faultd.coordinator.v1.CreateExperimentRequest")
        );
    }
}
