//! `ncrx`: the netconsole command-line tool.
//!
//! It parses arguments, moves bytes and prints; every protocol rule lives in the crates it is
//! built on (`netpoll-frame`, `netconsole-proto`, `netoops-proto`). See `README.md` and
//! `ncrx --help` for the subcommands and the exit codes.
#![forbid(unsafe_code)]

mod capture;
mod cli;
mod decode;
mod error;
mod input;
mod json;
mod listen;
mod metrics;
mod names;
mod net;
mod oops;
mod send;
mod sim;
mod sink;
mod syslog;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command, OopsCommand};
use crate::error::{Failure, Outcome};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = run(cli);
    match result {
        Ok(outcome) => ExitCode::from(outcome.exit_code()),
        Err(failure) => {
            eprintln!("ncrx: error: {failure}");
            ExitCode::from(failure.exit_code())
        }
    }
}

fn run(cli: Cli) -> Result<Outcome, Failure> {
    match cli.command {
        Command::Listen(args) => listen::run(&args),
        Command::Decode(args) => decode::run(&args),
        Command::Sim(args) => sim::run(&args),
        Command::Send(args) => send::run(&args),
        Command::Oops { command } => match command {
            OopsCommand::Decode(args) => oops::decode(&args),
            OopsCommand::Listen(args) => oops::listen(&args),
            OopsCommand::Send(args) => oops::send(&args),
        },
    }
}
