//! faultd's coordinator: runs chaos experiments across many agents over
//! mutual TLS, within a blast-radius policy, holding every fault under a
//! lease it renews, and recording everything in a crash-safe store.
//!
//! Layers, outermost first: `service` (gRPC, authorization, audit) ->
//! `engine` (experiment lifecycle) -> `policy`, `select`, `partition`,
//! `addresses` (pure checks, selection and plans), `report` (an experiment's SLIs
//! before, during and after), `conditions` (stop conditions over
//! the Prometheus API), `agents`
//! (calls to agents, behind a trait), `telemetry` (its own Prometheus
//! metrics), `kubernetes` (discovery through the
//! Kubernetes API), `store` (SQLite) -> `experiment`, `inventory` (the
//! static inventory and the `Discovery` trait), `config` (domain and files).

pub mod addresses;
pub mod agents;
pub mod conditions;
pub mod config;
pub mod engine;
pub mod experiment;
pub mod inventory;
pub mod kubernetes;
pub mod partition;
pub mod policy;
pub mod report;
pub mod select;
pub mod service;
pub mod store;
pub mod telemetry;
