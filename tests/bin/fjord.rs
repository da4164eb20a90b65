//! The `fjord` binary, built beside the integration tests so that they can run it as a separate
//! process (to kill it with SIGKILL, say) without building the CLI package's binary themselves.

fn main() -> std::process::ExitCode {
    fjord_cli::main()
}
