//! The `vhd` command line: argument parsing (clap derive) and output only;
//! every decision about the format is the library's.
//!
//! # Exit status
//!
//! * 0: done (for `compare`: the images are equal; for `check`: clean);
//! * 1: an error, said on stderr in one line, `vhd: <file>: <what> (RULE-ID)`
//!   (for `compare`: the images differ; for `check`: it could not check);
//! * 2: clap rejected the arguments (usage error), or `compare` failed, or
//!   `check` found errors;
//! * 3: `check` found only warnings.
//!
//! `conform` exits 0 when every case passed, 2 when some did not, 1 when
//! nothing could be run.
//!
//! Status 101 (a panic) is always a bug.

mod args;
mod bench;
mod check;
mod commit;
mod compact;
mod compare;
mod conform;
mod convert;
mod create;
pub mod info;
mod input;
mod map;
#[cfg(target_os = "linux")]
mod mount;
mod output;
mod rebase;
mod repair;
mod resize;
mod rw;
mod serve;

use std::ffi::OsString;

use clap::{Parser, Subcommand};

use output::Failure;

/// Tool for Microsoft VHD 1.0 disk images (fixed, dynamic, differencing).
#[derive(Debug, Parser)]
#[command(
    name = "vhd",
    version,
    about = "Inspect, check, create, convert, read, write, repair, resize, compact and rebase VHD disk images",
    long_about = "Inspect, check, create, convert, read, write, repair, resize, compact and rebase \
                  Microsoft VHD 1.0 disk images \
                  (fixed, dynamic and differencing).\n\n\
                  Sizes and offsets take plain bytes or a K, M, G or T suffix (powers of 1024, \
                  case-insensitive; KiB, MiB, ... also work). Errors go to stderr as one line: \
                  `vhd: <file>: <what is wrong> (RULE-ID)`.\n\n\
                  Exit status: 0 ok, 1 error, 2 usage error; `check` and `compare` have their own \
                  (see their --help).",
    after_help = "Example:\n  vhd create disk.vhd 10G\n  vhd info disk.vhd\n  vhd convert disk.img disk.vhd --to dynamic"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Info(info::InfoArgs),
    Check(check::CheckArgs),
    Create(create::CreateArgs),
    Convert(convert::ConvertArgs),
    Read(rw::ReadArgs),
    Write(rw::WriteArgs),
    Map(map::MapArgs),
    Compare(compare::CompareArgs),
    Commit(commit::CommitArgs),
    Repair(repair::RepairArgs),
    Resize(resize::ResizeArgs),
    Compact(compact::CompactArgs),
    Rebase(rebase::RebaseArgs),
    Bench(bench::BenchArgs),
    Serve(serve::ServeArgs),
    #[cfg(target_os = "linux")]
    Mount(mount::MountArgs),
    Conform(conform::ConformArgs),
}

/// Runs the tool with the process arguments; returns the exit status.
pub fn main() -> i32 {
    run(std::env::args_os())
}

/// Runs the tool with `args` (the first is the program name); returns the
/// exit status. Output goes to the process's stdout and stderr.
pub fn run<I, T>(args: I) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version come here too, with status 0.
            let _ = e.print();
            return e.exit_code();
        }
    };
    let result = match cli.command {
        Command::Info(a) => info::run(&a),
        Command::Check(a) => check::run(&a),
        Command::Create(a) => create::run(&a),
        Command::Convert(a) => convert::run(&a),
        Command::Read(a) => rw::read(&a),
        Command::Write(a) => rw::write(&a),
        Command::Map(a) => map::run(&a),
        Command::Compare(a) => compare::run(&a),
        Command::Commit(a) => commit::run(&a),
        Command::Repair(a) => repair::run(&a),
        Command::Resize(a) => resize::run(&a),
        Command::Compact(a) => compact::run(&a),
        Command::Rebase(a) => rebase::run(&a),
        Command::Bench(a) => bench::run(&a),
        Command::Serve(a) => serve::run(&a),
        #[cfg(target_os = "linux")]
        Command::Mount(a) => mount::run(&a),
        Command::Conform(a) => conform::run(&a),
    };
    match result {
        Ok(code) => code,
        Err(failure) => output::report(&failure),
    }
}

/// What a command returns: its exit status, or the failure to report.
type CmdResult = Result<i32, Failure>;
