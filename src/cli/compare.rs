//! `vhd compare`: whether two disks (VHD or raw) hold the same guest bytes.

use std::path::PathBuf;

use clap::Args;

use crate::OpenOptions;

use super::CmdResult;
use super::input::{Disk, Format};
use super::output::{escape, human_size, print};

/// Bytes compared per step.
const CHUNK: u64 = 1024 * 1024;

/// Compare the guest contents of two disks, each a VHD (its chain
/// resolved) or a raw file (detected as `convert` does).
///
/// Exit status: 0 the contents are the same, 1 they differ (the first
/// differing offset is printed; disks of different sizes differ), 2 an
/// error.
#[derive(Debug, Args)]
#[command(after_help = "Example:\n  vhd compare disk.vhd disk.img && echo same")]
pub struct CompareArgs {
    /// The first disk.
    pub a: PathBuf,
    /// The second disk.
    pub b: PathBuf,
    /// Parent of A, if A is a differencing image.
    #[arg(long, value_name = "PARENT")]
    pub parent_a: Option<PathBuf>,
    /// Parent of B, if B is a differencing image.
    #[arg(long, value_name = "PARENT")]
    pub parent_b: Option<PathBuf>,
    /// What A and B are: auto (a file with a valid VHD footer is a VHD,
    /// anything else raw), raw, or vhd.
    #[arg(long, value_enum, default_value_t)]
    pub from: Format,
}

fn options(parent: Option<&PathBuf>) -> OpenOptions {
    match parent {
        Some(p) => OpenOptions::new().parent(p.clone()),
        None => OpenOptions::new(),
    }
}

/// Runs `vhd compare`.
pub fn run(args: &CompareArgs) -> CmdResult {
    compare(args).map_err(|f| f.with_code(2))
}

fn compare(args: &CompareArgs) -> CmdResult {
    let (pa, pb) = (&args.a, &args.b);
    let mut a = Disk::open(pa, args.from, options(args.parent_a.as_ref()))?;
    let mut b = Disk::open(pb, args.from, options(args.parent_b.as_ref()))?;
    let size = a.size();
    if size != b.size() {
        print(&format!(
            "sizes differ: {} is {}, {} is {}\n",
            escape(&pa.display().to_string()),
            human_size(size),
            escape(&pb.display().to_string()),
            human_size(b.size())
        ))?;
        return Ok(1);
    }
    let mut buf_a = vec![0u8; CHUNK.min(size) as usize];
    let mut buf_b = buf_a.clone();
    let mut offset = 0u64;
    while offset < size {
        // Jump over stretches where neither disk holds data.
        let next = match (a.next_data(pa, offset)?, b.next_data(pb, offset)?) {
            (Some(x), Some(y)) => x.min(y),
            (Some(x), None) | (None, Some(x)) => x,
            (None, None) => size,
        };
        let next = next - next % CHUNK;
        if next > offset {
            offset = next.min(size);
            continue;
        }
        let n = CHUNK.min(size - offset) as usize;
        let (da, db) = (&mut buf_a[..n], &mut buf_b[..n]);
        let any_a = a.read_sparse(pa, offset, da)?;
        let any_b = b.read_sparse(pb, offset, db)?;
        if (any_a || any_b) && da != db {
            let at = da
                .iter()
                .zip(db.iter())
                .position(|(x, y)| x != y)
                .unwrap_or(0);
            let at = offset + at as u64;
            print(&format!("content differs at offset {at} ({at:#x})\n"))?;
            return Ok(1);
        }
        offset += n as u64;
    }
    print(&format!(
        "images are identical: {} compared\n",
        human_size(size)
    ))?;
    Ok(0)
}
