//! The fast checksum (xxh3-128) of ranges and data files, which the sums
//! cache records and trusted checks compare.

use std::fs::File;
use std::io;
use std::path::Path;

use crate::error::{IoContext, Result};

/// A streaming xxh3-128.
pub type Hasher = xxhash_rust::xxh3::Xxh3;

/// xxh3-128 of `len` bytes of `file` from `start`, and how many bytes were
/// there (fewer than `len` when the file ends first), read on both cores
/// ([`crate::io::read::read_in_order`]). Not counted as progress: callers
/// count what they read.
pub fn hash_range(file: &File, start: u64, len: u64) -> io::Result<(u128, u64)> {
    let mut h = Hasher::new();
    let n = crate::io::read::read_in_order(file, start, len, true, |b| h.update(b))?;
    Ok((h.digest128(), n))
}

/// [`hash_range`] on this thread alone, for callers that keep the other
/// core busy themselves (copying while the md5 runs).
pub fn hash_range_serial(file: &File, start: u64, len: u64) -> io::Result<(u128, u64)> {
    let mut h = Hasher::new();
    let n = crate::io::read::read_in_order(file, start, len, false, |b| h.update(b))?;
    Ok((h.digest128(), n))
}

/// xxh3-128 and number of the uncompressed bytes of a data file
/// (inflated for gzip), counted as read. A file that grows while we read it
/// is judged on what we read.
pub fn hash_data(path: &Path, gzip: bool) -> Result<(u128, u64)> {
    if gzip {
        let mut h = Hasher::new();
        let n = crate::io::read::for_each_chunk(path, true, |chunk| {
            h.update(chunk);
            Ok(())
        })?;
        return Ok((h.digest128(), n));
    }
    let f = File::open(path).ctx("open", path)?;
    let len = f.metadata().ctx("stat", path)?.len();
    let (h, n) = hash_range(&f, 0, len).ctx("read", path)?;
    crate::progress::read(n);
    Ok((h, n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_range_matches_one_shot() {
        use std::os::unix::fs::FileExt;
        const MB: usize = 1 << 20;
        // short (one thread) and long (parallel readers) ranges
        for size in [3 * MB + 17, 13 * MB + 5, 12 * MB] {
            let data: Vec<u8> = (0..size as u32).map(|i| (i * 13 % 251) as u8).collect();
            let f = tempfile::tempfile().unwrap();
            f.write_all_at(&data, 0).unwrap();
            let ranges = [(5, size - 5), (0, size), (MB, 6 * MB), (7, 5 * MB + 3)];
            for (start, len) in ranges.into_iter().filter(|&(s, l)| s + l <= size) {
                let want = xxhash_rust::xxh3::xxh3_128(&data[start..start + len]);
                let got = hash_range(&f, start as u64, len as u64).unwrap();
                assert_eq!(got, (want, len as u64), "{size} {start} {len}");
                let got = hash_range_serial(&f, start as u64, len as u64).unwrap();
                assert_eq!(got, (want, len as u64), "{size} {start} {len}");
            }
            // past the end: fewer bytes, the hash of what is there
            for extra in [1, 10, 9 * MB] {
                let (h, n) = hash_range(&f, 3, (size + extra) as u64).unwrap();
                assert_eq!(n, size as u64 - 3, "{size} {extra}");
                assert_eq!(h, xxhash_rust::xxh3::xxh3_128(&data[3..]));
            }
        }
        // a read error is returned from any reader, never a hang
        let dir = File::open(std::env::temp_dir()).unwrap();
        assert!(hash_range(&dir, 0, 40 * MB as u64).is_err());
        assert!(hash_range_serial(&dir, 0, 40 * MB as u64).is_err());
    }
}
