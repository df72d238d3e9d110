//! The `xdp-ingress` binary: parse the command line, set up logging, run, map errors to exit codes.
use clap::Parser as _;
use xdp_ingress::cli::{Cli, Command};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    xdp_ingress::cli::init_tracing(&cli.log);
    let result = match cli.command {
        Command::Run(args) => xdp_ingress::run::run(args),
        Command::Inspect(args) => xdp_ingress::inspect::inspect(&args).map_err(anyhow::Error::from),
        Command::Probe(args) => xdp_ingress::probe::probe(&args).map_err(anyhow::Error::from),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            eprintln!("xdp-ingress: error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
