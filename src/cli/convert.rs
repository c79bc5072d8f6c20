//! `vhd convert`: any VHD (chain resolved) or raw file to a raw file or a
//! fixed or dynamic VHD, sparse-aware.
//!
//! The copy goes in chunks of 2 MiB (or one output block, if larger),
//! aligned to the output's blocks. A chunk the input's map says holds no
//! data is not read; of what is read, only the 64 KiB pieces that are not
//! all zeros are written. So unallocated input stays unallocated in a
//! dynamic output, and raw and fixed outputs (made with `set_len`, sparse
//! files where the system allows) get holes where the disk reads zeros.
//!
//! The output has no name while it is written (`O_TMPFILE` on Linux; a
//! hidden temporary name elsewhere) and is linked in as OUT only when
//! complete and synced: an interrupted, failed or killed convert leaves no
//! half-written OUT and no temporary file, and with --force the old OUT
//! survives a failure and is replaced in one step.

use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};

use crate::format::SECTOR_SIZE;
use crate::storage::{FileStorage, OpenError, PendingFile, Storage};
use crate::{CreateOptions, DiskType, Image};

use super::CmdResult;
use super::args::{ParentArgs, parse_block_size};
use super::input::{Disk, Format, is_zero};
use super::output::{Failure, Table, human_size, print, progress, warn};

/// Bytes read per step (at least; a larger output block is one step).
const CHUNK: u64 = 2 * 1024 * 1024;
/// The unit in which zeros are skipped when writing.
const PIECE: usize = 64 * 1024;

/// Convert a disk image: any VHD (fixed, dynamic, or differencing with its
/// parents) or a raw file, to a raw file or a fixed or dynamic VHD.
///
/// With --from auto (the default) a file with a valid VHD footer (at its
/// end, or the copy at offset 0) is a VHD, anything else raw. A raw input
/// whose length is not a multiple of 512 is padded with zeros in a VHD
/// output. Ranges that read as zeros are not written, so the output is as
/// sparse as the input allows. OUT must not exist unless --force is given.
#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  vhd convert disk.img disk.vhd\n  vhd convert disk.vhd disk.img --to raw\n  vhd convert child.vhd flat.vhd --to fixed"
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
    Raw(FileStorage),
    Vhd(Box<Image>),
}

impl Sink {
    fn write_at(&mut self, path: &Path, offset: u64, data: &[u8]) -> Result<(), Failure> {
        match self {
            Sink::Raw(s) => s
                .write_all_at(data, offset)
                .map_err(|e| Failure::io(path, &format!("writing at offset {offset}"), &e)),
            Sink::Vhd(img) => img
                .write_at(offset, data)
                .map_err(|e| Failure::image(path, &e)),
        }
    }

    fn finish(self, path: &Path) -> Result<(), Failure> {
        match self {
            Sink::Raw(mut s) => s.sync().map_err(|e| Failure::io(path, "syncing", &e)),
            Sink::Vhd(img) => img.close().map_err(|e| Failure::image(path, &e)),
        }
    }
}

/// Runs `vhd convert`.
pub fn run(args: &ConvertArgs) -> CmdResult {
    let (input, output) = (&args.input, &args.output);
    if args.block_size.is_some() && args.to != Target::Dynamic {
        return Err(Failure::new(
            output,
            "--block-size is only for a dynamic output",
        ));
    }
    let mut disk = Disk::open(input, args.from, args.parent.open_options())?;
    let size = disk.size();
    if size == 0 && args.to != Target::Raw {
        return Err(Failure::new(
            input,
            "is a disk of 0 bytes; a VHD holds at least one sector (--to raw makes an empty file)",
        ));
    }
    check_output(output, input, &disk, args.force)?;
    let out_size = match args.to {
        Target::Raw => size,
        Target::Fixed | Target::Dynamic => size.div_ceil(SECTOR_SIZE) * SECTOR_SIZE,
    };
    let (pending, storage) =
        PendingFile::create(output).map_err(|e| Failure::io(output, "creating the output", &e))?;
    let mut sink = create_sink(storage, output, args, out_size)?;
    let result = copy(&mut disk, input, &mut sink, output, size, out_size);
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
        pending
            .persist(args.force)
            .map_err(|e| Failure::io(output, "giving the finished output its name", &e))?;
        Ok((written, blocks, out_kind))
    });
    match result {
        Ok((written, blocks, out_kind)) => {
            if out_size != size {
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

/// Makes the output in `storage` (a new, empty file); messages name `output`.
fn create_sink(
    mut storage: FileStorage,
    output: &Path,
    args: &ConvertArgs,
    size: u64,
) -> Result<Sink, Failure> {
    let name = output.display().to_string();
    let image = |options: CreateOptions, storage: FileStorage| {
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
            Ok(Sink::Raw(storage))
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

/// Copies the disk; returns the bytes written.
fn copy(
    disk: &mut Disk,
    input: &Path,
    sink: &mut Sink,
    output: &Path,
    size: u64,
    out_size: u64,
) -> Result<u64, Failure> {
    let chunk = match sink {
        Sink::Vhd(img) => img
            .block_size()
            .map_or(CHUNK, |bs| CHUNK.max(u64::from(bs))),
        Sink::Raw(_) => CHUNK,
    };
    let bar = progress(out_size, "converting");
    let mut buf = vec![0u8; usize::try_from(chunk).unwrap_or(usize::MAX)];
    let mut written = 0u64;
    let mut offset = 0u64;
    while offset < out_size {
        // Jump over stretches with no data, staying chunk-aligned.
        let next = disk
            .next_data(input, offset)?
            .map_or(out_size, |d| d - d % chunk);
        if next > offset {
            let skip = next.min(out_size) - offset;
            bar.inc(skip);
            offset += skip;
            continue;
        }
        let n = chunk.min(out_size - offset) as usize;
        let readable = (size.saturating_sub(offset)).min(n as u64) as usize;
        let data = &mut buf[..n];
        let any = disk.read_sparse(input, offset, &mut data[..readable])?;
        data[readable..].fill(0);
        if any {
            written += write_nonzero(sink, output, offset, data)?;
        }
        offset += n as u64;
        bar.inc(n as u64);
    }
    bar.finish_and_clear();
    Ok(written)
}

/// Writes the pieces of `data` that are not all zeros, joining neighbours
/// into one write; returns the bytes written.
fn write_nonzero(sink: &mut Sink, output: &Path, offset: u64, data: &[u8]) -> Result<u64, Failure> {
    let mut written = 0u64;
    let mut run: Option<usize> = None;
    let mut pos = 0usize;
    while pos <= data.len() {
        let end = (pos + PIECE).min(data.len());
        let nonzero = pos < data.len() && !is_zero(&data[pos..end]);
        match (nonzero, run) {
            (true, None) => run = Some(pos),
            (false, Some(start)) => {
                sink.write_at(output, offset + start as u64, &data[start..pos])?;
                written += (pos - start) as u64;
                run = None;
            }
            _ => {}
        }
        if pos == data.len() {
            break;
        }
        pos = end;
    }
    Ok(written)
}
