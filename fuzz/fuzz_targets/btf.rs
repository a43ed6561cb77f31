//! The kernel's BTF (/sys/kernel/btf/vmlinux) as the agent reads it for the
//! path-prefix filter's struct offsets: the blob is the kernel's, but a
//! parser running as root must not trust a length in it.
#![no_main]

use faultd_agent::datapath::btf::Structs;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(structs) = Structs::parse(data) {
        let _ = structs.file_offsets();
    }
});
