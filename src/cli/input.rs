//! A guest disk to read from: a VHD (its chain resolved) or a raw file,
//! detected as `convert` and `compare` do.

use std::path::{Path, PathBuf};

use clap::ValueEnum;

use crate::convert::{RawSource, Source};
use crate::image::file_open_error;
use crate::storage::FileStorage;
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
    /// A raw file (with a shared lock).
    Raw(RawSource),
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
        RawSource::new(Box::new(storage), path.display().to_string())
            .map(Disk::Raw)
            .map_err(|e| Failure::image(path, &e))
    }

    /// The disk as a source of guest bytes.
    pub fn source(&mut self) -> &mut dyn Source {
        match self {
            Disk::Raw(raw) => raw,
            Disk::Vhd(img) => &mut **img,
        }
    }

    /// The guest size in bytes.
    pub fn size(&self) -> u64 {
        match self {
            Disk::Raw(raw) => raw.size(),
            Disk::Vhd(img) => img.size(),
        }
    }

    /// A few words on what this is, e.g. `dynamic VHD` or `raw file`.
    pub fn kind(&self) -> String {
        match self {
            Disk::Raw(_) => "raw file".to_string(),
            Disk::Vhd(img) => format!("{} VHD", img.disk_type().name()),
        }
    }

    /// The paths of the image files this disk reads (for a VHD, its chain).
    pub fn files(&self) -> Vec<PathBuf> {
        match self {
            Disk::Raw(_) => Vec::new(),
            Disk::Vhd(img) => img
                .chain()
                .iter()
                .filter_map(|i| i.path().map(Path::to_path_buf))
                .collect(),
        }
    }

    /// The first offset at or after `offset` where the disk may hold data;
    /// `None` when only zeros follow.
    pub fn next_data(&mut self, path: &Path, offset: u64) -> Result<Option<u64>, Failure> {
        self.source()
            .next_data(offset)
            .map_err(|e| Failure::image(path, &e))
    }

    /// Reads `buf.len()` guest bytes at `offset`, touching only what may
    /// hold data; returns whether any of it may (if not, `buf` is zeros).
    pub fn read_sparse(
        &mut self,
        path: &Path,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<bool, Failure> {
        self.source()
            .read_sparse(offset, buf)
            .map_err(|e| Failure::image(path, &e))
    }
}
