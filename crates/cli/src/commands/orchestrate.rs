//! `tailguard orchestrate`: the coordinator a multi-machine data-parallel run registers with.

use anyhow::Context;
use clap::Args;

/// Run burn-collective's orchestrator for `train --nodes N` on several machines (until interrupted).
#[derive(Debug, Args)]
#[command(after_help = "Example (docs/scaling.md):\n  \
    tailguard orchestrate --port 3000\n  \
    then on every machine: tailguard train ... --nodes 2 --node-rank R --orchestrator ws://THIS-HOST:3000 \
    --node-address ws://THAT-MACHINE:3001")]
pub struct OrchestrateArgs {
    /// Port to listen on (all interfaces).
    #[arg(long, value_name = "PORT")]
    port: u16,
}

pub fn run(args: OrchestrateArgs) -> anyhow::Result<()> {
    // burn-collective only logs a port it cannot bind; check first so the user sees why.
    std::net::TcpListener::bind(("0.0.0.0", args.port))
        .with_context(|| format!("cannot listen on port {}", args.port))?;
    eprintln!("orchestrator listening on ws://0.0.0.0:{} (Ctrl-C stops it)", args.port);
    tailguard_trainers::parallel::run_orchestrator(args.port)?;
    Ok(())
}
