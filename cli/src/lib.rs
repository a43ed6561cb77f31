//! faultctl: the command-line client of the faultd node agent.
//!
//! The binary is a thin shell over this library: [`args`] holds the clap
//! definitions and the flag -> request mapping, [`parse`] the value parsers,
//! [`client`] the connections (the agent's Unix socket, the coordinator over
//! mutual TLS) and the status -> exit-code mapping, and [`output`] the table
//! and JSON renderings.

pub mod args;
pub mod client;
pub mod output;
pub mod parse;

pub use client::{ConnectError, connect};
