//! Reading files in order: whole reads at an offset, ordered and
//! read-ahead readers over a range, data files (plain or gzip) chunk by
//! chunk, md5 of a range, and comparing a data file with the source.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::error::{Error, Result};
use crate::io::buf::{AlignedBuf, CHUNK};
use crate::io::md5::{hex, Md5};

pub fn ended_before(pos: u64, end: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("file ended at {pos}, before {end}"),
    )
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

/// md5 hex of the whole file at `path` (a blob revision).
pub fn md5_file(path: &Path) -> Result<String> {
    let mut md5 = Md5::new();
    stream_data(path, false, Some(&mut md5), None)?;
    Ok(hex(&md5.finalize()))
}

/// Open a repository data file for reading its uncompressed bytes.
pub fn open_data(path: &Path, gzip: bool) -> Result<Box<dyn Read>> {
    let f = File::open(path).map_err(|e| Error::io("open", path, e))?;
    uncompressed(Box::new(f), path, gzip)
}

/// The uncompressed bytes of a data file whose stored bytes `r` yields
/// (named `path` in errors): inflated when `gzip`.
pub fn uncompressed(r: Box<dyn Read>, path: &Path, gzip: bool) -> Result<Box<dyn Read>> {
    if gzip {
        let r =
            crate::io::gunzip::GzReader::from_reader(r).map_err(|e| Error::io("open", path, e))?;
        Ok(Box::new(r))
    } else {
        Ok(r)
    }
}

/// Stream a data file's uncompressed bytes into `md5` and `out`; returns
/// the number of bytes. Errors name `path` (read side) or `out_path`.
pub fn stream_data(
    path: &Path,
    gzip: bool,
    md5: Option<&mut Md5>,
    out: Option<(&mut dyn Write, &Path)>,
) -> Result<u64> {
    stream_data_from(open_data(path, gzip)?, path, gzip, md5, out)
}

/// [`stream_data`] of the uncompressed bytes `r` yields ([`uncompressed`]).
pub fn stream_data_from(
    r: Box<dyn Read>,
    path: &Path,
    gzip: bool,
    mut md5: Option<&mut Md5>,
    mut out: Option<(&mut dyn Write, &Path)>,
) -> Result<u64> {
    for_each_chunk_in(r, path, gzip, |chunk| {
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
pub fn for_each_chunk(path: &Path, gzip: bool, f: impl FnMut(&[u8]) -> Result<()>) -> Result<u64> {
    for_each_chunk_in(open_data(path, gzip)?, path, gzip, f)
}

/// [`for_each_chunk`] of the uncompressed bytes `r` yields.
pub fn for_each_chunk_in(
    mut r: Box<dyn Read>,
    path: &Path,
    gzip: bool,
    mut f: impl FnMut(&[u8]) -> Result<()>,
) -> Result<u64> {
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
    same_as_source_from(open_data(path, gzip)?, path, gzip, src, src_path, at)
}

/// [`same_as_source`] of the uncompressed bytes `r` yields.
pub fn same_as_source_from(
    mut r: Box<dyn Read>,
    path: &Path,
    gzip: bool,
    src: &File,
    src_path: &Path,
    at: u64,
) -> Result<Option<u64>> {
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
}
