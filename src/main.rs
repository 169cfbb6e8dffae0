//! The `vmr` command: everything it does is in the library (`vmr::cli::main` and below).

fn main() -> std::process::ExitCode {
    vmr::cli::main()
}
