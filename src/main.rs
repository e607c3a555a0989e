//! agentvisor binary: parse the command line, run the command, map the
//! result to an exit code.

use clap::Parser;

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
