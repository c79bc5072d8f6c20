//! Copying a guest disk from one form into another: the work of
//! `vhd convert`, as library code.
//!
//! A [`Source`] is a guest disk to read (an [`Image`] with its chain, or a
//! raw file); a [`Sink`] is where the guest bytes go (an [`Image`] open for
//! writing, or a raw file). [`copy`] moves the bytes in chunks of
//! [`CHUNK`] bytes, jumps over stretches the source says hold no data,
//! and writes only the 64 KiB pieces that are not all zeros, so what is
//! unallocated in the source stays unallocated (or a hole) in the output.
//!
//! # Overlapped reads and writes
//!
//! By default ([`Mode::Overlapped`]) the source is read in one thread and
//! the sink written in another: the reader owns the source, reads a chunk,
//! finds its non-zero pieces and passes it on through a bounded channel;
//! the writer (the calling thread) owns the sink and writes. So the read
//! of one chunk runs while the previous one is written, and at most
//! [`BUFFERS`] chunks are ever in memory. [`Mode::Plain`] does the same
//! steps one after the other in the calling thread: the reference the
//! overlapped copy is tested against (`tests/fast_paths.rs`), and both
//! give the same bytes in the same write calls.

use crate::error::{Error, Result};
use crate::image::Image;
use crate::storage::{FileStorage, Storage};

/// Bytes read per step. Chunks start at multiples of this (so at block
/// boundaries of every output block size up to it; larger blocks are
/// filled by several chunks in order).
pub const CHUNK: u64 = 2 * 1024 * 1024;
/// Chunks in memory at once in an overlapped copy: one being read, one
/// being written, and the rest queued between them.
pub const BUFFERS: usize = 4;
/// The unit in which zeros are skipped when writing.
const PIECE: usize = 64 * 1024;

/// A guest disk to read from. `Send`, so that an overlapped copy can read
/// it in a thread of its own.
pub trait Source: Send {
    /// The guest size in bytes.
    fn size(&self) -> u64;
    /// The first offset at or after `offset` where the disk may hold data;
    /// `None` when only zeros follow.
    fn next_data(&mut self, offset: u64) -> Result<Option<u64>>;
    /// Reads guest bytes at `offset` (inside the disk).
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<()>;
    /// Reads `buf.len()` bytes at `offset`, touching only what may hold
    /// data. Returns whether any of it may hold data (if not, `buf` is all
    /// zeros).
    fn read_sparse(&mut self, offset: u64, buf: &mut [u8]) -> Result<bool> {
        let end = offset + buf.len() as u64;
        if self.next_data(offset)?.is_none_or(|d| d >= end) {
            buf.fill(0);
            return Ok(false);
        }
        self.read_at(offset, buf)?;
        Ok(true)
    }
}

impl Source for Image {
    fn size(&self) -> u64 {
        Image::size(self)
    }

    fn next_data(&mut self, offset: u64) -> Result<Option<u64>> {
        Image::next_data(self, offset)
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<()> {
        Image::read_at(self, offset, buf)
    }
}

/// A raw disk: the bytes of a storage are the guest bytes. Holes of the
/// storage (where it knows them) are not read.
pub struct RawSource {
    storage: Box<dyn Storage>,
    len: u64,
    name: String,
}

impl std::fmt::Debug for RawSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawSource")
            .field("name", &self.name)
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl RawSource {
    /// The raw disk in `storage`; `name` is used in messages.
    pub fn new(storage: Box<dyn Storage>, name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        let len = storage
            .len()
            .map_err(|e| Error::io(format!("reading the length of {name}"), e))?;
        Ok(RawSource { storage, len, name })
    }
}

impl Source for RawSource {
    fn size(&self) -> u64 {
        self.len
    }

    fn next_data(&mut self, offset: u64) -> Result<Option<u64>> {
        Ok(self
            .storage
            .next_data(offset)
            .map_err(|e| Error::io(format!("mapping {}", self.name), e))?
            .map(|(start, _)| start.max(offset))
            .filter(|&start| start < self.len))
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.storage
            .read_exact_at(buf, offset)
            .map_err(|e| Error::io(format!("reading {} at offset {offset}", self.name), e))
    }

    /// Reads only the data ranges of the storage; its holes become zeros.
    fn read_sparse(&mut self, offset: u64, buf: &mut [u8]) -> Result<bool> {
        let end = offset + buf.len() as u64;
        let mut pos = offset;
        let mut any = false;
        while pos < end {
            let next = self
                .storage
                .next_data(pos)
                .map_err(|e| Error::io(format!("mapping {}", self.name), e))?;
            let (start, stop) = next.map_or((end, end), |(s, e)| {
                (s.max(pos).min(end), e.min(end).min(self.len).max(pos))
            });
            let at = |o: u64| (o - offset) as usize;
            buf[at(pos)..at(start)].fill(0);
            if start < stop {
                self.read_at(start, &mut buf[at(start)..at(stop)])?;
                any = true;
            }
            pos = stop.max(start);
        }
        Ok(any)
    }
}

/// Where the guest bytes go.
pub trait Sink {
    /// Writes `data` at guest `offset`.
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<()>;
}

impl Sink for Image {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        Image::write_at(self, offset, data)
    }
}

/// A raw output: guest bytes at the same offsets in a storage (which the
/// caller has sized; unwritten ranges stay holes).
pub struct RawSink {
    storage: Box<dyn Storage>,
    name: String,
}

impl std::fmt::Debug for RawSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawSink")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl RawSink {
    /// A raw output in `storage`; `name` is used in messages.
    pub fn new(storage: Box<dyn Storage>, name: impl Into<String>) -> Self {
        RawSink {
            storage,
            name: name.into(),
        }
    }

    /// Makes everything written durable and gives the storage back.
    pub fn finish(mut self) -> Result<Box<dyn Storage>> {
        self.storage
            .sync()
            .map_err(|e| Error::io(format!("syncing {}", self.name), e))?;
        Ok(self.storage)
    }
}

impl Sink for RawSink {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        self.storage
            .write_all_at(data, offset)
            .map_err(|e| Error::io(format!("writing {} at offset {offset}", self.name), e))
    }
}

/// Bytes an [`OutputFile`] lets pile up in the page cache before it asks
/// the system to start writing them to the disk.
pub const WRITEBACK_EVERY: u64 = 128 * 1024 * 1024;

/// How durable an [`OutputFile`] is when the copy is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Every sync the sink asks for is done (an image's flush; a raw
    /// sink's [`RawSink::finish`]), and the file's pages are sent to the
    /// disk as the copy goes (see [`FileStorage::start_writeback`]), so
    /// the final sync is short.
    #[default]
    Durable,
    /// No sync at all: the output may still be only in the page cache
    /// when the copy returns, and a crash of the system can lose or tear
    /// it. For scratch outputs (`vhd convert -t unsafe`).
    Unsafe,
}

/// The output file of a convert: a [`FileStorage`] whose syncs and
/// write-back follow a [`Durability`].
#[derive(Debug)]
pub struct OutputFile {
    file: FileStorage,
    durability: Durability,
    /// Bytes written since the last write-back was started.
    unsent: u64,
    /// The range those writes touched (start, end).
    touched: Option<(u64, u64)>,
}

impl OutputFile {
    /// `file`, made as durable as `durability` says.
    pub fn new(file: FileStorage, durability: Durability) -> Self {
        OutputFile {
            file,
            durability,
            unsent: 0,
            touched: None,
        }
    }
}

impl Storage for OutputFile {
    fn len(&self) -> std::io::Result<u64> {
        self.file.len()
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        self.file.write_all_at(buf, offset)?;
        if self.durability == Durability::Durable {
            let end = offset + buf.len() as u64;
            let (lo, hi) = self
                .touched
                .map_or((offset, end), |(lo, hi)| (lo.min(offset), hi.max(end)));
            self.unsent += buf.len() as u64;
            self.touched = Some((lo, hi));
            if self.unsent >= WRITEBACK_EVERY {
                // Only the range written since the last time: asking for
                // the whole file each time would walk its every cached
                // page again and again. Only a hint: if it fails, the
                // final sync does the work.
                let _ = self.file.start_writeback(lo, hi - lo);
                self.unsent = 0;
                self.touched = None;
            }
        }
        Ok(())
    }

    fn set_len(&mut self, len: u64) -> std::io::Result<()> {
        self.file.set_len(len)
    }

    fn sync(&mut self) -> std::io::Result<()> {
        match self.durability {
            Durability::Durable => self.file.sync(),
            Durability::Unsafe => Ok(()),
        }
    }

    fn next_data(&self, offset: u64) -> std::io::Result<Option<(u64, u64)>> {
        self.file.next_data(offset)
    }
}

/// Which side of a copy failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Reading the source.
    Source,
    /// Writing the sink.
    Sink,
}

/// An error of [`copy`], with the side it came from.
#[derive(Debug)]
pub struct CopyError {
    /// Which side failed.
    pub side: Side,
    /// The error.
    pub error: Error,
}

impl CopyError {
    fn source(error: Error) -> Self {
        CopyError {
            side: Side::Source,
            error,
        }
    }

    fn sink(error: Error) -> Self {
        CopyError {
            side: Side::Sink,
            error,
        }
    }
}

/// What a copy did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CopyStats {
    /// Bytes written to the sink (pieces that were not all zeros).
    pub written: u64,
}

/// How [`copy_with`] moves the bytes. Both modes make the same write
/// calls with the same bytes in the same order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Read in a second thread while the calling thread writes (see the
    /// module documentation).
    #[default]
    Overlapped,
    /// Read, then write, one chunk at a time, in the calling thread.
    Plain,
}

/// Copies the guest bytes of `source` into `sink`, whose disk is
/// `out_size` bytes (at least the source's size; the rest reads as zeros
/// and is not written), reading and writing at the same time
/// ([`Mode::Overlapped`]). `progress` is told how many bytes of the
/// output each step covered; it is called in the calling thread.
pub fn copy(
    source: &mut dyn Source,
    sink: &mut dyn Sink,
    out_size: u64,
    progress: &mut dyn FnMut(u64),
) -> std::result::Result<CopyStats, CopyError> {
    copy_with(Mode::default(), source, sink, out_size, progress)
}

/// [`copy`] in the given [`Mode`].
pub fn copy_with(
    mode: Mode,
    source: &mut dyn Source,
    sink: &mut dyn Sink,
    out_size: u64,
    progress: &mut dyn FnMut(u64),
) -> std::result::Result<CopyStats, CopyError> {
    match mode {
        Mode::Plain => {
            let mut reader = Reader::new(source, out_size);
            let mut writer = Writer::new(sink, progress);
            let mut buf = Vec::new();
            while let Some(step) = reader.step(&mut buf).map_err(CopyError::source)? {
                writer.take(&step, &buf).map_err(CopyError::sink)?;
            }
            Ok(writer.stats)
        }
        Mode::Overlapped => overlapped(source, sink, out_size, progress),
    }
}

/// One step of a copy: output bytes to skip (all zeros), or a chunk read
/// into a buffer with the ranges of it to write.
#[derive(Debug)]
enum Step {
    /// `len` bytes from `offset` read as zeros: nothing to write.
    Skip { len: u64 },
    /// A chunk of `len` bytes at `offset`; `pieces` are the byte ranges
    /// of the buffer that are not all zeros (neighbours joined).
    Chunk {
        offset: u64,
        len: usize,
        pieces: Vec<(usize, usize)>,
    },
}

/// The reading half: walks the output disk in chunks.
struct Reader<'a> {
    source: &'a mut dyn Source,
    size: u64,
    out_size: u64,
    offset: u64,
}

impl<'a> Reader<'a> {
    fn new(source: &'a mut dyn Source, out_size: u64) -> Self {
        let size = source.size();
        Reader {
            source,
            size,
            out_size,
            offset: 0,
        }
    }

    /// The next step, reading into `buf` (grown to a chunk when needed);
    /// `None` at the end.
    fn step(&mut self, buf: &mut Vec<u8>) -> Result<Option<Step>> {
        let offset = self.offset;
        if offset >= self.out_size {
            return Ok(None);
        }
        // Jump over stretches with no data, staying chunk-aligned.
        let next = self
            .source
            .next_data(offset)?
            .map_or(self.out_size, |d| d - d % CHUNK)
            .min(self.out_size);
        if next > offset {
            self.offset = next;
            return Ok(Some(Step::Skip { len: next - offset }));
        }
        let len = CHUNK.min(self.out_size - offset) as usize;
        buf.resize(CHUNK as usize, 0);
        let data = &mut buf[..len];
        let readable = self.size.saturating_sub(offset).min(len as u64) as usize;
        let any = self.source.read_sparse(offset, &mut data[..readable])?;
        data[readable..].fill(0);
        self.offset += len as u64;
        let pieces = if any {
            nonzero_pieces(data)
        } else {
            Vec::new()
        };
        Ok(Some(Step::Chunk {
            offset,
            len,
            pieces,
        }))
    }
}

/// The writing half: writes what a step holds and counts it.
struct Writer<'a, 'p> {
    sink: &'a mut dyn Sink,
    progress: &'p mut dyn FnMut(u64),
    stats: CopyStats,
}

impl<'a, 'p> Writer<'a, 'p> {
    fn new(sink: &'a mut dyn Sink, progress: &'p mut dyn FnMut(u64)) -> Self {
        Writer {
            sink,
            progress,
            stats: CopyStats::default(),
        }
    }

    fn take(&mut self, step: &Step, buf: &[u8]) -> Result<()> {
        match step {
            Step::Skip { len } => (self.progress)(*len),
            Step::Chunk {
                offset,
                len,
                pieces,
            } => {
                for &(start, end) in pieces {
                    self.sink
                        .write_at(offset + start as u64, &buf[start..end])?;
                    self.stats.written += (end - start) as u64;
                }
                (self.progress)(*len as u64);
            }
        }
        Ok(())
    }
}

/// [`Mode::Overlapped`]: the reader thread owns the source, the calling
/// thread the sink. Full buffers go to the writer through a channel of
/// `BUFFERS - 2` places, and come back through a second channel to be
/// filled again, so at most [`BUFFERS`] exist. Whichever side fails first
/// stops the other: a failed read ends the channel, and a failed write
/// drops its ends, which the reader sees at its next send or receive.
fn overlapped(
    source: &mut dyn Source,
    sink: &mut dyn Sink,
    out_size: u64,
    progress: &mut dyn FnMut(u64),
) -> std::result::Result<CopyStats, CopyError> {
    use std::sync::mpsc::{channel, sync_channel};
    type Full = (Step, Vec<u8>);
    let (full_tx, full_rx) = sync_channel::<Full>(BUFFERS - 2);
    let (empty_tx, empty_rx) = channel::<Vec<u8>>();
    std::thread::scope(|scope| {
        let reader = scope.spawn(move || -> Result<()> {
            let mut reader = Reader::new(source, out_size);
            let mut made = 0usize;
            loop {
                // A buffer back from the writer, or a new one while fewer
                // than BUFFERS exist; none at all once the writer is gone.
                let mut buf = match empty_rx.try_recv() {
                    Ok(b) => b,
                    Err(_) if made < BUFFERS => {
                        made += 1;
                        Vec::new()
                    }
                    Err(_) => match empty_rx.recv() {
                        Ok(b) => b,
                        Err(_) => return Ok(()),
                    },
                };
                let Some(step) = reader.step(&mut buf)? else {
                    return Ok(());
                };
                if full_tx.send((step, buf)).is_err() {
                    return Ok(());
                }
            }
        });
        let written = {
            let (full_rx, empty_tx) = (full_rx, empty_tx);
            let mut writer = Writer::new(sink, progress);
            let mut result = Ok(());
            for (step, buf) in &full_rx {
                result = writer.take(&step, &buf);
                if result.is_err() {
                    break;
                }
                // The reader may be done and gone: then the buffer is freed.
                let _ = empty_tx.send(buf);
            }
            result.map(|()| writer.stats)
        };
        let read = reader
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        match (written, read) {
            (Err(e), _) => Err(CopyError::sink(e)),
            (Ok(_), Err(e)) => Err(CopyError::source(e)),
            (Ok(stats), Ok(())) => Ok(stats),
        }
    })
}

/// The byte ranges of `data` that are not all zeros, in pieces of
/// [`PIECE`] bytes, neighbours joined.
fn nonzero_pieces(data: &[u8]) -> Vec<(usize, usize)> {
    let mut out: Vec<(usize, usize)> = Vec::new();
    for (i, piece) in data.chunks(PIECE).enumerate() {
        if is_zero(piece) {
            continue;
        }
        let start = i * PIECE;
        let end = start + piece.len();
        match out.last_mut() {
            Some((_, last)) if *last == start => *last = end,
            _ => out.push((start, end)),
        }
    }
    out
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
