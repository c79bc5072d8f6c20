//! Argument types shared by the commands: sizes with suffixes, output
//! formats, the parent options.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use crate::OpenOptions;

/// Parses a size or offset: plain bytes (decimal, or hex with `0x`), or a
/// number with a K, M, G or T suffix (powers of 1024), case-insensitive,
/// also spelled `KB`/`KiB`, `MB`/`MiB`, ...; `B` means bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let bad = || {
        format!(
            "invalid size {text:?}: expected bytes, or a number with a K, M, G or T suffix (powers of 1024)"
        )
    };
    if let Some(hex) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        return u64::from_str_radix(hex, 16).map_err(|_| bad());
    }
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, suffix) = t.split_at(split);
    if digits.is_empty() {
        return Err(bad());
    }
    let number: u64 = digits
        .parse()
        .map_err(|_| format!("size {text:?} is too large"))?;
    let shift = match suffix.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(bad()),
    };
    number
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("size {text:?} is too large"))
}

/// Parses a block size: a size that fits in 32 bits.
pub fn parse_block_size(text: &str) -> Result<u32, String> {
    let n = parse_size(text)?;
    u32::try_from(n).map_err(|_| format!("block size {text:?} is too large (at most 256 MiB)"))
}

/// Output format of `info` and `map`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum Output {
    /// Aligned text for people.
    #[default]
    Human,
    /// JSON with a top-level `schema_version`.
    Json,
}

/// How the parent of a differencing image is found.
#[derive(Debug, Clone, Default, Args)]
pub struct ParentArgs {
    /// Use this file as the parent of a differencing image (instead of its
    /// parent locators).
    #[arg(long, value_name = "PARENT")]
    pub parent: Option<PathBuf>,
    /// Accept a parent whose unique ID differs from the one the child
    /// records (PAR-UNIQUE-ID becomes a warning).
    #[arg(long)]
    pub ignore_parent_id: bool,
    /// Follow parent locators only to files inside this directory (may be
    /// given more than once). Without it, locators may name any file this
    /// user can open; which locator was followed is always shown by `info`.
    #[arg(long, value_name = "DIR")]
    pub allow_parent_dir: Vec<PathBuf>,
}

impl ParentArgs {
    /// Opens `path` (for writing if `write`) with these parent settings,
    /// turning an error into a failure that names the file.
    pub fn open(
        &self,
        path: &std::path::Path,
        write: bool,
    ) -> Result<crate::Image, super::output::Failure> {
        self.open_options()
            .write(write)
            .open(path)
            .map_err(|e| super::output::Failure::image(path, &e))
    }

    /// Open options with the parent settings applied.
    pub fn open_options(&self) -> OpenOptions {
        let mut options = OpenOptions::new().ignore_parent_id(self.ignore_parent_id);
        if !self.allow_parent_dir.is_empty() {
            options = options.allow_parent_dirs(self.allow_parent_dir.clone());
        }
        if let Some(p) = &self.parent {
            options = options.parent(p.clone());
        }
        options
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_suffixes_in_any_case() {
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("10M"), Ok(10 << 20));
        assert_eq!(parse_size("10m"), Ok(10 << 20));
        assert_eq!(parse_size("10MiB"), Ok(10 << 20));
        assert_eq!(parse_size("10 mib"), Ok(10 << 20));
        assert_eq!(parse_size("2k"), Ok(2048));
        assert_eq!(parse_size("3G"), Ok(3 << 30));
        assert_eq!(parse_size("1t"), Ok(1 << 40));
        assert_eq!(parse_size("0x200"), Ok(512));
        assert_eq!(parse_size("7B"), Ok(7));
    }

    #[test]
    fn sizes_reject_garbage_and_overflow() {
        for bad in [
            "",
            "M",
            "10X",
            "-5",
            "1.5G",
            "0xZZ",
            "99999999999999999999",
            "17179869184T",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
