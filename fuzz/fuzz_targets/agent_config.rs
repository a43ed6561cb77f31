//! The agent's TOML config file (`faultd --config`): parsing and checks.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = faultd_agent::config::Config::parse(text, Path::new("faultd.toml"));
    }
});
