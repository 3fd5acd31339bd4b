//! Writing gzip: the level and the one-member-per-chunk compressor that
//! `-z` files are made of.

use std::io;

/// gzip level for `-z`. ZODB's repozo uses Python's zlib at its default of
/// 9, in one member on one thread; we compress 1 MiB members with
/// libdeflate on two threads. Level 6 is the fastest within 1.02x of
/// Python's size on Plone-like data (`scripts/bench.py --size pickles`,
/// gzip -9 makes it 3.4x smaller): 1.016x, where level 5 wrote 1.027x,
/// level 4 1.046x, level 1 1.089x. It costs 2.5 times level 1's CPU
/// there: `-BFz` measured 7.7x faster than ZODB's repozo on two idle
/// cores (level 1: 18x; level 5 estimated at 10x). On the half-random
/// benchmark data level 6 writes 1.002x (level 1: 1.011x). All levels
/// and the method: docs/bench-gzip.md.
pub const GZIP_LEVEL: i32 = 6;

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
