fn main() -> std::process::ExitCode {
    mcblast::app::main()
}
