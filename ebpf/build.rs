//! Rebuild the kernel programs when bpf-linker changes: cargo does not track
//! the linker as an input, and a linker built against another LLVM produces
//! objects the new rustc cannot link ("Invalid record").
fn main() {
    // On the host the crate is an empty binary; only the BPF build links.
    if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() != Ok("bpf") {
        return;
    }
    match which::which("bpf-linker") {
        Ok(path) => println!("cargo::rerun-if-changed={}", path.display()),
        Err(err) => println!("cargo::warning=bpf-linker not found on PATH: {err}"),
    }
}
