//! ZODB blob directories (`ZODB/blob.py`): which data records are blob
//! records, where a blob revision's file lives under each layout, and the
//! `.layout` marker.
//!
//! A blob revision is the immutable file `<oid path>/<tid>.blob`. The oid
//! path is one directory per oid byte (`bushy`, the default:
//! `0x00/0x00/0x00/0x00/0x00/0x00/0x01/0x2a`) or one directory per oid
//! (`lawn`: `0x012a`); names are ZODB's `oid_repr` (hex without leading
//! zeros, an even number of digits).

use crate::format::pickle::{
    BINPUT, BINUNICODE, FRAME, GLOBAL, LONG_BINPUT, MEMOIZE, PROTO, PUT, SHORT_BINUNICODE,
    STACK_GLOBAL, STOP,
};

/// A blob directory's layout, as its `.layout` file names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    Bushy,
    Lawn,
}

/// Name of the layout marker at the top of a blob directory.
pub const LAYOUT_MARKER: &str = ".layout";

impl Layout {
    /// The layout a `.layout` file's contents name (surrounding white space
    /// ignored, as ZODB does).
    pub fn parse(marker: &[u8]) -> Option<Layout> {
        match marker.trim_ascii() {
            b"bushy" => Some(Layout::Bushy),
            b"lawn" => Some(Layout::Lawn),
            _ => None,
        }
    }

    /// The name written in `.layout`.
    pub fn name(self) -> &'static str {
        match self {
            Layout::Bushy => "bushy",
            Layout::Lawn => "lawn",
        }
    }

    /// The directory of `oid`'s revisions, relative to the blob directory,
    /// as `/`-separated components.
    pub fn oid_dir(self, oid: u64) -> String {
        match self {
            Layout::Bushy => oid
                .to_be_bytes()
                .iter()
                .map(|b| format!("0x{b:02x}"))
                .collect::<Vec<_>>()
                .join("/"),
            Layout::Lawn => repr(oid),
        }
    }

    /// The file of the revision `tid` of `oid`, relative to the blob
    /// directory.
    pub fn revision_path(self, oid: u64, tid: u64) -> String {
        format!("{}/{}.blob", self.oid_dir(oid), repr(tid))
    }
}

/// ZODB's `oid_repr` (and `tid_repr`): `0x` and the hex digits without
/// leading zeros, padded to an even number; `0x00` for zero.
pub fn repr(n: u64) -> String {
    let hex = format!("{n:x}");
    if hex.len() % 2 == 1 {
        format!("0x0{hex}")
    } else {
        format!("0x{hex}")
    }
}

/// The inverse of [`repr`]: `None` for anything else.
pub fn parse_repr(s: &str) -> Option<u64> {
    let hex = s.strip_prefix("0x")?;
    if hex.is_empty() || hex.len() > 16 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

/// Whether a data record's pickle (`p`, its first bytes at least) is a
/// blob record: ZODB's `is_blob_record`, whose first pickle (the class)
/// must load as `ZODB.blob.Blob` itself. ZODB writes the class as a
/// `GLOBAL` (protocols 0 to 3) or `STACK_GLOBAL` (4 and up), with memo
/// puts and frames around it; a subclass, or a class written with its
/// arguments, is not a blob record.
pub fn is_blob_pickle(p: &[u8]) -> bool {
    let mut i = 0;
    let mut strings: Vec<&[u8]> = Vec::new();
    let mut class = false;
    loop {
        let Some(&op) = p.get(i) else {
            return false;
        };
        i += 1;
        match op {
            PROTO => i += 1,
            FRAME => i += 8,
            GLOBAL => {
                let Some(rest) = p.get(i..) else {
                    return false;
                };
                let mut lines = rest.splitn(3, |&b| b == b'\n');
                let (Some(module), Some(name), Some(_)) =
                    (lines.next(), lines.next(), lines.next())
                else {
                    return false;
                };
                if class || module != b"ZODB.blob" || name != b"Blob" {
                    return false;
                }
                class = true;
                i += module.len() + name.len() + 2;
            }
            SHORT_BINUNICODE | BINUNICODE => {
                let (len, at) = if op == SHORT_BINUNICODE {
                    (p.get(i).map(|&n| n as usize), i + 1)
                } else {
                    (
                        p.get(i..i + 4)
                            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize),
                        i + 4,
                    )
                };
                let Some(s) = len.and_then(|n| p.get(at..at + n)) else {
                    return false;
                };
                strings.push(s);
                i = at + s.len();
            }
            STACK_GLOBAL => {
                if class
                    || strings.len() != 2
                    || strings[0] != b"ZODB.blob"
                    || strings[1] != b"Blob"
                {
                    return false;
                }
                class = true;
            }
            MEMOIZE => {}
            BINPUT => i += 1,
            LONG_BINPUT => i += 4,
            PUT => match p.get(i..).and_then(|r| r.iter().position(|&b| b == b'\n')) {
                Some(n) => i += n + 1,
                None => return false,
            },
            STOP => return class,
            _ => return false,
        }
    }
}

/// First line of a blob list (`<stamp>.blobs`), followed by the layout.
pub const LIST_HEADER: &str = "repozo-blobs 1";

/// One line of a backup's blob list: a blob revision its range refers to,
/// with the size and md5 of its file, or `None` when the file was missing
/// from the source's blob directory (recovery then reproduces the absence).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedBlob {
    pub oid: u64,
    pub tid: u64,
    pub file: Option<(u64, String)>,
}

/// A backup's blob list: the source's layout and, in file order, the blob
/// revisions of the blob records in the backup's range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobList {
    pub layout: Layout,
    pub blobs: Vec<ListedBlob>,
}

impl BlobList {
    /// The list as written:
    /// `repozo-blobs 1 LAYOUT` then `OID TID SIZE MD5` or `OID TID missing`,
    /// oids and tids as ZODB writes them in blob file names.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut s = format!("{LIST_HEADER} {}\n", self.layout.name());
        for b in &self.blobs {
            match &b.file {
                Some((size, md5)) => {
                    s.push_str(&format!("{} {} {size} {md5}\n", repr(b.oid), repr(b.tid)))
                }
                None => s.push_str(&format!("{} {} missing\n", repr(b.oid), repr(b.tid))),
            }
        }
        s.into_bytes()
    }

    /// Parse a blob list; the error says what is wrong and where.
    pub fn parse(bytes: &[u8]) -> Result<BlobList, String> {
        let text = std::str::from_utf8(bytes).map_err(|_| "not text".to_string())?;
        if !text.ends_with('\n') {
            return Err("cut short (no final newline)".into());
        }
        let mut lines = text.lines();
        let head = lines.next().unwrap_or("");
        let layout = head
            .strip_prefix(LIST_HEADER)
            .and_then(|l| l.strip_prefix(' '))
            .and_then(|l| Layout::parse(l.as_bytes()))
            .ok_or_else(|| format!("first line {head:?} is not a blob list header"))?;
        let mut blobs = Vec::new();
        for (n, line) in lines.enumerate() {
            let bad = || format!("line {}: {line:?}", n + 2);
            let f: Vec<&str> = line.split(' ').collect();
            let (oid, tid) = match (f.first(), f.get(1)) {
                (Some(o), Some(t)) => (
                    parse_repr(o).ok_or_else(bad)?,
                    parse_repr(t).ok_or_else(bad)?,
                ),
                _ => return Err(bad()),
            };
            let file = match &f[2..] {
                ["missing"] => None,
                [size, md5] if md5.len() == 32 && md5.bytes().all(|b| b.is_ascii_hexdigit()) => {
                    Some((size.parse().map_err(|_| bad())?, md5.to_string()))
                }
                _ => return Err(bad()),
            };
            blobs.push(ListedBlob { oid, tid, file });
        }
        Ok(BlobList { layout, blobs })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_zodb_layouts() {
        assert_eq!(repr(0), "0x00");
        assert_eq!(repr(0x3), "0x03");
        assert_eq!(repr(0x12a), "0x012a");
        assert_eq!(repr(0x03dd_0885_00b1_40aa), "0x03dd088500b140aa");
        for n in [0u64, 1, 0x12a, u64::MAX] {
            assert_eq!(parse_repr(&repr(n)), Some(n));
        }
        assert_eq!(parse_repr("12"), None);
        assert_eq!(parse_repr("0x"), None);
        assert_eq!(
            Layout::Bushy.revision_path(0x12a, 0x03dd_0885_00b1_40aa),
            "0x00/0x00/0x00/0x00/0x00/0x00/0x01/0x2a/0x03dd088500b140aa.blob"
        );
        assert_eq!(
            Layout::Lawn.revision_path(0x12a, 0x3dd_0885_00b1_40aa),
            "0x012a/0x03dd088500b140aa.blob"
        );
        assert_eq!(Layout::parse(b"bushy\n"), Some(Layout::Bushy));
        assert_eq!(Layout::parse(b" lawn "), Some(Layout::Lawn));
        assert_eq!(Layout::parse(b"flat"), None);
    }

    #[test]
    fn blob_records_are_told_by_their_class_pickle() {
        // what ZODB 6.4 writes (protocol 3), and protocols 2, 0 and 4
        let ours = b"\x80\x03cZODB.blob\nBlob\nq\x00.\x80\x03}q\x01.";
        assert!(is_blob_pickle(ours));
        assert!(is_blob_pickle(b"\x80\x02cZODB.blob\nBlob\nq\x01."));
        assert!(is_blob_pickle(b"cZODB.blob\nBlob\np0\n."));
        assert!(is_blob_pickle(
            b"\x80\x04\x95\x15\x00\x00\x00\x00\x00\x00\x00\x8c\tZODB.blob\x94\x8c\x04Blob\x94\x93\x94."
        ));
        // not blobs: another class, a subclass elsewhere, the class with
        // its arguments (a tuple), cut short, empty
        assert!(!is_blob_pickle(
            b"\x80\x03cpersistent.mapping\nPersistentMapping\nq\x00."
        ));
        assert!(!is_blob_pickle(b"\x80\x03cmy.blob\nBlob\nq\x00."));
        assert!(!is_blob_pickle(
            b"\x80\x03cZODB.blob\nBlob\nq\x00N\x86q\x01."
        ));
        assert!(!is_blob_pickle(b"\x80\x03cZODB.blob\nBlob\nq"));
        assert!(!is_blob_pickle(b""));
    }

    #[test]
    fn blob_lists_round_trip_and_damage_is_an_error() {
        let list = BlobList {
            layout: Layout::Lawn,
            blobs: vec![
                ListedBlob {
                    oid: 0x12a,
                    tid: 0x3dd,
                    file: Some((1000, "0a26262da70a9913a924edf38ad7ab1a".into())),
                },
                ListedBlob {
                    oid: 7,
                    tid: 0x3de,
                    file: None,
                },
            ],
        };
        let bytes = list.to_bytes();
        assert_eq!(
            String::from_utf8(bytes.clone()).unwrap(),
            "repozo-blobs 1 lawn\n0x012a 0x03dd 1000 0a26262da70a9913a924edf38ad7ab1a\n0x07 0x03de missing\n"
        );
        assert_eq!(BlobList::parse(&bytes), Ok(list));
        for bad in [
            &b"repozo-blobs 1 lawn\n0x012a 0x03dd 1000"[..],
            b"repozo-blobs 2 lawn\n",
            b"repozo-blobs 1 lawn\n0x012a 0x03dd 10x0 0a26262da70a9913a924edf38ad7ab1a\n",
            b"repozo-blobs 1 lawn\n0x012a 0x03dd 1000 0a26\n",
            b"repozo-blobs 1 lawn\n12a 0x03dd missing\n",
        ] {
            assert!(BlobList::parse(bad).is_err(), "{bad:?}");
        }
    }
}
