//! A guest disk to read from: a VHD (its chain resolved) or a raw file,
//! detected as `convert` and `compare` do.

use std::path::{Path, PathBuf};

use clap::ValueEnum;

use crate::image::file_open_error;
use crate::storage::{FileStorage, Storage};
use crate::{ErrorKind, Image, OpenOptions};

use super::output::Failure;

/// What an input file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum Format {
    /// A VHD if the file has a valid VHD footer (at the end, or the copy at
    /// offset 0), else raw.
    #[default]
    Auto,
    /// The file's bytes are the disk.
    Raw,
    /// A VHD image (fixed, dynamic or differencing).
    Vhd,
}

/// An open input disk.
pub enum Disk {
    /// A raw file.
    Raw {
        /// The file, with a shared lock.
        storage: FileStorage,
        /// Its length: the disk size.
        len: u64,
    },
    /// A VHD image.
    Vhd(Box<Image>),
}

impl Disk {
    /// Opens `path` read-only as `format` says.
    pub fn open(path: &Path, format: Format, options: OpenOptions) -> Result<Disk, Failure> {
        let meta = std::fs::metadata(path).map_err(|e| Failure::io(path, "cannot open", &e))?;
        if meta.is_dir() {
            return Err(Failure::new(path, "is a directory, not a disk image"));
        }
        match format {
            Format::Raw => Self::open_raw(path),
            Format::Vhd => options
                .open(path)
                .map(|img| Disk::Vhd(Box::new(img)))
                .map_err(|e| Failure::image(path, &e)),
            // A file with a valid footer is a VHD whatever else is wrong
            // with it (or its parents): never fall back to raw for it.
            Format::Auto => match options.open(path) {
                Ok(img) => Ok(Disk::Vhd(Box::new(img))),
                Err(e) if e.kind() == ErrorKind::NotVhd && !Self::has_footer(path)? => {
                    Self::open_raw(path)
                }
                Err(e) => Err(Failure::image(path, &e)),
            },
        }
    }

    /// Whether the file has a valid VHD footer (see [`crate::image::probe`]).
    fn has_footer(path: &Path) -> Result<bool, Failure> {
        let storage = FileStorage::open(path, false)
            .map_err(|e| Failure::image(path, &file_open_error(path, e)))?;
        crate::image::probe(&storage)
            .map(|t| t.is_some())
            .map_err(|e| Failure::image(path, &e))
    }

    fn open_raw(path: &Path) -> Result<Disk, Failure> {
        let storage = FileStorage::open(path, false)
            .map_err(|e| Failure::image(path, &file_open_error(path, e)))?;
        let len = storage
            .len()
            .map_err(|e| Failure::io(path, "reading the file length", &e))?;
        Ok(Disk::Raw { storage, len })
    }

    /// The guest size in bytes.
    pub fn size(&self) -> u64 {
        match self {
            Disk::Raw { len, .. } => *len,
            Disk::Vhd(img) => img.size(),
        }
    }

    /// A few words on what this is, e.g. `dynamic VHD` or `raw file`.
    pub fn kind(&self) -> String {
        match self {
            Disk::Raw { .. } => "raw file".to_string(),
            Disk::Vhd(img) => format!("{} VHD", img.disk_type().name()),
        }
    }

    /// The paths of the image files this disk reads (for a VHD, its chain).
    pub fn files(&self) -> Vec<PathBuf> {
        match self {
            Disk::Raw { .. } => Vec::new(),
            Disk::Vhd(img) => img
                .chain()
                .iter()
                .filter_map(|i| i.path().map(Path::to_path_buf))
                .collect(),
        }
    }

    /// Guest ranges `(offset, length)` that may hold data, in order; the
    /// rest reads as zeros. For a raw file, the file system's hole map says
    /// (where it can; else the whole file may hold data).
    pub fn data_ranges(&mut self, path: &Path) -> Result<Vec<(u64, u64)>, Failure> {
        match self {
            Disk::Raw { len, storage } => Ok(if *len == 0 {
                Vec::new()
            } else {
                storage.data_ranges().unwrap_or_else(|| vec![(0, *len)])
            }),
            Disk::Vhd(img) => Ok(img
                .map()
                .map_err(|e| Failure::image(path, &e))?
                .into_iter()
                .filter(|e| e.data)
                .map(|e| (e.offset, e.length))
                .collect()),
        }
    }

    /// Reads guest bytes at `offset` (inside the disk).
    pub fn read_at(&mut self, path: &Path, offset: u64, buf: &mut [u8]) -> Result<(), Failure> {
        match self {
            Disk::Raw { storage, .. } => storage
                .read_exact_at(buf, offset)
                .map_err(|e| Failure::io(path, &format!("reading at offset {offset}"), &e)),
            Disk::Vhd(img) => img
                .read_at(offset, buf)
                .map_err(|e| Failure::image(path, &e)),
        }
    }

    /// Reads `buf.len()` guest bytes at `offset`, touching only the parts
    /// that `ranges` (from [`Disk::data_ranges`]) say may hold data; the rest
    /// is zero-filled. Returns whether anything was read.
    pub fn read_sparse(
        &mut self,
        path: &Path,
        ranges: &[(u64, u64)],
        offset: u64,
        buf: &mut [u8],
    ) -> Result<bool, Failure> {
        let end = offset + buf.len() as u64;
        // First range that ends after `offset`.
        let first = ranges.partition_point(|&(o, l)| o + l <= offset);
        let mut filled = offset;
        let mut any = false;
        for &(o, l) in ranges.get(first..).unwrap_or_default() {
            if o >= end {
                break;
            }
            let start = o.max(offset);
            let stop = (o + l).min(end);
            zero(buf, filled - offset, start - offset);
            let dst = &mut buf[(start - offset) as usize..(stop - offset) as usize];
            self.read_at(path, start, dst)?;
            any = true;
            filled = stop;
        }
        zero(buf, filled - offset, end - offset);
        Ok(any)
    }
}

/// Where the first of `ranges` (sorted, from [`Disk::data_ranges`]) that
/// ends after `offset` begins, at `offset` or later; `None` when only
/// zeros follow. Lets a copy jump over empty stretches of a huge disk.
pub fn next_data(ranges: &[(u64, u64)], offset: u64) -> Option<u64> {
    let i = ranges.partition_point(|&(o, l)| o + l <= offset);
    ranges.get(i).map(|&(o, _)| o.max(offset))
}

fn zero(buf: &mut [u8], from: u64, to: u64) {
    if let Some(s) = buf.get_mut(from as usize..to as usize) {
        s.fill(0);
    }
}

/// Whether `buf` is all zeros (fast: compares against a zero block).
pub fn is_zero(buf: &[u8]) -> bool {
    const ZEROS: [u8; 4096] = [0; 4096];
    buf.chunks(ZEROS.len()).all(|c| c == &ZEROS[..c.len()])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_detection_sees_a_single_set_byte() {
        let mut buf = vec![0u8; 10_000];
        assert!(is_zero(&buf));
        buf[9_999] = 1;
        assert!(!is_zero(&buf));
        assert!(is_zero(&[]));
    }
}
