//! `xdp-ingress run`: wires sources, translate, publish, data plane, workers and admin together.
use crate::cli::RunArgs;

pub fn run(_args: RunArgs) -> anyhow::Result<()> {
    anyhow::bail!("not wired yet")
}
