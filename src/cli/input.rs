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

    /// The first offset at or after `offset` where the disk may hold data;
    /// `None` when only zeros follow. For a raw file, the file system's
    /// hole map says (where it can).
    pub fn next_data(&mut self, path: &Path, offset: u64) -> Result<Option<u64>, Failure> {
        match self {
            Disk::Raw { storage, len } => Ok(storage
                .next_data(offset)
                .map_err(|e| Failure::io(path, "mapping the file", &e))?
                .map(|(start, _)| start.max(offset))
                .filter(|start| start < len)),
            Disk::Vhd(img) => img.next_data(offset).map_err(|e| Failure::image(path, &e)),
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

    /// Reads `buf.len()` guest bytes at `offset`, touching only what may
    /// hold data (a raw file's holes are not read; a VHD reads unallocated
    /// blocks as zeros without touching its file). Returns whether any of
    /// the range may hold data; if not, `buf` is all zeros.
    pub fn read_sparse(
        &mut self,
        path: &Path,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<bool, Failure> {
        let end = offset + buf.len() as u64;
        let Some(first) = self.next_data(path, offset)?.filter(|&d| d < end) else {
            buf.fill(0);
            return Ok(false);
        };
        if let Disk::Vhd(_) = self {
            self.read_at(path, offset, buf)?;
            return Ok(true);
        }
        zero(buf, 0, first - offset);
        let mut pos = first;
        while pos < end {
            let (start, stop) = match self {
                Disk::Raw { storage, len } => storage
                    .next_data(pos)
                    .map_err(|e| Failure::io(path, "mapping the file", &e))?
                    .map_or((end, end), |(s, e)| {
                        (s.max(pos).min(end), e.min(end).min(*len))
                    }),
                Disk::Vhd(_) => (pos, end),
            };
            zero(buf, pos - offset, start - offset);
            if start < stop {
                let dst = &mut buf[(start - offset) as usize..(stop - offset) as usize];
                self.read_at(path, start, dst)?;
            }
            pos = stop.max(start);
        }
        Ok(true)
    }
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
