//! Commit: merge a differencing child's data into its parent.
//!
//! Every sector the child holds (set bitmap bit in an allocated block) is
//! written into the parent through the parent's own write path, so the
//! parent's write order protects it; then the parent is flushed. The child
//! is opened read-only and left as it was: it still reads the same, now
//! with the same bytes in both layers. Commit is idempotent, so an
//! interrupted commit is completed by running it again.

use std::path::Path;

use crate::error::{Error, Result};
use crate::format::DiskType;
use crate::storage::Storage;

use super::sparse::Source;
use super::{Image, Layout, OpenOptions};

/// Bytes moved per read/write while committing.
const CHUNK: u64 = 4 * 1024 * 1024;

/// What a commit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct CommitStats {
    /// Guest bytes copied into the parent.
    pub bytes: u64,
    /// Blocks of the child that held data.
    pub blocks: u64,
}

impl Image {
    /// Merges the data of the differencing image at `path` into its parent,
    /// which is opened for writing with an exclusive lock (the child with a
    /// shared one). `options` may name the parent or ignore its ID.
    pub fn commit(path: impl AsRef<Path>, options: OpenOptions) -> Result<CommitStats> {
        let mut child = options.write(false).parent_writable(true).open(path)?;
        let stats = child.commit_into_parent()?;
        if let Some(parent) = child.take_parent() {
            parent.close()?;
        }
        Ok(stats)
    }

    /// Writes this child's sectors into its (writable) parent and flushes it.
    pub fn commit_into_parent(&mut self) -> Result<CommitStats> {
        if self.disk_type() != DiskType::Differencing {
            return Err(Error::InvalidArgument(format!(
                "{} is a {} image; only a differencing image can be committed",
                self.name,
                self.disk_type().name()
            )));
        }
        let size = self.size();
        let Layout::Sparse(sparse) = &mut self.layout else {
            return Ok(CommitStats::default());
        };
        let Some(parent) = self.parent.as_mut() else {
            return Err(Error::InvalidArgument(
                "the differencing image has no parent open".into(),
            ));
        };
        if !parent.is_writable() {
            return Err(Error::ReadOnly {
                reason: format!("parent {} was opened read-only", parent.name()),
            });
        }
        let block_size = sparse.block_size;
        let mut stats = CommitStats::default();
        let mut buf = Vec::new();
        for block in 0..sparse.bat.len() {
            if sparse.bat_entry(block) == crate::format::UNALLOCATED {
                continue;
            }
            let start = block as u64 * block_size;
            let len = block_size.min(size - start);
            let mut any = false;
            for (guest, run_len, source) in sparse.runs(&mut self.storage, start, len)? {
                let Source::File(at) = source else { continue };
                any = true;
                let mut done = 0;
                while done < run_len {
                    let n = CHUNK.min(run_len - done);
                    buf.resize(n as usize, 0);
                    self.storage
                        .read_exact_at(&mut buf, at + done)
                        .map_err(|e| {
                            Error::io(
                                format!("reading {} at file offset {}", self.name, at + done),
                                e,
                            )
                        })?;
                    parent.write_at(guest + done, &buf)?;
                    done += n;
                }
                stats.bytes += run_len;
            }
            stats.blocks += u64::from(any);
        }
        parent.flush()?;
        Ok(stats)
    }
}
