//! `vhd bench`: the requests of `qemu-img bench` (qemu 10.0), for
//! side-by-side runs on the same image.
//!
//! qemu-img 10.0 issues COUNT requests of SIZE bytes. The first is at
//! OFFSET exactly as given; after each, the offset moves STEP bytes on
//! and wraps *modulo the disk size* (`offset = (offset + step) % size`;
//! newer qemu wraps modulo `size - SIZE` instead). Neither offsets nor
//! steps need to be aligned. A request that would run past the end of the
//! disk fails the run (qemu: "Failed request: Input/output error"). With
//! `--flush-interval N`, a flush follows the k-th request (counted from 1)
//! whenever `(COUNT - k) % N == 0`, so the last request is always followed
//! by one. Write requests write the `--pattern` byte (0 by default) in
//! every byte.
//!
//! The one difference is the queue depth: qemu-img keeps `-d` requests in
//! flight (64 by default); vhd issues them one at a time. `-d` is accepted
//! and checked as qemu-img checks it (a flush interval smaller than the
//! depth is refused), so the same command line means the same thing to
//! both tools. Since every write writes the same byte, the order in which
//! requests complete cannot change the resulting image: after the same
//! run, `qemu-img compare` finds the two images identical.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use clap::Args;

use super::CmdResult;
use super::args::{ParentArgs, parse_size};
use super::output::{Failure, print};

/// The largest count, depth, request size and step qemu-img accepts.
const QEMU_ARG_MAX: u64 = i32::MAX as u64;
/// The largest request vhd makes (one buffer of this size is allocated).
const MAX_REQUEST: u64 = 64 << 20;

/// Time a run of requests with the same options and the same requests as
/// `qemu-img bench` (qemu 10.0).
///
/// The first request is at --offset; each next one --step-size bytes after
/// the last, wrapped modulo the disk size as qemu-img 10.0 does (a wrapped
/// request that would run past the end of the disk fails the run, as in
/// qemu-img). Offsets and steps need not be aligned. Reads by default;
/// with -w, writes that fill every byte with --pattern.
///
/// Queue depth: vhd issues one request at a time (depth 1), whatever -d
/// says. -d (default 64, as in qemu-img) is accepted and checked as
/// qemu-img checks it, so that one command line runs in both tools; the
/// requests, their offsets and the flushes are the same, only qemu-img
/// keeps up to -d of them in flight. The time printed includes the final
/// flush and close.
#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  vhd bench disk.vhd -w -c 20000 -s 4K -S 1M --flush-interval 1000\n  qemu-img bench -f vpc disk.vhd -w -c 20000 -s 4K -S 1M --flush-interval 1000    # the same requests in QEMU"
)]
pub struct BenchArgs {
    /// The image.
    pub image: PathBuf,
    /// Number of requests.
    #[arg(short = 'c', long, default_value_t = 75_000)]
    pub count: u64,
    /// Bytes per request (at most 64 MiB).
    #[arg(short = 's', long = "buffer-size", visible_alias = "size", value_parser = parse_size, default_value = "4K")]
    pub size: u64,
    /// Bytes from the start of one request to the start of the next
    /// (default, or 0: the request size).
    #[arg(short = 'S', long = "step-size", visible_alias = "step", value_parser = parse_size)]
    pub step: Option<u64>,
    /// Offset of the first request (used as given; wrapping applies to the
    /// next ones).
    #[arg(short = 'o', long, value_parser = parse_size, default_value = "0")]
    pub offset: u64,
    /// The queue depth qemu-img would use; vhd always issues one request
    /// at a time. Checked as qemu-img checks it: --flush-interval may not
    /// be smaller.
    #[arg(short = 'd', long, default_value_t = 64)]
    pub depth: u64,
    /// Write instead of read.
    #[arg(short = 'w', long)]
    pub write: bool,
    /// Byte written by write requests (ignored for reads, as in qemu-img).
    #[arg(long, default_value_t = 0)]
    pub pattern: u8,
    /// Flush after the k-th request whenever (COUNT - k) is a multiple of
    /// N, as qemu-img does (so also after the last); writes only; 0: never
    /// (the close at the end still flushes).
    #[arg(long, default_value_t = 0)]
    pub flush_interval: u64,
    /// Accepted for qemu-img's command line; at depth 1 there is nothing
    /// to drain before a flush.
    #[arg(long)]
    pub no_drain: bool,
    /// The image format, accepted for qemu-img's command line: vpc (QEMU's
    /// name) or vhd.
    #[arg(short = 'f', long = "format", value_parser = ["vpc", "vhd"])]
    pub format: Option<String>,
    /// Print nothing but errors.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// How the parent of a differencing image is found.
    #[command(flatten)]
    pub parent: ParentArgs,
}

/// The offsets of a run, in order: qemu-img 10.0's rule.
#[derive(Debug, Clone)]
pub(crate) struct Schedule {
    next: u64,
    step: u64,
    size: u64,
    left: u64,
}

impl Schedule {
    /// `count` requests from `offset`, each `step` after the last, on a
    /// disk of `size` bytes.
    pub(crate) fn new(offset: u64, step: u64, size: u64, count: u64) -> Self {
        Schedule {
            next: offset,
            step,
            size,
            left: count,
        }
    }
}

impl Iterator for Schedule {
    type Item = u64;

    fn next(&mut self) -> Option<u64> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let offset = self.next;
        // qemu 10.0: `offset += step; offset %= image_size` (0 for an
        // empty disk). Computed wide so that no sum overflows.
        self.next = if self.size == 0 {
            0
        } else {
            let wrapped = (u128::from(offset) + u128::from(self.step)) % u128::from(self.size);
            u64::try_from(wrapped).unwrap_or(0)
        };
        Some(offset)
    }
}

/// Whether qemu-img flushes after the `k`-th request (from 1) of `count`.
pub(crate) fn flush_after(k: u64, count: u64, interval: u64) -> bool {
    interval != 0 && (count - k).is_multiple_of(interval)
}

/// Refuses what qemu-img bench refuses (in its words where it has them),
/// and a request vhd will not allocate.
fn check_args(args: &BenchArgs) -> Result<(), String> {
    let in_range = |name: &str, v: u64, lo: u64| {
        if (lo..=QEMU_ARG_MAX).contains(&v) {
            Ok(())
        } else {
            Err(format!("{name} must be from {lo} to {QEMU_ARG_MAX}"))
        }
    };
    in_range("request count (-c)", args.count, 1)?;
    in_range("depth (-d)", args.depth, 1)?;
    in_range("buffer size (-s)", args.size, 1)?;
    in_range("step size (-S)", args.step.unwrap_or(0), 0)?;
    if args.offset > i64::MAX as u64 {
        return Err(format!("offset (-o) must be at most {}", i64::MAX));
    }
    if args.flush_interval != 0 && !args.write {
        return Err("--flush-interval is only available in write tests (-w)".into());
    }
    if args.flush_interval != 0 && args.flush_interval < args.depth {
        return Err(format!(
            "flush interval {} can't be smaller than depth {} (qemu-img refuses it too; give -d 1 or a larger interval)",
            args.flush_interval, args.depth
        ));
    }
    if args.size > MAX_REQUEST {
        return Err(format!(
            "request size {} is more than vhd bench allows ({MAX_REQUEST} bytes)",
            args.size
        ));
    }
    Ok(())
}

/// Runs `vhd bench`.
pub fn run(args: &BenchArgs) -> CmdResult {
    let path = &args.image;
    check_args(args).map_err(|e| Failure::new(path, e))?;
    let mut img = args.parent.open(path, args.write)?;
    let size = img.size();
    let len = args.size;
    if len > size {
        return Err(Failure::new(
            path,
            format!("request size {len} is larger than the disk ({size} bytes)"),
        ));
    }
    let step = match args.step {
        None | Some(0) => len,
        Some(s) => s,
    };
    let kind = if args.write { "write" } else { "read" };
    if !args.quiet {
        let mut head = format!(
            "Sending {} {kind} requests, {len} bytes each, 1 in parallel (starting at offset {}, step size {step})\n\
             Depth 1: vhd issues one request at a time (qemu-img bench -d {} would keep {} in flight)\n",
            args.count, args.offset, args.depth, args.depth
        );
        if args.flush_interval != 0 {
            let _ = writeln!(head, "Sending flush every {} requests", args.flush_interval);
        }
        print(&head)?;
    }
    let mut buf =
        vec![if args.write { args.pattern } else { 0 }; usize::try_from(len).unwrap_or(0)];
    let start = Instant::now();
    for (k, offset) in (1..).zip(Schedule::new(args.offset, step, size, args.count)) {
        let result = if args.write {
            img.write_at(offset, &buf)
        } else {
            img.read_at(offset, &mut buf)
        };
        result.map_err(|e| {
            Failure::new(
                path,
                format!("request {k} ({kind} of {len} bytes at offset {offset}) failed: {e}"),
            )
        })?;
        if args.write && flush_after(k, args.count, args.flush_interval) {
            img.flush().map_err(|e| Failure::image(path, &e))?;
        }
    }
    img.close().map_err(|e| Failure::image(path, &e))?;
    let secs = start.elapsed().as_secs_f64();
    if !args.quiet {
        print(&format!(
            "Run completed in {secs:.3} seconds (including the final flush and close).\n"
        ))?;
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_offset_is_used_as_given_and_later_ones_wrap_modulo_the_disk_size() {
        let offsets: Vec<u64> = Schedule::new(5, 3, 10, 5).collect();
        assert_eq!(offsets, vec![5, 8, 1, 4, 7]);
        // A first offset past the end is not wrapped (the request fails).
        assert_eq!(Schedule::new(12, 3, 10, 2).collect::<Vec<_>>(), vec![12, 5]);
        assert_eq!(Schedule::new(0, 1, 0, 3).collect::<Vec<_>>(), vec![0, 0, 0]);
    }

    #[test]
    fn huge_offsets_and_steps_wrap_without_overflow() {
        let size = u64::MAX - 1;
        let offsets: Vec<u64> = Schedule::new(u64::MAX - 2, u64::MAX - 2, size, 2).collect();
        assert_eq!(offsets, vec![u64::MAX - 2, u64::MAX - 3]);
    }

    #[test]
    fn a_flush_follows_every_request_whose_remaining_count_is_a_multiple_of_the_interval() {
        let at = |count, interval| {
            (1..=count)
                .filter(|&k| flush_after(k, count, interval))
                .collect::<Vec<u64>>()
        };
        assert_eq!(at(100, 50), vec![50, 100]);
        assert_eq!(at(101, 50), vec![1, 51, 101]);
        assert_eq!(at(5, 0), Vec::<u64>::new());
        assert_eq!(at(3, 1), vec![1, 2, 3]);
    }
}
