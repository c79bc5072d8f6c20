//! The `vhd` command line (placeholder until the CLI lands).

/// Runs the tool; returns the exit status.
pub fn main() -> i32 {
    0
}
