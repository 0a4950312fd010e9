//! The `tidings` command line.

use std::process::ExitCode;

use clap::Parser;

mod cli;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    cli::init_logging(args.verbose, args.quiet);
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One clear sentence (with its causes), no backtrace noise.
            eprintln!("error: {}", cli::error_chain(&e));
            ExitCode::FAILURE
        }
    }
}
