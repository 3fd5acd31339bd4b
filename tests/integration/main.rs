//! Integration tests of the `repozo` binary against real FileStorage files
//! written by ZODB, compared with ZODB's own repozo where the behaviour is
//! shared. Needs Python with ZODB 6.4 (`$REPOZO_PYTHON`, default
//! `.venv/bin/python`).

mod util;

mod backup;
mod blob_enospc;
mod blob_faults;
mod blob_fds;
mod blobs;
mod cli;
mod compat;
mod damage;
mod features;
mod index;
mod layers;
mod man;
mod metrics;
mod montecarlo;
mod paths;
mod prune_faults;
mod prune_index;
mod recover;
mod reliability;
mod review_backup;
mod review_blobs;
mod review_chains;
mod review_layers;
mod review_misc;
mod review_ops;
mod review_prune;
mod review_recover;
mod review_round2;
mod review_s3;
mod review_s3_modes;
mod review_s3_round2;
mod s3;
mod s3_faults;
mod s3_read;
mod s3_write;
mod source;
mod sums;
mod units;
mod verify;
