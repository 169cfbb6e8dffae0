fn main() -> std::process::ExitCode {
    vmr::cli::main()
}
