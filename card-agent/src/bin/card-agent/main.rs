//! `card-agent`: the local card agent's command line.
//!
//! MINIMAL STAND-IN written on the `phr` branch so that the PHR commands can be built and tested;
//! the lead's `main.rs` replaces it at merge and adds the `Phr` variant below.

mod phr;

use clap::Parser;

/// Reads My Number (JPKI) and PHR cards over PC/SC. PINs never leave this machine.
#[derive(Debug, clap::Parser)]
#[command(name = "card-agent", version)]
struct Cli {
    /// Machine-readable output (JSON) where the command has output.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, clap::Subcommand)]
enum Cmd {
    /// PHR card (PIV with the iPHR profile): show, issue, link, grant, revoke, consents, sign-grant.
    Phr {
        #[command(subcommand)]
        cmd: phr::PhrCommand,
    },
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Phr { cmd } => phr::run(cmd, cli.json),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("card-agent: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
