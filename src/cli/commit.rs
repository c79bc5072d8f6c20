//! `vhd commit`: merge a differencing child into its parent.

use std::path::PathBuf;

use clap::Args;

use crate::Image;

use super::CmdResult;
use super::args::ParentArgs;
use super::output::{Failure, Table, human_size, print};

/// Merge the data of a differencing image into its parent.
///
/// The parent is opened for writing (exclusive lock), the child read-only;
/// every sector the child holds is written into the parent, then the
/// parent is flushed. The child is left as it was (it reads the same), so
/// an interrupted commit is completed by running it again.
#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  vhd commit child.vhd\n  vhd commit child.vhd --parent base.vhd"
)]
pub struct CommitArgs {
    /// The differencing image.
    pub child: PathBuf,
    /// How the parent of a differencing image is found.
    #[command(flatten)]
    pub parent: ParentArgs,
}

/// Runs `vhd commit`.
pub fn run(args: &CommitArgs) -> CmdResult {
    let path = &args.child;
    // Find the parent first, to name it (the child is closed again before
    // the commit opens the parent for writing).
    let parent_name = {
        let child = args.parent.open(path, false)?;
        child.parent().map(|p| p.name().to_string())
    };
    let Some(parent_name) = parent_name else {
        return Err(Failure::new(
            path,
            "is not a differencing image; there is nothing to commit",
        ));
    };
    let stats =
        Image::commit(path, args.parent.open_options()).map_err(|e| Failure::image(path, &e))?;
    let mut t = Table::new();
    t.row("committed", path.display().to_string())
        .row("into", parent_name)
        .row("bytes", human_size(stats.bytes))
        .row("blocks", stats.blocks.to_string());
    print(&t.render(""))?;
    Ok(0)
}
