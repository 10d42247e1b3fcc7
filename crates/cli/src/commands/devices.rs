//! `tailguard devices`: the devices this build can compute on, by the names `--device` takes.

use clap::Args;

use crate::backend;

/// List the devices of the compiled backend, by the names `--device` takes.
#[derive(Debug, Args)]
pub struct DevicesArgs {
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

pub fn run(args: DevicesArgs) -> anyhow::Result<()> {
    let devices = backend::list();
    if args.json {
        let list: Vec<serde_json::Value> = devices
            .iter()
            .map(|(name, works)| serde_json::json!({ "device": name, "usable": works }))
            .collect();
        println!("{}", serde_json::json!({ "backend": backend::name(), "devices": list }));
        return Ok(());
    }
    println!("backend: {}", backend::name());
    if devices.is_empty() {
        println!("no device found: is a GPU driver installed?");
    }
    for (name, works) in devices {
        println!(
            "{name:<20} {}",
            if works {
                "usable"
            } else {
                "found, but a computation failed"
            }
        );
    }
    Ok(())
}
