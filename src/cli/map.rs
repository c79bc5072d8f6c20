//! `vhd map`: the extents of a disk, which image of the chain holds each
//! and where in its file.

use std::path::PathBuf;

use clap::Args;
use serde_json::json;

use super::CmdResult;
use super::args::{Output, ParentArgs};
use super::output::{Failure, columns, print, print_json, short_size};

/// List the extents of a disk: runs of guest bytes that hold data (with the
/// image of the chain that holds them and the offset in its file) or read
/// as zeros (unallocated).
#[derive(Debug, Args)]
#[command(after_help = "Example:\n  vhd map disk.vhd\n  vhd map child.vhd --output json")]
pub struct MapArgs {
    /// The image.
    pub image: PathBuf,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t)]
    pub output: Output,
    /// How the parent of a differencing image is found.
    #[command(flatten)]
    pub parent: ParentArgs,
}

/// Runs `vhd map`.
pub fn run(args: &MapArgs) -> CmdResult {
    let path = &args.image;
    let mut img = args.parent.open(path, false)?;
    let extents = img.map().map_err(|e| Failure::image(path, &e))?;
    let names: Vec<String> = img.chain().iter().map(|i| i.name().to_string()).collect();
    let name_of = |depth: Option<usize>| depth.and_then(|d| names.get(d)).cloned();
    match args.output {
        Output::Json => print_json(&json!({
            "schema_version": 1,
            "path": img.name(),
            "size": img.size(),
            "chain": names.iter().enumerate().map(|(d, n)| json!({ "depth": d, "path": n })).collect::<Vec<_>>(),
            "extents": extents.iter().map(|e| json!({
                "offset": e.offset,
                "length": e.length,
                "data": e.data,
                "depth": e.depth,
                "path": name_of(e.depth),
                "file_offset": e.file_offset,
            })).collect::<Vec<_>>(),
        }))?,
        Output::Human => {
            let mut rows = vec![
                [
                    "offset",
                    "length",
                    "",
                    "kind",
                    "depth",
                    "file offset",
                    "file",
                ]
                .map(str::to_string)
                .to_vec(),
            ];
            for e in &extents {
                rows.push(vec![
                    e.offset.to_string(),
                    e.length.to_string(),
                    format!("({})", short_size(e.length)),
                    if e.data { "data" } else { "zero" }.to_string(),
                    e.depth.map_or_else(|| "-".to_string(), |d| d.to_string()),
                    e.file_offset
                        .map_or_else(|| "-".to_string(), |o| o.to_string()),
                    name_of(e.depth).unwrap_or_else(|| "-".to_string()),
                ]);
            }
            print(&columns(&rows, ""))?;
        }
    }
    Ok(0)
}
