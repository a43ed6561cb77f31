//! The coordinator's TOML files: its config, the policy (reloaded at run
//! time by ReloadPolicy, so a bad edit must be refused, not crash the
//! coordinator) and the static inventory. The first byte picks the file.
#![no_main]

use std::path::Path;

use faultd_coordinator::{config::Config, inventory::Inventory, policy::Policy};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    match which % 3 {
        0 => drop(Config::parse(text, Path::new("coordinator.toml"))),
        1 => drop(Policy::parse(text, Path::new("policy.toml"))),
        _ => drop(Inventory::parse(text, Path::new("inventory.toml"))),
    }
});
