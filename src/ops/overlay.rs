//! A storage that holds writes in memory over a base it never changes.

use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::storage::{Mutation, Storage};

/// A failed [`Overlay::commit`]: the error, and the base when it was
/// reached (some changes may have been made on it).
pub type CommitError = (io::Error, Option<Box<dyn Storage>>);

struct State {
    base: Box<dyn Storage>,
    /// Bytes of the base a reader still sees: cut by every `set_len`
    /// below it (what is past a cut reads as zeros if the file grows again).
    base_valid: u64,
    len: u64,
    /// The writes, in order (later ones win).
    writes: Vec<(u64, Vec<u8>)>,
    /// Every change and sync, in order.
    log: Vec<Mutation>,
}

/// A storage that keeps every change in memory over a base it only reads:
/// a reader sees the base with the changes applied, as if they had been
/// made. `vhd repair` plans its fixes on one (and lets the checker judge
/// the result) before it writes anything; [`Overlay::commit`] then makes
/// exactly the same changes, syncs included, on the base. Clones share
/// everything, so an image can be opened on one while the caller keeps
/// another.
#[derive(Clone)]
pub struct Overlay {
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for Overlay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.state();
        f.debug_struct("Overlay")
            .field("len", &s.len)
            .field("changes", &s.log.len())
            .finish_non_exhaustive()
    }
}

impl Overlay {
    /// An overlay over `base`, with no changes yet.
    pub fn new(base: Box<dyn Storage>) -> io::Result<Self> {
        let len = base.len()?;
        Ok(Overlay {
            state: Arc::new(Mutex::new(State {
                base,
                base_valid: len,
                len,
                writes: Vec::new(),
                log: Vec::new(),
            })),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The changes made so far, in order, syncs included.
    pub fn changes(&self) -> Vec<Mutation> {
        self.state().log.clone()
    }

    /// Makes the changes on the base, in order (each sync a sync of the
    /// base), and returns the base. Fails if another clone still exists.
    pub fn commit(self) -> Result<Box<dyn Storage>, CommitError> {
        let state = match Arc::try_unwrap(self.state) {
            Ok(m) => m
                .into_inner()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
            Err(_) => {
                return Err((
                    io::Error::other("the overlay is still shared; nothing was written"),
                    None,
                ));
            }
        };
        let mut base = state.base;
        for m in &state.log {
            let result = match m {
                Mutation::Write { offset, data } => base.write_all_at(data, *offset),
                Mutation::SetLen(len) => base.set_len(*len),
                Mutation::Sync => base.sync(),
            };
            if let Err(e) = result {
                return Err((e, Some(base)));
            }
        }
        Ok(base)
    }

    /// Drops the changes and returns the base, untouched. Fails (giving
    /// nothing back) if another clone still exists.
    pub fn discard(self) -> Option<Box<dyn Storage>> {
        Arc::try_unwrap(self.state).ok().map(|m| {
            m.into_inner()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .base
        })
    }
}

impl Storage for Overlay {
    fn len(&self) -> io::Result<u64> {
        Ok(self.state().len)
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let s = self.state();
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|&e| e <= s.len)
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end"))?;
        let from_base = s.base_valid.saturating_sub(offset).min(buf.len() as u64) as usize;
        if from_base > 0 {
            s.base.read_exact_at(&mut buf[..from_base], offset)?;
        }
        buf[from_base..].fill(0);
        for (at, data) in &s.writes {
            let w_end = at + data.len() as u64;
            if *at >= end || w_end <= offset {
                continue;
            }
            let lo = (*at).max(offset);
            let hi = w_end.min(end);
            buf[(lo - offset) as usize..(hi - offset) as usize]
                .copy_from_slice(&data[(lo - at) as usize..(hi - at) as usize]);
        }
        Ok(())
    }

    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut s = self.state();
        let end = offset + buf.len() as u64;
        s.len = s.len.max(end);
        s.writes.push((offset, buf.to_vec()));
        s.log.push(Mutation::Write {
            offset,
            data: buf.to_vec(),
        });
        Ok(())
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        let mut s = self.state();
        s.len = len;
        s.base_valid = s.base_valid.min(len);
        for (at, data) in &mut s.writes {
            let keep = len.saturating_sub(*at).min(data.len() as u64);
            data.truncate(keep as usize);
        }
        s.writes.retain(|(_, d)| !d.is_empty());
        s.log.push(Mutation::SetLen(len));
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        self.state().log.push(Mutation::Sync);
        Ok(())
    }
}
