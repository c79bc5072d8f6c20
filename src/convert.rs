//! Copying a guest disk from one form into another: the work of
//! `vhd convert`, as library code.
//!
//! A [`Source`] is a guest disk to read (an [`Image`] with its chain, or a
//! raw file); a [`Sink`] is where the guest bytes go (an [`Image`] open for
//! writing, or a raw file). [`copy`] moves the bytes in chunks, jumps over
//! stretches the source says hold no data, and writes only the 64 KiB
//! pieces that are not all zeros, so what is unallocated in the source
//! stays unallocated (or a hole) in the output.
//!
//! # Three ways to move the bytes
//!
//! The default, [`Mode::Auto`], takes the parallel copy where the sink
//! allows it and writes around the page cache (a durable raw or fixed
//! output on a disk), and the overlapped copy everywhere else.
//!
//! * [`Mode::Parallel`] (where the sink allows it: a raw
//!   file or a fixed image, whose contents do not depend on the order of
//!   the writes): [`WORKERS`] threads each take the next chunk of
//!   [`PARALLEL_CHUNK`] bytes, read it (one at a time: the source sits
//!   behind a lock) and write it themselves. The bytes a worker writes
//!   are still in its own cache, and one worker reads while the other
//!   writes.
//! * [`Mode::Overlapped`] (for every other sink: a dynamic image, whose
//!   blocks land in the order they are written, and any output written
//!   through the page cache): the source is read in one thread and the sink
//!   written in another. The reader owns the source, reads a chunk of
//!   [`CHUNK`] bytes, finds its non-zero pieces and passes it on through
//!   a bounded channel; the writer (the calling thread) owns the sink and
//!   writes in order. At most [`BUFFERS`] chunks are ever in memory.
//! * [`Mode::Plain`] does the steps of the overlapped copy one after the
//!   other in the calling thread: the reference the others are tested
//!   against (`tests/fast_paths.rs`). The overlapped copy makes the same
//!   write calls in the same order; the parallel one writes the same
//!   bytes, in other calls and another order.
//!
//! spec/performance.md has the measurements behind the chunk sizes and
//! the number of workers.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use crate::error::{Error, Result};
use crate::image::Image;
use crate::storage::{DIRECT_ALIGN, DirectBuf, DirectFile, FileStorage, SharedWrite, Storage};

/// Bytes read per step of an overlapped or plain copy. Chunks start at
/// multiples of this (so at block boundaries of every output block size
/// up to it; larger blocks are filled by several chunks in order).
pub const CHUNK: u64 = 2 * 1024 * 1024;
/// Chunks in memory at once in an overlapped copy: one being read, one
/// being written, and the rest queued between them.
pub const BUFFERS: usize = 4;
/// Bytes each worker of a parallel copy reads and then writes per step:
/// small, so that they are still in the worker's cache when it writes
/// them (a multiple of the 64 KiB unit in which zeros are skipped).
pub const PARALLEL_CHUNK: u64 = 1024 * 1024;
/// Threads of a parallel copy, the calling thread included. Writes into
/// one file wait for each other in the kernel (the file's lock), so more
/// workers than one reading and one writing only wait longer.
pub const WORKERS: usize = 2;
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

    /// A handle through which several threads may write at once, for a
    /// sink whose contents do not depend on the order of its writes (a
    /// raw file, a fixed image): see [`Mode::Parallel`]. `None` (the
    /// default) where writes must come one at a time and in order: a
    /// dynamic image places its blocks in the order they are first
    /// written.
    fn shared(&mut self) -> Option<SharedSink<'_>> {
        None
    }
}

/// Writes into a [`Sink`] from several threads at once (see
/// [`Sink::shared`]): guest offsets are storage offsets, below a limit.
#[derive(Clone, Copy)]
pub struct SharedSink<'a> {
    writer: &'a dyn SharedWrite,
    name: &'a str,
    limit: u64,
}

impl std::fmt::Debug for SharedSink<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedSink")
            .field("name", &self.name)
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

impl<'a> SharedSink<'a> {
    /// Writes through `writer` at the guest offsets themselves, refusing
    /// any byte at or past `limit` (a fixed image's footer starts there);
    /// `name` is used in messages.
    pub fn new(writer: &'a dyn SharedWrite, name: &'a str, limit: u64) -> Self {
        SharedSink {
            writer,
            name,
            limit,
        }
    }

    /// Whether its writer writes around the page cache (see
    /// [`SharedWrite::around_page_cache`]).
    pub fn around_page_cache(&self) -> bool {
        self.writer.around_page_cache()
    }

    /// Writes `data` at guest `offset`.
    pub fn write_at(&self, offset: u64, data: &[u8]) -> Result<()> {
        let len = data.len() as u64;
        if offset.checked_add(len).is_none_or(|end| end > self.limit) {
            return Err(Error::OutOfRange {
                offset,
                len,
                size: self.limit,
            });
        }
        self.writer
            .write_shared(data, offset)
            .map_err(|e| Error::io(format!("writing {} at offset {offset}", self.name), e))
    }
}

impl Sink for Image {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        Image::write_at(self, offset, data)
    }

    fn shared(&mut self) -> Option<SharedSink<'_>> {
        self.shared_sink()
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

    fn shared(&mut self) -> Option<SharedSink<'_>> {
        let writer = self.storage.shared_writer()?;
        Some(SharedSink::new(writer, &self.name, u64::MAX))
    }
}

/// Bytes an [`OutputFile`] lets pile up in the page cache before it asks
/// the system to start writing them to the disk.
pub const WRITEBACK_EVERY: u64 = 128 * 1024 * 1024;

/// How durable an [`OutputFile`] is when the copy is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Every sync the sink asks for is done (an image's flush; a raw
    /// sink's [`RawSink::finish`]), the file's cached pages are sent to
    /// the disk as the copy goes (see [`FileStorage::start_writeback`]),
    /// so the final sync is short, and the parallel copy's chunks go
    /// around the page cache where the file allows (see [`OutputFile`]).
    #[default]
    Durable,
    /// No sync at all: the output may still be only in the page cache
    /// when the copy returns, and a crash of the system can lose or tear
    /// it. For scratch outputs (`vhd convert -t unsafe`).
    Unsafe,
}

/// The output file of a convert: a [`FileStorage`] whose syncs and
/// write-back follow a [`Durability`]. Several threads may write it at
/// once (see [`Storage::shared_writer`]).
///
/// A durable output file writes around the page cache where it can: a
/// write whose offset and memory are aligned to [`DIRECT_ALIGN`] goes
/// through a [`DirectFile`], all but a last part shorter than
/// [`DIRECT_ALIGN`]; everything else goes through the page cache. The
/// copy's buffers are aligned ([`DirectBuf`]) and its pieces start at
/// multiples of 64 KiB in them, so the data of a raw or fixed output, and
/// of a dynamic one (whose blocks this crate lays out with their data on
/// 4 KiB boundaries, see [`crate::format::BLOCK_DATA_ALIGN`]), goes
/// direct; an image's metadata (footers, bitmaps, the BAT, short and
/// mostly unaligned) goes through the cache.
/// Where the file system has no direct writes, or refuses one (`EINVAL`),
/// every write goes through the page cache. The final sync makes both
/// kinds durable. An unsafe output file always writes through the page
/// cache: a direct write waits for the disk, which is what `-t unsafe`
/// asks not to do.
#[derive(Debug)]
pub struct OutputFile {
    file: FileStorage,
    durability: Durability,
    /// The direct handle, while it is in use.
    direct: Option<DirectFile>,
    /// Set when the direct handle refused a write: every write goes
    /// through the page cache from then on.
    direct_refused: AtomicBool,
    /// Bytes written through the direct handle.
    direct_written: AtomicU64,
    /// What was written through the page cache since the last
    /// write-back was started.
    unsent: Mutex<Unsent>,
}

/// Bytes written since the last write-back was started, and the range
/// those writes touched.
#[derive(Debug, Default)]
struct Unsent {
    bytes: u64,
    touched: Option<(u64, u64)>,
}

impl OutputFile {
    /// `file`, made as durable as `durability` says.
    pub fn new(file: FileStorage, durability: Durability) -> Self {
        let direct = match durability {
            Durability::Durable => file.open_direct(),
            Durability::Unsafe => None,
        };
        OutputFile {
            file,
            durability,
            direct,
            direct_refused: AtomicBool::new(false),
            direct_written: AtomicU64::new(0),
            unsent: Mutex::default(),
        }
    }

    /// Bytes written so far around the page cache (through a
    /// [`DirectFile`]).
    pub fn direct_written(&self) -> u64 {
        self.direct_written.load(Ordering::Relaxed)
    }

    /// Writes `buf` at `offset` through the direct handle, if there is
    /// one that has not refused a write. `Ok(false)`: not written, write
    /// it through the page cache. A refusal (`EINVAL`: the file system or
    /// the disk wants another alignment, or no direct writes after all)
    /// turns the direct handle off for good; any other error is returned.
    fn try_direct(&self, buf: &[u8], offset: u64) -> std::io::Result<bool> {
        let Some(direct) = &self.direct else {
            return Ok(false);
        };
        if self.direct_refused.load(Ordering::Relaxed) {
            return Ok(false);
        }
        match direct.write_all_at(buf, offset) {
            Ok(()) => {
                self.direct_written
                    .fetch_add(buf.len() as u64, Ordering::Relaxed);
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
                self.direct_refused.store(true, Ordering::Relaxed);
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Writes through the page cache, and every [`WRITEBACK_EVERY`] bytes
    /// asks the system to start sending them to the disk.
    fn write_cached(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        self.file.write_shared(buf, offset)?;
        if self.durability == Durability::Durable {
            let end = offset + buf.len() as u64;
            let due = {
                let mut unsent = self.unsent.lock().unwrap_or_else(PoisonError::into_inner);
                let (lo, hi) = unsent
                    .touched
                    .map_or((offset, end), |(lo, hi)| (lo.min(offset), hi.max(end)));
                unsent.bytes += buf.len() as u64;
                unsent.touched = Some((lo, hi));
                (unsent.bytes >= WRITEBACK_EVERY).then(|| std::mem::take(&mut *unsent))
            };
            if let Some(Unsent {
                touched: Some((lo, hi)),
                ..
            }) = due
            {
                // Only the range written since the last time: asking for
                // the whole file each time would walk its every cached
                // page again and again. Only a hint: if it fails, the
                // final sync does the work.
                let _ = self.file.start_writeback(lo, hi - lo);
            }
        }
        Ok(())
    }
}

/// How many bytes at the start of a write of `buf` at `offset` can go
/// around the page cache: all of its whole [`DIRECT_ALIGN`] units when its
/// offset and its memory are aligned, else none.
fn direct_part(buf: &[u8], offset: u64) -> usize {
    if offset.is_multiple_of(DIRECT_ALIGN as u64)
        && (buf.as_ptr() as usize).is_multiple_of(DIRECT_ALIGN)
    {
        buf.len() - buf.len() % DIRECT_ALIGN
    } else {
        0
    }
}

impl Storage for OutputFile {
    fn len(&self) -> std::io::Result<u64> {
        self.file.len()
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    /// Around the page cache where the write is aligned and the file
    /// allows it, as [`SharedWrite::write_shared`]. A direct write
    /// returns once the disk has it; the overlapped copy, which writes
    /// a dynamic output this way from one thread, reads ahead meanwhile.
    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        self.write_shared(buf, offset)
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

    fn shared_writer(&self) -> Option<&dyn SharedWrite> {
        Some(self)
    }
}

impl SharedWrite for OutputFile {
    /// While it has a direct handle that has not refused a write.
    fn around_page_cache(&self) -> bool {
        self.direct.is_some() && !self.direct_refused.load(Ordering::Relaxed)
    }

    /// Around the page cache where the write is aligned and the file
    /// allows it (see [`OutputFile`]); else through it.
    fn write_shared(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        let (aligned, rest) = buf.split_at(direct_part(buf, offset));
        if !aligned.is_empty() && self.try_direct(aligned, offset)? {
            if rest.is_empty() {
                return Ok(());
            }
            return self.write_cached(rest, offset + aligned.len() as u64);
        }
        self.write_cached(buf, offset)
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
    /// The way the bytes moved: [`Mode::Parallel`], [`Mode::Overlapped`]
    /// or [`Mode::Plain`] (never [`Mode::Auto`]).
    pub mode: Mode,
}

/// How [`copy_with`] moves the bytes (see the module documentation).
/// All modes write the same bytes to the same places.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// [`Mode::Parallel`] where the sink can be written from several
    /// threads and its writes go around the page cache
    /// ([`SharedSink::around_page_cache`]: a durable raw or fixed output
    /// on a disk); else [`Mode::Overlapped`]. Through the page cache the
    /// writers of one file take its lock in turn and the waiting one spins
    /// on it: twice the CPU for the same work, and in the bench on this
    /// project's 2-core machine slower than one writer (spec/performance.md).
    #[default]
    Auto,
    /// [`WORKERS`] threads that each read and write their own chunks,
    /// where the sink can be written from several threads
    /// ([`Sink::shared`]); elsewhere [`Mode::Overlapped`].
    Parallel,
    /// Read in a second thread while the calling thread writes.
    Overlapped,
    /// Read, then write, one chunk at a time, in the calling thread.
    Plain,
}

/// Copies the guest bytes of `source` into `sink`, whose disk is
/// `out_size` bytes (at least the source's size; the rest reads as zeros
/// and is not written), in the default [`Mode`]. `progress` is told how
/// many bytes of the output each step covered; it is called in the
/// calling thread.
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
            let mut reader = Reader::new(source, out_size, CHUNK);
            let mut writer = Writer::new(sink, progress);
            let mut buf = vec![0u8; CHUNK as usize];
            while let Some(step) = reader.step(&mut buf).map_err(CopyError::source)? {
                let pieces = pieces(&step, &buf);
                writer.take(&step, &pieces, &buf).map_err(CopyError::sink)?;
            }
            Ok(CopyStats {
                mode: Mode::Plain,
                ..writer.stats
            })
        }
        Mode::Overlapped => overlapped(source, sink, out_size, progress),
        Mode::Auto | Mode::Parallel => {
            // Auto: only where the writes go around the page cache.
            match sink
                .shared()
                .filter(|s| mode == Mode::Parallel || s.around_page_cache())
            {
                Some(shared) => parallel(source, shared, out_size, progress),
                None => overlapped(source, sink, out_size, progress),
            }
        }
    }
}

/// One step of a copy: output bytes to skip (all zeros), or a chunk read
/// into a buffer.
#[derive(Debug)]
enum Step {
    /// `len` bytes read as zeros: nothing to write.
    Skip { len: u64 },
    /// A chunk of `len` bytes at `offset` was read into the buffer; if
    /// not `any`, the source holds no data there (the buffer is zeros).
    Chunk { offset: u64, len: usize, any: bool },
}

/// The byte ranges of the buffer that a step writes: the pieces of a
/// chunk that are not all zeros (neighbours joined).
fn pieces(step: &Step, buf: &[u8]) -> Vec<(usize, usize)> {
    match *step {
        Step::Chunk { len, any: true, .. } => nonzero_pieces(&buf[..len]),
        _ => Vec::new(),
    }
}

/// The reading half: walks the output disk in chunks.
struct Reader<'a> {
    source: &'a mut dyn Source,
    size: u64,
    out_size: u64,
    chunk: u64,
    offset: u64,
}

impl<'a> Reader<'a> {
    fn new(source: &'a mut dyn Source, out_size: u64, chunk: u64) -> Self {
        let size = source.size();
        Reader {
            source,
            size,
            out_size,
            chunk,
            offset: 0,
        }
    }

    /// The next step, reading into `buf` (at least a chunk long); `None`
    /// at the end.
    fn step(&mut self, buf: &mut [u8]) -> Result<Option<Step>> {
        let offset = self.offset;
        if offset >= self.out_size {
            return Ok(None);
        }
        // Jump over stretches with no data, staying chunk-aligned.
        let next = self
            .source
            .next_data(offset)?
            .map_or(self.out_size, |d| d - d % self.chunk)
            .min(self.out_size);
        if next > offset {
            self.offset = next;
            return Ok(Some(Step::Skip { len: next - offset }));
        }
        let len = self.chunk.min(self.out_size - offset) as usize;
        let data = &mut buf[..len];
        let readable = self.size.saturating_sub(offset).min(len as u64) as usize;
        let any = self.source.read_sparse(offset, &mut data[..readable])?;
        data[readable..].fill(0);
        self.offset += len as u64;
        Ok(Some(Step::Chunk { offset, len, any }))
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

    fn take(&mut self, step: &Step, pieces: &[(usize, usize)], buf: &[u8]) -> Result<()> {
        match *step {
            Step::Skip { len } => (self.progress)(len),
            Step::Chunk { offset, len, .. } => {
                for &(start, end) in pieces {
                    self.sink
                        .write_at(offset + start as u64, &buf[start..end])?;
                    self.stats.written += (end - start) as u64;
                }
                (self.progress)(len as u64);
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
    type Full = (Step, Vec<(usize, usize)>, DirectBuf);
    let (full_tx, full_rx) = sync_channel::<Full>(BUFFERS - 2);
    let (empty_tx, empty_rx) = channel::<DirectBuf>();
    std::thread::scope(|scope| {
        let reader = scope.spawn(move || -> Result<()> {
            let mut reader = Reader::new(source, out_size, CHUNK);
            let mut made = 0usize;
            loop {
                // A buffer back from the writer, or a new one while fewer
                // than BUFFERS exist; none at all once the writer is gone.
                let mut buf = match empty_rx.try_recv() {
                    Ok(b) => b,
                    Err(_) if made < BUFFERS => {
                        made += 1;
                        // Aligned, as the parallel copy's (see `work`).
                        DirectBuf::zeroed(CHUNK as usize)
                    }
                    Err(_) => match empty_rx.recv() {
                        Ok(b) => b,
                        Err(_) => return Ok(()),
                    },
                };
                let Some(step) = reader.step(&mut buf)? else {
                    return Ok(());
                };
                let pieces = pieces(&step, &buf);
                if full_tx.send((step, pieces, buf)).is_err() {
                    return Ok(());
                }
            }
        });
        let written = {
            let (full_rx, empty_tx) = (full_rx, empty_tx);
            let mut writer = Writer::new(sink, progress);
            let mut result = Ok(());
            for (step, pieces, buf) in &full_rx {
                result = writer.take(&step, &pieces, &buf);
                if result.is_err() {
                    break;
                }
                // The reader may be done and gone: then the buffer is freed.
                let _ = empty_tx.send(buf);
            }
            result.map(|()| CopyStats {
                mode: Mode::Overlapped,
                ..writer.stats
            })
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

/// What the workers of a parallel copy share.
struct Shared<'a, 's> {
    /// The source and the position in it: taking the next chunk and
    /// reading it happen under this lock, so chunks are read in order,
    /// one at a time, and none after a failed read.
    reader: Mutex<Reader<'a>>,
    sink: SharedSink<'s>,
    /// Output bytes covered by finished steps.
    done: AtomicU64,
    /// Bytes written.
    written: AtomicU64,
    /// Set by the first failure: no worker takes another chunk.
    stop: AtomicBool,
    /// Set by a failed write: no worker writes again.
    sink_failed: AtomicBool,
    /// The first failure.
    error: Mutex<Option<CopyError>>,
}

impl Shared<'_, '_> {
    fn fail(&self, error: CopyError) {
        self.stop.store(true, Ordering::SeqCst);
        if error.side == Side::Sink {
            self.sink_failed.store(true, Ordering::SeqCst);
        }
        let mut first = self.error.lock().unwrap_or_else(PoisonError::into_inner);
        first.get_or_insert(error);
    }

    /// One worker: takes, reads and writes chunks until there are none
    /// left or something failed, calling `after_step` after each step.
    fn work(&self, after_step: &mut dyn FnMut()) {
        // Aligned for direct writes: the pieces of a chunk start at
        // multiples of 64 KiB in it, so a sink that writes around the
        // page cache takes them as they are (see [`OutputFile`]).
        let mut buf = DirectBuf::zeroed(PARALLEL_CHUNK as usize);
        while !self.stop.load(Ordering::SeqCst) {
            let step = {
                let mut reader = self.reader.lock().unwrap_or_else(PoisonError::into_inner);
                // Checked again under the lock: another worker's read may
                // have failed while this one waited.
                if self.stop.load(Ordering::SeqCst) {
                    return;
                }
                match reader.step(&mut buf) {
                    Ok(Some(step)) => step,
                    Ok(None) => return,
                    Err(e) => return self.fail(CopyError::source(e)),
                }
            };
            let (offset, len) = match step {
                Step::Skip { len } => (0, len),
                Step::Chunk { offset, len, .. } => (offset, len as u64),
            };
            for (start, end) in pieces(&step, &buf) {
                if self.sink_failed.load(Ordering::SeqCst) {
                    return;
                }
                if let Err(e) = self.sink.write_at(offset + start as u64, &buf[start..end]) {
                    return self.fail(CopyError::sink(e));
                }
                self.written
                    .fetch_add((end - start) as u64, Ordering::Relaxed);
            }
            self.done.fetch_add(len, Ordering::Relaxed);
            after_step();
        }
    }
}

/// [`Mode::Parallel`] into a sink that can be written from several
/// threads. The calling thread is one of the workers; it reports the
/// progress of all of them after each of its own steps, and the rest
/// when all are done. The first failure stops every worker (see
/// [`Shared`]): after a failed read nothing more is read, and after a
/// failed write nothing more is written, but for writes another worker
/// had already started.
fn parallel(
    source: &mut dyn Source,
    sink: SharedSink<'_>,
    out_size: u64,
    progress: &mut dyn FnMut(u64),
) -> std::result::Result<CopyStats, CopyError> {
    let shared = Shared {
        reader: Mutex::new(Reader::new(source, out_size, PARALLEL_CHUNK)),
        sink,
        done: AtomicU64::new(0),
        written: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        sink_failed: AtomicBool::new(false),
        error: Mutex::new(None),
    };
    let mut reported = 0u64;
    std::thread::scope(|scope| {
        let helpers: Vec<_> = (1..WORKERS)
            .map(|_| scope.spawn(|| shared.work(&mut || {})))
            .collect();
        shared.work(&mut || {
            let done = shared.done.load(Ordering::Relaxed);
            progress(done - reported);
            reported = done;
        });
        for helper in helpers {
            helper
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        }
    });
    let Shared {
        done,
        written,
        error,
        ..
    } = shared;
    if let Some(e) = error.into_inner().unwrap_or_else(PoisonError::into_inner) {
        return Err(e);
    }
    let rest = done.into_inner() - reported;
    if rest > 0 {
        progress(rest);
    }
    Ok(CopyStats {
        written: written.into_inner(),
        mode: Mode::Parallel,
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

    #[test]
    fn a_refused_direct_write_goes_through_the_page_cache_and_so_do_all_after_it() {
        let dir = crate::storage::disk_tempdir();
        let path = dir.path().join("out");
        let mut file = FileStorage::create_new(&path).expect("create");
        file.set_len(64 * 1024).expect("size");
        if file.open_direct().is_none() {
            crate::storage::test_skip::skip(&format!(
                "{} takes no direct writes (O_DIRECT)",
                dir.path().display()
            ));
            return;
        }
        let out = OutputFile::new(file, Durability::Durable);
        let mut chunk = DirectBuf::zeroed(PARALLEL_CHUNK as usize);
        chunk
            .iter_mut()
            .enumerate()
            .for_each(|(i, b)| *b = (i % 251) as u8 + 1);
        // Memory one byte off the alignment: the system refuses it
        // (EINVAL), which must not fail the write.
        let off = &chunk[1..=DIRECT_ALIGN];
        assert!(!out.try_direct(off, 0).expect("a refusal is no error"));
        out.write_shared(off, 0).expect("write");
        // An aligned write after it goes through the page cache too.
        out.write_shared(&chunk[..DIRECT_ALIGN], 8192)
            .expect("write");
        assert_eq!(out.direct_written(), 0);
        let got = std::fs::read(&path).expect("read back");
        assert_eq!(&got[..DIRECT_ALIGN], off);
        assert_eq!(&got[8192..8192 + DIRECT_ALIGN], &chunk[..DIRECT_ALIGN]);
    }
}
