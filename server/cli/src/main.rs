//! `fjord`: the federated SQL server for the lakehouse.

fn main() -> std::process::ExitCode {
    fjord_cli::main()
}
