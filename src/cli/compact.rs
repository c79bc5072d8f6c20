//! `vhd compact`: renders `crate::ops::compact`.

use std::path::PathBuf;

use clap::Args;
use serde_json::json;

use super::CmdResult;
use super::args::{Output, ParentArgs};
use super::output::{Failure, Table, human_size, print, print_json};

/// Reclaim the space of a dynamic or differencing image that holds
/// nothing the guest reads.
///
/// Blocks that read as zeros are released (in a differencing image only
/// where the parent also reads zeros under them: a zero block in a child
/// hides the parent), leaked space is dropped, the last blocks move down
/// into the holes and the file is cut. Works in place; a crash at any
/// moment loses nothing (every block is copied and synced before its BAT
/// entry switches), and the guest contents never change.
#[derive(Debug, Args)]
#[command(after_help = "Example:\n  vhd compact disk.vhd\n  vhd compact child.vhd --output json")]
pub struct CompactArgs {
    /// The image (opened for writing).
    pub image: PathBuf,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t)]
    pub output: Output,
    /// How the parent of a differencing image is found.
    #[command(flatten)]
    pub parent: ParentArgs,
}

/// Runs `vhd compact`.
pub fn run(args: &CompactArgs) -> CmdResult {
    let path = &args.image;
    let r = crate::ops::compact(path, args.parent.open_options())
        .map_err(|e| Failure::image(path, &e))?;
    match args.output {
        Output::Json => print_json(&json!({
            "schema_version": 1,
            "path": r.path,
            "file_size_before": r.file_size_before,
            "file_size_after": r.file_size_after,
            "bytes_reclaimed": r.bytes_reclaimed,
            "blocks_released": r.blocks_released,
            "zero_blocks_kept": r.zero_blocks_kept,
            "entries_past_disk_released": r.entries_past_disk_released,
            "blocks_moved": r.blocks_moved,
            "leaked_bytes": r.leaked_bytes,
            "batmap_kept": r.batmap_kept,
        }))?,
        Output::Human => {
            let mut t = Table::new();
            t.row("compacted", path.display().to_string())
                .row(
                    "file size",
                    format!(
                        "{} -> {}",
                        human_size(r.file_size_before),
                        human_size(r.file_size_after)
                    ),
                )
                .row("reclaimed", human_size(r.bytes_reclaimed))
                .row("zero blocks released", r.blocks_released.to_string())
                .row("blocks moved", r.blocks_moved.to_string())
                .row("leaked space dropped", human_size(r.leaked_bytes));
            if r.zero_blocks_kept > 0 {
                t.row(
                    "zero blocks kept",
                    format!("{} (they hide the parent's data)", r.zero_blocks_kept),
                );
            }
            if r.entries_past_disk_released > 0 {
                t.row(
                    "entries past the disk released",
                    r.entries_past_disk_released.to_string(),
                );
            }
            if r.batmap_kept {
                t.row("note", "Xen's batmap is kept, so no block was released");
            }
            print(&t.render(""))?;
        }
    }
    Ok(0)
}
