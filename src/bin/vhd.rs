//! The `vhd` command-line tool.
fn main() {
    std::process::exit(vhdref::cli::main());
}
