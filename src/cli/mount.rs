//! `vhd mount`: show a disk as a file through FUSE.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Args;

use crate::mount::{DISK_FILE, Mount, unmount};

use super::CmdResult;
use super::args::ParentArgs;
use super::output::{Failure, print};

/// Show a disk as one file, MOUNTPOINT/disk, through FUSE (fusermount3).
///
/// The command serves the file system until it is unmounted: with
/// `vhd mount -u MOUNTPOINT`, `fusermount3 -u MOUNTPOINT`, SIGINT or
/// SIGTERM. Read-only by default (shared lock); with --writable the image
/// is held with the exclusive lock, fsync on the file flushes the image,
/// and so does the unmount. The file's size is the disk's and cannot
/// change. `SEEK_DATA` and `SEEK_HOLE` answer from the image's map.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    vhd mount disk.vhd /mnt/vhd &\n  \
    losetup --find --show --read-only --partscan /mnt/vhd/disk\n  \
    vhd mount -u /mnt/vhd")]
pub struct MountArgs {
    /// The image (with -u: the mount point to unmount).
    pub image: PathBuf,
    /// An existing directory to mount on.
    #[arg(required_unless_present = "unmount")]
    pub mountpoint: Option<PathBuf>,
    /// Allow writes (takes the exclusive lock).
    #[arg(long, short, conflicts_with = "unmount")]
    pub writable: bool,
    /// Unmount the file system at the given mount point, ending the
    /// `vhd mount` that serves it (which flushes the image).
    #[arg(long, short)]
    pub unmount: bool,
    /// How the parent of a differencing image is found.
    #[command(flatten)]
    pub parent: ParentArgs,
}

/// Runs `vhd mount`.
pub fn run(args: &MountArgs) -> CmdResult {
    if args.unmount {
        let target = args.mountpoint.as_ref().unwrap_or(&args.image);
        unmount(target).map_err(|e| Failure::image(target, &e))?;
        return Ok(0);
    }
    let path = &args.image;
    let Some(mountpoint) = &args.mountpoint else {
        return Err(Failure::plain("a mount point is needed").with_code(2));
    };
    if !mountpoint.is_dir() {
        return Err(Failure::new(mountpoint, "is not a directory"));
    }
    let image = args.parent.open(path, args.writable)?;
    let mut mount = Mount::new(image, mountpoint).map_err(|e| Failure::image(path, &e))?;
    let stop = Arc::new(AtomicBool::new(false));
    super::serve::register_signals(&stop)?;
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (stop, done) = (Arc::clone(&stop), Arc::clone(&done));
        let mut unmounter = mount.unmounter();
        std::thread::spawn(move || {
            while !done.load(Ordering::Acquire) {
                if stop.load(Ordering::Acquire) {
                    let _ = unmounter.unmount();
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    // The one stdout line, for scripts: the file, now there.
    print(&format!("{}\n", mountpoint.join(DISK_FILE).display()))?;
    let result = mount.run();
    done.store(true, Ordering::Release);
    let _ = watcher.join();
    result.map_err(|e| Failure::image(path, &e))?;
    Ok(0)
}
