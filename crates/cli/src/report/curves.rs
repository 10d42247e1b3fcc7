//! Training curves from a run's `log.jsonl`: loss, accuracies, learning rate and RobustLT budgets as one PNG.

use std::path::Path;

use anyhow::Context;
use tailguard_output::FileGroup;
use tailguard_trainers::EpochRecord;

use super::chart::{Series, lines_chart};

/// Reads `DIR/log.jsonl` and writes `DIR/curves.png` (and `DIR/budgets.png` when the budgets vary by class).
pub fn write_training_curves(dir: &Path) -> anyhow::Result<()> {
    let log = std::fs::read_to_string(dir.join("log.jsonl")).with_context(|| format!("reading {}", dir.display()))?;
    let records: Vec<EpochRecord> = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing {}/log.jsonl", dir.display()))?;
    anyhow::ensure!(
        !records.is_empty(),
        "{}/log.jsonl has no epoch: nothing to draw, no curves written",
        dir.display()
    );
    // Every line is checked before anything is drawn: a log is one run, whose classes do not change.
    if let Some(first) = records.iter().find_map(|r| r.eps_per_class.as_ref())
        && let Some(other) = records
            .iter()
            .find(|r| r.eps_per_class.as_ref().is_some_and(|e| e.len() != first.len()))
    {
        anyhow::bail!(
            "{}/log.jsonl is not one run: its per-class budgets have {} classes at first and {} at epoch {}",
            dir.display(),
            first.len(),
            other.eps_per_class.as_ref().map_or(0, Vec::len),
            other.epoch
        );
    }
    let pct = |f: fn(&EpochRecord) -> Option<f64>| -> Vec<Option<f64>> {
        records.iter().map(|r| f(r).map(|v| 100.0 * v)).collect()
    };
    let accuracy = [
        Series {
            name: "train clean".into(),
            values: pct(|r| r.clean_accuracy),
        },
        Series {
            name: "train adversarial".into(),
            values: pct(|r| r.adversarial_accuracy),
        },
        Series {
            name: "validation clean (balanced)".into(),
            values: pct(|r| r.validation_clean),
        },
        Series {
            name: "validation robust (balanced)".into(),
            values: pct(|r| r.validation_robust),
        },
    ];
    let loss = [Series {
        name: "loss".into(),
        values: records.iter().map(|r| Some(r.loss)).collect(),
    }];
    let lr = [Series {
        name: "learning rate".into(),
        values: records.iter().map(|r| Some(r.lr)).collect(),
    }];
    let max_loss = records.iter().map(|r| r.loss).fold(0.0, f64::max).max(1e-6) * 1.1;
    let max_lr = records.iter().map(|r| r.lr).fold(0.0, f64::max).max(1e-9) * 1.1;
    let mut curves = FileGroup::new(dir);
    curves.add(
        "curves_accuracy.png",
        lines_chart("Accuracy per epoch", "epoch", "%", 0.0..100.0, &accuracy)?,
    );
    curves.add(
        "curves_loss.png",
        lines_chart("Training loss", "epoch", "loss", 0.0..max_loss, &loss)?,
    );
    curves.add(
        "curves_lr.png",
        lines_chart("Learning rate", "epoch", "lr", 0.0..max_lr, &lr)?,
    );
    if let Some(first) = records.iter().find_map(|r| r.eps_per_class.as_ref()) {
        let classes = first.len();
        let budgets: Vec<Series> = (0..classes)
            .map(|c| Series {
                name: format!("class {c}"),
                values: records.iter().map(|r| r.eps_per_class.as_ref().map(|e| e[c])).collect(),
            })
            .collect();
        let top = records
            .iter()
            .filter_map(|r| r.eps_per_class.as_ref())
            .flatten()
            .fold(0.0f64, |a, &b| a.max(b));
        curves.add(
            "curves_budgets.png",
            lines_chart(
                "Per-class budget (RobustLT)",
                "epoch",
                "eps x 255",
                0.0..top.max(1e-6) * 1.1,
                &budgets,
            )?,
        );
    }
    curves.commit()?;
    Ok(())
}
