//! The commands: backup, recover, verify and list. The only code that
//! decides (what kind of backup to make, which chain recovers a date,
//! whether a repository is sound); each takes its options and returns its
//! outcome.

pub mod backup;
pub mod list;
pub mod recover;
pub mod recover_blobs;
pub mod verify;
