//! Writing gzip: the level and the one-member-per-chunk compressor that
//! `-z` files are made of.

use std::io;

/// gzip level for `-z`. ZODB's repozo uses Python's zlib at its default of
/// 9, in one thread. We compress 1 MiB members with libdeflate at level 1:
/// on FileStorage data (`scripts/bench.py`, half the payloads random) it
/// wrote files 1.1% larger than Python's level 9 at 1.8 times the speed of
/// zlib-rs level 2 (which wrote 1.4% larger files); zlib-rs level 1 wrote
/// 12% larger files.
pub const GZIP_LEVEL: i32 = 1;

/// A compressor for [`gzip_member`] at [`GZIP_LEVEL`], one per thread.
pub fn compressor() -> libdeflater::Compressor {
    compressor_at(GZIP_LEVEL).expect("GZIP_LEVEL is a valid libdeflate level")
}

/// A compressor at another libdeflate `level` (0 to 12), for measuring
/// levels (`examples/gzip_levels.rs`); `None` for a level out of range.
pub fn compressor_at(level: i32) -> Option<libdeflater::Compressor> {
    libdeflater::CompressionLvl::new(level)
        .ok()
        .map(libdeflater::Compressor::new)
}

/// Compress `data` into one complete gzip member. A `-z` file is a
/// sequence of such members, one per [`CHUNK`](crate::io::buf::CHUNK), so that they can be
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
