//! Maintenance operations on images: [`repair()`], [`resize()`],
//! [`compact()`] and [`rebase()`], and checks and sizes for cloud services
//! ([`cloud`]).
//!
//! Each operation is a library function that takes a path (and options)
//! and returns a report the CLI renders; each also has a variant over an
//! image that is already open (or a storage), which the crash and I/O
//! fault tests drive through [`crate::storage::FaultStorage`].
//!
//! Every operation changes an image so that a crash at any moment loses
//! nothing: after each write, and after any subset of the writes since the
//! last sync, the image opens, the checker finds no error in it, and every
//! guest sector reads its old or its new contents. The write order of each
//! operation is stated in its module and in `spec/operations.md`; the
//! primitives they are built from (moving a block, switching BAT entries,
//! growing the table, rewriting the header and the footer) are the
//! driver's, in `src/image/maintenance.rs`.
//!
//! ```
//! use vhdref::{CreateOptions, DiskType, OpenOptions, storage::MemStorage};
//! use vhdref::ops::{compact, resize};
//!
//! let mem = MemStorage::new();
//! let mut img = CreateOptions::new(DiskType::Dynamic, 8 << 20)
//!     .block_size(512 * 1024)
//!     .create_in(Box::new(mem.clone()), "disk.vhd", None)?;
//! img.write_at(0, &[0u8; 4096])?; // a block that holds only zeros
//! img.write_at(3 << 20, b"data")?;
//! img.flush()?;
//! let report = compact::compact_image(&mut img)?;
//! assert_eq!(report.blocks_released, 1);
//! let report = resize::resize_image(&mut img, &resize::ResizeOptions::new(16 << 20))?;
//! assert_eq!(report.new_size, 16 << 20);
//! # Ok::<(), vhdref::Error>(())
//! ```

pub mod cloud;
pub mod compact;
mod overlay;
pub mod rebase;
pub mod repair;
pub mod resize;

pub use cloud::{AzureRule, ProfileFinding, aligned_size, check_azure};
pub use compact::{CompactReport, compact, compact_image};
pub use overlay::Overlay;
pub use rebase::{ParentRef, RebaseMode, RebaseReport, rebase, rebase_image};
pub use repair::{RepairOptions, RepairReport, repair, repair_storage};
pub use resize::{ResizeOptions, ResizeReport, resize, resize_image};

/// Bytes looked at per read when data is scanned.
const WINDOW: u64 = 1 << 20;

/// Whether `buf` holds only zeros.
fn is_zero(buf: &[u8]) -> bool {
    crate::convert::is_zero(buf)
}
