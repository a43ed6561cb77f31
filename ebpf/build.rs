//! Rebuild the kernel programs when bpf-linker changes: cargo does not track
//! the linker as an input, and a linker built against another LLVM produces
//! objects the new rustc cannot link ("Invalid record").
fn main() {
    match which::which("bpf-linker") {
        Ok(path) => println!("cargo::rerun-if-changed={}", path.display()),
        Err(err) => println!("cargo::warning=bpf-linker not found on PATH: {err}"),
    }
}
