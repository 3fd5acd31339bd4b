//! The repository: where backup files live, how they group into chains,
//! the lock, the cache of fast checksums, and retention.

pub mod chains;
pub mod lock;
pub mod publish;
pub mod retention;
pub mod sums;
