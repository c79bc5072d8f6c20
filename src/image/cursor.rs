//! `std::io::{Read, Write, Seek}` over the guest disk.

use std::io::{self, Read, Seek, SeekFrom, Write};

use super::Image;

/// A position in an image's guest disk with the standard I/O traits.
/// Reads stop at the end of the disk; writes past it fail.
#[derive(Debug)]
pub struct Cursor<'a> {
    image: &'a mut Image,
    pos: u64,
}

impl<'a> Cursor<'a> {
    pub(super) fn new(image: &'a mut Image) -> Self {
        Cursor { image, pos: 0 }
    }

    /// The current position.
    pub fn position(&self) -> u64 {
        self.pos
    }
}

fn to_io(e: crate::Error) -> io::Error {
    io::Error::other(e)
}

impl Read for Cursor<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.image.size().saturating_sub(self.pos);
        let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
        if n == 0 {
            return Ok(0);
        }
        let dst = buf.get_mut(..n).unwrap_or_default();
        self.image.read_at(self.pos, dst).map_err(to_io)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Write for Cursor<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.pos >= self.image.size() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "write past the end of the disk",
            ));
        }
        let left = self.image.size() - self.pos;
        let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
        let src = buf.get(..n).unwrap_or_default();
        self.image.write_at(self.pos, src).map_err(to_io)?;
        self.pos += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.image.flush().map_err(to_io)
    }
}

impl Seek for Cursor<'_> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let target = match pos {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.image.size().checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        let target = target
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before the start"))?;
        self.pos = target;
        Ok(target)
    }
}
