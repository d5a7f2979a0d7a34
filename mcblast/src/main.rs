fn main() -> std::process::ExitCode {
    mcblast::cli::main()
}
