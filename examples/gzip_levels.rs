//! Size and speed of `-z` output at each libdeflate level, with the crate's
//! own compressor: a file cut into members of `--member` MiB, compressed on
//! `--threads` threads as `-z` backups are (`io::copy`), in memory (no
//! reading or writing is timed). Used to choose `io::gzip::GZIP_LEVEL`
//! (docs/bench-gzip.md).
//!
//! ```text
//! cargo run --release --example gzip_levels -- FILE [--levels 1,3,6,9]
//!     [--member 1] [--threads 2] [--runs 3] [--ref BYTES]
//! ```
//!
//! `--ref` is the size of ZODB's repozo's `.fsz` of the same file (Python's
//! gzip at level 9), printed as a ratio. Each time is the fastest of
//! `--runs` (wall, and user + system CPU of all threads); every member is checked to inflate back to its input.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use repozo::io::gzip::{compressor_at, gzip_member};

fn list(v: &str) -> Vec<usize> {
    v.split(',')
        .map(|x| x.trim().parse().expect("a number"))
        .collect()
}

/// Compress `data` in `member`-byte members on `threads` threads; the
/// members in order.
fn compress(data: &[u8], level: i32, member: usize, threads: usize) -> Vec<Vec<u8>> {
    let chunks: Vec<&[u8]> = data.chunks(member).collect();
    let next = AtomicUsize::new(0);
    let out = Mutex::new(vec![Vec::new(); chunks.len()]);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let mut c = compressor_at(level).expect("a libdeflate level (0 to 12)");
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(chunk) = chunks.get(i) else { break };
                    let m = gzip_member(&mut c, chunk).expect("compression");
                    out.lock().unwrap()[i] = m;
                }
            });
        }
    });
    out.into_inner().unwrap()
}

/// user + system CPU seconds of this process so far (all threads).
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct we pass; zeroed is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn main() {
    let mut file = None;
    let mut levels = vec![1, 3, 4, 6, 8, 9, 12];
    let mut members = vec![1];
    let (mut threads, mut runs, mut reference) = (2, 3, None);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().expect("a value after the option");
        match a.as_str() {
            "--levels" => levels = list(&val()),
            "--member" => members = list(&val()),
            "--threads" => threads = val().parse().expect("a number"),
            "--runs" => runs = val().parse().expect("a number"),
            "--ref" => reference = Some(val().parse::<u64>().expect("a number")),
            _ => file = Some(a),
        }
    }
    let file = file.expect("usage: gzip_levels FILE [--levels 1,3] [--member 1] [--threads 2] [--runs 3] [--ref BYTES]");
    let data = std::fs::read(&file).expect("readable file");
    println!(
        "{file}: {:.1} MB, {threads} threads, fastest of {runs} runs",
        data.len() as f64 / 1e6
    );
    println!("level  member  size (MB)  ratio  vs ref    seconds  MB/s (input)  CPU s");
    for &m in &members {
        for &level in &levels {
            let mut best = f64::INFINITY;
            let mut cpu = f64::INFINITY;
            let mut size = 0;
            for run in 0..runs {
                let (t, c) = (Instant::now(), cpu_seconds());
                let out = compress(&data, level as i32, m << 20, threads);
                best = best.min(t.elapsed().as_secs_f64());
                cpu = cpu.min(cpu_seconds() - c);
                size = out.iter().map(Vec::len).sum::<usize>();
                if run == 0 {
                    let mut d = libdeflater::Decompressor::new();
                    let mut buf = vec![0u8; m << 20];
                    for (member, chunk) in out.iter().zip(data.chunks(m << 20)) {
                        let n = d.gzip_decompress(member, &mut buf).expect("inflates");
                        assert_eq!(&buf[..n], chunk, "member inflates to its input");
                    }
                }
            }
            let vs = reference.map_or(String::from("-"), |r| {
                format!("{:.3}x", size as f64 / r as f64)
            });
            println!(
                "{level:>5}  {m:>3} MiB  {:>9.2}  {:>5.2}  {vs:>7}  {best:>8.3}  {:>12.0}  {cpu:>5.2}",
                size as f64 / 1e6,
                data.len() as f64 / size as f64,
                data.len() as f64 / 1e6 / best
            );
        }
    }
}
