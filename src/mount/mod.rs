//! `vhd mount`: a FUSE file system (through `fusermount3`, no libfuse
//! needed) that shows a disk as one file, `MOUNTPOINT/disk`, its size the
//! disk's size.
//!
//! Read-only by default (the image opened with a shared lock, the mount
//! `ro`); writable when the image was opened for writing (exclusive lock).
//! Writes reach the image as the kernel sends them; `fsync` flushes the
//! image (metadata in the driver's write order, then a sync), and so does
//! the end of the mount. The disk's size is fixed: truncating the file
//! fails with `EPERM`, writing past its end with `ENOSPC`.
//!
//! `lseek` with `SEEK_DATA`/`SEEK_HOLE` answers from the image's
//! allocation map, so tools that copy sparsely skip what the image does
//! not hold.
//!
//! [`Mount::run`] serves until the file system is unmounted
//! (`fusermount3 -u MOUNTPOINT`, [`unmount`], or an [`Unmounter`] taken
//! before running, e.g. from a signal handler thread).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use fuser::{
    Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    KernelConfig, LockOwner, MountOption, OpenAccMode, OpenFlags, ReplyAttr, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyLseek, ReplyOpen, ReplyStatfs, ReplyWrite,
    Request, WriteFlags,
};

use crate::error::{Error, ErrorKind, Result};
use crate::image::Image;
use crate::serve::{Backend, ImageBackend};

/// The name of the one file in the mount.
pub const DISK_FILE: &str = "disk";

const DISK_INO: INodeNo = INodeNo(2);
const TTL: Duration = Duration::from_secs(1);
/// `lseek` whence values of Linux.
const SEEK_DATA: i32 = 3;
const SEEK_HOLE: i32 = 4;

/// A mounted disk, not yet served.
pub struct Mount {
    session: fuser::Session<DiskFs>,
    image: Arc<Mutex<Image>>,
    mountpoint: PathBuf,
}

impl std::fmt::Debug for Mount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mount")
            .field("mountpoint", &self.mountpoint)
            .finish_non_exhaustive()
    }
}

/// Ends a mount from another thread.
#[derive(Debug)]
pub struct Unmounter(fuser::SessionUnmounter);

impl Unmounter {
    /// Unmounts; [`Mount::run`] then returns.
    pub fn unmount(&mut self) -> Result<()> {
        self.0
            .unmount()
            .map_err(|e| Error::io("unmounting".to_string(), e))
    }
}

impl Mount {
    /// Mounts `image` at `mountpoint` (an existing directory). The file is
    /// writable if the image was opened for writing.
    pub fn new(image: Image, mountpoint: &Path) -> Result<Mount> {
        let writable = image.is_writable();
        let (uid, gid) = owner(mountpoint);
        let name = image.name().to_string();
        let image = Arc::new(Mutex::new(image));
        let backend = ImageBackend::new(Arc::clone(&image), writable);
        let now = SystemTime::now();
        let fs = DiskFs {
            backend: Mutex::new(backend),
            writable,
            uid,
            gid,
            mounted_at: now,
        };
        let mut options = vec![
            MountOption::FSName(fs_name(&name)),
            MountOption::Subtype("vhd".into()),
            MountOption::NoSuid,
            MountOption::NoDev,
            MountOption::DefaultPermissions,
        ];
        if !writable {
            options.push(MountOption::RO);
        }
        let mut config = Config::default();
        config.mount_options = options;
        let session = fuser::Session::new(fs, mountpoint, &config)
            .map_err(|e| Error::io(format!("mounting {} at {}", name, mountpoint.display()), e))?;
        Ok(Mount {
            session,
            image,
            mountpoint: mountpoint.to_path_buf(),
        })
    }

    /// Where it is mounted.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// A handle that unmounts from another thread.
    pub fn unmounter(&mut self) -> Unmounter {
        Unmounter(self.session.unmount_callable())
    }

    /// Serves the file system until it is unmounted, then flushes and
    /// closes the image, reporting a flush failure.
    pub fn run(self) -> Result<()> {
        let served = self
            .session
            .run()
            .map_err(|e| Error::io(format!("serving {}", self.mountpoint.display()), e));
        let image = Arc::try_unwrap(self.image)
            .map_err(|_| Error::InvalidArgument("the file system still holds the image".into()))?
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner);
        let closed = image.close();
        served.and(closed)
    }
}

/// Unmounts the file system at `mountpoint` with `fusermount3 -u` (what
/// `vhd mount -u` does); the process serving it then flushes and ends.
pub fn unmount(mountpoint: &Path) -> Result<()> {
    let out = std::process::Command::new("fusermount3")
        .arg("-u")
        .arg(mountpoint)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| Error::io("running fusermount3".to_string(), e))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "fusermount3 -u {} failed: {}",
            mountpoint.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// The source name shown in the mount table (no commas: they would split
/// the mount options).
fn fs_name(image: &str) -> String {
    format!("vhdref:{}", image.replace([',', ' ', '\t', '\n'], "_"))
}

#[cfg(unix)]
fn owner(path: &Path) -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).map_or((0, 0), |m| (m.uid(), m.gid()))
}

/// The file system: a root directory holding [`DISK_FILE`].
struct DiskFs {
    backend: Mutex<ImageBackend>,
    writable: bool,
    uid: u32,
    gid: u32,
    mounted_at: SystemTime,
}

/// An errno for a library error.
fn errno(e: &Error) -> Errno {
    match e.kind() {
        ErrorKind::ReadOnly => Errno::EROFS,
        ErrorKind::OutOfRange | ErrorKind::InvalidArgument => Errno::EINVAL,
        _ => Errno::EIO,
    }
}

/// Where `SEEK_DATA` (`data`) or `SEEK_HOLE` (`!data`) from `offset`
/// lands, from the backend's map; `None` is `ENXIO`.
pub fn seek(backend: &mut dyn Backend, offset: u64, data: bool) -> Result<Option<u64>> {
    let size = backend.size();
    if offset >= size {
        return Ok(None);
    }
    // Spans alternate: the second, if any, is of the other kind.
    let spans = backend.spans(offset, size - offset, 2)?;
    Ok(match spans.first() {
        Some(s) if s.data == data => Some(offset),
        _ => match spans.get(1) {
            Some(s) => Some(s.offset),
            // Only holes follow: no data; or the hole at the end of the file.
            None if data => None,
            None => Some(size),
        },
    })
}

impl DiskFs {
    fn backend(&self) -> MutexGuard<'_, ImageBackend> {
        self.backend.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn attr(&self, ino: INodeNo) -> Option<FileAttr> {
        let (kind, perm, size, nlink) = if ino == INodeNo::ROOT {
            (
                FileType::Directory,
                if self.writable { 0o755 } else { 0o555 },
                0,
                2,
            )
        } else if ino == DISK_INO {
            let size = self.backend().size();
            (
                FileType::RegularFile,
                if self.writable { 0o644 } else { 0o444 },
                size,
                1,
            )
        } else {
            return None;
        };
        Some(FileAttr {
            ino,
            size,
            blocks: size.div_ceil(512),
            atime: self.mounted_at,
            mtime: self.mounted_at,
            ctime: self.mounted_at,
            crtime: self.mounted_at,
            kind,
            perm,
            nlink,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }
}

impl Filesystem for DiskFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Bigger writes mean fewer round trips; the kernel caps what it can.
        let _ = config.set_max_write(1 << 20);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.attr(DISK_INO) {
            Some(attr) if parent == INodeNo::ROOT && name == DISK_FILE => {
                reply.entry(&TTL, &attr, Generation(0));
            }
            _ => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.attr(ino) {
            Some(attr) => reply.attr(&TTL, &attr),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<fuser::TimeOrNow>,
        _mtime: Option<fuser::TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let Some(attr) = self.attr(ino) else {
            return reply.error(Errno::ENOENT);
        };
        if !self.writable {
            return reply.error(Errno::EROFS);
        }
        // The disk's size, owner and mode are fixed; times are ignored.
        if size.is_some_and(|s| s != attr.size) || mode.is_some() || uid.is_some() || gid.is_some()
        {
            return reply.error(Errno::EPERM);
        }
        reply.attr(&TTL, &attr);
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if ino != DISK_INO {
            return reply.error(Errno::EISDIR);
        }
        if flags.acc_mode() != OpenAccMode::O_RDONLY && !self.writable {
            return reply.error(Errno::EROFS);
        }
        reply.opened(FileHandle(0), FopenFlags::empty());
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        if ino != DISK_INO {
            return reply.error(Errno::EISDIR);
        }
        let mut backend = self.backend();
        let end = offset.saturating_add(u64::from(size)).min(backend.size());
        if offset >= end {
            return reply.data(&[]);
        }
        let mut buf = vec![0u8; (end - offset) as usize];
        match backend.read(offset, &mut buf) {
            Ok(()) => reply.data(&buf),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        if ino != DISK_INO {
            return reply.error(Errno::EISDIR);
        }
        if !self.writable {
            return reply.error(Errno::EROFS);
        }
        let mut backend = self.backend();
        let size = backend.size();
        if offset >= size {
            return reply.error(Errno::ENOSPC);
        }
        // Like a block device: what fits is written, the count says how much.
        let n = (size - offset).min(data.len() as u64) as usize;
        match backend.write(offset, &data[..n]) {
            Ok(()) => reply.written(n as u32),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close(2) is not a durability point; fsync and unmount are.
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.backend().flush() {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn lseek(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        if ino != DISK_INO {
            return reply.error(Errno::EISDIR);
        }
        let Ok(offset) = u64::try_from(offset) else {
            return reply.error(Errno::ENXIO);
        };
        let data = match whence {
            SEEK_DATA => true,
            SEEK_HOLE => false,
            // The kernel answers the other kinds of seek itself.
            _ => return reply.error(Errno::EINVAL),
        };
        match seek(&mut *self.backend(), offset, data) {
            Ok(Some(to)) => reply.offset(i64::try_from(to).unwrap_or(i64::MAX)),
            Ok(None) => reply.error(Errno::ENXIO),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        if ino != INodeNo::ROOT {
            return reply.error(Errno::ENOTDIR);
        }
        let entries = [
            (INodeNo::ROOT, FileType::Directory, "."),
            (INodeNo::ROOT, FileType::Directory, ".."),
            (DISK_INO, FileType::RegularFile, DISK_FILE),
        ];
        for (i, (ino, kind, name)) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(*ino, i as u64 + 1, *kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let blocks = self.backend().size().div_ceil(512);
        reply.statfs(blocks, 0, 0, 2, 0, 512, 255, 512);
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        // default_permissions: the kernel checks the mode bits.
        reply.ok();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemStorage;
    use crate::{CreateOptions, DiskType};

    #[test]
    fn seek_data_and_hole_follow_the_allocation_map() {
        let mut img = CreateOptions::new(DiskType::Dynamic, 8 << 20)
            .block_size(1 << 20)
            .create_in(Box::new(MemStorage::new()), "mem.vhd", None)
            .unwrap();
        img.write_at(3 << 20, &[9; 512]).unwrap();
        let mut b = ImageBackend::single(img, true);
        let data_start = 3 << 20;
        // The block holding the write is data; the sectors of that block
        // the bitmap marks absent may map as zeros.
        let d = seek(&mut b, 0, true).unwrap().unwrap();
        assert_eq!(d, data_start);
        let h = seek(&mut b, d, false).unwrap().unwrap();
        assert!(h > d && h <= 4 << 20, "hole at {h}");
        assert_eq!(seek(&mut b, 0, false).unwrap(), Some(0));
        assert_eq!(seek(&mut b, 5 << 20, true).unwrap(), None);
        assert_eq!(seek(&mut b, 5 << 20, false).unwrap(), Some(5 << 20));
        assert_eq!(seek(&mut b, 8 << 20, false).unwrap(), None);
    }

    #[test]
    fn the_mount_table_name_has_no_option_separators() {
        assert_eq!(fs_name("a,b c.vhd"), "vhdref:a_b_c.vhd");
    }
}
