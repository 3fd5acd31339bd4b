//! Reading gzip data files: libdeflate, one whole member at a time, for
//! files made of members of at most [`CHUNK`] uncompressed bytes (the ones
//! we write); flate2's streaming multi-member decoder for anything else
//! (ZODB's repozo writes one member for the whole file).
//!
//! libdeflate inflates a member in one call, about twice as fast as zlib-rs
//! streams it here, and checks the member's CRC-32 and length as gzip
//! does. It needs the whole member in memory and room for its whole output,
//! so a member is decoded this way only when it ends within the bytes read
//! ahead and its output fits in [`CHUNK`]. At the first member that does
//! not (too large, damaged, trailing bytes, an empty file), the rest of the
//! file, from that member's first byte, goes to flate2, which decides
//! exactly as it would have from the start: the members before it were
//! complete and valid either way.
//!
//! NUL bytes after a complete member are padding (tape and some copy tools
//! add them) and are skipped, before another member or the end of the file,
//! as Python's gzip module skips them (`_GzipReader._read_eof`, which
//! ZODB's repozo reads with) and as `gzip -t` accepts them at the end.
//! Anything else that is not a gzip member is an error, and so are NULs
//! before the first member.

use std::fs::File;
use std::io::{self, Cursor, Read};
use std::ptr::NonNull;

use flate2::bufread::GzDecoder;

use crate::io::buf::{AlignedBuf, AlignedReader, CHUNK};

/// Compressed bytes read ahead: always more than one of our members (at
/// most about `CHUNK` plus a little for incompressible data).
const WINDOW: usize = 4 * CHUNK;

/// Read more once fewer compressed bytes than this are left in the window.
const REFILL_BELOW: usize = 2 * CHUNK + 4096;

/// An owned libdeflate decompressor.
struct Decompressor(NonNull<libdeflate_sys::libdeflate_decompressor>);

impl Decompressor {
    fn new() -> io::Result<Decompressor> {
        // SAFETY: no preconditions; a null result means out of memory.
        let p = unsafe { libdeflate_sys::libdeflate_alloc_decompressor() };
        NonNull::new(p)
            .map(Decompressor)
            .ok_or_else(|| io::Error::new(io::ErrorKind::OutOfMemory, "no memory for gzip"))
    }

    /// Decode the first gzip member of `input` into `out`: `Some((input
    /// bytes consumed, output bytes))`, or `None` when libdeflate cannot
    /// (bad or incomplete data, output larger than `out`).
    fn member(&mut self, input: &[u8], out: &mut [u8]) -> Option<(usize, usize)> {
        let (mut used, mut made) = (0usize, 0usize);
        // SAFETY: the decompressor is ours and live; the pointers and
        // lengths describe valid slices; libdeflate writes at most
        // `out.len()` bytes into `out` and the two counts into our locals.
        let rc = unsafe {
            libdeflate_sys::libdeflate_gzip_decompress_ex(
                self.0.as_ptr(),
                input.as_ptr().cast(),
                input.len(),
                out.as_mut_ptr().cast(),
                out.len(),
                &mut used,
                &mut made,
            )
        };
        (rc == libdeflate_sys::libdeflate_result_LIBDEFLATE_SUCCESS
            && used <= input.len()
            && made <= out.len())
        .then_some((used, made))
    }
}

impl Drop for Decompressor {
    fn drop(&mut self) {
        // SAFETY: allocated by libdeflate_alloc_decompressor, freed once.
        unsafe { libdeflate_sys::libdeflate_free_decompressor(self.0.as_ptr()) }
    }
}

/// The compressed bytes flate2 reads: what the window held, then the file.
type Src = io::Chain<Cursor<Vec<u8>>, AlignedReader<Box<dyn Read>>>;

/// flate2, one member at a time, skipping NUL padding between members
/// and at the end (flate2's own multi-member decoder takes padding for a
/// bad header).
struct Fallback {
    /// The member being decoded; `None` once the file has ended.
    member: Option<GzDecoder<Src>>,
    /// A member failed: every later read fails too (never a clean end).
    failed: bool,
}

impl Read for Fallback {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.failed {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "gzip stream failed earlier",
            ));
        }
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            let Some(m) = self.member.as_mut() else {
                return Ok(0);
            };
            match m.read(buf) {
                Ok(0) => {
                    // the member ended, its CRC and length checked
                    let mut src = self.member.take().expect("checked above").into_inner();
                    match skip_nuls(&mut src) {
                        Ok(true) => self.member = Some(GzDecoder::new(src)),
                        Ok(false) => return Ok(0),
                        Err(e) => {
                            self.failed = true;
                            return Err(e);
                        }
                    }
                }
                Ok(n) => return Ok(n),
                Err(e) => {
                    if e.kind() != io::ErrorKind::Interrupted {
                        self.failed = true;
                    }
                    return Err(e);
                }
            }
        }
    }
}

/// Skip NUL bytes: `Ok(true)` when another byte follows them, `Ok(false)`
/// at the end of the input.
fn skip_nuls<R: io::BufRead>(r: &mut R) -> io::Result<bool> {
    loop {
        let buf = match r.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            return Ok(false);
        }
        let n = buf.iter().take_while(|&&b| b == 0).count();
        let more = n < buf.len();
        r.consume(n);
        if more {
            return Ok(true);
        }
    }
}

/// The uncompressed bytes of a gzip file, as one stream.
pub struct GzReader {
    /// `None` once flate2 has taken over.
    fast: Option<Fast>,
    fallback: Option<Fallback>,
}

struct Fast {
    file: Box<dyn Read>,
    dec: Decompressor,
    /// Compressed bytes `[start, end)` of `input` not yet decoded.
    input: AlignedBuf,
    start: usize,
    end: usize,
    /// The file has no more bytes beyond `end`.
    eof: bool,
    /// Decoded bytes `[pos, len)` of `out` not yet handed out.
    out: AlignedBuf,
    pos: usize,
    len: usize,
    /// Whether a member was decoded (an empty file goes to flate2).
    decoded_any: bool,
}

impl GzReader {
    /// A reader of the gzip file `file`, from its start.
    pub fn new(file: File) -> io::Result<GzReader> {
        GzReader::from_reader(Box::new(file))
    }

    /// A reader of the gzip stream `file` yields, from its start.
    pub fn from_reader(file: Box<dyn Read>) -> io::Result<GzReader> {
        Ok(GzReader {
            fast: Some(Fast {
                file,
                dec: Decompressor::new()?,
                input: AlignedBuf::new(WINDOW),
                start: 0,
                end: 0,
                eof: false,
                out: AlignedBuf::new(CHUNK),
                pos: 0,
                len: 0,
                decoded_any: false,
            }),
            fallback: None,
        })
    }
}

impl Fast {
    /// Keep at least [`REFILL_BELOW`] compressed bytes ahead (or all that
    /// is left of the file).
    fn refill(&mut self) -> io::Result<()> {
        if self.eof || self.end - self.start >= REFILL_BELOW {
            return Ok(());
        }
        self.input.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
        while self.end < self.input.len() {
            match self.file.read(&mut self.input[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Skip NUL padding after a member (see the module docs), reading on
    /// until a byte that is not NUL or the end of the file.
    fn skip_padding(&mut self) -> io::Result<()> {
        loop {
            let window = &self.input[self.start..self.end];
            self.start += window.iter().take_while(|&&b| b == 0).count();
            if self.start < self.end || self.eof {
                return Ok(());
            }
            self.refill()?;
        }
    }

    /// Decode the next member into `out`. `Ok(false)` at the end of the
    /// file, or when flate2 must take over (see the module docs).
    fn next_member(&mut self) -> io::Result<bool> {
        self.refill()?;
        if self.decoded_any {
            self.skip_padding()?;
            self.refill()?;
        }
        if self.start == self.end && self.eof && self.decoded_any {
            return Ok(false);
        }
        match self
            .dec
            .member(&self.input[self.start..self.end], &mut self.out)
        {
            Some((used, made)) => {
                self.start += used;
                self.pos = 0;
                self.len = made;
                self.decoded_any = true;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Hand the rest of the file, from the first byte not decoded, to
    /// flate2.
    fn into_fallback(self) -> Fallback {
        let rest = self.input[self.start..self.end].to_vec();
        let file = AlignedReader::with_capacity(CHUNK, self.file);
        Fallback {
            member: Some(GzDecoder::new(Cursor::new(rest).chain(file))),
            failed: false,
        }
    }
}

impl Read for GzReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some(f) = self.fallback.as_mut() {
                return f.read(buf);
            }
            let fast = self.fast.as_mut().expect("one of the two readers is set");
            if fast.pos < fast.len {
                let n = (fast.len - fast.pos).min(buf.len());
                buf[..n].copy_from_slice(&fast.out[fast.pos..fast.pos + n]);
                fast.pos += n;
                return Ok(n);
            }
            // empty members decode to nothing: go on to the next one
            if !fast.next_member()? {
                if fast.start == fast.end && fast.eof && fast.decoded_any {
                    return Ok(0);
                }
                let fast = self.fast.take().expect("checked above");
                self.fallback = Some(fast.into_fallback());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use crate::io::gzip::{compressor, gzip_member};
    use crate::io::md5::{hex, Md5};
    use crate::io::read::stream_data;
    use std::io::Write;

    fn read_all(bytes: &[u8]) -> io::Result<Vec<u8>> {
        let mut f = tempfile::tempfile()?;
        f.write_all(bytes)?;
        use std::io::Seek;
        f.rewind()?;
        let mut out = Vec::new();
        GzReader::new(f)?.read_to_end(&mut out)?;
        Ok(out)
    }

    fn flate2_all(bytes: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(bytes).read_to_end(&mut out)?;
        Ok(out)
    }

    fn data(n: usize) -> Vec<u8> {
        // half compressible, half not
        let mut x = 12345u64;
        (0..n)
            .map(|i| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                if (i / 4096) % 2 == 0 {
                    (i % 7) as u8
                } else {
                    (x >> 56) as u8
                }
            })
            .collect()
    }

    /// `plain` as we write `-z` files: one member per [`CHUNK`].
    fn our_gzip(plain: &[u8]) -> Vec<u8> {
        let mut c = crate::io::gzip::compressor();
        plain
            .chunks(CHUNK)
            .flat_map(|ch| crate::io::gzip::gzip_member(&mut c, ch).unwrap())
            .collect()
    }

    #[test]
    fn our_members_python_single_member_and_mixtures() {
        let plain = data(5 * CHUNK + 777);
        let ours = our_gzip(&plain);
        let mut c = crate::io::gzip::compressor();
        assert_eq!(read_all(&ours).unwrap(), plain);
        // one member for the whole file (ZODB's repozo): flate2 takes over
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        e.write_all(&plain).unwrap();
        let one = e.finish().unwrap();
        assert_eq!(read_all(&one).unwrap(), plain);
        // small members, then a large one
        let mut mixed = ours.clone();
        mixed.extend_from_slice(&one);
        let mut want = plain.clone();
        want.extend_from_slice(&plain);
        assert_eq!(read_all(&mixed).unwrap(), want);
        // an empty member in the middle, and an empty input
        let mut with_empty = crate::io::gzip::gzip_member(&mut c, b"ab").unwrap();
        with_empty.extend(crate::io::gzip::gzip_member(&mut c, b"").unwrap());
        with_empty.extend(crate::io::gzip::gzip_member(&mut c, b"cd").unwrap());
        assert_eq!(read_all(&with_empty).unwrap(), b"abcd");
        // many empty members: no recursion, no stack to run out of
        let empty = crate::io::gzip::gzip_member(&mut c, b"").unwrap();
        let many: Vec<u8> = std::iter::repeat_n(&empty[..], 200_000)
            .flatten()
            .copied()
            .collect();
        assert_eq!(read_all(&many).unwrap(), b"");
        assert_eq!(
            read_all(b"").map_err(|e| e.kind()),
            flate2_all(b"").map_err(|e| e.kind())
        );
    }

    #[test]
    fn damage_is_reported_as_flate2_reports_it() {
        let plain = data(3 * CHUNK + 5);
        let ours = our_gzip(&plain);
        let mut seed = 7u64;
        for _ in 0..40 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let mut bad = ours.clone();
            let i = (seed >> 33) as usize % bad.len();
            bad[i] ^= 1 << (seed % 8);
            let got = read_all(&bad);
            let want = flate2_all(&bad);
            match (&got, &want) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "byte {i}"),
                (Err(_), Err(_)) => {}
                _ => panic!(
                    "byte {i}: ours {:?}, flate2 {:?}",
                    got.is_ok(),
                    want.is_ok()
                ),
            }
        }
        // cut short, and trailing garbage
        for cut in [1, 10, ours.len() / 2, ours.len() - 1] {
            assert!(
                read_all(&ours[..cut]).is_err() == flate2_all(&ours[..cut]).is_err(),
                "cut {cut}"
            );
        }
        let mut trailing = ours.clone();
        trailing.extend_from_slice(b"garbage");
        assert_eq!(read_all(&trailing).is_err(), flate2_all(&trailing).is_err());
    }

    /// A ZODB `-z` file: one member for the whole file.
    fn python_gzip(plain: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(9));
        e.write_all(plain).unwrap();
        e.finish().unwrap()
    }

    /// Regression (issue 19, case 9): NUL padding after a member is
    /// skipped, at the end and between members, on both paths (our 1 MiB
    /// members and flate2's single member), as Python's gzip module reads
    /// it; padding longer than the read-ahead window too.
    #[test]
    fn nul_padding_after_a_member_is_skipped() {
        let plain = data(3 * CHUNK + 99);
        let ours = our_gzip(&plain);
        let one = python_gzip(&plain);
        let pad = |v: &[u8], n: usize| {
            let mut v = v.to_vec();
            v.resize(v.len() + n, 0);
            v
        };
        for base in [&ours, &one] {
            for n in [1, 7, 512, 10_240, WINDOW + 3, 3 * WINDOW] {
                assert_eq!(read_all(&pad(base, n)).unwrap(), plain, "{n} NULs");
            }
            // between members, then another member, then padding again
            let mut two = pad(base, 5000);
            two.extend_from_slice(&one);
            two = pad(&two, 3);
            two.extend_from_slice(&ours);
            let mut want = plain.clone();
            want.extend_from_slice(&plain);
            want.extend_from_slice(&plain);
            assert_eq!(read_all(&two).unwrap(), want);
        }
        // padding between our small members (the fast path throughout)
        let mut c = crate::io::gzip::compressor();
        let mut small = crate::io::gzip::gzip_member(&mut c, b"ab").unwrap();
        small.extend_from_slice(&[0; 100]);
        small.extend(crate::io::gzip::gzip_member(&mut c, b"cd").unwrap());
        small.extend_from_slice(&[0; 3]);
        assert_eq!(read_all(&small).unwrap(), b"abcd");
    }

    /// What is not NUL padding is still an error: NULs before the first
    /// member, anything else after a member (before or after NULs), a
    /// member cut short after padding, a file of NULs.
    #[test]
    fn only_nul_padding_after_a_member_is_accepted() {
        let plain = data(2 * CHUNK + 5);
        for base in [our_gzip(&plain), python_gzip(&plain)] {
            let mut lead = vec![0u8; 16];
            lead.extend_from_slice(&base);
            assert!(read_all(&lead).is_err(), "leading NULs");
            for tail in [
                &b"garbage"[..],
                b"\0\0\0\x01",
                b"\0\0\x1f",
                b"\x1f\x8b",
                b"\0\0\0\0\0\0\0\0\xff\0\0\0",
                b" ",
            ] {
                let mut v = base.clone();
                v.extend_from_slice(tail);
                assert!(read_all(&v).is_err(), "tail {tail:?}");
            }
            let mut cut = base.clone();
            cut.extend_from_slice(&[0; 9]);
            cut.extend_from_slice(&base[..base.len() / 2]);
            assert!(read_all(&cut).is_err(), "a member cut short after padding");
            // a damaged member after padding: a byte of its deflate data
            // (not the middle of the file, which may be a member's header
            // byte XFL that gzip readers ignore: it was at level 6)
            let mut bad = base.clone();
            bad.extend_from_slice(&[0; 9]);
            let at = bad.len() + 20;
            bad.extend_from_slice(&base);
            bad[at] ^= 0x40;
            assert!(read_all(&bad).is_err(), "a damaged member after padding");
        }
        assert!(read_all(&[0; 64]).is_err(), "a file of NULs");
    }

    #[test]
    fn gzip_round_trip_and_multi_member() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.fsz");
        let mut all = Vec::new();
        for part in [&b"hello "[..], &b"world"[..]] {
            all.extend(gzip_member(&mut compressor(), part).unwrap());
        }
        std::fs::write(&p, &all).unwrap();
        let mut m = Md5::new();
        let n = stream_data(&p, true, Some(&mut m), None).unwrap();
        assert_eq!(n, 11);
        assert_eq!(hex(&m.finalize()), hex(&Md5::digest(b"hello world")));
        // a damaged stream is a gzip error naming the file
        let mut bad = all.clone();
        let k = bad.len() - 3;
        bad[k] ^= 0xff;
        std::fs::write(&p, &bad).unwrap();
        let err = stream_data(&p, true, None, None).unwrap_err();
        assert!(matches!(err, Error::BadGzip { .. }), "{err}");
    }
}
