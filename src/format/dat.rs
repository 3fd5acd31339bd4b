//! `.dat` files: one line per data file of a chain,
//! `<repository>/<name> <start> <end> <md5 hex>`.
//!
//! Lines are read as bytes and parsed from the right, so a repository
//! path with spaces, tabs or bytes that are not UTF-8 survives; only the
//! base name of the first field is ever used (it must be a backup name,
//! which is ASCII), so a line cannot point outside the repository and the
//! repository part never decides whether a chain is usable. A line that
//! ZODB's repozo split in two by writing a repository path holding a
//! newline is read back whole (see [`read`]).
//!
//! We write the repository part as given, as ZODB's repozo does, unless
//! Python's `line.split()` could not read it back (not UTF-8, whitespace or
//! control characters, see [`line_safe`]): then the file field is the
//! base name alone, which both tools read back.

use std::fs;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::error::{Error, Result};

/// One line of a `.dat` file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatLine {
    /// The base name of the data file the line describes.
    pub name: String,
    /// Offset of the file's first byte in the source.
    pub start: u64,
    /// Offset just past the file's last byte in the source.
    pub end: u64,
    /// md5 of the file's uncompressed bytes, lower-case hex.
    pub md5: String,
    /// The line as written (without its final newline, with any newline a
    /// repository path held), kept so that a repair rewrites it unchanged.
    pub raw: Vec<u8>,
}

/// The bytes Python's `bytes.split()` / our parser take for blanks.
fn is_blank(b: u8) -> bool {
    b.is_ascii_whitespace() || b == b'\x0b'
}

fn trim_end(mut s: &[u8]) -> &[u8] {
    while let [rest @ .., b] = s {
        if !is_blank(*b) {
            break;
        }
        s = rest;
    }
    s
}

fn trim_start(mut s: &[u8]) -> &[u8] {
    while let [b, rest @ ..] = s {
        if !is_blank(*b) {
            break;
        }
        s = rest;
    }
    s
}

/// `bytes` for a message: lossy UTF-8 (U+FFFD for bytes that are not).
fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

impl DatLine {
    /// Number of (uncompressed) bytes the line describes.
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    /// Whether the line describes no bytes.
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Parse one line (without its newline). The file field may hold any
    /// bytes; its base name must be UTF-8 (backup names are ASCII).
    pub fn parse(line: impl AsRef<[u8]>) -> std::result::Result<DatLine, String> {
        let line = line.as_ref();
        let (path, start, end, md5) = split_fields(line).ok_or("expected 4 fields")?;
        let path = trim_start(trim_end(path));
        if path.is_empty() {
            return Err("empty file name".into());
        }
        let num = |s: &[u8], what: &str| -> std::result::Result<u64, String> {
            if s.is_empty() || !s.iter().all(|b| b.is_ascii_digit()) {
                return Err(format!("{what} {:?} is not a number", lossy(s)));
            }
            // all ASCII digits: valid UTF-8
            std::str::from_utf8(s)
                .ok()
                .and_then(|t| t.parse::<u64>().ok())
                .ok_or_else(|| format!("{what} {:?} is too large", lossy(s)))
        };
        let start = num(start, "start")?;
        let end = num(end, "end")?;
        if start > end {
            return Err(format!("start {start} is after end {end}"));
        }
        if md5.len() != 32 || !md5.iter().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("{:?} is not an md5 checksum", lossy(md5)));
        }
        let name = path.rsplit(|&b| b == b'/').next().unwrap_or(path);
        if name.is_empty() || name == b"." || name == b".." {
            return Err(format!("{:?} does not name a file", lossy(path)));
        }
        let Ok(name) = std::str::from_utf8(name) else {
            return Err(format!("{:?} is not a backup file name", lossy(name)));
        };
        Ok(DatLine {
            name: name.to_string(),
            start,
            end,
            md5: String::from_utf8_lossy(md5).to_ascii_lowercase(),
            raw: line.to_vec(),
        })
    }

    /// Parse a line that ZODB's repozo split by writing a repository path
    /// holding newlines: every piece but the last has fewer than four
    /// fields (so no damaged line of its own is swallowed), the pieces
    /// joined with `\n` parse, and every newline lies in the directory
    /// part of the file field (before its last `/`), so only a path is
    /// ever rejoined.
    fn parse_split(pieces: &[&[u8]]) -> Option<DatLine> {
        let (last, before) = pieces.split_last()?;
        if before.iter().any(|p| split_fields(p).is_some()) || split_fields(last).is_none() {
            return None;
        }
        let joined = pieces.join(&b'\n');
        let line = DatLine::parse(&joined).ok()?;
        let (field, ..) = split_fields(&joined)?;
        let last_nl = field.iter().rposition(|&b| b == b'\n')?;
        let last_slash = field.iter().rposition(|&b| b == b'/')?;
        (last_slash > last_nl).then_some(line)
    }
}

/// File field, start, end, md5.
type Fields<'a> = (&'a [u8], &'a [u8], &'a [u8], &'a [u8]);

/// The four fields of a line, from the right (file field, start, end,
/// md5), after dropping a final `\r` and trailing blanks; `None` when
/// there are fewer.
fn split_fields(line: &[u8]) -> Option<Fields<'_>> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut it = trim_end(line).rsplitn(4, |&b| b == b' ' || b == b'\t');
    let md5 = it.next()?;
    let end = it.next()?;
    let start = it.next()?;
    let path = it.next()?;
    Some((path, start, end, md5))
}

/// Whether ZODB's repozo reads a `.dat` file field holding `bytes` back as
/// one field: valid UTF-8 (it opens the `.dat` as text) without whitespace
/// (`line.split()`, which splits on every character `str.isspace()` takes,
/// and text mode ends a line at `\r` too) or other control characters.
pub fn line_safe(bytes: &[u8]) -> bool {
    std::str::from_utf8(bytes)
        .is_ok_and(|s| !s.chars().any(|c| c.is_whitespace() || c.is_control()))
}

/// Format a line the way repozo's `print(dest, start, end, sum)` does:
/// `dest` is the repository as given joined with the file name, or the
/// name alone when the repository path cannot be read back from a line
/// (see [`line_safe`]).
pub fn format_line(repository: &Path, name: &str, start: u64, end: u64, md5: &str) -> Vec<u8> {
    let mut out = dest_field(repository, name);
    writeln!(out, " {start} {end} {md5}").expect("writing to a Vec");
    out
}

/// The file field we write for `name` in `repository`.
pub fn dest_field(repository: &Path, name: &str) -> Vec<u8> {
    let joined = join_like_python(repository, name);
    if line_safe(&joined) {
        joined
    } else {
        name.as_bytes().to_vec()
    }
}

/// `os.path.join(repository, name)` as bytes: no separator is added when
/// the repository already ends with one (or is empty).
pub fn join_like_python(repository: &Path, name: &str) -> Vec<u8> {
    let mut out = repository.as_os_str().as_bytes().to_vec();
    if !out.is_empty() && !out.ends_with(b"/") {
        out.push(b'/');
    }
    out.extend_from_slice(name.as_bytes());
    out
}

/// A parsed `.dat` file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DatFile {
    /// The complete lines, in order.
    pub lines: Vec<DatLine>,
    /// A last line cut short by a crash in the middle of an append (no
    /// newline and not parseable): it does not count. Lossy UTF-8, for
    /// messages.
    pub torn: Option<String>,
    /// The file does not end with a newline (torn, or a last line whose
    /// newline is missing): the next append must rewrite it first.
    pub needs_repair: bool,
}

impl DatFile {
    /// The file's content with every complete line, each ending in `\n`.
    pub fn repaired_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for l in &self.lines {
            out.extend_from_slice(&l.raw);
            out.push(b'\n');
        }
        out
    }
}

/// The longest file field a split line is rejoined for (`PATH_MAX`).
const MAX_JOINED: usize = 4096 + 128;

/// Read and parse a `.dat` file. `Ok(None)` when it does not exist.
///
/// Every line but an unterminated last one must parse; an unterminated
/// last line that does not parse is a torn append and is set aside in
/// [`DatFile::torn`]. A complete line that does not parse is joined with
/// the complete lines after it when that gives a line whose file field
/// holds the newlines in its directory part: what ZODB's repozo writes for
/// a repository path holding a newline.
pub fn read(path: &Path) -> Result<Option<DatFile>> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("read", path, e)),
    };
    parse(&bytes, path).map(Some)
}

/// Parse the bytes of a `.dat` file (named `path` in errors), as
/// [`read`] does.
pub fn parse(bytes: &[u8], path: &Path) -> Result<DatFile> {
    let mut out = DatFile::default();
    let mut pieces: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    // split leaves an empty piece after a final newline
    let last = pieces.pop().unwrap_or(&[]);
    let mut i = 0;
    while i < pieces.len() {
        let raw = pieces[i];
        if raw.iter().all(|&b| is_blank(b)) {
            i += 1;
            continue;
        }
        match DatLine::parse(raw) {
            Ok(line) => {
                out.lines.push(line);
                i += 1;
            }
            Err(reason) => {
                let mut len = raw.len();
                let mut joined = None;
                for j in i + 1..pieces.len() {
                    len += 1 + pieces[j].len();
                    if len > MAX_JOINED {
                        break;
                    }
                    if let Some(l) = DatLine::parse_split(&pieces[i..=j]) {
                        joined = Some((l, j));
                        break;
                    }
                }
                let Some((line, j)) = joined else {
                    return Err(Error::BadDat {
                        path: path.to_path_buf(),
                        line: i + 1,
                        reason,
                    });
                };
                out.lines.push(line);
                i = j + 1;
            }
        }
    }
    if !last.is_empty() {
        out.needs_repair = true;
        match DatLine::parse(last) {
            Ok(line) => out.lines.push(line),
            _ if last.iter().all(|&b| is_blank(b)) => {}
            _ => out.torn = Some(lossy(last)),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUM: &str = "d41d8cd98f00b204e9800998ecf8427e";

    #[test]
    fn parses_repozo_lines() {
        let l = DatLine::parse(format!("/backups/2026-11-20-01-02-03.fs 0 1234 {SUM}")).unwrap();
        assert_eq!(l.name, "2026-11-20-01-02-03.fs");
        assert_eq!((l.start, l.end, l.len()), (0, 1234, 1234));
        assert_eq!(l.md5, SUM);
    }

    #[test]
    fn paths_with_spaces_and_crlf_survive() {
        let l = DatLine::parse(format!(
            "/my backups/x y/2026-11-20-01-02-03.deltafsz 4 9 {SUM}\r"
        ))
        .unwrap();
        assert_eq!(l.name, "2026-11-20-01-02-03.deltafsz");
        assert_eq!((l.start, l.end), (4, 9));
    }

    #[test]
    fn only_the_base_name_is_used() {
        let l = DatLine::parse(format!("../../etc/2026-11-20-01-02-03.fs 0 1 {SUM}")).unwrap();
        assert_eq!(l.name, "2026-11-20-01-02-03.fs");
        assert!(DatLine::parse(format!("../.. 0 1 {SUM}")).is_err());
    }

    #[test]
    fn malformed_lines_are_errors() {
        for bad in [
            "".to_string(),
            "a 1 2".to_string(),
            format!("a 1 {SUM}"),
            format!("a x 2 {SUM}"),
            format!("a 1 -2 {SUM}"),
            format!("a 5 2 {SUM}"),
            "a 1 2 xyz".to_string(),
            format!("a 1 99999999999999999999999 {SUM}"),
            format!(" 1 2 {SUM}"),
        ] {
            assert!(DatLine::parse(&bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn torn_last_line_is_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.dat");
        let good = format!("r/2026-11-20-01-02-03.fs 0 10 {SUM}\n");
        std::fs::write(&p, format!("{good}r/2026-11-20-01-02-04.deltafs 10 2")).unwrap();
        let d = read(&p).unwrap().unwrap();
        assert_eq!(d.lines.len(), 1);
        assert!(d.needs_repair);
        assert_eq!(
            d.torn.as_deref(),
            Some("r/2026-11-20-01-02-04.deltafs 10 2")
        );
        assert_eq!(d.repaired_bytes(), good.as_bytes());
        // a complete last line without its newline counts, but needs repair
        std::fs::write(&p, good.trim_end()).unwrap();
        let d = read(&p).unwrap().unwrap();
        assert_eq!(
            (d.lines.len(), d.torn.is_none(), d.needs_repair),
            (1, true, true)
        );
        // a bad line in the middle is an error with its line number
        for bad in ["garbage 1 2 3", "r/2026-11-20-01-02-04.deltafs 10 x2 {SUM}"] {
            std::fs::write(&p, format!("{good}{bad}\n{good}")).unwrap();
            match read(&p) {
                Err(Error::BadDat { line: 2, .. }) => {}
                other => panic!("{other:?}"),
            }
        }
        // so is a line of fewer fields with nothing after it to complete it
        std::fs::write(&p, format!("{good}garbage\n")).unwrap();
        match read(&p) {
            Err(Error::BadDat { line: 2, .. }) => {}
            other => panic!("{other:?}"),
        }
        // CRLF and blank lines are fine
        std::fs::write(&p, format!("\n{}\r\n", good.trim_end())).unwrap();
        assert_eq!(read(&p).unwrap().unwrap().lines.len(), 1);
    }

    /// ZODB's repozo writes a repository path holding a newline as it is:
    /// the line is read back whole, and rewritten unchanged by a repair.
    #[test]
    fn lines_split_by_a_newline_in_the_path_are_rejoined() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.dat");
        let l1 = format!("my\nback\n ups/2026-11-20-01-02-03.fs 0 10 {SUM}");
        let l2 = format!("my\nback\n ups/2026-11-20-01-02-04.deltafs 10 20 {SUM}\r");
        let l3 = format!("2026-11-20-01-02-05.deltafs 20 30 {SUM}");
        std::fs::write(&p, format!("{l1}\n{l2}\n{l3}")).unwrap();
        let d = read(&p).unwrap().unwrap();
        let names: Vec<&str> = d.lines.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "2026-11-20-01-02-03.fs",
                "2026-11-20-01-02-04.deltafs",
                "2026-11-20-01-02-05.deltafs"
            ]
        );
        assert_eq!(d.lines[1].raw, l2.as_bytes());
        assert_eq!(
            d.repaired_bytes(),
            format!("{l1}\n{l2}\n{l3}\n").into_bytes()
        );
        // a newline in the fields, or in the base name, is not a path's
        for bad in [
            format!("r/2026-11-20-01-02-03.fs 0\n10 {SUM}\n"),
            format!("r/2026-11-20-01-02-03.f\ns 0 10 {SUM}\n"),
            format!("r/2026-11-20-01-02-03.fs 0 10\n{SUM}\n"),
        ] {
            std::fs::write(&p, &bad).unwrap();
            assert!(read(&p).is_err(), "{bad:?}");
        }
    }

    /// Any bytes in the directory part; the base name must be UTF-8.
    #[test]
    fn the_directory_part_may_hold_any_bytes() {
        let mut line = b"/r\xff\xfe\x01 \t\r/x/2026-11-20-01-02-03.fs 0 10 ".to_vec();
        line.extend_from_slice(SUM.as_bytes());
        let l = DatLine::parse(&line).unwrap();
        assert_eq!(l.name, "2026-11-20-01-02-03.fs");
        assert_eq!(l.raw, line);
        let mut bad = b"/r/2026-11-20-01-02-03.fs\xff 0 10 ".to_vec();
        bad.extend_from_slice(SUM.as_bytes());
        assert!(DatLine::parse(&bad).is_err());
    }

    #[test]
    fn unsafe_repository_paths_are_written_as_the_base_name() {
        use std::ffi::OsStr;
        let n = "2026-11-20-01-02-03.fs";
        for (repo, safe) in [
            (&b"repo"[..], true),
            (b"/srv/\xc3\xa9t\xc3\xa9/", true),
            (b"my backups", false),
            (b"a\tb", false),
            (b"a\nb", false),
            (b"a\rb", false),
            (b"a\x1cb", false),
            (b"a\x1bb", false),
            (b"a\xc2\xa0b", false),
            (b"a\xe2\x80\xa8b", false),
            (b"bad\xffname", false),
        ] {
            let field = dest_field(Path::new(OsStr::from_bytes(repo)), n);
            if safe {
                assert_eq!(
                    field,
                    join_like_python(Path::new(OsStr::from_bytes(repo)), n)
                );
            } else {
                assert_eq!(field, n.as_bytes(), "{repo:?}");
            }
            let line = format_line(Path::new(OsStr::from_bytes(repo)), n, 0, 10, SUM);
            let back = DatLine::parse(line.strip_suffix(b"\n").unwrap()).unwrap();
            assert_eq!(back.name, n);
        }
    }

    #[test]
    fn formats_like_python() {
        let l = format_line(Path::new("repo"), "n.fs", 0, 10, SUM);
        assert_eq!(l, format!("repo/n.fs 0 10 {SUM}\n").into_bytes());
        let l = format_line(Path::new("/abs/repo/"), "n.fs", 0, 10, SUM);
        assert_eq!(l, format!("/abs/repo/n.fs 0 10 {SUM}\n").into_bytes());
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(crate::fuzz_cases()))]

        /// Any text is parsed or rejected, never a panic; what parses is
        /// consistent.
        #[test]
        fn any_line(line in "\\PC{0,120}") {
            if let Ok(l) = DatLine::parse(&line) {
                prop_assert_eq!(l.raw, line.as_bytes());
                prop_assert!(l.start <= l.end);
                prop_assert_eq!(l.md5.len(), 32);
                prop_assert!(!l.name.contains('/'));
            }
        }

        /// Lines shaped like real ones, with noise in each field.
        #[test]
        fn line_like(
            path in "[ a-z./-]{0,30}",
            start in "[0-9-]{0,22}",
            end in "[0-9x]{0,22}",
            md5 in "[0-9a-fA-FgG]{30,34}",
            sep in "[ \\t]{1,3}",
            cr in proptest::bool::ANY,
        ) {
            let line = format!("{path}{sep}{start}{sep}{end}{sep}{md5}{}", if cr { "\r" } else { "" });
            let _ = DatLine::parse(&line);
        }

        /// Any bytes: parsed or rejected, never a panic.
        #[test]
        fn any_bytes(line in proptest::collection::vec(any::<u8>(), 0..120)) {
            if let Ok(l) = DatLine::parse(&line) {
                prop_assert!(l.start <= l.end);
                prop_assert!(!l.name.contains('/'));
                prop_assert_eq!(l.raw, line);
            }
        }

        /// A line we write for any repository path reads back.
        #[test]
        fn written_lines_read_back(
            repo in proptest::collection::vec(any::<u8>().prop_filter("no NUL", |b| *b != 0), 1..40),
            start in 0u64..1000,
            len in 0u64..1000,
        ) {
            use std::ffi::OsStr;
            let sum = "0123456789abcdef0123456789abcdef";
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path().join("x.dat");
            let mut bytes = Vec::new();
            let repo = Path::new(OsStr::from_bytes(&repo));
            bytes.extend(format_line(repo, "2026-11-20-01-02-03.fs", 0, start, sum));
            bytes.extend(format_line(repo, "2026-11-20-01-02-04.deltafs", start, start + len, sum));
            std::fs::write(&p, &bytes).unwrap();
            let d = read(&p).unwrap().unwrap();
            prop_assert_eq!(d.lines.len(), 2);
            prop_assert_eq!(d.lines[1].end, start + len);
            prop_assert_eq!(d.repaired_bytes(), bytes);
        }

        /// Whole files of random bytes: an error or a parse, never a panic.
        #[test]
        fn any_file(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path().join("x.dat");
            std::fs::write(&p, &bytes).unwrap();
            let _ = read(&p);
        }
    }
}
