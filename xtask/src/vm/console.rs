//! What init prints on the serial console for xtask: the marker every such
//! line starts with, and the words around a benchmark's result.

/// Prefix of every line init prints for xtask.
pub const MARKER: &str = "FAULTD-VM:";

/// Marker words around a benchmark's JSON result on the console.
pub const RESULT_BEGIN: &str = "result-begin";
pub const RESULT_END: &str = "result-end";
