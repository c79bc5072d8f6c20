//! A file on disk, locked for the life of the storage.

use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::path::{Path, PathBuf};

use super::{SharedWrite, Storage};

/// Which advisory lock to hold on the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// Readers: many may hold it; no writer may.
    Shared,
    /// A writer: nobody else may hold any lock.
    Exclusive,
}

/// An image file, held open and locked until dropped.
#[derive(Debug)]
pub struct FileStorage {
    file: File,
    writable: bool,
}

/// Why opening a file storage failed.
#[derive(Debug)]
pub enum OpenError {
    /// The file could not be opened.
    Io(io::Error),
    /// Another process holds a conflicting lock.
    Locked(LockMode),
}

impl FileStorage {
    /// Opens an existing file, read-only (shared lock) or read-write
    /// (exclusive lock), without waiting for the lock.
    pub fn open(path: &Path, writable: bool) -> Result<Self, OpenError> {
        let file = OpenOptions::new()
            .read(true)
            .write(writable)
            .open(path)
            .map_err(OpenError::Io)?;
        Self::lock(file, writable)
    }

    /// Creates a new file (never overwriting one) with an exclusive lock.
    pub fn create_new(path: &Path) -> Result<Self, OpenError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(OpenError::Io)?;
        Self::lock(file, true)
    }

    /// Takes the lock without waiting for another holder, but retries for
    /// up to about 100 ms: when a thread of this process starts a program,
    /// the new process holds a copy of every open file (and so of every
    /// lock) until it has started, and a lock released just before must not
    /// look taken.
    fn lock(file: File, writable: bool) -> Result<Self, OpenError> {
        const TRIES: u32 = 20;
        let mode = if writable {
            LockMode::Exclusive
        } else {
            LockMode::Shared
        };
        for attempt in 1..=TRIES {
            let result = if writable {
                file.try_lock()
            } else {
                file.try_lock_shared()
            };
            match result {
                Ok(()) => return Ok(FileStorage { file, writable }),
                Err(TryLockError::WouldBlock) if attempt < TRIES => {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Err(TryLockError::WouldBlock) => return Err(OpenError::Locked(mode)),
                Err(TryLockError::Error(e)) => return Err(OpenError::Io(e)),
            }
        }
        Err(OpenError::Locked(mode))
    }

    /// Whether the file was opened for writing.
    pub fn is_writable(&self) -> bool {
        self.writable
    }

    /// A second handle on this file for writes that go around the page
    /// cache ([`DirectFile`]), or `None` where there is none: a file not
    /// open for writing, a system other than Linux, a file in memory
    /// (tmpfs, ramfs: nothing to go around; tmpfs takes `O_DIRECT` but
    /// writes through its pages all the same), a file system that
    /// refuses `O_DIRECT`, or no `/proc` to reopen the file through (the
    /// file may have no name at all, see [`PendingFile`]).
    pub fn open_direct(&self) -> Option<DirectFile> {
        if !self.writable {
            return None;
        }
        #[cfg(target_os = "linux")]
        {
            use rustix::fs::{Mode, OFlags, fstatfs, open};
            use std::os::fd::AsRawFd;
            #[allow(clippy::cast_sign_loss)] // a magic number, not a quantity
            let in_memory = fstatfs(&self.file)
                .is_ok_and(|fs| [TMPFS_MAGIC, RAMFS_MAGIC].contains(&(fs.f_type as u64)));
            if in_memory {
                return None;
            }
            let path = format!("/proc/self/fd/{}", self.file.as_raw_fd());
            open(
                path.as_str(),
                OFlags::WRONLY | OFlags::DIRECT | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .ok()
            .map(|fd| DirectFile {
                file: File::from(fd),
            })
        }
        #[cfg(not(target_os = "linux"))]
        None
    }

    /// Asks the system to start writing the changed pages of bytes
    /// `offset..offset + len` to the disk now, without waiting for them
    /// (Linux: `posix_fadvise` with `POSIX_FADV_DONTNEED`, which starts
    /// their write-back and drops pages of the range already on the disk
    /// from the cache). A long write that calls this for each stretch it
    /// finished keeps the disk busy while it goes on, so its final sync
    /// has little left to wait for. Only a hint: it never makes anything
    /// durable, and does nothing where the system has no such hint or the
    /// file lives in memory (tmpfs).
    pub fn start_writeback(&self, offset: u64, len: u64) -> io::Result<()> {
        #[cfg(target_os = "linux")]
        if let Some(len) = std::num::NonZeroU64::new(len) {
            rustix::fs::fadvise(&self.file, offset, Some(len), rustix::fs::Advice::DontNeed)?;
        }
        #[cfg(not(target_os = "linux"))]
        let _ = (offset, len);
        Ok(())
    }
}

/// Alignment, in bytes, of a write through a [`DirectFile`]: its offset
/// in the file, its length and the address of its memory must all be
/// multiples of this. 4 KiB satisfies every disk's logical block size
/// (512 or 4096 bytes) and the page size of common systems.
pub const DIRECT_ALIGN: usize = 4096;

/// `f_type` of tmpfs in `statfs` (`linux/magic.h`).
#[cfg(target_os = "linux")]
const TMPFS_MAGIC: u64 = 0x0102_1994;
/// `f_type` of ramfs in `statfs` (`linux/magic.h`).
#[cfg(target_os = "linux")]
const RAMFS_MAGIC: u64 = 0x8584_58f6;

/// How many bytes at the start of `memory` to skip to reach an address
/// that is a multiple of [`DIRECT_ALIGN`].
fn align_skip(memory: &[u8]) -> usize {
    (DIRECT_ALIGN - memory.as_ptr() as usize % DIRECT_ALIGN) % DIRECT_ALIGN
}

/// An owned, zeroed buffer of `len` bytes that starts at a multiple of
/// [`DIRECT_ALIGN`] in memory, so that a
/// [`DirectFile`] can write any aligned part of it as it is. It stays
/// aligned when moved (say, sent to another thread): its bytes live on
/// the heap and do not move with it.
#[derive(Debug)]
pub struct DirectBuf {
    memory: Vec<u8>,
    skip: usize,
    len: usize,
}

impl DirectBuf {
    /// A buffer of `len` zero bytes.
    pub fn zeroed(len: usize) -> Self {
        let memory = vec![0u8; len + DIRECT_ALIGN];
        let skip = align_skip(&memory);
        DirectBuf { memory, skip, len }
    }
}

impl std::ops::Deref for DirectBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.memory[self.skip..self.skip + self.len]
    }
}

impl std::ops::DerefMut for DirectBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.memory[self.skip..self.skip + self.len]
    }
}

/// A second handle on a [`FileStorage`]'s file whose writes go around the
/// page cache, straight to the disk (Linux `O_DIRECT`); see
/// [`FileStorage::open_direct`].
///
/// A write through it returns once the disk has the data (in its own
/// cache, at least); it is durable only after a sync of the file, which
/// may go through either handle (`fdatasync` applies to the file, not to
/// one handle). It allocates no page-cache memory at all, which is what
/// it is for: a guest whose free memory the host has taken back (free
/// page reporting) pays the host's faults for every new page-cache page,
/// and a large copy through the cache can cost several times the disk's
/// own time (spec/performance.md, "The host's share").
#[derive(Debug)]
pub struct DirectFile {
    file: File,
}

impl DirectFile {
    /// Writes `buf` at `offset`. The offset, the length and the address
    /// of `buf` must be multiples of [`DIRECT_ALIGN`]; the system refuses
    /// a write that is not aligned as the disk needs (`EINVAL`), and so
    /// may a file system that takes the handle but not such writes.
    pub fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        pwrite(&self.file, buf, offset)
    }
}

/// A file being made at a path, which gets its name only when it is
/// complete: a maker that is killed or fails leaves nothing behind.
///
/// Where the system allows (Linux, `O_TMPFILE`), the file has no name at
/// all while it is written and is linked in by [`PendingFile::persist`].
/// Elsewhere it is written under a hidden temporary name beside the target
/// and renamed; that name is removed on failure (and on drop), but a kill
/// can leave it.
#[derive(Debug)]
pub struct PendingFile {
    target: PathBuf,
    /// The hidden temporary name, when the file has one.
    temp: Option<PathBuf>,
    /// A second handle to the file, to name it when done.
    handle: File,
    persisted: bool,
}

impl PendingFile {
    /// Starts a new file that will be named `target`, in the same
    /// directory, and returns it (exclusively locked) for writing.
    pub fn create(target: &Path) -> io::Result<(PendingFile, FileStorage)> {
        let dir = match target.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let (file, temp) = if let Some(file) = unnamed_file(&dir)? {
            (file, None)
        } else {
            let temp = temp_name(target);
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&temp)?;
            (file, Some(temp))
        };
        let handle = file.try_clone()?;
        let storage = FileStorage::lock(file, true).map_err(|e| match e {
            OpenError::Io(e) => e,
            OpenError::Locked(_) => io::Error::other("a new file is locked by someone else"),
        })?;
        Ok((
            PendingFile {
                target: target.to_path_buf(),
                temp,
                handle,
                persisted: false,
            },
            storage,
        ))
    }

    /// Gives the complete file its name (the caller has synced it). With
    /// `replace`, an existing file of that name is replaced atomically;
    /// without, an existing file makes this fail. The directory is synced
    /// after, so the name is durable too.
    pub fn persist(self, replace: bool) -> io::Result<()> {
        let dir = self.target.parent().map(Path::to_path_buf);
        self.persist_unsynced(replace)?;
        sync_dir(dir.as_deref())
    }

    /// [`PendingFile::persist`] without the sync of the directory: the name
    /// may be lost in a crash (for outputs the caller chose not to make
    /// durable, such as `vhd convert -t unsafe`).
    pub fn persist_unsynced(mut self, replace: bool) -> io::Result<()> {
        match self.temp.take() {
            Some(temp) => {
                if !replace && self.target.symlink_metadata().is_ok() {
                    self.temp = Some(temp);
                    return Err(io::Error::from(io::ErrorKind::AlreadyExists));
                }
                std::fs::rename(&temp, &self.target)?;
            }
            None if replace && self.target.symlink_metadata().is_ok() => {
                // A link cannot replace a file: link under a temporary
                // name, then rename over the old file in one step.
                let temp = temp_name(&self.target);
                link_unnamed(&self.handle, &temp)?;
                if let Err(e) = std::fs::rename(&temp, &self.target) {
                    let _ = std::fs::remove_file(&temp);
                    return Err(e);
                }
            }
            None => link_unnamed(&self.handle, &self.target)?,
        }
        self.persisted = true;
        Ok(())
    }
}

impl Drop for PendingFile {
    fn drop(&mut self) {
        if !self.persisted
            && let Some(temp) = &self.temp
        {
            // Ours, made by `create`, and incomplete.
            let _ = std::fs::remove_file(temp);
        }
    }
}

/// A hidden name beside `target`, unique to this process.
fn temp_name(target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .map_or_else(|| "out".into(), |n| n.to_string_lossy().into_owned());
    target.with_file_name(format!(".{name}.vhd-tmp-{}", std::process::id()))
}

/// A new file without a name in `dir`; `None` where the system or the file
/// system cannot make one.
#[cfg(target_os = "linux")]
fn unnamed_file(dir: &Path) -> io::Result<Option<File>> {
    use rustix::fs::{CWD, Mode, OFlags, openat};
    match openat(
        CWD,
        dir,
        OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    ) {
        Ok(fd) => Ok(Some(File::from(fd))),
        // Not supported by this file system or kernel.
        Err(rustix::io::Errno::OPNOTSUPP | rustix::io::Errno::ISDIR | rustix::io::Errno::INVAL) => {
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(not(target_os = "linux"))]
fn unnamed_file(_dir: &Path) -> io::Result<Option<File>> {
    Ok(None)
}

/// Gives an unnamed file (from [`unnamed_file`]) the name `path`.
#[cfg(target_os = "linux")]
fn link_unnamed(file: &File, path: &Path) -> io::Result<()> {
    use rustix::fs::{AtFlags, CWD, linkat};
    use std::os::fd::AsRawFd;
    let proc_path = format!("/proc/self/fd/{}", file.as_raw_fd());
    linkat(CWD, proc_path.as_str(), CWD, path, AtFlags::SYMLINK_FOLLOW).or_else(|_| {
        // Without /proc: link the descriptor itself (needs a capability
        // on older kernels).
        linkat(file, "", CWD, path, AtFlags::EMPTY_PATH).map_err(io::Error::from)
    })
}

#[cfg(not(target_os = "linux"))]
fn link_unnamed(_file: &File, _path: &Path) -> io::Result<()> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

/// Syncs a directory, so a new or renamed entry in it is durable.
fn sync_dir(dir: Option<&Path>) -> io::Result<()> {
    let dir = match dir {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

impl Storage for FileStorage {
    fn len(&self) -> io::Result<u64> {
        let meta = self.file.metadata()?;
        if meta.is_file() {
            Ok(meta.len())
        } else {
            // A block device reports length 0 in its metadata.
            io::Seek::seek(&mut &self.file, io::SeekFrom::End(0))
        }
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        pread(&self.file, buf, offset)
    }

    /// Writes in pieces that never cross a [`WRITE_PIECE`] boundary of
    /// the file (see there why).
    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.write_shared(buf, offset)
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn sync(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// From the file system's hole map (`SEEK_DATA`/`SEEK_HOLE`), where
    /// the system has one; else the whole rest of the file.
    fn next_data(&self, offset: u64) -> io::Result<Option<(u64, u64)>> {
        let len = self.len()?;
        if offset >= len {
            return Ok(None);
        }
        // When the system cannot say, everything may be data.
        Ok(seek_data(&self.file, offset, len).unwrap_or(Some((offset, len))))
    }

    /// Only for a file opened for writing.
    fn shared_writer(&self) -> Option<&dyn SharedWrite> {
        self.writable.then_some(self as &dyn SharedWrite)
    }
}

impl SharedWrite for FileStorage {
    /// Writes in pieces that never cross a [`WRITE_PIECE`] boundary of
    /// the file (see there why).
    fn write_shared(&self, mut buf: &[u8], mut offset: u64) -> io::Result<()> {
        while !buf.is_empty() {
            let to_boundary = WRITE_PIECE - offset % WRITE_PIECE;
            let n = usize::try_from(to_boundary).map_or(buf.len(), |b| b.min(buf.len()));
            let (piece, rest) = buf.split_at(n);
            pwrite(&self.file, piece, offset)?;
            buf = rest;
            offset += n as u64;
        }
        Ok(())
    }
}

/// The answer of `SEEK_DATA`/`SEEK_HOLE`; an error when the system cannot
/// say.
#[cfg(target_os = "linux")]
fn seek_data(file: &File, offset: u64, len: u64) -> io::Result<Option<(u64, u64)>> {
    use rustix::fs::{SeekFrom, seek};
    let data = match seek(file, SeekFrom::Data(offset)) {
        Ok(d) => d,
        // ENXIO: no data at or after `offset`.
        Err(rustix::io::Errno::NXIO) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    if data >= len {
        return Ok(None);
    }
    let hole = seek(file, SeekFrom::Hole(data))?;
    if hole > data {
        Ok(Some((data, hole.min(len))))
    } else {
        Err(io::Error::other("SEEK_HOLE went backwards"))
    }
}

#[cfg(not(target_os = "linux"))]
fn seek_data(_file: &File, _offset: u64, _len: u64) -> io::Result<Option<(u64, u64)>> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

#[cfg(unix)]
fn pread(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

/// The largest piece [`FileStorage`] hands to one write call: 1 MiB, and
/// never across a 1 MiB boundary of the file.
///
/// Why: Linux's page cache (ext4 since 6.x) gives a write that covers an
/// aligned 2 MiB range one 2 MiB folio, taken from the allocator's
/// highest-order free lists. In a virtual machine with free page
/// reporting (a virtio balloon that hands free memory back to the host)
/// those are exactly the pages the host has taken back, and filling one
/// costs the host's faults on first touch. Measured on this project's
/// machine (a Firecracker guest, ext4, 512 MiB written with `dd` after 3
/// seconds idle): 2 MiB writes 0.93 to 1.69 s of system time, 1 MiB
/// writes 0.14 to 0.27 s, 512 KiB writes 0.16 to 0.17 s (details in
/// `spec/performance.md`, "The host's share"). Smaller folios
/// come from lower-order lists, which the host does not take back. On a
/// machine without page reporting the pieces cost nothing measurable
/// (one more system call per MiB).
pub const WRITE_PIECE: u64 = 1024 * 1024;

#[cfg(unix)]
fn pwrite(file: &File, buf: &[u8], offset: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, buf, offset)
}

#[cfg(windows)]
fn pread(file: &File, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        match file.seek_read(buf, offset)? {
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
        }
    }
    Ok(())
}

#[cfg(windows)]
fn pwrite(file: &File, mut buf: &[u8], mut offset: u64) -> io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        match file.seek_write(buf, offset)? {
            0 => return Err(io::ErrorKind::WriteZero.into()),
            n => {
                buf = &buf[n..];
                offset += n as u64;
            }
        }
    }
    Ok(())
}

/// A temporary directory on the disk that holds this crate's build (its
/// `target` directory), not in `/tmp`, which may be a tmpfs: for tests of
/// direct writes.
#[cfg(test)]
pub(crate) fn disk_tempdir() -> tempfile::TempDir {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    std::fs::create_dir_all(&base).expect("create target/");
    tempfile::Builder::new()
        .prefix("vhdref-unit-")
        .tempdir_in(base)
        .expect("a temporary directory under target/")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes that differ from their neighbours, so a piece written at the
    /// wrong offset or twice shows.
    fn numbered(len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i % 251) as u8 ^ (i >> 16) as u8)
            .collect()
    }

    #[test]
    fn a_write_split_into_pieces_lands_whole_and_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pieces");
        let mut file = FileStorage::create_new(&path).unwrap();
        let old = vec![0xA5u8; 6 << 20];
        file.write_all_at(&old, 0).unwrap();
        // Starts off a boundary, crosses three and ends off one.
        let offset = WRITE_PIECE - 512 - 7;
        let data = numbered(3 * WRITE_PIECE as usize + 4099);
        file.write_all_at(&data, offset).unwrap();
        let mut back = vec![0u8; old.len()];
        file.read_exact_at(&mut back, 0).unwrap();
        let start = usize::try_from(offset).unwrap();
        let end = start + data.len();
        assert!(back[..start].iter().all(|&b| b == 0xA5));
        assert_eq!(&back[start..end], &data[..]);
        assert!(back[end..].iter().all(|&b| b == 0xA5));
    }

    #[test]
    fn a_write_of_exactly_one_aligned_piece_and_an_empty_write_work() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("one");
        let mut file = FileStorage::create_new(&path).unwrap();
        let data = numbered(WRITE_PIECE as usize);
        file.write_all_at(&data, WRITE_PIECE).unwrap();
        file.write_all_at(&[], 5 * WRITE_PIECE).unwrap();
        assert_eq!(file.len().unwrap(), 2 * WRITE_PIECE);
        let mut back = vec![0u8; data.len()];
        file.read_exact_at(&mut back, WRITE_PIECE).unwrap();
        assert_eq!(back, data);
    }

    #[test]
    fn only_a_file_open_for_writing_offers_a_shared_writer_and_it_writes_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shared");
        let file = FileStorage::create_new(&path).unwrap();
        let data = numbered(3 * 4096);
        file.shared_writer()
            .expect("a new file is open for writing")
            .write_shared(&data, 4096)
            .unwrap();
        drop(file);
        let read_only = FileStorage::open(&path, false).unwrap();
        assert!(read_only.shared_writer().is_none());
        let mut back = vec![0u8; data.len()];
        read_only.read_exact_at(&mut back, 4096).unwrap();
        assert_eq!(back, data);
    }

    #[test]
    fn the_skip_to_an_aligned_address_lands_on_one_wherever_the_memory_starts() {
        let memory = vec![0u8; 2 * DIRECT_ALIGN];
        for extra in 0..DIRECT_ALIGN {
            let from = &memory[extra..];
            let skip = align_skip(from);
            assert!(skip < DIRECT_ALIGN);
            assert_eq!(from[skip..].as_ptr() as usize % DIRECT_ALIGN, 0);
        }
    }

    #[test]
    fn a_direct_buffer_is_aligned_zeroed_and_as_long_as_asked_even_once_moved() {
        let bufs: Vec<DirectBuf> = [1, 511, 4096, 65_537, WRITE_PIECE as usize + 3]
            .into_iter()
            .map(DirectBuf::zeroed)
            .collect();
        let moved = std::thread::spawn(move || bufs).join().unwrap();
        for (mut buf, len) in
            moved
                .into_iter()
                .zip([1, 511, 4096, 65_537, WRITE_PIECE as usize + 3])
        {
            assert_eq!(buf.len(), len);
            assert_eq!(buf.as_ptr() as usize % DIRECT_ALIGN, 0);
            assert!(buf.iter().all(|&b| b == 0));
            buf.fill(7);
            assert!(buf.iter().all(|&b| b == 7));
        }
    }

    /// Whether `path` opens with `O_DIRECT` by its name (the oracle for
    /// [`FileStorage::open_direct`], which goes through `/proc`).
    #[cfg(target_os = "linux")]
    fn takes_o_direct(path: &Path) -> bool {
        use rustix::fs::{Mode, OFlags, open};
        open(path, OFlags::WRONLY | OFlags::DIRECT, Mode::empty()).is_ok()
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_writable_file_on_a_disk_gets_a_direct_handle_and_one_in_memory_or_read_only_does_not() {
        const PAGES: u64 = 4;
        let dir = disk_tempdir();
        let path = dir.path().join("direct");
        let mut file = FileStorage::create_new(&path).unwrap();
        // Sized first, as a convert's output is: the writes below fill
        // holes and do not extend the file.
        file.set_len(PAGES * WRITE_PIECE).unwrap();
        assert_eq!(
            file.open_direct().is_some(),
            takes_o_direct(&path),
            "a file on {} (O_DIRECT by name: {})",
            dir.path().display(),
            takes_o_direct(&path)
        );
        if let Some(direct) = file.open_direct() {
            let mut block = DirectBuf::zeroed(DIRECT_ALIGN);
            block.copy_from_slice(&numbered(DIRECT_ALIGN));
            // The handle's status flags say O_DIRECT. (Asking whether
            // the pages stayed out of the cache is not reliable from safe
            // code: a read that must not wait, `RWF_NOWAIT`, found all 16
            // of 16 freshly written pages cached in about 1% of runs.)
            let flags = rustix::fs::fcntl_getfl(&direct.file).unwrap();
            assert!(flags.contains(rustix::fs::OFlags::DIRECT), "{flags:?}");
            let at = |page: u64| page * WRITE_PIECE;
            for page in 0..PAGES {
                direct.write_all_at(&block, at(page)).unwrap();
            }
            let mut back = vec![0u8; DIRECT_ALIGN];
            for page in 0..PAGES {
                file.read_exact_at(&mut back, at(page)).unwrap();
                assert_eq!(&back[..], &block[..], "page {page}, read back");
            }
        }
        drop(file);
        let read_only = FileStorage::open(&path, false).unwrap();
        assert!(read_only.open_direct().is_none(), "read-only");
        let shm = Path::new("/dev/shm");
        #[allow(clippy::cast_sign_loss)] // a magic number, not a quantity
        let on_tmpfs = rustix::fs::statfs(shm).is_ok_and(|fs| fs.f_type as u64 == TMPFS_MAGIC);
        if on_tmpfs {
            let in_memory = tempfile::tempdir_in(shm).unwrap();
            let file = FileStorage::create_new(&in_memory.path().join("m")).unwrap();
            assert!(file.open_direct().is_none(), "a file on tmpfs");
        } else {
            crate::storage::test_skip::skip("the tmpfs part: /dev/shm is not a tmpfs here");
        }
    }
}
