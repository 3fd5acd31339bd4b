//! What the tool says on stderr: notes under `-v`, warnings gathered for
//! the end of a successful run, and the one writer every stderr line goes
//! through (one line per message, write errors ignored).

use std::fmt;
use std::sync::Mutex;

/// Progress notes for `-v`, written to stderr (so they never mix with a
/// recovery written to stdout).
#[derive(Debug, Default)]
pub struct Log {
    pub verbose: bool,
    /// Warnings of this run, printed when it succeeds (see [`Log::warn`]).
    warnings: Mutex<Vec<String>>,
}

impl Log {
    /// Print a note when verbose, on one line (see [`one_line`]; a write
    /// error is ignored, see [`stderr_line`]).
    pub fn note(&self, args: fmt::Arguments<'_>) {
        if self.verbose {
            stderr_line(format_args!("{}", one_line(&args.to_string())));
        }
    }

    /// A warning, printed whatever the verbosity once the run has
    /// succeeded: something went wrong that does not make the run fail. A
    /// run that fails prints its one error line only.
    pub fn warn(&self, args: fmt::Arguments<'_>) {
        let mut w = self.warnings.lock().unwrap_or_else(|e| e.into_inner());
        w.push(format!("repozo: warning: {}", one_line(&args.to_string())));
    }

    /// A log that prints notes when `verbose`.
    pub fn new(verbose: bool) -> Log {
        Log {
            verbose,
            warnings: Mutex::new(Vec::new()),
        }
    }

    /// A log that prints no notes (tests).
    pub fn quiet() -> Log {
        Log::new(false)
    }

    /// The warnings so far, taken out of the log.
    pub fn take_warnings(&self) -> Vec<String> {
        std::mem::take(&mut *self.warnings.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Write one line to stderr, ignoring any error: a closed or broken
/// stderr (`repozo -v ... 2>&1 | head -1`) must never stop a run, least of
/// all between publishing a file and recording it (`eprintln!` panics when
/// the write fails). Every line the tool writes to stderr goes through here.
pub fn stderr_line(args: fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{args}");
}

/// Write `text` to stdout and flush it; a failure (a closed pipe) is an
/// error naming `<stdout>`, never a panic.
pub fn write_stdout(text: &str) -> crate::error::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| crate::error::Error::io("write", std::path::Path::new("<stdout>"), e))
}

/// A message line as printed: control characters other than tab (a
/// newline or carriage return in a path, an escape sequence) are shown
/// escaped (`\n`, `\r`, `\x1b`, `\u{85}`), so that every message stays one
/// line and cannot drive the terminal. Paths reach messages through
/// `Path::display`, which shows bytes that are not UTF-8 as U+FFFD.
pub fn one_line(s: &str) -> std::borrow::Cow<'_, str> {
    let bad = |c: char| (c.is_control() && c != '\t') || matches!(c, '\u{2028}' | '\u{2029}');
    if !s.chars().any(bad) {
        return s.into();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if bad(c) && (c as u32) < 0x80 => {
                let _ = fmt::Write::write_fmt(&mut out, format_args!("\\x{:02x}", c as u32));
            }
            c if bad(c) => {
                let _ = fmt::Write::write_fmt(&mut out, format_args!("\\u{{{:x}}}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.into()
}

#[cfg(test)]
mod tests {
    use super::one_line;

    #[test]
    fn messages_stay_one_line() {
        assert_eq!(one_line("plain\ttab é \u{fffd}"), "plain\ttab é \u{fffd}");
        assert_eq!(
            one_line("a\nb\rc\u{1b}[31m\u{7f}\u{85}\u{2028}"),
            "a\\nb\\rc\\x1b[31m\\x7f\\u{85}\\u{2028}"
        );
    }
}
