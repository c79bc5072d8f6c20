//! `vhd read` and `vhd write`: guest bytes to standard output, standard
//! input to guest bytes. Both stream in bounded memory.

use std::io::{self, Read};
use std::path::PathBuf;

use clap::Args;

use super::CmdResult;
use super::args::{ParentArgs, parse_size};
use super::output::{Failure, write_stdout};
use crate::error::count;

/// Bytes moved per step.
const BUF: usize = 1024 * 1024;
/// The unit a kill must never split.
const SECTOR: u64 = 512;

/// Copy guest bytes of an image to standard output.
#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  vhd read disk.vhd --offset 1M --length 4K | xxd | head\n  vhd read disk.vhd > disk.img"
)]
pub struct ReadArgs {
    /// The image.
    pub image: PathBuf,
    /// Guest offset to start at (bytes, or with a K, M, G, T suffix).
    #[arg(long, short, value_parser = parse_size, default_value = "0")]
    pub offset: u64,
    /// Bytes to read (default: to the end of the disk).
    #[arg(long, short, value_parser = parse_size)]
    pub length: Option<u64>,
    /// How the parent of a differencing image is found.
    #[command(flatten)]
    pub parent: ParentArgs,
}

/// Write standard input into an image at a guest offset, then flush.
///
/// The image is held open for writing (with an exclusive lock) the whole
/// time. Input is written in pieces that end on sector boundaries, so if
/// the command is killed, every 512-byte sector of the disk holds either
/// its old or its new contents, never a mix.
///
/// Input that would go past the end of the disk: when standard input is a
/// regular file, its length is known and the write is refused before
/// anything is written. From a pipe the length is not known in advance:
/// the input is written up to the last whole piece that fits, then the
/// command fails and says how many bytes were written.
#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  printf 'hello' | vhd write disk.vhd --offset 1M\n  vhd write disk.vhd < boot.img"
)]
pub struct WriteArgs {
    /// The image.
    pub image: PathBuf,
    /// Guest offset to start at (bytes, or with a K, M, G, T suffix).
    #[arg(long, short, value_parser = parse_size, default_value = "0")]
    pub offset: u64,
    /// How the parent of a differencing image is found.
    #[command(flatten)]
    pub parent: ParentArgs,
}

/// Runs `vhd read`.
pub fn read(args: &ReadArgs) -> CmdResult {
    let path = &args.image;
    let mut img = args.parent.open(path, false)?;
    let size = img.size();
    if args.offset > size {
        return Err(Failure::new(
            path,
            format!(
                "offset {} is past the end of the disk ({size} bytes)",
                args.offset
            ),
        ));
    }
    let length = args.length.unwrap_or(size - args.offset);
    if args.offset.checked_add(length).is_none_or(|end| end > size) {
        return Err(Failure::new(
            path,
            format!(
                "{} at offset {} go past the end of the disk ({size} bytes)",
                count(length, "byte", "bytes"),
                args.offset
            ),
        ));
    }
    let mut buf = vec![0u8; BUF.min(usize::try_from(length).unwrap_or(BUF))];
    let mut out = io::stdout().lock();
    let mut done = 0u64;
    while done < length {
        let n = (length - done).min(BUF as u64) as usize;
        let chunk = &mut buf[..n];
        img.read_at(args.offset + done, chunk)
            .map_err(|e| Failure::image(path, &e))?;
        write_stdout(&mut out, chunk)?;
        done += n as u64;
    }
    Ok(0)
}

/// Fills `buf` from `input` until it is full or the input ends; returns
/// the bytes read.
fn fill(input: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match input.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The bytes left on standard input, when it is a regular file.
fn stdin_remaining() -> Option<u64> {
    #[cfg(unix)]
    {
        use std::io::Seek;
        use std::os::fd::AsFd;
        // A duplicate shares the file position with stdin itself.
        let fd = io::stdin().as_fd().try_clone_to_owned().ok()?;
        let mut file = std::fs::File::from(fd);
        let meta = file.metadata().ok()?;
        if meta.is_file() {
            let pos = file.stream_position().ok()?;
            return Some(meta.len().saturating_sub(pos));
        }
    }
    None
}

/// Runs `vhd write`.
pub fn write(args: &WriteArgs) -> CmdResult {
    let path = &args.image;
    let mut img = args.parent.open(path, true)?;
    let size = img.size();
    let past_end = |offset: u64, len: u64| {
        Failure::new(
            path,
            format!(
                "{} of input at offset {offset} would go past the end of the disk ({size} bytes); nothing written there",
                count(len, "byte", "bytes")
            ),
        )
    };
    if args.offset > size {
        return Err(past_end(args.offset, 0));
    }
    // A regular file on stdin: refuse before writing anything at all.
    if let Some(len) = stdin_remaining()
        && args.offset.checked_add(len).is_none_or(|end| end > size)
    {
        return Err(past_end(args.offset, len));
    }
    let mut stdin = io::stdin().lock();
    let mut buf = vec![0u8; BUF];
    let mut offset = args.offset;
    loop {
        // Each piece ends on a sector boundary of the disk (the first one
        // is shortened to get there), so a kill between two pieces never
        // leaves a sector half old and half new.
        let want = BUF - (offset % SECTOR) as usize;
        let n = fill(&mut stdin, &mut buf[..want])
            .map_err(|e| Failure::plain(format!("reading standard input: {e}")))?;
        if n == 0 {
            break;
        }
        if offset.checked_add(n as u64).is_none_or(|end| end > size) {
            let written = offset - args.offset;
            let failure = past_end(offset, n as u64);
            img.close().map_err(|e| Failure::image(path, &e))?;
            return Err(Failure {
                message: format!(
                    "{} ({} written before it)",
                    failure.message,
                    count(written, "byte", "bytes")
                ),
                ..failure
            });
        }
        img.write_at(offset, &buf[..n])
            .map_err(|e| Failure::image(path, &e))?;
        offset += n as u64;
    }
    img.close().map_err(|e| Failure::image(path, &e))?;
    super::output::print(&format!(
        "wrote {} to {} at offset {}\n",
        count(offset - args.offset, "byte", "bytes"),
        super::output::escape(&path.display().to_string()),
        args.offset
    ))?;
    Ok(0)
}
