//! faultctl: the command-line client of the faultd node agent.
//!
//! The binary is a thin shell over this library: [`cli`] holds the clap
//! definitions and the flag -> request mapping, [`parse`] the value parsers,
//! [`client`] the Unix-socket connection and the status -> exit-code mapping,
//! and [`output`] the table and JSON renderings.

pub mod cli;
pub mod client;
pub mod output;
pub mod parse;

pub use client::{ConnectError, connect};
