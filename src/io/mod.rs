//! Moving bytes: aligned buffers, readers, copies, checksums (md5, xxh3),
//! gzip writing and reading, durable files and flushing. Knows no file
//! format and decides nothing.

pub mod buf;
pub mod copy;
pub mod durable;
pub mod flush;
pub mod gunzip;
pub mod gzip;
pub mod md5;
pub mod read;
pub mod xxh3;
