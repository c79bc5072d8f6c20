//! `vhd convert`: any VHD (chain resolved) or raw file to a raw file or a
//! fixed or dynamic VHD, sparse-aware.
//!
//! The copy is the library's (`crate::convert::copy`): stretches without
//! data skipped, only pieces that are not all zeros written. So
//! unallocated input stays unallocated in a dynamic output, and raw and
//! fixed outputs (made with `set_len`, sparse files where the system
//! allows) get holes where the disk reads zeros.
//!
//! Durable raw and fixed outputs on a file system that takes direct
//! writes are written by two threads that each read and write their own
//! 1 MiB chunks (`convert::Mode::Parallel`); every other output is
//! written in order by one thread while another reads ahead
//! (`convert::Mode::Overlapped`), through a few 2 MiB buffers (the
//! choice is `convert::Mode::Auto`'s).
//!
//! The output has no name while it is written (`O_TMPFILE` on Linux; a
//! hidden temporary name elsewhere) and is linked in as OUT only when
//! complete and synced: an interrupted, failed or killed convert leaves no
//! half-written OUT and no temporary file, and with --force the old OUT
//! survives a failure and is replaced in one step. With `-t unsafe` the
//! syncs are skipped (see `Cache`).

use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};

use crate::convert::{self, Durability, OutputFile, RawSink, Side};
use crate::format::SECTOR_SIZE;
use crate::storage::{FileStorage, OpenError, PendingFile, Storage};
use crate::{CreateOptions, DiskType, Image};

use super::CmdResult;
use super::args::{ParentArgs, parse_block_size};
use super::input::{Disk, Format};
use super::output::{Failure, Table, human_size, print, progress, warn};

/// Convert a disk image: any VHD (fixed, dynamic, or differencing with its
/// parents) or a raw file, to a raw file or a fixed or dynamic VHD.
///
/// With --from auto (the default) a file with a valid VHD footer (at its
/// end, or the copy at offset 0) is a VHD, anything else raw. A raw input
/// whose length is not a multiple of 512 is padded with zeros in a VHD
/// output. Ranges that read as zeros are not written, so the output is as
/// sparse as the input allows. OUT must not exist unless --force is given.
///
/// The output is durable when vhd exits (its data, its metadata and its
/// name are synced to the disk), unless `-t unsafe` is given.
#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  vhd convert disk.img disk.vhd\n  vhd convert disk.vhd disk.img --to raw\n  vhd convert child.vhd flat.vhd --to fixed\n  vhd convert disk.vhd upload.vhd --to fixed --align 1M"
)]
pub struct ConvertArgs {
    /// The input: a VHD or a raw file.
    pub input: PathBuf,
    /// The output file.
    pub output: PathBuf,
    /// What the input is.
    #[arg(long, value_enum, default_value_t)]
    pub from: Format,
    /// What to write.
    #[arg(long, value_enum, default_value_t)]
    pub to: Target,
    /// Block size of a dynamic output: a power of two from 512K to 256M
    /// (default 2M).
    #[arg(long, value_parser = parse_block_size)]
    pub block_size: Option<u32>,
    /// How the parent of a differencing image is found.
    #[command(flatten)]
    pub parent: ParentArgs,
    /// Overwrite OUT if it exists (never the input or one of its parents).
    #[arg(long, short)]
    pub force: bool,
    /// Round the size of a fixed output up to a multiple of this (a power
    /// of two; 1M makes what Azure takes); the added space reads as zeros.
    #[arg(long, value_parser = super::args::parse_size, value_name = "N")]
    pub align: Option<u64>,
    /// Cache mode of the output, as in `qemu-img convert -t`: writeback
    /// (the default) makes the output durable before vhd exits; unsafe
    /// skips every sync, for scratch outputs.
    #[arg(short = 't', long, value_enum, default_value_t)]
    pub cache: Cache,
    /// Print nothing but errors: no progress bar, no summary, no note
    /// about padding. The exit status says whether it worked.
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

/// How durable the output of `convert` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum Cache {
    /// Synced: when vhd exits, the data, the image's metadata and the
    /// output's name are on the disk. Writing to the disk starts while
    /// the copy runs, so the final sync is short; the data of every
    /// output (raw, fixed, and the blocks of a dynamic one) goes straight
    /// to the disk (`O_DIRECT`, where the file system takes it), not
    /// through the page cache.
    #[default]
    Writeback,
    /// Never synced: faster where syncing costs (a real disk), but a
    /// crash of the system soon after can lose the output or leave it
    /// incomplete under its name. For scratch outputs only.
    Unsafe,
}

/// Output formats of `convert`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum Target {
    /// The guest bytes as a plain (sparse) file.
    Raw,
    /// A fixed VHD.
    Fixed,
    /// A dynamic VHD.
    #[default]
    Dynamic,
}

/// Where converted bytes go.
enum Sink {
    Raw(RawSink),
    Vhd(Box<Image>),
}

impl Sink {
    fn as_sink(&mut self) -> &mut dyn convert::Sink {
        match self {
            Sink::Raw(s) => s,
            Sink::Vhd(img) => &mut **img,
        }
    }

    fn finish(self, path: &Path) -> Result<(), Failure> {
        match self {
            Sink::Raw(s) => s.finish().map(drop).map_err(|e| Failure::image(path, &e)),
            Sink::Vhd(img) => img.close().map_err(|e| Failure::image(path, &e)),
        }
    }
}

/// Bytes of bitmaps the input keeps in memory (one 2 MiB block's bitmap
/// is 512 bytes).
const SOURCE_BITMAP_CACHE: u64 = 1024 * 1024;

/// Runs `vhd convert`.
pub fn run(args: &ConvertArgs) -> CmdResult {
    let (input, output) = (&args.input, &args.output);
    if args.block_size.is_some() && args.to != Target::Dynamic {
        return Err(Failure::new(
            output,
            "--block-size is only for a dynamic output",
        ));
    }
    // A copy reads each block once, in order: a small bitmap cache is
    // enough and keeps memory bounded whatever the image.
    let options = args
        .parent
        .open_options()
        .bitmap_cache_bytes(SOURCE_BITMAP_CACHE);
    let mut disk = Disk::open(input, args.from, options)?;
    let size = disk.size();
    if size == 0 && args.to != Target::Raw {
        return Err(Failure::new(
            input,
            "is a disk of 0 bytes; a VHD holds at least one sector (--to raw makes an empty file)",
        ));
    }
    check_output(output, input, &disk, args.force)?;
    let out_size = match (args.to, args.align) {
        (Target::Raw, None) => size,
        (Target::Fixed, Some(align)) => {
            crate::ops::aligned_size(size, align).map_err(|e| Failure::image(output, &e))?
        }
        (_, Some(_)) => {
            return Err(Failure::new(output, "--align is only for a fixed output"));
        }
        (Target::Fixed | Target::Dynamic, None) => size.div_ceil(SECTOR_SIZE) * SECTOR_SIZE,
    };
    let (pending, storage) =
        PendingFile::create(output).map_err(|e| Failure::io(output, "creating the output", &e))?;
    let mut sink = create_sink(storage, output, args, out_size)?;
    let bar = if args.quiet {
        indicatif::ProgressBar::hidden()
    } else {
        progress(out_size, "converting")
    };
    let result = convert::copy(disk.source(), sink.as_sink(), out_size, &mut |n| bar.inc(n))
        .map(|stats| stats.written)
        .map_err(|e| match e.side {
            Side::Source => Failure::image(input, &e.error),
            Side::Sink => Failure::image(output, &e.error),
        });
    bar.finish_and_clear();
    let result = result.and_then(|written| {
        let blocks = match &sink {
            Sink::Vhd(img) => img.block_counts(),
            Sink::Raw(_) => None,
        };
        let out_kind = match &sink {
            Sink::Raw(_) => "raw file".to_string(),
            Sink::Vhd(img) => format!("{} VHD", img.disk_type().name()),
        };
        sink.finish(output)?;
        match args.cache {
            Cache::Writeback => pending.persist(args.force),
            Cache::Unsafe => pending.persist_unsynced(args.force),
        }
        .map_err(|e| Failure::io(output, "giving the finished output its name", &e))?;
        Ok((written, blocks, out_kind))
    });
    match result {
        Ok(_) if args.quiet => Ok(0),
        Ok((written, blocks, out_kind)) => {
            if out_size != size && args.align.is_none() {
                warn(
                    input,
                    &format!(
                        "note: the input is {size} bytes, not a multiple of 512; the VHD is padded with zeros to {out_size} bytes"
                    ),
                );
            }
            let mut t = Table::new();
            t.row("input", format!("{} ({})", input.display(), disk.kind()))
                .row("output", format!("{} ({out_kind})", output.display()))
                .row("size", human_size(out_size))
                .row("written", human_size(written));
            if let Some((total, allocated)) = blocks {
                t.row("allocated blocks", format!("{allocated} of {total}"));
            }
            print(&t.render(""))?;
            Ok(0)
        }
        // The unfinished output has no name (or its temporary name is
        // removed when `pending` is dropped).
        Err(failure) => Err(failure),
    }
}

/// Refuses an existing output unless forced; with force, refuses the
/// input itself, a file in its chain, a directory, or a file in use. The
/// old file stays until the new one replaces it.
fn check_output(output: &Path, input: &Path, disk: &Disk, force: bool) -> Result<(), Failure> {
    let Ok(meta) = output.symlink_metadata() else {
        return Ok(());
    };
    if !force {
        return Err(Failure::new(
            output,
            "already exists; use --force to overwrite it",
        ));
    }
    if meta.is_dir() {
        return Err(Failure::new(output, "is a directory"));
    }
    let canonical = output.canonicalize().ok();
    let mut inputs = disk.files();
    inputs.push(input.to_path_buf());
    if inputs
        .iter()
        .any(|p| p.canonicalize().ok() == canonical && canonical.is_some())
    {
        return Err(Failure::new(
            output,
            "is the input (or one of its parents); refusing to overwrite it",
        ));
    }
    match FileStorage::open(output, true) {
        Err(OpenError::Locked(_)) => {
            return Err(Failure::new(
                output,
                "in use: it is open elsewhere; not overwriting it",
            ));
        }
        Ok(_) | Err(OpenError::Io(_)) => {}
    }
    Ok(())
}

/// Makes the output in `file` (a new, empty file); messages name `output`.
fn create_sink(
    file: FileStorage,
    output: &Path,
    args: &ConvertArgs,
    size: u64,
) -> Result<Sink, Failure> {
    let name = output.display().to_string();
    let durability = match args.cache {
        Cache::Writeback => Durability::Durable,
        Cache::Unsafe => Durability::Unsafe,
    };
    let mut storage = OutputFile::new(file, durability);
    let image = |options: CreateOptions, storage: OutputFile| {
        options
            .create_in(Box::new(storage), name.clone(), None)
            .map(|img| Sink::Vhd(Box::new(img)))
            .map_err(|e| Failure::image(output, &e))
    };
    match args.to {
        Target::Raw => {
            storage
                .set_len(size)
                .map_err(|e| Failure::io(output, "setting the file length", &e))?;
            Ok(Sink::Raw(RawSink::new(Box::new(storage), name)))
        }
        Target::Fixed => image(CreateOptions::new(DiskType::Fixed, size), storage),
        Target::Dynamic => {
            let mut options = CreateOptions::new(DiskType::Dynamic, size);
            if let Some(bs) = args.block_size {
                options = options.block_size(bs);
            }
            image(options, storage)
        }
    }
}
