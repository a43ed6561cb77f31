//! The VM tier of `cargo xtask test`: the integration suite on real
//! distribution kernels, booted in qemu.
//!
//! For each kernel of the pinned [`kernel::MATRIX`]:
//!
//! 1. fetch the Debian package with `apt-get download` and unpack it into
//!    `$FAULTD_CACHE/vm` (default `~/.cache/faultd/vm`), once;
//! 2. build an initramfs in Rust ([`initramfs`], [`cpio`]) holding busybox,
//!    the agent, the test executables of [`suite::VM_TESTS`], bpftool, tc, ip,
//!    their shared libraries and the kernel's modules;
//! 3. boot it ([`qemu`]): TCG emulation, or KVM where a probe boot showed it
//!    works; init runs each executable between `FAULTD-VM: begin/end`
//!    markers on the serial console and powers off;
//! 4. read the console into a [`results::Column`] of the summary table.
//!
//! Console logs and the summary land in `target/vm-logs/`, the initramfs
//! images in `target/vm/`. [`bench`](mod@bench) boots the same kernels to
//! run a benchmark instead of the tests.
//!
//! Knobs (environment):
//! - `FAULTD_VM_KERNELS`: comma-separated names, e.g. `debian-6.12` or `6.12`;
//! - `FAULTD_VM_TIMEOUT`: seconds per VM, default 900: the whole suite
//!   takes about 7 minutes per kernel under emulation, and even two hung
//!   kernels (30 minutes) leave the 90-minute CI budget room for set-up and
//!   the host tiers;
//! - `FAULTD_VM_TEST_TIMEOUT`: seconds per executable inside the VM, default
//!   360 (the slowest, latency on 6.12, takes ~170 s under emulation);
//! - `FAULTD_VM_ACCEL`: `kvm` or `tcg`, skipping the KVM probe;
//! - `FAULTD_VM_QUIET=1`: do not echo the consoles;
//! - `FAULTD_VM_ONLY=NAME[:FILTER]`: run only the test executable NAME of
//!   [`suite::VM_TESTS`], and within it only the tests whose names contain FILTER
//!   (libtest's filter), to iterate on one test without the whole suite.

pub mod bench;
mod boot;
mod console;
mod cpio;
mod host;
mod initramfs;
mod kernel;
mod matrix;
mod qemu;
pub mod results;
mod suite;

pub use boot::{fetch_kernels, log_dir};
pub use host::run as run_host;
pub use matrix::{report, run_matrix};
pub use qemu::version as qemu_version;
pub use suite::integration_tests;
