//! Reading a FileStorage (`Data.fs`) the way ZODB's `read_index` does with
//! `read_only=True`: check the magic, walk the transaction records, and find
//! the end of the last committed transaction, building the oid → position
//! index on the way.
//!
//! Layout (see ZODB's `FileStorage/format.py`): a 4-byte magic (`FS30`, or
//! `FS21` from Python 2), then transactions. A transaction header is
//! `tid(8) length(8) status(1) ulen(2) dlen(2) elen(2)` (big-endian) followed
//! by user, description and extension bytes, then data records, then the
//! length again (8 bytes). A data record header is
//! `oid(8) tid(8) prev(8) tloc(8) vlen(2) plen(8)`, followed by `plen` bytes
//! of pickle, or by an 8-byte back pointer when `plen` is 0.
//!
//! A transaction whose status is `c` (still being committed) or whose length
//! runs past the end of the file ends the scan: it and everything after it
//! are not committed. Damage that ZODB refuses (`panic` in `read_index`) is
//! an error here too.

use std::io;
use std::path::Path;

use crate::error::{Error, Result};
use crate::format::blob::is_blob_pickle;
use crate::format::index::{Index, MAX_POS};

/// Where a FileStorage's bytes are read from: the source file (its
/// implementation, with `pread`, is the command's, see
/// `command/backup.rs`) or, in tests, a byte slice.
pub trait ReadAt {
    /// Read into all of `buf` from `pos`; fewer bytes only at the end.
    fn read_full_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize>;
}

impl ReadAt for [u8] {
    fn read_full_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        let from = (pos.min(self.len() as u64)) as usize;
        let n = buf.len().min(self.len() - from);
        buf[..n].copy_from_slice(&self[from..from + n]);
        Ok(n)
    }
}

/// Transaction header length.
pub const TRANS_HDR_LEN: u64 = 23;
/// Data record header length.
pub const DATA_HDR_LEN: u64 = 42;
/// Magic of FileStorage files written by ZODB on Python 3.
pub const MAGIC_FS30: &[u8; 4] = b"FS30";
/// Magic of FileStorage files written by ZODB on Python 2 (same layout).
pub const MAGIC_FS21: &[u8; 4] = b"FS21";

/// Bytes read from the source per `pread` while scanning headers. Records
/// are usually far smaller, so most headers come out of the window; a large
/// record is skipped by moving the window.
const WINDOW: usize = 1 << 20;

/// The outcome of a scan.
#[derive(Debug)]
pub struct Scan {
    /// End of the last committed transaction: what a backup copies up to.
    pub end: u64,
    /// Size of the file when the scan started.
    pub size: u64,
    /// oid → position of the newest committed data record.
    pub index: Index,
    /// Number of committed transactions scanned (undone ones included).
    pub transactions: u64,
    /// The blob records of the committed transactions from the position
    /// asked for (see [`scan_from`]), in file order.
    pub blobs: Vec<BlobRecord>,
}

/// A blob record: its blob revision is the file `<oid>/<tid>.blob` of the
/// blob directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BlobRecord {
    pub oid: u64,
    pub tid: u64,
}

/// Bytes of a record's pickle enough to tell a blob record (its class
/// pickle, `ZODB.blob.Blob`, takes about 30).
const PICKLE_HEAD: usize = 64;

/// A read-only window over the file, so that header reads do not each cost
/// a system call.
struct Window<'a, R: ReadAt + ?Sized> {
    file: &'a R,
    /// Reads never go past this offset: bytes appended while we scan are
    /// not ours to judge.
    limit: u64,
    buf: Vec<u8>,
    start: u64,
    len: usize,
}

impl<'a, R: ReadAt + ?Sized> Window<'a, R> {
    fn new(file: &'a R, limit: u64) -> Self {
        Window {
            file,
            limit,
            buf: vec![0; WINDOW],
            start: 0,
            len: 0,
        }
    }

    /// Up to `n` bytes at `pos` (fewer at the end of the file).
    fn get(&mut self, pos: u64, n: usize) -> io::Result<&[u8]> {
        debug_assert!(n <= WINDOW);
        let in_window = pos >= self.start && pos + n as u64 <= self.start + self.len as u64;
        if !in_window {
            let want = (self.limit.saturating_sub(pos)).min(WINDOW as u64) as usize;
            let got = self.file.read_full_at(&mut self.buf[..want], pos)?;
            self.start = pos;
            self.len = got;
        }
        let off = (pos - self.start) as usize;
        let end = (off + n).min(self.len);
        Ok(&self.buf[off.min(end)..end])
    }

    fn u64_at(&mut self, pos: u64) -> io::Result<Option<u64>> {
        let b = self.get(pos, 8)?;
        Ok(if b.len() == 8 {
            Some(u64::from_be_bytes(b.try_into().expect("8 bytes")))
        } else {
            None
        })
    }
}

fn be16(b: &[u8]) -> u64 {
    u16::from_be_bytes([b[0], b[1]]) as u64
}

fn be64(b: &[u8]) -> u64 {
    u64::from_be_bytes(b[..8].try_into().expect("8 bytes"))
}

/// Check the magic of a source of `size` bytes named `path`.
pub fn check_magic<R: ReadAt + ?Sized>(file: &R, size: u64, path: &Path) -> Result<()> {
    let bad = |reason: String| Error::NotFileStorage {
        path: path.to_path_buf(),
        reason,
    };
    if size == 0 {
        return Err(bad("the file is empty".into()));
    }
    let mut magic = [0u8; 4];
    let got = file
        .read_full_at(&mut magic, 0)
        .map_err(|e| Error::io("read", path, e))?;
    if got < 4 || (&magic != MAGIC_FS30 && &magic != MAGIC_FS21) {
        return Err(bad(format!(
            "bad magic {:?} (expected FS30 or FS21)",
            String::from_utf8_lossy(&magic[..got])
        )));
    }
    Ok(())
}

/// Scan `file` from `start` (4 for a whole file, or the position an
/// existing `index` is valid up to) and return where the committed data
/// ends. `size` bounds the scan (normally the file's size at open). With
/// `blobs_from`, the blob records at or after that position are listed
/// too (ZODB's `is_blob_record`; a record that points back to earlier data,
/// as an undo writes, is a blob record when that data is one).
pub fn scan_from<R: ReadAt + ?Sized>(
    file: &R,
    path: &Path,
    size: u64,
    start: u64,
    mut index: Index,
    blobs_from: Option<u64>,
) -> Result<Scan> {
    let corrupt = |pos: u64, what: &str| Error::NotFileStorage {
        path: path.to_path_buf(),
        reason: format!("{what} at {pos}"),
    };
    let ioerr = |e| Error::io("read", path, e);
    let mut w = Window::new(file, size);
    let mut pos = start;
    let mut transactions = 0u64;
    let mut tindex: Vec<(u64, u64)> = Vec::new();
    let mut blobs = Vec::new();
    let mut tblobs = Vec::new();
    loop {
        let h = w.get(pos, TRANS_HDR_LEN as usize).map_err(ioerr)?;
        if h.len() < TRANS_HDR_LEN as usize {
            // nothing more, or a header cut short by the end of the file
            break;
        }
        let tl = be64(&h[8..16]);
        let status = h[16];
        let hl = TRANS_HDR_LEN + be16(&h[17..19]) + be16(&h[19..21]) + be16(&h[21..23]);
        if pos as u128 + tl as u128 + 8 > size as u128 || status == b'c' {
            // unfinished (or cut short): not committed
            break;
        }
        if !status.is_ascii() {
            return Err(corrupt(
                pos,
                &format!("invalid transaction status byte 0x{status:02x}"),
            ));
        }
        if tl < hl {
            // ZODB: bad data in the middle, or junk at the end after a crash?
            let rtl = w.u64_at(size - 8).map_err(ioerr)?.unwrap_or(0);
            if (size as i128 - rtl as i128) < pos as i128 || rtl < TRANS_HDR_LEN {
                break;
            }
            return Err(corrupt(pos, "invalid transaction header"));
        }
        let tpos = pos;
        let tend = tpos + tl;
        if status == b'u' {
            if w.u64_at(tend).map_err(ioerr)? != Some(tl) {
                return Err(corrupt(tpos, "inconsistent transaction length"));
            }
            pos = tend + 8;
            transactions += 1;
            continue;
        }
        tindex.clear();
        tblobs.clear();
        let mut dpos = tpos + hl;
        while dpos < tend {
            let want_blob = blobs_from.is_some_and(|b| dpos >= b);
            let n = DATA_HDR_LEN as usize + if want_blob { PICKLE_HEAD } else { 8 };
            let d = w.get(dpos, n).map_err(ioerr)?;
            if d.len() < DATA_HDR_LEN as usize {
                return Err(corrupt(dpos, "data record header cut short"));
            }
            let oid = be64(&d[0..8]);
            let tloc = be64(&d[24..32]);
            let vlen = be16(&d[32..34]);
            let plen = be64(&d[34..42]);
            if vlen != 0 {
                return Err(corrupt(dpos, "data record with a version (unsupported)"));
            }
            if plen == 0 && d.len() < DATA_HDR_LEN as usize + 8 {
                return Err(corrupt(dpos, "back pointer cut short"));
            }
            let dlen = DATA_HDR_LEN as u128 + if plen == 0 { 8 } else { plen as u128 };
            if dpos as u128 + dlen > tend as u128 || tloc != tpos {
                return Err(corrupt(dpos, "data record exceeds transaction record"));
            }
            if dpos > MAX_POS {
                return Err(corrupt(dpos, "position too large for an index"));
            }
            if want_blob {
                let tid = be64(&d[8..16]);
                let is_blob = if plen == 0 {
                    let back = be64(&d[42..50]);
                    blob_at(file, back, dpos).map_err(|(at, what)| match what {
                        Ok(what) => corrupt(at, what),
                        Err(e) => ioerr(e),
                    })?
                } else {
                    let head = &d[DATA_HDR_LEN as usize..];
                    is_blob_pickle(&head[..head.len().min(plen as usize)])
                };
                if is_blob {
                    tblobs.push(BlobRecord { oid, tid });
                }
            }
            tindex.push((oid, dpos));
            dpos += dlen as u64;
        }
        if dpos != tend {
            return Err(corrupt(tpos, "data records don't add up"));
        }
        if w.u64_at(tend).map_err(ioerr)? != Some(tl) {
            return Err(corrupt(tend, "redundant transaction length check failed"));
        }
        for &(oid, p) in &tindex {
            index.insert(oid, p);
        }
        blobs.extend_from_slice(&tblobs);
        transactions += 1;
        pos = tend + 8;
    }
    Ok(Scan {
        end: pos,
        size,
        index,
        transactions,
        blobs,
    })
}

/// Whether the data a back pointer `back` (of the record at `from`) leads
/// to is a blob record, following further back pointers. A back pointer of
/// 0 (an undone creation) has no data. The error is where and what, or a
/// read error.
fn blob_at<R: ReadAt + ?Sized>(
    file: &R,
    mut back: u64,
    mut from: u64,
) -> std::result::Result<bool, (u64, std::result::Result<&'static str, io::Error>)> {
    let mut b = [0u8; DATA_HDR_LEN as usize + PICKLE_HEAD];
    loop {
        if back == 0 {
            return Ok(false);
        }
        if back < 4 || back >= from {
            return Err((from, Ok("back pointer does not point back")));
        }
        let got = file
            .read_full_at(&mut b, back)
            .map_err(|e| (back, Err(e)))?;
        if got < DATA_HDR_LEN as usize + 8 {
            return Err((back, Ok("data record header cut short")));
        }
        let plen = be64(&b[34..42]);
        if plen == 0 {
            from = back;
            back = be64(&b[42..50]);
            continue;
        }
        let head = &b[DATA_HDR_LEN as usize..got];
        return Ok(is_blob_pickle(&head[..head.len().min(plen as usize)]));
    }
}

/// Check the magic and scan the whole of a source of `size` bytes.
pub fn scan<R: ReadAt + ?Sized>(file: &R, size: u64, path: &Path) -> Result<Scan> {
    check_magic(file, size, path)?;
    scan_from(file, path, size, 4, Index::new(), None)
}

/// ZODB's `_check_sanity`: does `index`, said to be valid up to `pos`, agree
/// with the last transactions before `pos` in the file? Looks at up to five
/// data records of the newest transactions that were not undone.
pub fn index_is_sane<R: ReadAt + ?Sized>(file: &R, size: u64, index: &Index, pos: u64) -> bool {
    check_sanity(file, size, index, pos).unwrap_or(false)
}

fn check_sanity<R: ReadAt + ?Sized>(
    file: &R,
    size: u64,
    index: &Index,
    mut pos: u64,
) -> io::Result<bool> {
    if pos < 100 || size < pos {
        return Ok(false);
    }
    let read = |at: u64, n: usize| -> io::Result<Vec<u8>> {
        let mut b = vec![0u8; n];
        let got = file.read_full_at(&mut b, at)?;
        b.truncate(got);
        Ok(b)
    };
    let mut checked = 0;
    let max_checked = 5;
    // bound the walk back over undone or empty transactions
    let mut steps = 0;
    while checked < max_checked {
        steps += 1;
        if steps > 10_000 {
            return Ok(false);
        }
        let Some(len_at) = pos.checked_sub(8) else {
            return Ok(false);
        };
        let b = read(len_at, 8)?;
        if b.len() < 8 {
            return Ok(false);
        }
        let tl = be64(&b);
        let Some(tpos) = pos.checked_sub(tl).and_then(|p| p.checked_sub(8)) else {
            return Ok(false);
        };
        if tpos < 4 {
            return Ok(false);
        }
        pos = tpos;
        let h = read(tpos, TRANS_HDR_LEN as usize)?;
        if h.len() < TRANS_HDR_LEN as usize {
            return Ok(false);
        }
        if be64(&h[8..16]) != tl {
            return Ok(false);
        }
        let status = h[16];
        if status == b'u' {
            continue;
        }
        if status != b' ' && status != b'p' {
            return Ok(false);
        }
        let hl = TRANS_HDR_LEN + be16(&h[17..19]) + be16(&h[19..21]) + be16(&h[21..23]);
        if tl < hl {
            return Ok(false);
        }
        let tend = tpos + tl;
        let mut opos = tpos + hl;
        if opos == tend {
            continue;
        }
        while opos < tend && checked < max_checked {
            let d = read(opos, DATA_HDR_LEN as usize)?;
            if d.len() < DATA_HDR_LEN as usize || be16(&d[32..34]) != 0 {
                return Ok(false);
            }
            let plen = be64(&d[34..42]);
            let dlen = DATA_HDR_LEN + if plen == 0 { 8 } else { plen };
            if opos.checked_add(dlen).is_none_or(|e| e > tend) || be64(&d[24..32]) != tpos {
                return Ok(false);
            }
            if index.get(be64(&d[0..8])) != Some(opos) {
                return Ok(false);
            }
            checked += 1;
            opos += dlen;
        }
        return Ok(true);
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One transaction of `records` (oid, pickle), status `status`, at
    /// `pos`, as ZODB lays it out.
    fn transaction(pos: u64, status: u8, records: &[(u64, &[u8])]) -> Vec<u8> {
        let user = b"u";
        let hl = TRANS_HDR_LEN + user.len() as u64;
        let data: u64 = records
            .iter()
            .map(|(_, p)| DATA_HDR_LEN + p.len() as u64)
            .sum();
        let tl = hl + data;
        let mut t = Vec::new();
        t.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 1]); // tid
        t.extend_from_slice(&tl.to_be_bytes());
        t.push(status);
        t.extend_from_slice(&(user.len() as u16).to_be_bytes());
        t.extend_from_slice(&0u16.to_be_bytes());
        t.extend_from_slice(&0u16.to_be_bytes());
        t.extend_from_slice(user);
        for (oid, p) in records {
            t.extend_from_slice(&oid.to_be_bytes());
            t.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 1]); // tid
            t.extend_from_slice(&0u64.to_be_bytes()); // prev
            t.extend_from_slice(&pos.to_be_bytes()); // tloc
            t.extend_from_slice(&0u16.to_be_bytes()); // vlen
            t.extend_from_slice(&(p.len() as u64).to_be_bytes());
            t.extend_from_slice(p);
        }
        t.extend_from_slice(&tl.to_be_bytes());
        t
    }

    #[test]
    fn a_scan_of_bytes_finds_the_committed_end_and_the_index() {
        let mut fs = MAGIC_FS30.to_vec();
        let first = transaction(4, b' ', &[(0, b"root"), (7, b"seven")]);
        fs.extend_from_slice(&first);
        let second_at = fs.len() as u64;
        fs.extend_from_slice(&transaction(second_at, b' ', &[(7, b"again")]));
        let committed = fs.len() as u64;
        let p = Path::new("Data.fs");
        let s = scan(&fs[..], fs.len() as u64, p).unwrap();
        assert_eq!((s.end, s.transactions, s.index.len()), (committed, 2, 2));
        assert_eq!(s.index.get(0), Some(4 + TRANS_HDR_LEN + 1));
        assert_eq!(s.index.get(7), Some(second_at + TRANS_HDR_LEN + 1));
        // a transaction still being committed, or cut short, is not
        let mut pending = fs.clone();
        pending.extend_from_slice(&transaction(committed, b'c', &[(9, b"x")]));
        let s = scan(&pending[..], pending.len() as u64, p).unwrap();
        assert_eq!((s.end, s.index.get(9)), (committed, None));
        let mut cut = fs.clone();
        cut.extend_from_slice(&transaction(committed, b' ', &[(9, b"x")])[..30]);
        assert_eq!(scan(&cut[..], cut.len() as u64, p).unwrap().end, committed);
        // a record that claims another transaction is damage
        let mut bad = fs.clone();
        bad.extend_from_slice(&transaction(committed + 1, b' ', &[(9, b"x")]));
        assert!(matches!(
            scan(&bad[..], bad.len() as u64, p),
            Err(Error::NotFileStorage { .. })
        ));
        // the index agrees with the file it came from, not with another
        assert!(index_is_sane(&fs[..], committed, &s_index(&fs), committed));
        assert!(!index_is_sane(&fs[..], committed, &Index::new(), committed));
        // not a FileStorage
        assert!(check_magic(&b"FS99"[..], 4, p).is_err());
    }

    /// A data record pointing back to `back` (undo writes them).
    fn back_pointer(pos: u64, oid: u64, tid: u8, back: u64) -> Vec<u8> {
        let hl = TRANS_HDR_LEN + 1;
        let tl = hl + DATA_HDR_LEN + 8;
        let mut t = transaction(pos, b' ', &[]);
        t.truncate(t.len() - 8);
        t[8..16].copy_from_slice(&tl.to_be_bytes());
        t.extend_from_slice(&oid.to_be_bytes());
        t.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, tid]);
        t.extend_from_slice(&0u64.to_be_bytes());
        t.extend_from_slice(&pos.to_be_bytes());
        t.extend_from_slice(&0u16.to_be_bytes());
        t.extend_from_slice(&0u64.to_be_bytes());
        t.extend_from_slice(&back.to_be_bytes());
        t.extend_from_slice(&tl.to_be_bytes());
        t
    }

    #[test]
    fn a_scan_lists_the_blob_records_from_where_it_is_asked() {
        let blob: &[u8] = b"\x80\x03cZODB.blob\nBlob\nq\x00.\x80\x03}q\x01.";
        let mut fs = MAGIC_FS30.to_vec();
        fs.extend_from_slice(&transaction(4, b' ', &[(0, b"root"), (5, blob)]));
        let second = fs.len() as u64;
        fs.extend_from_slice(&transaction(second, b' ', &[(6, blob), (7, b"plain")]));
        let blob_rec = 4 + TRANS_HDR_LEN + 1 + DATA_HDR_LEN + 4;
        let undo = fs.len() as u64;
        fs.extend_from_slice(&back_pointer(undo, 5, 9, blob_rec));
        let undo_plain = fs.len() as u64;
        fs.extend_from_slice(&back_pointer(undo_plain, 0, 10, 4 + TRANS_HDR_LEN + 1));
        let undone_creation = fs.len() as u64;
        fs.extend_from_slice(&back_pointer(undone_creation, 6, 11, 0));
        let p = Path::new("Data.fs");
        let all = scan_from(&fs[..], p, fs.len() as u64, 4, Index::new(), Some(4)).unwrap();
        let tid1 = 1;
        assert_eq!(
            all.blobs,
            [
                BlobRecord { oid: 5, tid: tid1 },
                BlobRecord { oid: 6, tid: tid1 },
                BlobRecord { oid: 5, tid: 9 },
            ]
        );
        // only from the second transaction; none when not asked
        let from = scan_from(&fs[..], p, fs.len() as u64, 4, Index::new(), Some(second)).unwrap();
        assert_eq!(from.blobs.len(), 2);
        assert!(scan(&fs[..], fs.len() as u64, p).unwrap().blobs.is_empty());
        // a back pointer that points forward is damage
        let mut bad = fs.clone();
        let at = bad.len() as u64;
        bad.extend_from_slice(&back_pointer(at, 5, 12, at + 8));
        assert!(scan_from(&bad[..], p, bad.len() as u64, 4, Index::new(), Some(4)).is_err());
    }

    fn s_index(fs: &[u8]) -> Index {
        scan(fs, fs.len() as u64, Path::new("Data.fs"))
            .unwrap()
            .index
    }
}
