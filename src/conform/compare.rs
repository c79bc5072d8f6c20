//! Comparing guest contents: hashes of raw files, the first offset where
//! two disks differ, and whether a stretch reads as zeros. Every walk
//! touches only what may hold data (holes of raw files, unallocated
//! blocks of images), so a sparse disk of terabytes costs what its data
//! costs.

use std::fmt::Write as _;
use std::io::{self, Read};
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::convert::{RawSource, Source, is_zero};
use crate::error::Result;
use crate::storage::FileStorage;

/// Bytes compared per step.
const STEP: usize = 1 << 20;

/// The SHA-256 (lower-case hex) and length of a file's bytes.
pub fn sha256_file(path: &Path) -> io::Result<(String, u64)> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; STEP];
    let mut len = 0u64;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        len += n as u64;
    }
    let hex = hasher
        .finalize()
        .iter()
        .fold(String::with_capacity(64), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        });
    Ok((hex, len))
}

/// A raw file as a guest disk (its holes known to the walk).
pub fn raw_source(path: &Path) -> Result<RawSource> {
    let storage = FileStorage::open(path, false).map_err(|e| match e {
        crate::storage::OpenError::Io(e) => {
            crate::Error::io(format!("opening {}", path.display()), e)
        }
        crate::storage::OpenError::Locked(_) => crate::Error::io(
            format!("opening {}", path.display()),
            io::Error::other("the file is locked by another process"),
        ),
    })?;
    RawSource::new(Box::new(storage), path.display().to_string())
}

/// Where two disks first differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Difference {
    /// The guest offset.
    pub offset: u64,
    /// The byte of the disk judged.
    pub got: u8,
    /// The byte expected there.
    pub expected: u8,
}

/// The first offset below `len` where `got` and `expected` differ. Both
/// must hold at least `len` bytes.
pub fn first_difference(
    got: &mut dyn Source,
    expected: &mut dyn Source,
    len: u64,
) -> Result<Option<Difference>> {
    let mut a = vec![0u8; STEP];
    let mut b = vec![0u8; STEP];
    let mut pos = 0u64;
    while pos < len {
        let next = match (got.next_data(pos)?, expected.next_data(pos)?) {
            (Some(x), Some(y)) => x.min(y),
            (Some(x), None) | (None, Some(x)) => x,
            (None, None) => return Ok(None),
        };
        if next >= len {
            return Ok(None);
        }
        pos = next.max(pos);
        let n = (len - pos).min(STEP as u64) as usize;
        got.read_sparse(pos, &mut a[..n])?;
        expected.read_sparse(pos, &mut b[..n])?;
        if let Some(i) = a[..n].iter().zip(&b[..n]).position(|(x, y)| x != y) {
            return Ok(Some(Difference {
                offset: pos + i as u64,
                got: a[i],
                expected: b[i],
            }));
        }
        pos += n as u64;
    }
    Ok(None)
}

/// The first offset in `from..to` where `disk` holds a byte that is not
/// zero (`to` at most the disk's size).
pub fn first_nonzero(disk: &mut dyn Source, from: u64, to: u64) -> Result<Option<u64>> {
    let mut buf = vec![0u8; STEP];
    let mut pos = from;
    while pos < to {
        match disk.next_data(pos)? {
            Some(next) if next < to => pos = next.max(pos),
            _ => return Ok(None),
        }
        let n = (to - pos).min(STEP as u64) as usize;
        disk.read_sparse(pos, &mut buf[..n])?;
        if !is_zero(&buf[..n]) {
            let i = buf[..n].iter().position(|&x| x != 0).unwrap_or(0);
            return Ok(Some(pos + i as u64));
        }
        pos += n as u64;
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{MemStorage, Storage};

    fn disk(bytes: &[u8]) -> RawSource {
        let mut m = MemStorage::new();
        m.write_all_at(bytes, 0).unwrap();
        RawSource::new(Box::new(m), "mem").unwrap()
    }

    #[test]
    fn the_first_difference_names_its_offset_and_both_bytes() {
        let mut a = vec![7u8; 3 * STEP];
        let b = a.clone();
        a[STEP + 5] = 9;
        let d = first_difference(&mut disk(&a), &mut disk(&b), a.len() as u64).unwrap();
        assert_eq!(
            d,
            Some(Difference {
                offset: STEP as u64 + 5,
                got: 9,
                expected: 7
            })
        );
        assert_eq!(
            first_difference(&mut disk(&b), &mut disk(&b), b.len() as u64).unwrap(),
            None
        );
    }

    #[test]
    fn nonzero_bytes_are_found_in_a_range_only() {
        let mut a = vec![0u8; 4096];
        a[100] = 1;
        assert_eq!(first_nonzero(&mut disk(&a), 0, 4096).unwrap(), Some(100));
        assert_eq!(first_nonzero(&mut disk(&a), 101, 4096).unwrap(), None);
        assert_eq!(first_nonzero(&mut disk(&a), 0, 100).unwrap(), None);
    }
}
