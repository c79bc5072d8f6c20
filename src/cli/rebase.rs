//! `vhd rebase`: renders `crate::ops::rebase`.

use std::path::PathBuf;

use clap::Args;
use serde_json::json;

use crate::ops::RebaseMode;

use super::CmdResult;
use super::args::{Output, ParentArgs};
use super::output::{Failure, Table, human_size, print, print_json};

/// Give a differencing image another parent.
///
/// By default the child's guest contents stay the same: every sector it
/// does not hold itself, where the old chain and the new parent differ, is
/// copied into it from the old chain first (as `qemu-img rebase` does);
/// then the parent fields (unique ID, time stamp, name) and the locators
/// (W2ru relative to the child, W2ku absolute) switch. With --unsafe only
/// the fields and locators change: for a parent that was moved or copied
/// (the old parent need not exist). Both refuse a new parent of another
/// size. A crash at any moment leaves the child naming its old parent or
/// its new one, reading the same.
#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  vhd rebase child.vhd new-base.vhd\n  vhd rebase child.vhd /moved/base.vhd --unsafe"
)]
pub struct RebaseArgs {
    /// The differencing image (opened for writing).
    pub child: PathBuf,
    /// The new parent (opened read-only).
    pub new_parent: PathBuf,
    /// Only switch the parent fields and locators; copy nothing.
    #[arg(long = "unsafe")]
    pub unsafe_mode: bool,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t)]
    pub output: Output,
    /// How the current (old) parent is found, for a safe rebase.
    #[command(flatten)]
    pub parent: ParentArgs,
}

/// Runs `vhd rebase`.
pub fn run(args: &RebaseArgs) -> CmdResult {
    let path = &args.child;
    let mode = if args.unsafe_mode {
        RebaseMode::Unsafe
    } else {
        RebaseMode::Safe
    };
    let r = crate::ops::rebase(path, &args.new_parent, mode, args.parent.open_options())
        .map_err(|e| Failure::image(path, &e))?;
    match args.output {
        Output::Json => print_json(&json!({
            "schema_version": 1,
            "path": r.path,
            "mode": r.mode,
            "old_parent_name": r.old_parent_name,
            "new_parent": r.new_parent,
            "new_parent_id": r.new_parent_id,
            "bytes_copied": r.bytes_copied,
            "blocks_allocated": r.blocks_allocated,
            "blocks_moved": r.blocks_moved,
            "locators": r.locators,
        }))?,
        Output::Human => {
            let mut t = Table::new();
            t.row("rebased", path.display().to_string())
                .row(
                    "mode",
                    if args.unsafe_mode {
                        "unsafe (names only)"
                    } else {
                        "safe"
                    },
                )
                .row(
                    "old parent",
                    r.old_parent_name
                        .clone()
                        .unwrap_or_else(|| "(no name)".into()),
                )
                .row("new parent", r.new_parent.clone())
                .row("parent unique id", r.new_parent_id.to_string());
            if !args.unsafe_mode {
                t.row("copied", human_size(r.bytes_copied))
                    .row("blocks allocated", r.blocks_allocated.to_string());
            }
            if r.blocks_moved > 0 {
                t.row("blocks moved", r.blocks_moved.to_string());
            }
            for l in &r.locators {
                t.row(format!("locator {}", l.platform), l.text.clone());
            }
            print(&t.render(""))?;
        }
    }
    Ok(0)
}
