//! Read buffers aligned to a page, and a buffered reader built on them.
//!
//! Where the kernel copies file data into our memory (`pread`, `read`), the
//! alignment of the destination decides the speed of that copy on this
//! machine's CPUs: reading 382 MB from the page cache and hashing it with
//! xxh3 took 0.07 s into a buffer aligned to 32 bytes or more, and 0.21 to
//! 0.30 s into one that starts 8 or 16 bytes past a boundary — where
//! `malloc` puts every large `Vec` (its 16-byte header before the block).
//! Writes from our memory showed no such difference. So every buffer that
//! file data is read into comes from here.

use std::io::{self, BufRead, Read};
use std::ops::{Deref, DerefMut};

/// Alignment of the start of every buffer: a page.
pub const ALIGN: usize = 4096;

/// A zeroed byte buffer of a fixed length whose first byte is aligned to
/// [`ALIGN`]. Moving it keeps the alignment (the bytes stay on the heap).
pub struct AlignedBuf {
    v: Vec<u8>,
    off: usize,
    len: usize,
}

impl AlignedBuf {
    /// A buffer of `len` zero bytes.
    pub fn new(len: usize) -> AlignedBuf {
        let v = vec![0u8; len + ALIGN];
        let off = v.as_ptr().align_offset(ALIGN);
        debug_assert!(off < ALIGN);
        AlignedBuf { v, off, len }
    }
}

impl Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.v[self.off..self.off + self.len]
    }
}

impl DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.v[self.off..self.off + self.len]
    }
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AlignedBuf({} bytes)", self.len)
    }
}

/// `std::io::BufReader` with an [`AlignedBuf`]: the reads it makes land on
/// a page boundary.
pub struct AlignedReader<R> {
    inner: R,
    buf: AlignedBuf,
    pos: usize,
    filled: usize,
}

impl<R: Read> AlignedReader<R> {
    /// A reader of `inner` with a buffer of `capacity` bytes.
    pub fn with_capacity(capacity: usize, inner: R) -> AlignedReader<R> {
        AlignedReader {
            inner,
            buf: AlignedBuf::new(capacity.max(1)),
            pos: 0,
            filled: 0,
        }
    }
}

impl<R: Read> Read for AlignedReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        // large reads with nothing buffered go straight through
        if self.pos == self.filled && out.len() >= self.buf.len() {
            return self.inner.read(out);
        }
        let n = {
            let avail = self.fill_buf()?;
            let n = avail.len().min(out.len());
            out[..n].copy_from_slice(&avail[..n]);
            n
        };
        self.consume(n);
        Ok(n)
    }
}

impl<R: Read> BufRead for AlignedReader<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.pos == self.filled {
            self.filled = self.inner.read(&mut self.buf)?;
            self.pos = 0;
        }
        Ok(&self.buf[self.pos..self.filled])
    }

    fn consume(&mut self, amt: usize) {
        self.pos = (self.pos + amt).min(self.filled);
    }
}

/// Size of each read and of the pieces handed between threads. Reads go
/// into page-aligned buffers ([`crate::io::buf`]): with those, 64 KiB to 2 MiB
/// reads from the page cache all ran at the same speed here; 1 MiB keeps
/// system calls and hand-offs few and is the gzip member size.
pub const CHUNK: usize = 1 << 20;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_aligned_and_zeroed() {
        for len in [1, 17, 4096, 1 << 20] {
            let b = AlignedBuf::new(len);
            assert_eq!(b.len(), len);
            assert_eq!(b.as_ptr() as usize % ALIGN, 0);
            assert!(b.iter().all(|&x| x == 0));
            // moving it keeps the alignment
            let moved = Box::new(b);
            assert_eq!(moved.as_ptr() as usize % ALIGN, 0);
        }
    }

    #[test]
    fn reader_reads_everything_in_order() {
        let data: Vec<u8> = (0..100_003u32).map(|i| (i % 253) as u8).collect();
        for cap in [1, 7, 4096, 200_000] {
            let mut r = AlignedReader::with_capacity(cap, &data[..]);
            let mut got = Vec::new();
            // mixed small reads and read_to_end
            let mut small = [0u8; 5];
            let n = r.read(&mut small).unwrap();
            got.extend_from_slice(&small[..n]);
            r.read_to_end(&mut got).unwrap();
            assert_eq!(got, data, "capacity {cap}");
        }
        // BufRead: lines
        let mut r = AlignedReader::with_capacity(3, &b"ab\ncd\n"[..]);
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        assert_eq!(line, "ab\n");
    }
}
