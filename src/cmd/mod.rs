//! One file per subcommand: parse options, call the library, return the exit code.

pub mod sandbox;
