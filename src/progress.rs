//! Progress and statistics of a run: a progress bar on stderr when it is a
//! terminal (bytes done, throughput, time left), and the byte counters
//! behind the `-v` summary line. Process-wide, because the work is spread
//! over the copy loops of several modules and threads.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

static READ: AtomicU64 = AtomicU64::new(0);
static WRITTEN: AtomicU64 = AtomicU64::new(0);
static BAR: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// Bytes read so far in this run (source, data files, FILE).
pub fn bytes_read() -> u64 {
    READ.load(Ordering::Relaxed)
}

/// Bytes written so far in this run (backup files, recovered output).
pub fn bytes_written() -> u64 {
    WRITTEN.load(Ordering::Relaxed)
}

/// Count `n` bytes read, and advance the bar.
pub fn read(n: u64) {
    READ.fetch_add(n, Ordering::Relaxed);
    if let Ok(guard) = BAR.lock() {
        if let Some(b) = guard.as_ref() {
            b.inc(n);
        }
    }
}

/// Count `n` bytes written.
pub fn written(n: u64) {
    WRITTEN.fetch_add(n, Ordering::Relaxed);
}

/// Show a bar for a phase of `total` bytes, if stderr is a terminal.
pub fn phase(label: &str, total: u64) {
    let Ok(mut guard) = BAR.lock() else { return };
    if let Some(old) = guard.take() {
        old.finish_and_clear();
    }
    if !std::io::stderr().is_terminal() || total < (8 << 20) {
        return;
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template(
        "{msg:>10} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    bar.set_style(style);
    bar.set_message(label.to_string());
    *guard = Some(bar);
}

/// Remove the bar.
pub fn done() {
    if let Ok(mut guard) = BAR.lock() {
        if let Some(b) = guard.take() {
            b.finish_and_clear();
        }
    }
}

/// The `-v` summary line of a run.
pub fn summary(what: &str, started: Instant) -> String {
    let secs = started.elapsed().as_secs_f64();
    let read = bytes_read();
    let mb_s = if secs > 0.0 {
        read as f64 / secs / 1e6
    } else {
        0.0
    };
    format!(
        "summary: {what}; read {read} bytes, wrote {} bytes in {secs:.2} s ({mb_s:.0} MB/s read)",
        bytes_written()
    )
}
