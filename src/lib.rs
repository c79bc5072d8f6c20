//! # vhdref
//!
//! A reference implementation of Microsoft's Virtual Hard Disk format,
//! version 1.0: fixed, dynamic and differencing images. It reads what
//! Hyper-V, Virtual PC, disk2vhd, `VirtualBox`, QEMU and Xen write, creates
//! images they read, names the rule (see [`Rule`] and `spec/rules.md`) that
//! a broken image breaks, and never loses data: metadata is written in a
//! documented order, writers hold an exclusive lock, readers never write.
//!
//! ```
//! use vhdref::{CreateOptions, DiskType, OpenOptions, storage::MemStorage};
//!
//! let mem = MemStorage::new();
//! let mut img = CreateOptions::new(DiskType::Dynamic, 8 << 20)
//!     .create_in(Box::new(mem.clone()), "mem.vhd", None)?;
//! img.write_at(1_000_000, b"hello")?;
//! img.close()?;
//!
//! let mut img = OpenOptions::new().open_storage(Box::new(mem), "mem.vhd")?;
//! let mut buf = [0u8; 5];
//! img.read_at(1_000_000, &mut buf)?;
//! assert_eq!(&buf, b"hello");
//! # Ok::<(), vhdref::Error>(())
//! ```
#![forbid(unsafe_code)]

pub mod check;
pub mod cli;
pub mod conform;
pub mod convert;
pub mod error;
pub mod format;
pub mod image;
pub mod model;
#[cfg(target_os = "linux")]
pub mod mount;
pub mod ops;
pub mod rules;
pub mod serve;
pub mod storage;

pub use error::{Error, ErrorKind, Result};
pub use format::{DiskType, Footer, Geometry, Timestamp};
pub use image::{
    CommitStats, CreateOptions, Cursor, Extent, Image, OpenOptions, ParentSource, SizeRule,
};
pub use rules::{Finding, Rule, Severity};
