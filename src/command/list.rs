//! `-L` / `--list`: describe a repository, chain by chain, oldest first:
//! every file with its stamp, kind, byte range, size on disk, and whether
//! it is present and the right size; per chain the dates it can recover and
//! its total size; damaged or incomplete chains are marked. `--json` prints
//! the same for scripts.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::PathBuf;

use crate::error::Result;
use crate::format::stamp::{DataName, Kind, Stamp};
use crate::log::Log;
use crate::repository::chains::DataFile;
use crate::repository::Repository;

/// What `-L` was asked to do.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListOptions {
    pub repository: PathBuf,
    pub json: bool,
}

/// One data file of a chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileReport {
    pub name: String,
    pub stamp: Stamp,
    pub full: bool,
    pub gzip: bool,
    /// Range from the `.dat`, when it lists the file.
    pub range: Option<(u64, u64)>,
    /// Size on disk, when present.
    pub size_on_disk: Option<u64>,
    /// `Some(true)` when the size on disk equals the range (plain files
    /// only; a compressed file's size is checked by `-V`).
    pub size_ok: Option<bool>,
    /// Listed in the chain's `.dat`.
    pub listed: bool,
    /// The blob revisions its range refers to and their bytes, from its
    /// blob list (a backup made with `--blob-dir`).
    pub blobs: Option<(u64, u64)>,
    /// Size of its `.index`, when there is one.
    pub index_size: Option<u64>,
}

impl FileReport {
    fn present(&self) -> bool {
        self.size_on_disk.is_some()
    }
}

/// One chain: a full backup and its increments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainReport {
    pub head: Stamp,
    pub has_dat: bool,
    pub files: Vec<FileReport>,
    /// Problems that make (part of) the chain unrecoverable.
    pub problems: Vec<String>,
    /// Stamps of the states this chain recovers, oldest first.
    pub recoverable: Vec<Stamp>,
}

impl ChainReport {
    /// Bytes on disk of the chain's data files.
    pub fn size(&self) -> u64 {
        self.files.iter().filter_map(|f| f.size_on_disk).sum()
    }

    /// Bytes on disk of the chain's `.index` files (one per stamp: a `.fs`
    /// and a `.fsz` with one stamp share it).
    pub fn index_size(&self) -> u64 {
        let mut seen = BTreeSet::new();
        self.files
            .iter()
            .filter(|f| seen.insert(f.stamp))
            .filter_map(|f| f.index_size)
            .sum()
    }
}

/// Describe every chain of the repository.
pub fn describe(opts: &ListOptions, log: &Log) -> Result<Vec<ChainReport>> {
    describe_in(&Repository::open(&opts.repository)?, log)
}

/// Describe every chain of `repo`.
fn describe_in(repo: &Repository, log: &Log) -> Result<Vec<ChainReport>> {
    // object storage is listed without a lock: a lock there is an object
    // to write, which a read-only key cannot
    let _lock = match repo.is_remote() {
        true => None,
        false => Some(repo.lock(false, log)?),
    };
    let listing = repo.list()?;
    // chains are named by their full backups and by their .dat files; a
    // file a .dat lists is in that chain, wherever its stamp falls
    let (strays, groups) = repo.groups(&listing);
    let mut out = Vec::new();
    if !strays.is_empty() {
        out.push(ChainReport {
            head: strays[0].name.stamp,
            has_dat: false,
            files: strays.iter().map(|f| report_unlisted(repo, f)).collect(),
            problems: vec!["increments without a full backup before them".into()],
            recoverable: Vec::new(),
        });
    }
    for g in groups {
        out.push(describe_chain(repo, g.head, &g.files)?);
    }
    for f in out.iter_mut().flat_map(|c| c.files.iter_mut()) {
        // followed, as recovery follows it (and as data files' sizes are)
        f.index_size = DataName::parse(&f.name).and_then(|n| repo.size_of(&n.index_name()));
        f.blobs = match repo.read_blob_list(f.stamp) {
            Ok(Some(l)) => {
                let sizes: Vec<u64> = l
                    .blobs
                    .iter()
                    .filter_map(|b| b.file.as_ref())
                    .map(|f| f.0)
                    .collect();
                // a damaged list may name absurd sizes: never an overflow
                Some((
                    sizes.len() as u64,
                    sizes.iter().fold(0u64, |a, &b| a.saturating_add(b)),
                ))
            }
            _ => None,
        };
    }
    Ok(out)
}

fn report_unlisted(repo: &Repository, f: &DataFile) -> FileReport {
    FileReport {
        name: f.file_name(),
        stamp: f.name.stamp,
        full: f.is_full(),
        gzip: f.name.gzip,
        range: None,
        size_on_disk: repo.size_of(&f.file_name()),
        size_ok: None,
        listed: false,
        blobs: None,
        index_size: None,
    }
}

fn describe_chain(repo: &Repository, head: Stamp, files: &[DataFile]) -> Result<ChainReport> {
    let dat_path = repo.dat_path_at(head);
    let mut report = ChainReport {
        head,
        has_dat: false,
        files: Vec::new(),
        problems: Vec::new(),
        recoverable: Vec::new(),
    };
    let dat = match repo.read_dat(&dat_path) {
        Ok(d) => d,
        Err(e) => {
            report.problems.push(e.to_string());
            None
        }
    };
    let Some(dat) = dat else {
        report.files = files.iter().map(|f| report_unlisted(repo, f)).collect();
        let fulls: Vec<&DataFile> = files
            .iter()
            .filter(|f| f.is_full() && f.name.stamp == head)
            .collect();
        if fulls.len() > 1 {
            report.problems.push(format!(
                "{} and {} are both full backups stamped {head}; no .dat says which one heads the chain",
                fulls[0].file_name(),
                fulls[1].file_name()
            ));
            return Ok(report);
        }
        if report.problems.is_empty() {
            report
                .problems
                .push(format!("no {head}.dat (recoverable from the listing only)"));
        }
        report.recoverable = files.iter().map(|f| f.name.stamp).collect();
        return Ok(report);
    };
    report.has_dat = true;
    if let Some(t) = &dat.torn {
        report
            .problems
            .push(format!("torn last line in the .dat: {t:?}"));
    }
    if dat.lines.is_empty() {
        // recovery refuses such a chain (`chains::resolve_in`), so it is
        // damaged, not an empty success
        report
            .problems
            .push(format!("{head}.dat lists no file of its chain"));
    }
    let mut seen = BTreeSet::new();
    let mut expected = 0u64;
    let mut broken = false;
    for line in &dat.lines {
        let name = DataName::parse(&line.name);
        let size_on_disk = repo.size_of(&line.name);
        let gzip = name.as_ref().is_some_and(|n| n.gzip);
        let size_ok = match (size_on_disk, gzip) {
            (Some(s), false) => Some(s == line.len()),
            _ => None,
        };
        let fr = FileReport {
            name: line.name.clone(),
            stamp: name.as_ref().map(|n| n.stamp).unwrap_or(head),
            full: name.as_ref().is_some_and(|n| n.kind == Kind::Full),
            gzip,
            range: Some((line.start, line.end)),
            size_on_disk,
            size_ok,
            listed: true,
            blobs: None,
            index_size: None,
        };
        if line.start != expected {
            report.problems.push(format!(
                "{} starts at {}, the chain before it ends at {expected}",
                line.name, line.start
            ));
            broken = true;
        }
        expected = line.end;
        if !fr.present() {
            report.problems.push(format!("{} is missing", line.name));
            broken = true;
        } else if fr.size_ok == Some(false) {
            report.problems.push(format!(
                "{} is {} bytes, should be {}",
                line.name,
                size_on_disk.unwrap_or(0),
                line.len()
            ));
            broken = true;
        }
        if !broken {
            report.recoverable.push(fr.stamp);
        }
        seen.insert(line.name.clone());
        report.files.push(fr);
    }
    for f in files {
        if !seen.contains(&f.file_name()) {
            report.problems.push(format!(
                "{} is not listed in the .dat (orphan)",
                f.file_name()
            ));
            report.files.push(report_unlisted(repo, f));
        }
    }
    report.files.sort_by_key(|f| (f.stamp, !f.full));
    Ok(report)
}

/// Run `-L`: print the description on stdout.
pub fn list(opts: &ListOptions, log: &Log) -> Result<Vec<ChainReport>> {
    let repo = Repository::open(&opts.repository)?;
    let chains = describe_in(&repo, log)?;
    let store = repo.blob_store_size();
    let text = if opts.json {
        to_json(&chains, store)
    } else {
        to_text(&chains, store)
    };
    // a closed stdout is an error (exit 1), never a panic
    crate::log::write_stdout(&text)?;
    Ok(chains)
}

/// The human-readable listing.
pub fn to_text(chains: &[ChainReport], store: Option<(u64, u64)>) -> String {
    let mut s = String::new();
    if chains.is_empty() {
        s.push_str("no backups\n");
    }
    for c in chains {
        let status = if c.problems.is_empty() {
            "ok"
        } else {
            "DAMAGED"
        };
        let dates = match (c.recoverable.first(), c.recoverable.last()) {
            (Some(a), Some(b)) if a == b => format!("recovers {a}"),
            (Some(a), Some(b)) => format!("recovers {a} .. {b} ({} states)", c.recoverable.len()),
            _ => "recovers nothing".into(),
        };
        let _ = writeln!(
            s,
            "chain {}: {} files, {} bytes of data, {} bytes of .index, {dates} [{status}]",
            c.head,
            c.files.len(),
            c.size(),
            c.index_size()
        );
        for f in &c.files {
            let kind = match (f.full, f.gzip) {
                (true, false) => "full",
                (true, true) => "full gzip",
                (false, false) => "incremental",
                (false, true) => "incremental gzip",
            };
            let range = f
                .range
                .map(|(a, b)| format!("{a}..{b}"))
                .unwrap_or_else(|| "not in .dat".into());
            let disk = f
                .size_on_disk
                .map(|n| format!("{n} bytes"))
                .unwrap_or_else(|| "MISSING".into());
            let check = match (f.present(), f.size_ok, f.listed) {
                (false, _, _) => "missing",
                (true, _, false) => "orphan",
                (true, Some(false), _) => "WRONG SIZE",
                (true, Some(true), _) => "ok",
                (true, None, _) => "ok (compressed: size checked by -V)",
            };
            let blobs = f
                .blobs
                .map(|(n, b)| format!("  blobs: {n} ({b} bytes)"))
                .unwrap_or_default();
            let index = match f.index_size {
                Some(n) => format!(".index {n} bytes"),
                None => "no .index".into(),
            };
            let _ = writeln!(
                s,
                "  {}  {kind:<16}  {range:<24}  {disk:<16}  {index:<20}  {check}{blobs}",
                f.name
            );
        }
        for p in &c.problems {
            let _ = writeln!(s, "  problem: {}", crate::log::one_line(p));
        }
    }
    if let Some((n, b)) = store {
        let _ = writeln!(s, "blob store: {n} revisions, {b} bytes");
    }
    s
}

/// A JSON string. Every string we list is UTF-8 (names are backup names;
/// a path in a problem message went through `Path::display`, which shows
/// bytes that are not UTF-8 as U+FFFD); control characters and the line
/// separators U+2028 and U+2029 are written as `\uXXXX`.
fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn json_opt<T: ToString>(v: Option<T>) -> String {
    v.map(|x| x.to_string()).unwrap_or_else(|| "null".into())
}

/// The same as JSON: `{"chains": [...]}`.
pub fn to_json(chains: &[ChainReport], store: Option<(u64, u64)>) -> String {
    let mut s = String::from("{\"chains\": [");
    for (i, c) in chains.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        let files: Vec<String> = c
            .files
            .iter()
            .map(|f| {
                format!(
                    "{{\"name\": {}, \"stamp\": {}, \"kind\": {}, \"gzip\": {}, \"start\": {}, \"end\": {}, \"size_on_disk\": {}, \"present\": {}, \"size_ok\": {}, \"listed\": {}, \"index_size\": {}, \"blobs\": {}, \"blob_bytes\": {}}}",
                    json_str(&f.name),
                    json_str(&f.stamp.to_string()),
                    json_str(if f.full { "full" } else { "incremental" }),
                    f.gzip,
                    json_opt(f.range.map(|r| r.0)),
                    json_opt(f.range.map(|r| r.1)),
                    json_opt(f.size_on_disk),
                    f.present(),
                    json_opt(f.size_ok),
                    f.listed,
                    json_opt(f.index_size),
                    json_opt(f.blobs.map(|b| b.0)),
                    json_opt(f.blobs.map(|b| b.1))
                )
            })
            .collect();
        let dates: Vec<String> = c
            .recoverable
            .iter()
            .map(|d| json_str(&d.to_string()))
            .collect();
        let problems: Vec<String> = c.problems.iter().map(|p| json_str(p)).collect();
        let _ = write!(
            s,
            "{{\"head\": {}, \"has_dat\": {}, \"ok\": {}, \"size\": {}, \"index_size\": {}, \"recoverable\": [{}], \"problems\": [{}], \"files\": [{}]}}",
            json_str(&c.head.to_string()),
            c.has_dat,
            c.problems.is_empty(),
            c.size(),
            c.index_size(),
            dates.join(", "),
            problems.join(", "),
            files.join(", ")
        );
    }
    s.push(']');
    if let Some((n, b)) = store {
        let _ = write!(
            s,
            ", \"blob_store\": {{\"revisions\": {n}, \"bytes\": {b}}}"
        );
    }
    s.push_str("}\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_str("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
        assert_eq!(
            json_str("\u{7f}\u{85}\u{2028}\u{fffd}é\t"),
            "\"\\u007f\\u0085\\u2028\u{fffd}é\\u0009\""
        );
    }
}
