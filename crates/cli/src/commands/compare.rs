//! `tailguard compare`: several evaluated runs side by side, as one table and one chart.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use serde_json::Value;

use crate::report::chart::{Series, grouped_bars};
use crate::report::percent;

/// Put evaluated runs side by side: balanced accuracy and balanced robustness per attack.
#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  tailguard compare runs/demo/natural runs/demo/taet --out reports/compare\n\n\
    Each folder is an evaluation report folder (with report.json) or a run folder holding report/report.json."
)]
pub struct CompareArgs {
    /// Report folders or run folders.
    #[arg(required = true, num_args = 1..)]
    runs: Vec<PathBuf>,
    /// Also write compare.md and compare.png into this folder (new or empty; see --force).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Replace an earlier comparison in --out (only files tailguard wrote).
    #[arg(long, requires = "out")]
    force: bool,
    /// Compare the reports of these weights only (`ema`: the weight average, `raw`): each folder must hold one,
    /// as DIR/report.json, DIR/report/report.json or DIR/report-ema/report.json (DIR/report-raw/...).
    #[arg(long, value_name = "ema|raw", value_parser = crate::args::parse_weights)]
    weights: Option<tailguard_models::Weights>,
}

/// The weights a report evaluated (`raw` for reports written before tailguard kept averages).
fn report_weights(report: &Value) -> &str {
    report["weights"].as_str().unwrap_or("raw")
}

fn load_report(dir: &Path, weights: Option<tailguard_models::Weights>) -> anyhow::Result<Value> {
    let mut candidates = vec![dir.join("report.json"), dir.join("report").join("report.json")];
    if let Some(weights) = weights {
        candidates.push(dir.join(format!("report-{weights}")).join("report.json"));
    }
    let mut found = false;
    for path in candidates.iter().filter(|p| p.is_file()) {
        found = true;
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let report: Value =
            serde_json::from_slice(&bytes).with_context(|| format!("{} is not a tailguard report", path.display()))?;
        if weights.is_none_or(|w| report_weights(&report) == w.to_string()) {
            return Ok(report);
        }
    }
    match (found, weights) {
        (true, Some(weights)) => bail!(
            "{} holds no report of the {weights} weights (tailguard eval --weights {weights} --report {})",
            dir.display(),
            dir.join(format!("report-{weights}")).display()
        ),
        _ => bail!("{} holds no report.json (run tailguard eval first)", dir.display()),
    }
}

fn run_name(dir: &Path) -> String {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    if name == "report" {
        dir.parent()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or(name)
    } else {
        name
    }
}

pub fn run(args: CompareArgs) -> anyhow::Result<()> {
    let reports: Vec<(String, Value)> = args
        .runs
        .iter()
        .map(|d| Ok((run_name(d), load_report(d, args.weights)?)))
        .collect::<anyhow::Result<_>>()?;
    // Attacks in the order they first appear.
    let mut attacks: Vec<String> = Vec::new();
    for (_, report) in &reports {
        for a in report["attacks"].as_array().into_iter().flatten() {
            if let Some(name) = a["attack"].as_str()
                && !attacks.iter().any(|x| x == name)
            {
                attacks.push(name.to_string());
            }
        }
    }
    if attacks.is_empty() {
        bail!("the reports hold no attack results");
    }
    let balanced = |report: &Value, attack: &str| -> Option<f64> {
        report["attacks"].as_array()?.iter().find(|a| a["attack"] == attack)?["balanced_accuracy"].as_f64()
    };
    let tail = |report: &Value, attack: &str| -> Option<f64> {
        report["attacks"].as_array()?.iter().find(|a| a["attack"] == attack)?["groups"]["tail"].as_f64()
    };
    let mut md = String::from("| run | arch | weights | test images |");
    let mut rule = String::from("| --- | --- | --- | ---: |");
    for attack in &attacks {
        md.push_str(&format!(" {attack} (balanced) |"));
        rule.push_str(" ---: |");
    }
    let strongest = attacks.last().cloned().unwrap_or_default();
    md.push_str(&format!(" tail under {strongest} |\n"));
    rule.push_str(" ---: |\n");
    md.push_str(&rule);
    for (name, report) in &reports {
        let _ = write!(
            md,
            "| {name} | {} | {} | {} |",
            report["arch"].as_str().unwrap_or("-"),
            report_weights(report),
            report["test_images"].as_u64().unwrap_or(0)
        );
        for attack in &attacks {
            let _ = write!(md, " {} |", percent(balanced(report, attack)));
        }
        let _ = writeln!(md, " {} |", percent(tail(report, &strongest)));
    }
    println!("{md}");
    if let Some(out) = &args.out {
        tailguard_output::OutputDir::claim(out, &["compare.md", "compare.png"], args.force)?;
        let names: Vec<String> = reports.iter().map(|(n, _)| n.clone()).collect();
        let series: Vec<Series> = attacks
            .iter()
            .map(|attack| Series {
                name: attack.clone(),
                values: reports.iter().map(|(_, r)| balanced(r, attack)).collect(),
            })
            .collect();
        let chart = grouped_bars("Balanced accuracy per attack", &names, &series)?;
        let text = format!(
            "# Comparison\n\nValues are balanced accuracies in % (under attack: balanced robustness).\n\n{md}\n![Balanced accuracy per attack](compare.png)\n"
        );
        let mut comparison = tailguard_output::FileGroup::new(out);
        comparison
            .add("compare.png", chart)
            .add("compare.md", text.into_bytes());
        comparison.commit()?;
        eprintln!("wrote {}", out.join("compare.md").display());
    }
    Ok(())
}
