//! The agent's API without naming tonic's types (xtask does not depend on
//! tonic): each call is a boxed future over a clone of the client, and
//! [`bulk`] spreads many calls over a few connections.

use std::{future::Future, path::Path, pin::Pin};

use anyhow::Context as _;
use faultd_proto::agent::v1 as pb;

/// Concurrent gRPC clients for bulk applies and reverts.
pub(crate) const BULK_CLIENTS: usize = 4;

pub(crate) type BoxFut<T> = Pin<Box<dyn Future<Output = anyhow::Result<T>> + Send>>;
pub(crate) type Call<A, T> = Box<dyn Fn(A) -> BoxFut<T> + Send + Sync>;

pub(crate) struct Api {
    pub(crate) apply: Call<pb::ApplyFaultRequest, pb::ApplyFaultResponse>,
    pub(crate) revert: Call<String, pb::RevertFaultResponse>,
    pub(crate) get: Call<String, pb::Fault>,
    pub(crate) caps: Call<(), pb::Capabilities>,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Api")
    }
}

impl Api {
    pub(crate) async fn connect(socket: &Path) -> anyhow::Result<Self> {
        let client = faultctl::connect(socket)
            .await
            .with_context(|| format!("connecting to {}", socket.display()))?;
        let (c1, c2, c3, c4) = (
            client.clone(),
            client.clone(),
            client.clone(),
            client.clone(),
        );
        Ok(Self {
            apply: Box::new(move |req| {
                let mut c = c1.clone();
                Box::pin(async move { Ok(c.apply_fault(req).await?.into_inner()) })
            }),
            revert: Box::new(move |id| {
                let mut c = c2.clone();
                Box::pin(async move {
                    Ok(c.revert_fault(pb::RevertFaultRequest { id })
                        .await?
                        .into_inner())
                })
            }),
            get: Box::new(move |id| {
                let mut c = c3.clone();
                Box::pin(
                    async move { Ok(c.get_fault(pb::GetFaultRequest { id }).await?.into_inner()) },
                )
            }),
            caps: Box::new(move |()| {
                let mut c = c4.clone();
                Box::pin(async move {
                    Ok(c.get_capabilities(pb::GetCapabilitiesRequest {})
                        .await?
                        .into_inner())
                })
            }),
        })
    }
}

/// Runs `call` over `items` from BULK_CLIENTS connections, each taking every
/// BULK_CLIENTS-th item.
pub(crate) async fn bulk<T, R>(
    socket: &Path,
    items: Vec<T>,
    call: fn(&Api, T) -> BoxFut<R>,
) -> anyhow::Result<()>
where
    T: Send + 'static,
    R: Send + 'static,
{
    let mut chunks: Vec<Vec<T>> = (0..BULK_CLIENTS).map(|_| Vec::new()).collect();
    for (i, item) in items.into_iter().enumerate() {
        chunks[i % BULK_CLIENTS].push(item);
    }
    let mut tasks = Vec::new();
    for chunk in chunks {
        let socket = socket.to_path_buf();
        tasks.push(tokio::spawn(async move {
            let api = Api::connect(&socket).await?;
            for item in chunk {
                call(&api, item).await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await.context("bulk client task")??;
    }
    Ok(())
}
