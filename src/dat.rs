//! `.dat` files: one line per data file of a chain,
//! `<repository>/<name> <start> <end> <md5 hex>`.
//!
//! Lines are parsed from the right, so a repository path with spaces
//! survives; only the base name of the first field is ever used, so a line
//! cannot point outside the repository.

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
    /// The line as written (without its newline), kept so that a repair
    /// rewrites it unchanged.
    pub raw: String,
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

    /// Parse one line (without its newline).
    pub fn parse(line: &str) -> std::result::Result<DatLine, String> {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let mut it = line.trim_end().rsplitn(4, [' ', '\t']);
        let md5 = it.next().unwrap_or("");
        let end = it.next().ok_or("expected 4 fields")?;
        let start = it.next().ok_or("expected 4 fields")?;
        let path = it.next().ok_or("expected 4 fields")?.trim();
        if path.is_empty() {
            return Err("empty file name".into());
        }
        let num = |s: &str, what: &str| -> std::result::Result<u64, String> {
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("{what} {s:?} is not a number"));
            }
            s.parse::<u64>()
                .map_err(|_| format!("{what} {s:?} is too large"))
        };
        let start = num(start, "start")?;
        let end = num(end, "end")?;
        if start > end {
            return Err(format!("start {start} is after end {end}"));
        }
        if md5.len() != 32 || !md5.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("{md5:?} is not an md5 checksum"));
        }
        let name = path.rsplit('/').next().unwrap_or(path);
        if name.is_empty() || name == "." || name == ".." {
            return Err(format!("{path:?} does not name a file"));
        }
        Ok(DatLine {
            name: name.to_string(),
            start,
            end,
            md5: md5.to_ascii_lowercase(),
            raw: line.to_string(),
        })
    }
}

/// Format a line the way repozo's `print(dest, start, end, sum)` does:
/// `dest` is the repository as given joined with the file name.
pub fn format_line(repository: &Path, name: &str, start: u64, end: u64, md5: &str) -> Vec<u8> {
    let mut out = join_like_python(repository, name);
    writeln!(out, " {start} {end} {md5}").expect("writing to a Vec");
    out
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
    /// newline and not parseable): it does not count.
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
            out.extend_from_slice(l.raw.as_bytes());
            out.push(b'\n');
        }
        out
    }
}

/// Read and parse a `.dat` file. `Ok(None)` when it does not exist.
///
/// Every line but an unterminated last one must parse; an unterminated
/// last line that does not parse is a torn append and is set aside in
/// [`DatFile::torn`].
pub fn read(path: &Path) -> Result<Option<DatFile>> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("read", path, e)),
    };
    let mut out = DatFile::default();
    let mut pieces: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    // split leaves an empty piece after a final newline
    let last = pieces.pop().unwrap_or(&[]);
    for (i, raw) in pieces.iter().enumerate() {
        let bad = |reason: String| Error::BadDat {
            path: path.to_path_buf(),
            line: i + 1,
            reason,
        };
        let text = std::str::from_utf8(raw).map_err(|_| bad("not valid UTF-8".into()))?;
        if text.trim().is_empty() {
            continue;
        }
        out.lines.push(DatLine::parse(text).map_err(bad)?);
    }
    if !last.is_empty() {
        out.needs_repair = true;
        match std::str::from_utf8(last).map(DatLine::parse) {
            Ok(Ok(line)) => out.lines.push(line),
            _ if last.iter().all(|b| b.is_ascii_whitespace()) => {}
            _ => out.torn = Some(String::from_utf8_lossy(last).into_owned()),
        }
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUM: &str = "d41d8cd98f00b204e9800998ecf8427e";

    #[test]
    fn parses_repozo_lines() {
        let l = DatLine::parse(&format!("/backups/2026-11-20-01-02-03.fs 0 1234 {SUM}")).unwrap();
        assert_eq!(l.name, "2026-11-20-01-02-03.fs");
        assert_eq!((l.start, l.end, l.len()), (0, 1234, 1234));
        assert_eq!(l.md5, SUM);
    }

    #[test]
    fn paths_with_spaces_and_crlf_survive() {
        let l = DatLine::parse(&format!(
            "/my backups/x y/2026-11-20-01-02-03.deltafsz 4 9 {SUM}\r"
        ))
        .unwrap();
        assert_eq!(l.name, "2026-11-20-01-02-03.deltafsz");
        assert_eq!((l.start, l.end), (4, 9));
    }

    #[test]
    fn only_the_base_name_is_used() {
        let l = DatLine::parse(&format!("../../etc/2026-11-20-01-02-03.fs 0 1 {SUM}")).unwrap();
        assert_eq!(l.name, "2026-11-20-01-02-03.fs");
        assert!(DatLine::parse(&format!("../.. 0 1 {SUM}")).is_err());
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
        std::fs::write(&p, format!("{good}garbage\n{good}")).unwrap();
        match read(&p) {
            Err(Error::BadDat { line: 2, .. }) => {}
            other => panic!("{other:?}"),
        }
        // CRLF and blank lines are fine
        std::fs::write(&p, format!("\n{}\r\n", good.trim_end())).unwrap();
        assert_eq!(read(&p).unwrap().unwrap().lines.len(), 1);
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
