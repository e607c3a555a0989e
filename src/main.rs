//! agentvisor binary: parse the command line, run the command, map the
//! result to an exit code.

use clap::Parser;

/// mimalloc instead of glibc's malloc: the daemon's hot paths allocate many
/// small short-lived buffers (HTTP, JSON, receipts) from two worker threads,
/// where glibc spent ~13 % of the gateway's CPU (issue 12's profile).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    let cli = agentvisor::cli::Cli::parse();
    let code = match agentvisor::cli::execute(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            2
        }
    };
    std::process::exit(code);
}
