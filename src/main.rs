//! The `repozo` program: parse, dispatch, and map errors to exit codes.

use std::process::ExitCode;

use repozo::cli::{self, Command, USAGE};
use repozo::Error;

fn main() -> ExitCode {
    let result = cli::parse(std::env::args_os().skip(1)).and_then(|cmd| match cmd {
        Command::Help => {
            print!("{USAGE}");
            Ok(())
        }
        Command::Version => {
            println!("repozo {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Command::Run(opts) => repozo::run(&opts),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if e.wants_usage() {
                eprint!("{USAGE}");
            }
            match &e {
                Error::VerificationFailed(lines) => {
                    for l in lines {
                        eprintln!("repozo: {}", repozo::one_line(l));
                    }
                }
                _ => eprintln!("repozo: {}", repozo::one_line(&e.to_string())),
            }
            ExitCode::from(e.exit_code() as u8)
        }
    }
}
