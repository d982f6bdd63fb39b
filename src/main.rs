//! The `pom` command: the daemon and the operator's tools.

use std::process::ExitCode;

mod cli;

fn main() -> ExitCode {
    cli::main()
}
