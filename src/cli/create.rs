//! `vhd create`: a new fixed, dynamic or differencing image.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use crate::{CreateOptions, DiskType, SizeRule};

use super::CmdResult;
use super::args::{parse_block_size, parse_size};
use super::output::{Failure, Table, human_size, print};

/// Create a new image. Refuses to overwrite an existing file.
///
/// With --parent the new image is a differencing child of PARENT and takes
/// its size from it (SIZE may be left out). Otherwise SIZE is the guest
/// size: with --size-rule exact (the default) it is the current size as
/// given (a multiple of 512) and the geometry is the spec's for it; with
/// --size-rule chs it is rounded up to a size a geometry describes exactly,
/// as `qemu-img create -f vpc` does.
#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  vhd create disk.vhd 10G\n  vhd create disk.vhd 512M --type fixed\n  vhd create azure.vhd 30000000000 --type fixed --align 1M\n  vhd create child.vhd --parent disk.vhd"
)]
pub struct CreateArgs {
    /// The image to create (must not exist).
    pub image: PathBuf,
    /// Guest size: bytes, or with a K, M, G or T suffix (powers of 1024).
    #[arg(value_parser = parse_size, required_unless_present = "parent")]
    pub size: Option<u64>,
    /// Image type (differencing with --parent).
    #[arg(long = "type", short = 't', value_enum, value_name = "TYPE")]
    pub disk_type: Option<CreateType>,
    /// Block size of a dynamic or differencing image: a power of two from
    /// 512K to 256M (default 2M).
    #[arg(long, value_parser = parse_block_size)]
    pub block_size: Option<u32>,
    /// How SIZE becomes the current size.
    #[arg(long, value_enum, default_value_t)]
    pub size_rule: SizeRuleArg,
    /// Make a differencing child of this image.
    #[arg(long, value_name = "PARENT")]
    pub parent: Option<PathBuf>,
    /// Round the size of a fixed image up to a multiple of this (a power of
    /// two; 1M makes what Azure takes).
    #[arg(long, value_parser = parse_size, value_name = "N")]
    pub align: Option<u64>,
}

/// Types `create` makes from a size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CreateType {
    /// Blocks allocated as they are written.
    Dynamic,
    /// All space allocated up front (a sparse file where the system allows).
    Fixed,
}

/// The `--size-rule` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum SizeRuleArg {
    /// Current size = SIZE.
    #[default]
    Exact,
    /// Round up to a whole CHS geometry.
    Chs,
}

/// Runs `vhd create`.
pub fn run(args: &CreateArgs) -> CmdResult {
    let path = &args.image;
    let options = match (&args.parent, args.size) {
        (Some(parent), size) => {
            if args.disk_type.is_some() {
                return Err(Failure::new(
                    path,
                    "--type does not go with --parent: a child of a parent is always differencing",
                ));
            }
            if args.size_rule != SizeRuleArg::Exact || args.align.is_some() {
                return Err(Failure::new(
                    path,
                    "--size-rule and --align do not go with --parent: the size comes from the parent",
                ));
            }
            let options = CreateOptions::differencing(parent.clone());
            if let Some(size) = size {
                let parent_size = crate::Image::open(parent)
                    .map_err(|e| Failure::image(parent, &e))?
                    .size();
                if size != parent_size {
                    return Err(Failure::new(
                        path,
                        format!(
                            "a differencing image has the size of its parent ({parent_size} bytes), not {size}; leave SIZE out"
                        ),
                    ));
                }
            }
            options
        }
        (None, Some(size)) => {
            let disk_type = match args.disk_type.unwrap_or(CreateType::Dynamic) {
                CreateType::Dynamic => DiskType::Dynamic,
                CreateType::Fixed => DiskType::Fixed,
            };
            if disk_type == DiskType::Fixed && args.block_size.is_some() {
                return Err(Failure::new(
                    path,
                    "--block-size is only for dynamic and differencing images",
                ));
            }
            let size = match args.align {
                None => size,
                Some(_) if disk_type != DiskType::Fixed => {
                    return Err(Failure::new(path, "--align is only for fixed images"));
                }
                Some(_) if args.size_rule == SizeRuleArg::Chs => {
                    return Err(Failure::new(
                        path,
                        "--align does not go with --size-rule chs (a CHS size is not aligned)",
                    ));
                }
                Some(align) => {
                    crate::ops::aligned_size(size, align).map_err(|e| Failure::image(path, &e))?
                }
            };
            CreateOptions::new(disk_type, size).size_rule(match args.size_rule {
                SizeRuleArg::Exact => SizeRule::Exact,
                SizeRuleArg::Chs => SizeRule::Chs,
            })
        }
        (None, None) => {
            return Err(Failure::new(
                path,
                "give a SIZE, or --parent for a differencing image",
            ));
        }
    };
    let options = match args.block_size {
        Some(bs) => options.block_size(bs),
        None => options,
    };
    if path.symlink_metadata().is_ok() {
        return Err(Failure::new(
            path,
            "already exists; refusing to overwrite it",
        ));
    }
    let img = options.create(path).map_err(|e| Failure::image(path, &e))?;
    let mut t = Table::new();
    t.row("created", path.display().to_string())
        .row("type", img.disk_type().name())
        .row("size", human_size(img.size()));
    if let Some(bs) = img.block_size() {
        t.row("block size", human_size(u64::from(bs)));
    }
    if let Some(p) = img.parent() {
        t.row("parent", p.name());
    }
    t.row("unique id", img.footer().unique_id.to_string());
    img.close().map_err(|e| Failure::image(path, &e))?;
    print(&t.render(""))?;
    Ok(0)
}
