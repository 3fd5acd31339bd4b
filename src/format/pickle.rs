//! The pickle opcodes (Python's `pickle` module) that ZODB's files use:
//! the `.index` that `fsIndex.save` writes, and the class pickle that starts
//! every data record (which tells a blob record).

pub const PROTO: u8 = 0x80;
pub const STOP: u8 = b'.';
pub const NONE: u8 = b'N';
pub const BININT: u8 = b'J';
pub const BININT1: u8 = b'K';
pub const BININT2: u8 = b'M';
pub const LONG1: u8 = 0x8a;
pub const SHORT_BINBYTES: u8 = b'C';
pub const BINBYTES: u8 = b'B';
pub const SHORT_BINSTRING: u8 = b'U';
pub const BINSTRING: u8 = b'T';
pub const BINUNICODE: u8 = b'X';
pub const SHORT_BINUNICODE: u8 = 0x8c;
pub const TUPLE2: u8 = 0x86;
pub const TUPLE1: u8 = 0x85;
pub const EMPTY_TUPLE: u8 = b')';
pub const GLOBAL: u8 = b'c';
pub const REDUCE: u8 = b'R';
pub const TUPLE: u8 = b't';
pub const MARK: u8 = b'(';
pub const BINPUT: u8 = b'q';
pub const LONG_BINPUT: u8 = b'r';
pub const BINGET: u8 = b'h';
pub const LONG_BINGET: u8 = b'j';
pub const MEMOIZE: u8 = 0x94;
pub const FRAME: u8 = 0x95;
pub const NEWTRUE: u8 = 0x88;
pub const NEWFALSE: u8 = 0x89;
pub const STACK_GLOBAL: u8 = 0x93;
pub const PUT: u8 = b'p';
