//! The standard gRPC services every faultd endpoint serves beside its own
//! API: health checking (`grpc.health.v1.Health`), so Kubernetes gRPC probes,
//! load balancers and `grpc_health_probe` see whether it serves, and server
//! reflection (`grpc.reflection.v1` and `v1alpha`), so grpcurl, Postman and
//! other generic clients can list and call the API without the `.proto`
//! files. Both carry the same authentication as the endpoint they are on
//! (a mutual-TLS listener still wants a client certificate).

use tonic::{server::NamedService, transport::server::Router};
use tonic_health::ServingStatus;

/// faultd's descriptors, imports included, as protox compiled them.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/faultd_descriptor.bin"));

/// Why the standard services could not be built: the descriptor set
/// embedded at build time does not decode (a build defect).
#[derive(Debug, thiserror::Error)]
#[error("server reflection: {0:?}")]
pub struct OpsError(tonic_reflection::server::Error);

/// `router` with health checking, which reports `S` (and the server as a
/// whole, the empty service name) as SERVING, and server reflection of
/// faultd's APIs and the health API.
///
/// # Errors
/// When the embedded descriptor set does not decode.
pub async fn with_standard_services<L, S: NamedService>(
    router: Router<L>,
) -> Result<Router<L>, OpsError> {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", ServingStatus::Serving)
        .await;
    reporter
        .set_service_status(S::NAME, ServingStatus::Serving)
        .await;
    // Only what this endpoint serves is listed (the descriptor set holds
    // both of faultd's APIs).
    let reflection = |itself: &str| {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .with_service_name(S::NAME)
            .with_service_name("grpc.health.v1.Health")
            .with_service_name(itself)
    };
    let v1 = reflection("grpc.reflection.v1.ServerReflection")
        .build_v1()
        .map_err(OpsError)?;
    let v1alpha = reflection("grpc.reflection.v1alpha.ServerReflection")
        .build_v1alpha()
        .map_err(OpsError)?;
    Ok(router
        .add_service(health)
        .add_service(v1)
        .add_service(v1alpha))
}
