//! `vhd resize`: renders `crate::ops::resize`.

use std::path::PathBuf;

use clap::Args;
use serde_json::json;

use crate::SizeRule;
use crate::ops::ResizeOptions;

use super::CmdResult;
use super::args::{Output, parse_size};
use super::create::SizeRuleArg;
use super::output::{Failure, Table, human_size, print, print_json};

/// Change the size of a fixed or dynamic image.
///
/// A dynamic image grows its BAT in place, moving its first blocks after
/// the last one when the table needs their room; a fixed image grows its
/// data and moves its footer. Shrinking needs --shrink and is refused when
/// data would be lost (an allocated block past the new end, or data that
/// is not zeros in a fixed image; vhd compact releases zero blocks). The
/// new size follows the image's size rule: an image whose geometry
/// describes its size exactly (Virtual PC, QEMU) is rounded up to a CHS
/// size, others take SIZE as given; --size-rule overrides. `original_size`
/// stays; the geometry is recomputed. A differencing image has its
/// parent's size and is refused. A crash at any moment leaves the old size
/// or the new one, and loses nothing.
#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  vhd resize disk.vhd 40G\n  vhd resize disk.vhd 10G --shrink\n  vhd resize azure.vhd 31G"
)]
pub struct ResizeArgs {
    /// The image (opened for writing).
    pub image: PathBuf,
    /// The new guest size: bytes, or with a K, M, G or T suffix.
    #[arg(value_parser = parse_size)]
    pub size: u64,
    /// Allow a smaller size (refused anyway if data would be lost).
    #[arg(long)]
    pub shrink: bool,
    /// How SIZE becomes the current size (default: the image's own rule).
    #[arg(long, value_enum)]
    pub size_rule: Option<SizeRuleArg>,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t)]
    pub output: Output,
}

fn geometry(g: [u32; 3]) -> String {
    format!("{}/{}/{}", g[0], g[1], g[2])
}

/// Runs `vhd resize`.
pub fn run(args: &ResizeArgs) -> CmdResult {
    let path = &args.image;
    let mut options = ResizeOptions::new(args.size).shrink(args.shrink);
    if let Some(rule) = args.size_rule {
        options = options.size_rule(match rule {
            SizeRuleArg::Exact => SizeRule::Exact,
            SizeRuleArg::Chs => SizeRule::Chs,
        });
    }
    let r = crate::ops::resize(path, crate::OpenOptions::new(), &options)
        .map_err(|e| Failure::image(path, &e))?;
    match args.output {
        Output::Json => print_json(&json!({
            "schema_version": 1,
            "path": r.path,
            "type": r.disk_type.name(),
            "requested": r.requested,
            "old_size": r.old_size,
            "new_size": r.new_size,
            "size_rule": r.size_rule,
            "size_rule_inferred": r.size_rule_inferred,
            "old_geometry": r.old_geometry,
            "new_geometry": r.new_geometry,
            "file_size_before": r.file_size_before,
            "file_size_after": r.file_size_after,
            "table_grown": r.table_grown.map(|(a, b)| json!({"from": a, "to": b})),
            "blocks_moved": r.blocks_moved,
            "entries_released": r.entries_released,
        }))?,
        Output::Human => {
            let mut t = Table::new();
            t.row("resized", path.display().to_string())
                .row("type", r.disk_type.name())
                .row(
                    "size",
                    format!("{} -> {}", human_size(r.old_size), human_size(r.new_size)),
                )
                .row(
                    "size rule",
                    format!(
                        "{}{}",
                        r.size_rule,
                        if r.size_rule_inferred {
                            " (the image's own)"
                        } else {
                            ""
                        }
                    ),
                )
                .row(
                    "geometry",
                    format!(
                        "{} -> {}",
                        geometry(r.old_geometry),
                        geometry(r.new_geometry)
                    ),
                )
                .row(
                    "file size",
                    format!(
                        "{} -> {}",
                        human_size(r.file_size_before),
                        human_size(r.file_size_after)
                    ),
                );
            if let Some((from, to)) = r.table_grown {
                t.row("BAT entries", format!("{from} -> {to}"));
            }
            if r.blocks_moved > 0 {
                t.row("blocks moved", r.blocks_moved.to_string());
            }
            if r.entries_released > 0 {
                t.row("stale entries released", r.entries_released.to_string());
            }
            print(&t.render(""))?;
        }
    }
    Ok(0)
}
