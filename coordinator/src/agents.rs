//! Talking to the agents: the calls the engine makes, behind a trait so the
//! engine's logic is unit-tested against in-memory agents, and its
//! implementation over mutual TLS to the inventory's addresses.

use std::{collections::HashMap, future::Future, sync::Arc, time::Duration};

use faultd_proto::{
    agent::v1::{self as apb, agent_client::AgentClient},
    tls,
};
use tokio::sync::RwLock;
use tonic::{Code, transport::Channel};

use crate::inventory::Inventory;

/// An agent call that failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("node {node}: {message} ({code:?})")]
pub struct AgentError {
    pub node: String,
    pub code: Code,
    pub message: String,
}

impl AgentError {
    /// The agent could not be reached (or did not answer in time), as
    /// opposed to refusing the call.
    pub fn unreachable(&self) -> bool {
        matches!(
            self.code,
            Code::Unavailable | Code::DeadlineExceeded | Code::Unknown | Code::Cancelled
        )
    }
}

/// What the engine asks of agents. Each call names the node; the
/// implementation knows where it is.
pub trait AgentApi: Send + Sync + 'static {
    /// The node's targets the patterns match; with `with_addresses`, each
    /// with the addresses it is reached by.
    fn list_targets(
        &self,
        node: &str,
        patterns: Vec<apb::TargetPattern>,
        with_addresses: bool,
    ) -> impl Future<Output = Result<Vec<apb::MatchedTarget>, AgentError>> + Send;
    fn apply(
        &self,
        node: &str,
        req: apb::ApplyFaultRequest,
    ) -> impl Future<Output = Result<apb::Fault, AgentError>> + Send;
    fn renew(
        &self,
        node: &str,
        lease: apb::Lease,
    ) -> impl Future<Output = Result<apb::RenewLeaseResponse, AgentError>> + Send;
    fn revert_lease(
        &self,
        node: &str,
        lease: &str,
    ) -> impl Future<Output = Result<u32, AgentError>> + Send;
    fn list_faults(
        &self,
        node: &str,
    ) -> impl Future<Output = Result<Vec<apb::Fault>, AgentError>> + Send;
}

/// The agents of an inventory, over mutual TLS. Channels connect lazily
/// and reconnect on their own; each call has a deadline.
#[derive(Clone, Debug)]
pub struct GrpcAgents {
    clients: Arc<RwLock<HashMap<String, AgentClient<Channel>>>>,
    config: Arc<rustls::ClientConfig>,
    timeout: Duration,
}

impl GrpcAgents {
    pub fn new(
        inventory: &Inventory,
        config: Arc<rustls::ClientConfig>,
        timeout: Duration,
    ) -> Result<Self, tls::TlsError> {
        let mut clients = HashMap::new();
        for a in &inventory.agents {
            let channel = tls::channel(&a.address, a.tls_name(), Arc::clone(&config), timeout)?;
            clients.insert(a.node.clone(), AgentClient::new(channel));
        }
        Ok(Self {
            clients: Arc::new(RwLock::new(clients)),
            config,
            timeout,
        })
    }

    async fn client(&self, node: &str) -> Result<AgentClient<Channel>, AgentError> {
        self.clients
            .read()
            .await
            .get(node)
            .cloned()
            .ok_or_else(|| AgentError {
                node: node.to_owned(),
                code: Code::NotFound,
                message: "not in the inventory".to_owned(),
            })
    }

    /// The TLS configuration and timeout agents are called with.
    pub fn settings(&self) -> (Arc<rustls::ClientConfig>, Duration) {
        (Arc::clone(&self.config), self.timeout)
    }
}

fn err(node: &str) -> impl FnOnce(tonic::Status) -> AgentError + '_ {
    move |s| AgentError {
        node: node.to_owned(),
        code: s.code(),
        message: s.message().to_owned(),
    }
}

impl AgentApi for GrpcAgents {
    async fn list_targets(
        &self,
        node: &str,
        patterns: Vec<apb::TargetPattern>,
        with_addresses: bool,
    ) -> Result<Vec<apb::MatchedTarget>, AgentError> {
        let mut c = self.client(node).await?;
        Ok(c.list_targets(apb::ListTargetsRequest {
            patterns,
            with_addresses,
        })
        .await
        .map_err(err(node))?
        .into_inner()
        .targets)
    }

    async fn apply(
        &self,
        node: &str,
        req: apb::ApplyFaultRequest,
    ) -> Result<apb::Fault, AgentError> {
        let mut c = self.client(node).await?;
        c.apply_fault(req)
            .await
            .map_err(err(node))?
            .into_inner()
            .fault
            .ok_or_else(|| AgentError {
                node: node.to_owned(),
                code: Code::Internal,
                message: "ApplyFault answered without the fault".to_owned(),
            })
    }

    async fn renew(
        &self,
        node: &str,
        lease: apb::Lease,
    ) -> Result<apb::RenewLeaseResponse, AgentError> {
        let mut c = self.client(node).await?;
        Ok(c.renew_lease(apb::RenewLeaseRequest { lease: Some(lease) })
            .await
            .map_err(err(node))?
            .into_inner())
    }

    async fn revert_lease(&self, node: &str, lease: &str) -> Result<u32, AgentError> {
        let mut c = self.client(node).await?;
        Ok(c.revert_lease(apb::RevertLeaseRequest {
            id: lease.to_owned(),
        })
        .await
        .map_err(err(node))?
        .into_inner()
        .reverted)
    }

    async fn list_faults(&self, node: &str) -> Result<Vec<apb::Fault>, AgentError> {
        let mut c = self.client(node).await?;
        Ok(c.list_faults(apb::ListFaultsRequest {})
            .await
            .map_err(err(node))?
            .into_inner()
            .faults)
    }
}
