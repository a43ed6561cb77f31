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

use crate::inventory::{Agent, Discovery};

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

/// The agents discovery knows, over mutual TLS. Channels connect lazily
/// and reconnect on their own; each call has a deadline. A node's channel
/// is made on first use and made again when its agent moves (a new
/// DaemonSet pod has a new address).
#[derive(Clone)]
pub struct GrpcAgents {
    discovery: Arc<dyn Discovery>,
    clients: Arc<RwLock<HashMap<String, Cached>>>,
    config: Arc<rustls::ClientConfig>,
    timeout: Duration,
}

impl std::fmt::Debug for GrpcAgents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcAgents")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl GrpcAgents {
    /// Fails when an agent of the current inventory has an address no
    /// channel can be made for.
    pub fn new(
        discovery: Arc<dyn Discovery>,
        config: Arc<rustls::ClientConfig>,
        timeout: Duration,
    ) -> Result<Self, tls::TlsError> {
        let mut clients = HashMap::new();
        for a in &discovery.inventory().agents {
            let channel = tls::channel(&a.address, a.tls_name(), Arc::clone(&config), timeout)?;
            clients.insert(a.node.clone(), (key_of(a), AgentClient::new(channel)));
        }
        Ok(Self {
            discovery,
            clients: Arc::new(RwLock::new(clients)),
            config,
            timeout,
        })
    }

    async fn client(&self, node: &str) -> Result<AgentClient<Channel>, AgentError> {
        let agent = self.discovery.inventory().get(node).cloned();
        let fail = |code, message: String| AgentError {
            node: node.to_owned(),
            code,
            message,
        };
        let Some(agent) = agent else {
            return Err(fail(
                Code::NotFound,
                "no such agent (not in the inventory)".to_owned(),
            ));
        };
        let key = key_of(&agent);
        if let Some((k, c)) = self.clients.read().await.get(node)
            && *k == key
        {
            return Ok(c.clone());
        }
        let channel = tls::channel(
            &agent.address,
            agent.tls_name(),
            Arc::clone(&self.config),
            self.timeout,
        )
        .map_err(|e| fail(Code::InvalidArgument, format!("agent address: {e}")))?;
        let client = AgentClient::new(channel);
        self.clients
            .write()
            .await
            .insert(node.to_owned(), (key, client.clone()));
        Ok(client)
    }

    /// The TLS configuration and timeout agents are called with.
    pub fn settings(&self) -> (Arc<rustls::ClientConfig>, Duration) {
        (Arc::clone(&self.config), self.timeout)
    }
}

/// A node's channel and the (address, TLS name) it was made for.
type Cached = ((String, String), AgentClient<Channel>);

fn key_of(a: &Agent) -> (String, String) {
    (a.address.clone(), a.tls_name().to_owned())
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
