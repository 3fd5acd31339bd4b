//! The `repozo` program: parse, dispatch, and map errors to exit codes.

use std::process::ExitCode;

use repozo::cli::{self, Command, USAGE};
use repozo::{stderr_line, write_stdout, Error};

fn main() -> ExitCode {
    let result = cli::parse(std::env::args_os().skip(1)).and_then(|cmd| match cmd {
        Command::Help => write_stdout(USAGE),
        Command::Version => write_stdout(&format!("repozo {}\n", env!("CARGO_PKG_VERSION"))),
        Command::Run(run) => repozo::run(&run),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // stderr may be closed too: nothing here may panic
            if e.wants_usage() {
                stderr_line(format_args!("{}", USAGE.trim_end_matches('\n')));
            }
            match &e {
                Error::VerificationFailed(lines) => {
                    for l in lines {
                        stderr_line(format_args!("repozo: {}", repozo::one_line(l)));
                    }
                }
                _ => stderr_line(format_args!("repozo: {}", repozo::one_line(&e.to_string()))),
            }
            ExitCode::from(e.exit_code() as u8)
        }
    }
}
