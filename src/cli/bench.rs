//! `vhd bench`: the request pattern of `qemu-img bench`, for side-by-side
//! runs: COUNT requests of SIZE bytes, each STEP bytes after the last,
//! wrapping to the start of the disk; reads by default, writes with -w.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;

use super::CmdResult;
use super::args::{ParentArgs, parse_size};
use super::output::{Failure, print};

/// Time a run of sequential requests, as `qemu-img bench` does.
///
/// Requests are issued one at a time (queue depth 1). Writes fill the
/// buffer with the pattern byte; the image is flushed every
/// --flush-interval requests (never, by default) and at the end.
#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  vhd bench disk.vhd -c 20000 -s 4K -S 1M -w\n  qemu-img bench -f vpc disk.vhd -c 20000 -s 4K -S 1M -w    # the same run in QEMU"
)]
pub struct BenchArgs {
    /// The image.
    pub image: PathBuf,
    /// Number of requests.
    #[arg(short = 'c', long, default_value_t = 75_000)]
    pub count: u64,
    /// Bytes per request.
    #[arg(short = 's', long, value_parser = parse_size, default_value = "4K")]
    pub size: u64,
    /// Bytes from the start of one request to the next (default: SIZE).
    #[arg(short = 'S', long, value_parser = parse_size)]
    pub step: Option<u64>,
    /// Offset of the first request.
    #[arg(short = 'o', long, value_parser = parse_size, default_value = "0")]
    pub offset: u64,
    /// Write instead of read.
    #[arg(short = 'w', long)]
    pub write: bool,
    /// Byte written by write requests (0, as in qemu-img bench).
    #[arg(long, default_value_t = 0)]
    pub pattern: u8,
    /// Flush after every N requests (0: only at the end).
    #[arg(long, default_value_t = 0)]
    pub flush_interval: u64,
    /// How the parent of a differencing image is found.
    #[command(flatten)]
    pub parent: ParentArgs,
}

/// Runs `vhd bench`.
pub fn run(args: &BenchArgs) -> CmdResult {
    let path = &args.image;
    let mut img = args.parent.open(path, args.write)?;
    let size = img.size();
    let len = args.size;
    if len == 0 || len > size || len > 64 << 20 {
        return Err(Failure::new(
            path,
            format!("request size {len} must be from 1 byte to the disk size and at most 64 MiB"),
        ));
    }
    let step = args.step.unwrap_or(len);
    let mut buf =
        vec![if args.write { args.pattern } else { 0 }; usize::try_from(len).unwrap_or(0)];
    let mut offset = args.offset;
    let start = Instant::now();
    for i in 0..args.count {
        if offset + len > size {
            offset = 0;
        }
        let result = if args.write {
            img.write_at(offset, &buf)
        } else {
            img.read_at(offset, &mut buf)
        };
        result.map_err(|e| Failure::image(path, &e))?;
        if args.flush_interval > 0 && (i + 1) % args.flush_interval == 0 {
            img.flush().map_err(|e| Failure::image(path, &e))?;
        }
        offset += step;
    }
    img.close().map_err(|e| Failure::image(path, &e))?;
    let secs = start.elapsed().as_secs_f64();
    print(&format!(
        "Sending {} {} requests, {len} bytes each, step {step}\nRun completed in {secs:.3} seconds.\n",
        args.count,
        if args.write { "write" } else { "read" },
    ))?;
    Ok(0)
}
