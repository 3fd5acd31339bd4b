//! Copies of byte ranges into files: the kernel copy with its read/write
//! fallback, the parallel copy that hashes and gzips on the way, and
//! inflating a gzip data file into a file.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::error::{Error, Result};
use crate::io::buf::{AlignedBuf, CHUNK};
use crate::io::flush::Flusher;
use crate::io::gzip::{compressor, gzip_member};
use crate::io::md5::{hex, Md5};
use crate::io::read::{ended_before, open_data, read_ahead, read_error, read_full_at};

/// Where a backup's bytes go: a file (or any writer: an object on its
/// way to a store), written plain or as gzip.
#[derive(Debug)]
pub struct Sink<'a, W = File> {
    file: W,
    gzip: bool,
    flush: Option<&'a Flusher>,
}

impl<'a, W: Write + Send> Sink<'a, W> {
    /// A sink writing to `file`, compressed when `gzip`, made durable as it
    /// is written by `flush`.
    pub fn new(file: W, gzip: bool, flush: Option<&'a Flusher>) -> Sink<'a, W> {
        Sink { file, gzip, flush }
    }
}

/// Where copied bytes go: the file, its name for errors, and the
/// [`Flusher`] that makes them durable as they come (none in unit tests).
#[derive(Clone, Copy, Debug)]
pub struct Out<'a> {
    pub file: &'a File,
    pub path: &'a Path,
    pub flush: Option<&'a Flusher>,
}

impl<'a> Out<'a> {
    /// `file`, written with `flush` beside it.
    pub fn new(file: &'a File, path: &'a Path, flush: &'a Flusher) -> Out<'a> {
        Out {
            file,
            path,
            flush: Some(flush),
        }
    }

    /// `n` more bytes have been written.
    fn wrote(&self, n: u64) {
        wrote(self.flush, n);
    }
}

/// `n` more bytes have been written to an output: progress, and its
/// flusher (if any).
fn wrote(flush: Option<&Flusher>, n: u64) {
    crate::progress::written(n);
    if let Some(f) = flush {
        f.wrote(n);
    }
}

/// Which side of a copy failed, so the error names the right file.
#[derive(Debug)]
pub enum CopyError {
    Read(io::Error),
    Write(io::Error),
}

/// Copy `len` bytes of `src` from `start` to `out` through our memory
/// (where the kernel cannot copy between the two files). The source must
/// hold the whole range. Reads are counted as progress when `count_read`;
/// what is written, by `out` ([`OutWriter`]).
fn copy_range(
    src: &File,
    start: u64,
    len: u64,
    out: &mut dyn Write,
    count_read: bool,
) -> std::result::Result<(), CopyError> {
    let mut buf = AlignedBuf::new(CHUNK.min(len.max(1) as usize));
    let mut pos = start;
    let end = start + len;
    while pos < end {
        let want = ((end - pos) as usize).min(buf.len());
        let n = read_full_at(src, &mut buf[..want], pos).map_err(CopyError::Read)?;
        if n == 0 {
            return Err(CopyError::Read(ended_before(pos, end)));
        }
        if count_read {
            crate::progress::read(n as u64);
        }
        out.write_all(&buf[..n]).map_err(CopyError::Write)?;
        pos += n as u64;
    }
    Ok(())
}

/// Buffers in flight between the reading/hashing thread and the writer.
const IN_FLIGHT: usize = 6;

/// Threads compressing gzip members in parallel.
const COMPRESSORS: usize = 2;

/// One piece on its way to the writer, in sequence.
struct Piece {
    seq: u64,
    /// Bytes to write: the chunk itself, or its gzip member.
    data: Bytes,
    len: usize,
}

/// The bytes of a [`Piece`], and the read buffer to hand back once they
/// are written.
enum Bytes {
    /// A read buffer, written as it is.
    Read(AlignedBuf),
    /// A gzip member compressed from `read`.
    Member { member: Vec<u8>, read: AlignedBuf },
}

impl Bytes {
    fn bytes(&self) -> &[u8] {
        match self {
            Bytes::Read(b) => b,
            Bytes::Member { member, .. } => member,
        }
    }

    fn into_buffer(self) -> AlignedBuf {
        match self {
            Bytes::Read(b) | Bytes::Member { read: b, .. } => b,
        }
    }
}

/// What [`copy_range_parallel`] wrote.
#[derive(Debug)]
pub struct Copied<W = File> {
    /// The sink's file.
    pub file: W,
    /// xxh3-128 of the bytes written (the gzip stream with gzip).
    pub stored: u128,
    /// Number of bytes written.
    pub stored_len: u64,
}

/// [`copy_range`] on several cores: this thread reads and hashes (md5 and
/// xxh3 into `content`); with gzip, [`COMPRESSORS`] threads compress chunks
/// into members; a writer thread writes them in order into the sink's file
/// and hashes what it writes. The bytes and the md5 are the same as a
/// one-thread copy's.
pub fn copy_range_parallel<W: Write + Send>(
    src: &File,
    start: u64,
    len: u64,
    md5: &mut Md5,
    content: &mut crate::io::xxh3::Hasher,
    sink: Sink<'_, W>,
) -> std::result::Result<Copied<W>, CopyError> {
    use std::collections::BTreeMap;
    use std::sync::mpsc::{channel, sync_channel};
    use std::sync::{Arc, Mutex};

    let Sink { file, gzip, flush } = sink;
    let (piece_tx, piece_rx) = sync_channel::<Piece>(IN_FLIGHT);
    let (empty_tx, empty_rx) = channel::<AlignedBuf>();
    let bufsize = CHUNK.min(len.max(1) as usize);
    for _ in 0..IN_FLIGHT {
        empty_tx
            .send(AlignedBuf::new(bufsize))
            .expect("receiver alive");
    }
    std::thread::scope(|scope| {
        // the writer: pieces in sequence order
        let writer = scope.spawn(move || -> std::result::Result<Copied<W>, CopyError> {
            let mut out = file;
            let mut stored = crate::io::xxh3::Hasher::new();
            let mut stored_len = 0u64;
            let mut waiting: BTreeMap<u64, Piece> = BTreeMap::new();
            let mut next = 0u64;
            while let Ok(p) = piece_rx.recv() {
                waiting.insert(p.seq, p);
                while let Some(p) = waiting.remove(&next) {
                    let bytes = &p.data.bytes()[..p.len];
                    out.write_all(bytes).map_err(CopyError::Write)?;
                    stored.update(bytes);
                    stored_len += p.len as u64;
                    wrote(flush, p.len as u64);
                    // the reader may have stopped already: nothing to return to
                    let _ = empty_tx.send(p.data.into_buffer());
                    next += 1;
                }
            }
            Ok(Copied {
                file: out,
                stored: stored.digest128(),
                stored_len,
            })
        });
        // compressors (gzip only), fed through a shared queue
        let (job_tx, job_rx) = sync_channel::<(u64, AlignedBuf, usize)>(IN_FLIGHT);
        let job_rx = Arc::new(Mutex::new(job_rx));
        let mut compressors = Vec::new();
        if gzip {
            for _ in 0..COMPRESSORS {
                let job_rx = Arc::clone(&job_rx);
                let piece_tx = piece_tx.clone();
                compressors.push(scope.spawn(move || -> std::result::Result<(), CopyError> {
                    let mut c = compressor();
                    loop {
                        let job = job_rx.lock().expect("no panics while holding it").recv();
                        let Ok((seq, buf, n)) = job else {
                            return Ok(());
                        };
                        let member = gzip_member(&mut c, &buf[..n]).map_err(CopyError::Write)?;
                        let len = member.len();
                        let piece = Piece {
                            seq,
                            data: Bytes::Member { member, read: buf },
                            len,
                        };
                        if piece_tx.send(piece).is_err() {
                            return Ok(()); // the writer failed; it reports why
                        }
                    }
                }));
            }
        }
        let mut pos = start;
        let end = start + len;
        let mut seq = 0u64;
        let mut read_result = Ok(());
        while pos < end {
            let Ok(mut buf) = empty_rx.recv() else {
                break; // the writer failed; its error is reported below
            };
            let want = ((end - pos) as usize).min(buf.len());
            let n = loop {
                match src.read_at(&mut buf[..want], pos) {
                    Ok(0) => {
                        break Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!("file ended at {pos}, before {end}"),
                        ))
                    }
                    Ok(n) => break Ok(n),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => break Err(e),
                }
            };
            let n = match n {
                Ok(n) => n,
                Err(e) => {
                    read_result = Err(CopyError::Read(e));
                    break;
                }
            };
            md5.update(&buf[..n]);
            content.update(&buf[..n]);
            crate::progress::read(n as u64);
            let sent = if gzip {
                job_tx.send((seq, buf, n)).is_ok()
            } else {
                piece_tx
                    .send(Piece {
                        seq,
                        data: Bytes::Read(buf),
                        len: n,
                    })
                    .is_ok()
            };
            if !sent {
                break;
            }
            seq += 1;
            pos += n as u64;
        }
        drop(job_tx);
        drop(piece_tx);
        let mut compress_result = Ok(());
        for c in compressors {
            let r = c.join().expect("compressor thread does not panic");
            if compress_result.is_ok() {
                compress_result = r;
            }
        }
        let written = writer.join().expect("writer thread does not panic");
        read_result?;
        compress_result?;
        written
    })
}

/// Copy `len` bytes of `src` from `start` to the current position of `out`
/// inside the kernel (`copy_file_range`), falling back to read/write where
/// the file systems do not support it. The flusher hears of every step
/// (and syncs every [`FLUSH_STEP`](crate::io::flush::Flusher) bytes).
pub fn kernel_copy(
    src: &File,
    src_path: &Path,
    start: u64,
    len: u64,
    out: Out<'_>,
    count_read: bool,
) -> Result<()> {
    use std::os::unix::io::AsRawFd;
    let Out {
        file: out_file,
        path: out_path,
        ..
    } = out;
    let mut off: libc::loff_t = start as libc::loff_t;
    let mut left = len;
    while left > 0 {
        let want = left.min(COPY_STEP) as usize;
        // SAFETY: valid descriptors; `off` is ours; a null output offset
        // means "the output file's position", which the kernel advances.
        let n = unsafe {
            libc::copy_file_range(
                src.as_raw_fd(),
                &mut off,
                out_file.as_raw_fd(),
                std::ptr::null_mut(),
                want,
                0,
            )
        };
        if n > 0 {
            left -= n as u64;
            out.wrote(n as u64);
            if count_read {
                crate::progress::read(n as u64);
            }
            continue;
        }
        if n == 0 {
            return Err(Error::io(
                "read",
                src_path,
                io::Error::new(io::ErrorKind::UnexpectedEof, "file shorter than its size"),
            ));
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EXDEV)
            | Some(libc::ENOSYS)
            | Some(libc::EINVAL)
            | Some(libc::EOPNOTSUPP) => {
                // copy the rest the ordinary way
                let mut w = OutWriter(out);
                return copy_range(src, off as u64, left, &mut w, count_read).map_err(
                    |e| match e {
                        CopyError::Read(e) => Error::io("read", src_path, e),
                        CopyError::Write(e) => Error::io("write", out_path, e),
                    },
                );
            }
            // the kernel does not say which side failed: ENOSPC, EDQUOT
            // and EFBIG are the output's
            Some(libc::ENOSPC) | Some(libc::EDQUOT) | Some(libc::EFBIG) => {
                return Err(Error::io("write", out_path, e))
            }
            _ => return Err(Error::io("copy into", out_path, e)),
        }
    }
    Ok(())
}

/// Bytes asked of one `copy_file_range`.
const COPY_STEP: u64 = 32 << 20;

/// An [`Out`] as a writer that counts what it writes.
struct OutWriter<'a>(Out<'a>);

impl Write for OutWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = (&mut &*self.0.file).write(buf)?;
        self.0.wrote(n as u64);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Copy `[start, start + len)` of `src` into `out` with the kernel while
/// hashing the same range: its xxh3-128 always, and its md5 hex when
/// `want_md5`. With md5, this thread runs nothing else, the slowest part
/// of a full backup: the kernel copy, the reading and the xxh3 take the
/// other core ([`read_ahead`]). Without, the xxh3 runs on a thread of its
/// own beside the copy. The range must not change while we read it
/// (committed FileStorage data and backup files never do).
pub fn copy_and_hash(
    src: &File,
    src_path: &Path,
    start: u64,
    len: u64,
    out: Out<'_>,
    want_md5: bool,
) -> Result<(Option<String>, u128)> {
    let short = |n: u64| Error::io("read", src_path, ended_before(start + n, start + len));
    std::thread::scope(|scope| {
        if want_md5 {
            let copy = scope.spawn(|| {
                let copied = kernel_copy(src, src_path, start, len, out, false);
                // the rest of the copy goes to disk while the md5 runs on
                if let Some(f) = out.flush {
                    f.request_pending();
                }
                copied
            });
            let mut md5 = Md5::new();
            let mut fast = crate::io::xxh3::Hasher::new();
            let read = read_ahead(
                src,
                start,
                len,
                |b| fast.update(b),
                |b| {
                    md5.update(b);
                    crate::progress::read(b.len() as u64);
                },
            );
            let copied = copy.join().expect("copying thread does not panic");
            let n = read.map_err(|e| Error::io("read", src_path, e))?;
            copied?;
            if n != len {
                return Err(short(n));
            }
            Ok((Some(hex(&md5.finalize())), fast.digest128()))
        } else {
            let fast = scope.spawn(
                || match crate::io::xxh3::hash_range_serial(src, start, len) {
                    Ok((h, n)) if n == len => Ok(h),
                    Ok((_, n)) => Err(short(n)),
                    Err(e) => Err(Error::io("read", src_path, e)),
                },
            );
            let copied = kernel_copy(src, src_path, start, len, out, true);
            let fast = fast.join().expect("hashing thread does not panic");
            copied?;
            Ok((None, fast?))
        }
    })
}

/// Decompress a gzip data file into `out` on two cores: this thread
/// inflates (and hashes), another writes whole [`CHUNK`]s. Returns the
/// number of uncompressed bytes.
pub fn inflate_to_file(
    path: &Path,
    md5: Option<&mut Md5>,
    fast: Option<&mut crate::io::xxh3::Hasher>,
    out: Out<'_>,
) -> Result<u64> {
    stream_to_file(open_data(path, true)?, path, true, md5, fast, out)
}

/// [`inflate_to_file`] of the uncompressed bytes `r` yields (a data file
/// named `path`, stored compressed when `gzip`, for errors).
pub fn stream_to_file(
    mut r: Box<dyn Read>,
    path: &Path,
    gzip: bool,
    mut md5: Option<&mut Md5>,
    mut fast: Option<&mut crate::io::xxh3::Hasher>,
    out: Out<'_>,
) -> Result<u64> {
    use std::sync::mpsc::{channel, sync_channel};
    let (full_tx, full_rx) = sync_channel::<(Vec<u8>, usize)>(IN_FLIGHT);
    let (empty_tx, empty_rx) = channel::<Vec<u8>>();
    for _ in 0..IN_FLIGHT {
        empty_tx.send(vec![0u8; CHUNK]).expect("receiver alive");
    }
    std::thread::scope(|scope| {
        let writer = scope.spawn(move || -> Result<()> {
            let mut w: &File = out.file;
            while let Ok((buf, n)) = full_rx.recv() {
                w.write_all(&buf[..n])
                    .map_err(|e| Error::io("write", out.path, e))?;
                out.wrote(n as u64);
                let _ = empty_tx.send(buf);
            }
            Ok(())
        });
        let mut total = 0u64;
        let mut result = Ok(());
        'outer: while let Ok(mut buf) = empty_rx.recv() {
            // fill the whole buffer: gzip readers return small pieces
            let mut n = 0;
            while n < buf.len() {
                match r.read(&mut buf[n..]) {
                    Ok(0) => break,
                    Ok(k) => n += k,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        result = Err(read_error(path, gzip, e));
                        break 'outer;
                    }
                }
            }
            if n == 0 {
                break;
            }
            if let Some(m) = md5.as_deref_mut() {
                m.update(&buf[..n]);
            }
            if let Some(h) = fast.as_deref_mut() {
                h.update(&buf[..n]);
            }
            crate::progress::read(n as u64);
            total += n as u64;
            if full_tx.send((buf, n)).is_err() {
                break;
            }
        }
        drop(full_tx);
        let written = writer.join().expect("writer thread does not panic");
        result?;
        written?;
        Ok(total)
    })
}

/// Copy the whole of the small file `src` (`len` bytes) into `out` on
/// this thread, hashing it with md5 on the way; returns the md5 hex. For
/// many small files (blob revisions), where a thread per file would cost
/// more than the copy: callers spread files over cores with
/// [`each_in_parallel`]. The file must hold `len` bytes.
pub fn copy_file_md5(
    src: &File,
    src_path: &Path,
    len: u64,
    mut out: &File,
    out_path: &Path,
) -> Result<String> {
    let mut md5 = Md5::new();
    let mut buf = AlignedBuf::new((len as usize).clamp(1, CHUNK));
    let mut pos = 0u64;
    while pos < len {
        let want = ((len - pos) as usize).min(buf.len());
        let n =
            read_full_at(src, &mut buf[..want], pos).map_err(|e| Error::io("read", src_path, e))?;
        if n == 0 {
            return Err(Error::io("read", src_path, ended_before(pos, len)));
        }
        md5.update(&buf[..n]);
        crate::progress::read(n as u64);
        out.write_all(&buf[..n])
            .map_err(|e| Error::io("write", out_path, e))?;
        crate::progress::written(n as u64);
        pos += n as u64;
    }
    Ok(hex(&md5.finalize()))
}

/// Threads for [`each_in_parallel`].
const WORKERS: usize = 2;

/// Below this many bytes, [`each_in_parallel`] works on the calling
/// thread: threads cost more than they save, and the calls come in one
/// order (which the fault runs rely on to find the same call again).
const PARALLEL_MIN: u64 = 8 << 20;

/// `f` of every item, on [`WORKERS`] threads when the items weigh `bytes`
/// in all, at least [`PARALLEL_MIN`]; results in the items' order; the
/// first error (in order) wins, and the workers stop taking items once one
/// fails.
pub fn each_in_parallel<T: Sync, R: Send>(
    items: &[T],
    bytes: u64,
    f: impl Fn(&T) -> Result<R> + Sync,
) -> Result<Vec<R>> {
    if bytes < PARALLEL_MIN {
        return items.iter().map(f).collect();
    }
    each_on(items, WORKERS, f)
}

/// [`each_in_parallel`] on `workers` threads whatever the size (calls
/// that mostly wait: uploads to object storage).
pub fn each_on<T: Sync, R: Send>(
    items: &[T],
    workers: usize,
    f: impl Fn(&T) -> Result<R> + Sync,
) -> Result<Vec<R>> {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Mutex;
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let results: Mutex<Vec<Option<Result<R>>>> = Mutex::new(items.iter().map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..workers.min(items.len()) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= items.len() || failed.load(Ordering::Relaxed) {
                    return;
                }
                let r = f(&items[i]);
                if r.is_err() {
                    failed.store(true, Ordering::Relaxed);
                }
                results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(r);
            });
        }
    });
    // an item is left unrun only after another failed: that error is
    // returned, so the values are complete whenever there is none
    let mut out = Vec::with_capacity(items.len());
    for r in results.into_inner().unwrap_or_else(|e| e.into_inner()) {
        match r {
            Some(Ok(v)) => out.push(v),
            Some(Err(e)) => return Err(e),
            None => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::read::md5_range;

    /// The copy through memory that `kernel_copy` falls back to.
    #[test]
    fn copy_through_memory_copies_the_range_and_refuses_a_short_source() {
        let data: Vec<u8> = (0..2 * CHUNK + 99).map(|i| (i * 11 % 241) as u8).collect();
        let src = tempfile::tempfile().unwrap();
        (&src).write_all(&data).unwrap();
        let mut out = Vec::new();
        copy_range(&src, 3, data.len() as u64 - 3, &mut out, false).unwrap();
        assert_eq!(out, &data[3..]);
        let mut out = Vec::new();
        let r = copy_range(&src, 0, data.len() as u64 + 1, &mut out, false);
        assert!(matches!(r, Err(CopyError::Read(_))));
        // md5_range refuses a range the file does not hold
        let p = Path::new("src");
        assert!(md5_range(&src, p, 0, data.len() as u64 + 1).is_err());
        assert_eq!(
            md5_range(&src, p, 3, data.len() as u64 - 3).unwrap(),
            hex(&Md5::digest(&data[3..]))
        );
    }

    #[test]
    fn parallel_copy_equals_serial_copy() {
        let data: Vec<u8> = (0..5 * CHUNK + 123).map(|i| (i * 31 % 253) as u8).collect();
        let src = tempfile::tempfile().unwrap();
        (&src).write_all(&data).unwrap();
        for gzip in [false, true] {
            let mut m1 = Md5::new();
            let mut h = crate::io::xxh3::Hasher::new();
            let c = copy_range_parallel(
                &src,
                7,
                data.len() as u64 - 7,
                &mut m1,
                &mut h,
                Sink::new(tempfile::tempfile().unwrap(), gzip, None),
            )
            .unwrap();
            let mut f = c.file;
            use std::io::Seek;
            f.rewind().unwrap();
            let mut stored = Vec::new();
            f.read_to_end(&mut stored).unwrap();
            assert_eq!(c.stored_len, stored.len() as u64);
            assert_eq!(c.stored, xxhash_rust::xxh3::xxh3_128(&stored));
            let mut out = Vec::new();
            if gzip {
                flate2::read::MultiGzDecoder::new(&stored[..])
                    .read_to_end(&mut out)
                    .unwrap();
            } else {
                out = stored;
            }
            assert_eq!(out, &data[7..]);
            assert_eq!(hex(&m1.finalize()), hex(&Md5::digest(&data[7..])));
            assert_eq!(h.digest128(), xxhash_rust::xxh3::xxh3_128(&data[7..]));
        }
        // a range past the end of the source is a read error, not a hang
        let mut m = Md5::new();
        let r = copy_range_parallel(
            &src,
            0,
            data.len() as u64 + 1,
            &mut m,
            &mut crate::io::xxh3::Hasher::new(),
            Sink::new(tempfile::tempfile().unwrap(), false, None),
        );
        assert!(matches!(r, Err(CopyError::Read(_))));
    }

    #[test]
    fn copy_and_hash_copies_and_hashes_with_and_without_md5() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..3 * CHUNK + 77).map(|i| (i * 17 % 233) as u8).collect();
        let sp = dir.path().join("src");
        std::fs::write(&sp, &data).unwrap();
        let src = File::open(&sp).unwrap();
        for want_md5 in [true, false] {
            let op = dir.path().join(format!("out-{want_md5}"));
            let out = File::create(&op).unwrap();
            let flusher = Flusher::new(&out, &op).unwrap();
            let len = data.len() as u64 - 11;
            let (md5, fast) =
                copy_and_hash(&src, &sp, 11, len, Out::new(&out, &op, &flusher), want_md5).unwrap();
            flusher.finish().unwrap();
            assert_eq!(std::fs::read(&op).unwrap(), &data[11..]);
            assert_eq!(fast, xxhash_rust::xxh3::xxh3_128(&data[11..]));
            assert_eq!(md5, want_md5.then(|| hex(&Md5::digest(&data[11..]))));
            // a source shorter than the range is an error, either way
            let out = tempfile::tempfile().unwrap();
            let out = Out {
                file: &out,
                path: &op,
                flush: None,
            };
            let r = copy_and_hash(&src, &sp, 0, data.len() as u64 + 1, out, want_md5);
            assert!(matches!(r, Err(Error::Io { .. })), "{r:?}");
        }
    }

    #[test]
    fn small_files_copy_with_their_md5_and_in_parallel_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let items: Vec<usize> = (0..40).map(|i| i * 977 % 5000).collect();
        let sums = each_in_parallel(&items, u64::MAX, |&n| {
            let data: Vec<u8> = (0..n).map(|i| (i * 31 % 251) as u8).collect();
            let src_path = dir.path().join(format!("s{n}"));
            std::fs::write(&src_path, &data).unwrap();
            let out_path = dir.path().join(format!("o{n}"));
            let out = File::create(&out_path).unwrap();
            let sum = copy_file_md5(
                &File::open(&src_path).unwrap(),
                &src_path,
                n as u64,
                &out,
                &out_path,
            )?;
            assert_eq!(std::fs::read(&out_path).unwrap(), data);
            Ok((n, sum == hex(&Md5::digest(&data))))
        })
        .unwrap();
        assert_eq!(sums, items.iter().map(|&n| (n, true)).collect::<Vec<_>>());
        // the first failure in order is the error; a short source is one
        let r = each_in_parallel(&items, u64::MAX, |&n| {
            if n % 3 == 1 {
                Err(Error::BrokenPipe)
            } else {
                Ok(n)
            }
        });
        assert!(matches!(r, Err(Error::BrokenPipe)));
        let p = dir.path().join("short");
        std::fs::write(&p, b"abc").unwrap();
        let out = File::create(dir.path().join("o")).unwrap();
        let r = copy_file_md5(&File::open(&p).unwrap(), &p, 10, &out, &p);
        assert!(matches!(r, Err(Error::Io { .. })), "{r:?}");
    }
}
