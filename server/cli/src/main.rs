//! `fjord`: the federated SQL server for the lakehouse.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    fjord_cli::main()
}
