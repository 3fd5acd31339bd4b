//! File formats, on bytes: stamps and file names, `.dat` lines, the
//! `.index` pickle, the FileStorage record layout. No threads and no I/O
//! strategy.

pub mod blob;
pub mod dat;
pub mod filestorage;
pub mod index;
pub mod pickle;
pub mod stamp;
