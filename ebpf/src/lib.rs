//! Empty library target: agent/build.rs depends on this crate so cargo
//! rebuilds the agent when the kernel programs' sources change.
#![no_std]
