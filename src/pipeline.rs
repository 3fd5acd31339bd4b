//! The one I/O core: read → md5 → (gzip) → write, in large buffers.
//!
//! Backups copy a byte range of the source (read with `pread`, so the file
//! position never matters and the source is only ever opened read-only);
//! recovery and verification read data files, decompressing `.fsz` /
//! `.deltafsz` (multi-member gzip accepted, as Python's gzip module does).

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::checksum::Md5;

use crate::buf::AlignedBuf;
use crate::durable::Flusher;
use crate::error::{Error, Result};

/// Size of each read and of the pieces handed between threads. Reads go
/// into page-aligned buffers ([`crate::buf`]): with those, 64 KiB to 2 MiB
/// reads from the page cache all ran at the same speed here; 1 MiB keeps
/// system calls and hand-offs few and is the gzip member size.
pub const CHUNK: usize = 1 << 20;

/// gzip level for `-z`. ZODB's repozo uses Python's zlib at its default of
/// 9, in one thread. We compress 1 MiB members with libdeflate at level 1:
/// on FileStorage data (`scripts/bench.py`, half the payloads random) it
/// wrote files 1.1% larger than Python's level 9 at 1.8 times the speed of
/// zlib-rs level 2 (which wrote 1.4% larger files); zlib-rs level 1 wrote
/// 12% larger files.
pub const GZIP_LEVEL: i32 = 1;

/// Lower-case hex of an md5 digest.
pub fn hex(digest: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(digest.len() * 2);
    for b in digest {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 15) as usize] as char);
    }
    s
}

/// Where a backup's bytes go: a file, written plain or as gzip.
#[derive(Debug)]
pub struct Sink<'a> {
    file: File,
    gzip: bool,
    flush: Option<&'a Flusher>,
}

impl<'a> Sink<'a> {
    /// A sink writing to `file`, compressed when `gzip`, made durable as it
    /// is written by `flush`.
    pub fn new(file: File, gzip: bool, flush: Option<&'a Flusher>) -> Sink<'a> {
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

/// A compressor for [`gzip_member`], one per thread.
pub fn compressor() -> libdeflater::Compressor {
    libdeflater::Compressor::new(
        libdeflater::CompressionLvl::new(GZIP_LEVEL).expect("a valid libdeflate level"),
    )
}

/// Compress `data` into one complete gzip member. A `-z` file is a
/// sequence of such members, one per [`CHUNK`], so that they can be
/// compressed on several cores; gzip readers (`gunzip`, Python's gzip
/// module) read multi-member files as one stream.
pub fn gzip_member(c: &mut libdeflater::Compressor, data: &[u8]) -> io::Result<Vec<u8>> {
    let mut out = vec![0u8; c.gzip_compress_bound(data.len())];
    let n = c
        .gzip_compress(data, &mut out)
        .map_err(|e| io::Error::other(format!("gzip compression failed: {e:?}")))?;
    out.truncate(n);
    Ok(out)
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

fn ended_before(pos: u64, end: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("file ended at {pos}, before {end}"),
    )
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
pub struct Copied {
    /// The sink's file.
    pub file: File,
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
pub fn copy_range_parallel(
    src: &File,
    start: u64,
    len: u64,
    md5: &mut Md5,
    content: &mut crate::sums::Hasher,
    sink: Sink<'_>,
) -> std::result::Result<Copied, CopyError> {
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
        let writer = scope.spawn(move || -> std::result::Result<Copied, CopyError> {
            let mut out = file;
            let mut stored = crate::sums::Hasher::new();
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

/// Read into all of `buf` from `pos`, retrying after EINTR; fewer bytes
/// only at the end of the file. Returns how many were read.
pub fn read_full_at(file: &File, buf: &mut [u8], pos: u64) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], pos + got as u64) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Threads reading for [`read_in_order`].
const READERS: usize = 2;

/// Read `[start, start + len)` of `file` in [`CHUNK`]s and hand the chunks
/// to `f` in file order on this thread. With `parallel`, [`READERS`]
/// threads read, so that a sequential hash (xxh3 runs faster than the
/// kernel copies out of the page cache) is fed by both cores; short ranges,
/// and callers that keep the other core busy themselves, read on this
/// thread alone. Returns how many bytes were handed over: fewer than `len`
/// only when the file ends first.
pub fn read_in_order(
    file: &File,
    start: u64,
    len: u64,
    parallel: bool,
    mut f: impl FnMut(&[u8]),
) -> io::Result<u64> {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::mpsc::channel;
    use std::sync::Mutex;

    let chunk = CHUNK as u64;
    let chunks = len.div_ceil(chunk);
    if !parallel || chunks <= 4 {
        let mut buf = AlignedBuf::new(CHUNK.min(len.max(1) as usize));
        let mut pos = start;
        let end = start + len;
        while pos < end {
            let want = ((end - pos) as usize).min(buf.len());
            let n = read_full_at(file, &mut buf[..want], pos)?;
            f(&buf[..n]);
            pos += n as u64;
            if n < want {
                break;
            }
        }
        return Ok(pos - start);
    }
    let (empty_tx, empty_rx) = channel::<AlignedBuf>();
    for _ in 0..2 * READERS + 2 {
        empty_tx
            .send(AlignedBuf::new(CHUNK))
            .expect("receiver alive");
    }
    let empty_rx = Mutex::new(empty_rx);
    let (full_tx, full_rx) = channel::<(u64, AlignedBuf, io::Result<usize>)>();
    let next = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        // ours inside the scope, so that a panic in `f` drops them and the
        // readers stop instead of waiting for a buffer for ever
        let (full_rx, empty_tx) = (full_rx, empty_tx);
        for _ in 0..READERS {
            let full_tx = full_tx.clone();
            let (empty_rx, next, stop) = (&empty_rx, &next, &stop);
            scope.spawn(move || {
                // a buffer first, then a chunk: the chunk the consumer
                // waits for always has a buffer
                while let Ok(mut buf) = empty_rx
                    .lock()
                    .map_err(|_| ())
                    .and_then(|r| r.recv().map_err(|_| ()))
                {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= chunks || stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let pos = start + i * chunk;
                    let want = (start + len - pos).min(chunk) as usize;
                    let got = read_full_at(file, &mut buf[..want], pos);
                    if full_tx.send((i, buf, got)).is_err() {
                        return;
                    }
                }
            });
        }
        drop(full_tx);
        let mut waiting: BTreeMap<u64, (AlignedBuf, io::Result<usize>)> = BTreeMap::new();
        let mut expect = 0u64;
        let mut total = 0u64;
        let result = 'consume: loop {
            if expect == chunks {
                break Ok(total);
            }
            let Ok((i, buf, got)) = full_rx.recv() else {
                break Err(io::Error::other("reader threads stopped early"));
            };
            waiting.insert(i, (buf, got));
            while let Some((buf, got)) = waiting.remove(&expect) {
                let want = (len - expect * chunk).min(chunk) as usize;
                let n = match got {
                    Ok(n) => n,
                    Err(e) => break 'consume Err(e),
                };
                f(&buf[..n]);
                total += n as u64;
                expect += 1;
                if n < want {
                    break 'consume Ok(total); // the file ends here
                }
                // the readers may have stopped: nothing to return it to
                let _ = empty_tx.send(buf);
            }
        };
        // let the readers go: no more chunks, no more buffers
        stop.store(true, Ordering::Relaxed);
        drop(empty_tx);
        result
    })
}

/// Buffers in flight between [`read_ahead`]'s reader and its consumer.
const AHEAD: usize = 4;

/// Read `[start, start + len)` of `file` in [`CHUNK`]s on a thread of its
/// own, which hands each chunk in file order to `near` before passing it
/// to `far` on this thread: the reading and a fast hash (xxh3) take the
/// other core while this one runs a slow one (md5). Returns how many bytes
/// were handed over: fewer than `len` only when the file ends first.
pub fn read_ahead(
    file: &File,
    start: u64,
    len: u64,
    mut near: impl FnMut(&[u8]) + Send,
    mut far: impl FnMut(&[u8]),
) -> io::Result<u64> {
    use std::sync::mpsc::{channel, sync_channel};
    let (full_tx, full_rx) = sync_channel::<(AlignedBuf, usize)>(AHEAD);
    let (empty_tx, empty_rx) = channel::<AlignedBuf>();
    for _ in 0..AHEAD {
        empty_tx
            .send(AlignedBuf::new(CHUNK.min(len.max(1) as usize)))
            .expect("receiver alive");
    }
    std::thread::scope(|scope| {
        // ours inside the scope, so that a panic in `far` drops them and
        // the reader stops instead of waiting for a buffer for ever
        let (full_rx, empty_tx) = (full_rx, empty_tx);
        let reader = scope.spawn(move || -> io::Result<()> {
            let mut pos = start;
            let end = start + len;
            while pos < end {
                let Ok(mut buf) = empty_rx.recv() else {
                    return Ok(()); // the consumer stopped
                };
                let want = ((end - pos) as usize).min(buf.len());
                let n = read_full_at(file, &mut buf[..want], pos)?;
                near(&buf[..n]);
                pos += n as u64;
                if full_tx.send((buf, n)).is_err() || n < want {
                    return Ok(());
                }
            }
            Ok(())
        });
        let mut total = 0u64;
        while let Ok((buf, n)) = full_rx.recv() {
            far(&buf[..n]);
            total += n as u64;
            // the reader may be done: nothing to return it to
            let _ = empty_tx.send(buf);
        }
        reader.join().expect("reader thread does not panic")?;
        Ok(total)
    })
}

/// md5 hex of `len` bytes of `src` from `start`, which the source must
/// hold. Read on this thread alone: md5 is slower than reading, and its
/// callers often keep the other core busy.
pub fn md5_range(src: &File, path: &Path, start: u64, len: u64) -> Result<String> {
    let mut md5 = Md5::new();
    let n = read_in_order(src, start, len, false, |b| {
        md5.update(b);
        crate::progress::read(b.len() as u64);
    })
    .map_err(|e| Error::io("read", path, e))?;
    if n < len {
        return Err(Error::io(
            "read",
            path,
            ended_before(start + n, start + len),
        ));
    }
    Ok(hex(&md5.finalize()))
}

/// Open a repository data file for reading its uncompressed bytes.
pub fn open_data(path: &Path, gzip: bool) -> Result<Box<dyn Read>> {
    let f = File::open(path).map_err(|e| Error::io("open", path, e))?;
    if gzip {
        let r = crate::gunzip::GzReader::new(f).map_err(|e| Error::io("open", path, e))?;
        Ok(Box::new(r))
    } else {
        Ok(Box::new(f))
    }
}

/// Stream a data file's uncompressed bytes into `md5` and `out`; returns
/// the number of bytes. Errors name `path` (read side) or `out_path`.
pub fn stream_data(
    path: &Path,
    gzip: bool,
    mut md5: Option<&mut Md5>,
    mut out: Option<(&mut dyn Write, &Path)>,
) -> Result<u64> {
    for_each_chunk(path, gzip, |chunk| {
        if let Some(m) = md5.as_deref_mut() {
            m.update(chunk);
        }
        if let Some((o, opath)) = out.as_mut() {
            o.write_all(chunk).map_err(|e| {
                if e.kind() == io::ErrorKind::BrokenPipe {
                    Error::BrokenPipe
                } else {
                    Error::io("write", opath, e)
                }
            })?;
            crate::progress::written(chunk.len() as u64);
        }
        Ok(())
    })
}

/// Read a data file's uncompressed bytes in [`CHUNK`]s, counted as read,
/// handing each to `f`; returns the number of bytes. Read errors name
/// `path`.
pub fn for_each_chunk(
    path: &Path,
    gzip: bool,
    mut f: impl FnMut(&[u8]) -> Result<()>,
) -> Result<u64> {
    let mut r = open_data(path, gzip)?;
    let mut buf = AlignedBuf::new(CHUNK);
    let mut total = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_error(path, gzip, e)),
        };
        crate::progress::read(n as u64);
        f(&buf[..n])?;
        total += n as u64;
    }
    Ok(total)
}

/// Copy `len` bytes of `src` from `start` to the current position of `out`
/// inside the kernel (`copy_file_range`), falling back to read/write where
/// the file systems do not support it. The flusher hears of every step
/// (and syncs every [`FLUSH_STEP`](crate::durable::Flusher) bytes).
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

/// A writer into `file` that asks the kernel to start writing what it has
/// written to disk every [`WRITEBACK_STEP_SMALL`] bytes, so that the disk
/// works while the rest is produced and the final `fsync` waits less (an
/// 8 MB `.index` on a shared disk).
pub struct WritebackWriter<'a> {
    file: &'a File,
    unflushed: u64,
}

/// Bytes written between two writeback requests of a [`WritebackWriter`].
const WRITEBACK_STEP_SMALL: u64 = 2 << 20;

impl<'a> WritebackWriter<'a> {
    pub fn new(file: &'a File) -> Self {
        WritebackWriter { file, unflushed: 0 }
    }
}

impl Write for WritebackWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = (&mut &*self.file).write(buf)?;
        self.unflushed += n as u64;
        if self.unflushed >= WRITEBACK_STEP_SMALL {
            start_writeback(self.file);
            self.unflushed = 0;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        start_writeback(self.file);
        self.unflushed = 0;
        Ok(())
    }
}

/// Ask the kernel to start writing `file`'s dirty pages to disk now
/// (`sync_file_range(SYNC_FILE_RANGE_WRITE)`, which does not wait), so that
/// the disk works while we copy or hash and the final `fsync` finds little
/// left to do. Only a hint: errors are left for that `fsync` to report.
pub fn start_writeback(file: &File) {
    use std::os::unix::io::AsRawFd;
    // SAFETY: a valid descriptor; offset 0 and length 0 mean the whole file.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
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
            let mut fast = crate::sums::Hasher::new();
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
            let fast = scope.spawn(|| match crate::sums::hash_range_serial(src, start, len) {
                Ok((h, n)) if n == len => Ok(h),
                Ok((_, n)) => Err(short(n)),
                Err(e) => Err(Error::io("read", src_path, e)),
            });
            let copied = kernel_copy(src, src_path, start, len, out, true);
            let fast = fast.join().expect("hashing thread does not panic");
            copied?;
            Ok((None, fast?))
        }
    })
}

/// Whether the uncompressed bytes of a data file equal `src` from `at`;
/// returns the file's length when they do, `None` at the first difference
/// (or when the source ends first).
pub fn same_as_source(
    path: &Path,
    gzip: bool,
    src: &File,
    src_path: &Path,
    at: u64,
) -> Result<Option<u64>> {
    let mut r = open_data(path, gzip)?;
    let mut a = AlignedBuf::new(CHUNK);
    let mut b = AlignedBuf::new(CHUNK);
    let mut n_total = 0u64;
    loop {
        let n = match r.read(&mut a) {
            Ok(0) => return Ok(Some(n_total)),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_error(path, gzip, e)),
        };
        let got = read_full_at(src, &mut b[..n], at + n_total)
            .map_err(|e| Error::io("read", src_path, e))?;
        if got < n {
            return Ok(None); // the source ends first
        }
        if a[..n] != b[..n] {
            return Ok(None);
        }
        crate::progress::read(n as u64);
        n_total += n as u64;
    }
}

/// Decompress a gzip data file into `out` on two cores: this thread
/// inflates (and hashes), another writes whole [`CHUNK`]s. Returns the
/// number of uncompressed bytes.
pub fn inflate_to_file(
    path: &Path,
    mut md5: Option<&mut Md5>,
    mut fast: Option<&mut crate::sums::Hasher>,
    out: Out<'_>,
) -> Result<u64> {
    use std::sync::mpsc::{channel, sync_channel};
    let mut r = open_data(path, true)?;
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
                        result = Err(read_error(path, true, e));
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

/// A read error on a data file: for gzip files, bad data is reported as a
/// damaged gzip stream rather than an I/O failure.
pub fn read_error(path: &Path, gzip: bool, e: io::Error) -> Error {
    let data_error = matches!(
        e.kind(),
        io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput | io::ErrorKind::UnexpectedEof
    );
    if gzip && data_error {
        Error::BadGzip {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }
    } else {
        Error::io("read", path, e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streaming_and_one_shot_md5_agree() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let data: Vec<u8> = (0..3 * CHUNK + 17).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&p, &data).unwrap();
        let f = File::open(&p).unwrap();
        let one_shot = hex(&Md5::digest(&data[5..]));
        assert_eq!(
            md5_range(&f, &p, 5, data.len() as u64 - 5).unwrap(),
            one_shot
        );
        let mut m = Md5::new();
        let n = stream_data(&p, false, Some(&mut m), None).unwrap();
        assert_eq!(n, data.len() as u64);
        assert_eq!(hex(&m.finalize()), hex(&Md5::digest(&data)));
    }

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
            let mut h = crate::sums::Hasher::new();
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
            &mut crate::sums::Hasher::new(),
            Sink::new(tempfile::tempfile().unwrap(), false, None),
        );
        assert!(matches!(r, Err(CopyError::Read(_))));
    }

    #[test]
    fn read_ahead_hands_over_every_chunk_in_order_to_both_sides() {
        let data: Vec<u8> = (0..4 * CHUNK + 5).map(|i| (i * 13 % 239) as u8).collect();
        let src = tempfile::tempfile().unwrap();
        (&src).write_all(&data).unwrap();
        for (start, len) in [(0, data.len() as u64), (9, 2 * CHUNK as u64), (3, 0)] {
            let (mut near, mut far) = (Vec::new(), Vec::new());
            let n = read_ahead(
                &src,
                start,
                len,
                |b| near.extend_from_slice(b),
                |b| far.extend_from_slice(b),
            )
            .unwrap();
            let want = &data[start as usize..(start + len) as usize];
            assert_eq!((n, &near[..], &far[..]), (len, want, want));
        }
        // past the end: what the file holds, and no hang
        let mut far = Vec::new();
        let n = read_ahead(&src, 7, data.len() as u64, |_| {}, |b| far.extend(b)).unwrap();
        assert_eq!((n, &far[..]), (data.len() as u64 - 7, &data[7..]));
    }

    /// A consumer that panics stops the readers: the panic comes out, no
    /// thread waits for ever.
    #[test]
    fn a_panicking_consumer_does_not_hang_the_readers() {
        let data = vec![5u8; 12 * CHUNK];
        let src = tempfile::tempfile().unwrap();
        (&src).write_all(&data).unwrap();
        let len = data.len() as u64;
        let r = std::panic::catch_unwind(|| {
            read_ahead(&src, 0, len, |_| {}, |_| panic!("consumer fails"))
        });
        assert!(r.is_err());
        for parallel in [false, true] {
            let r = std::panic::catch_unwind(|| {
                read_in_order(&src, 0, len, parallel, |_| panic!("consumer fails"))
            });
            assert!(r.is_err());
        }
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
