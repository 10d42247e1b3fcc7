//! The evaluation report: report.json, report.md, per_class.png and per_image.csv.

use std::fmt::Write as _;
use std::path::Path;

use tailguard_attacks::{AttackPreset, AutoAttackStages, MaskingWarning, STAGE_NAMES};
use tailguard_longtail::{AccuracySummary, ClassGroups, ClassTally};

use super::chart::{Series, grouped_bars};
use super::percent;
use tailguard_output::FileGroup;

/// One attack's results.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AttackReport {
    pub attack: String,
    #[serde(flatten)]
    pub summary: AccuracySummary,
    pub correct: Vec<usize>,
    pub seconds: f64,
    pub images_per_second: f64,
    /// AA-lite: robust points after the clean pass, APGD-CE and APGD-T.
    pub stages: Option<AutoAttackStages>,
    /// Whether each image, in evaluation order, stayed correct (written to per_image.csv, not report.json).
    #[serde(skip)]
    pub robust: Vec<bool>,
}

impl AttackReport {
    pub fn new(
        preset: AttackPreset,
        summary: AccuracySummary,
        tally: ClassTally,
        seconds: f64,
        stages: Option<AutoAttackStages>,
        robust: Vec<bool>,
    ) -> Self {
        Self {
            robust,
            attack: preset.name().to_string(),
            summary,
            images_per_second: tally.total() as f64 / seconds.max(1e-9),
            correct: tally.correct,
            seconds,
            stages,
        }
    }
}

/// Everything `tailguard eval` measured, and how.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EvalReport {
    pub tailguard_version: &'static str,
    pub date: String,
    pub checkpoint: String,
    /// `ema` (the weight average) or `raw`.
    pub weights: String,
    pub arch: String,
    pub dataset: String,
    pub data_dir: String,
    pub backend: String,
    /// `linf` or `l2`.
    pub norm: String,
    pub eps: f64,
    pub eps_255: f64,
    pub lt_test: Option<f64>,
    pub limit: Option<usize>,
    pub seed: u64,
    pub test_images: usize,
    pub classes: Vec<String>,
    pub test_counts: Vec<usize>,
    pub train_counts: Option<Vec<usize>>,
    /// The post-hoc logit adjustment the attacks and scores used (RoBal-N), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logit_adjustment: Option<LogitAdjustmentReport>,
    pub groups: Option<ClassGroups>,
    /// Class indices from the most to the least frequent training class.
    pub head_to_tail: Vec<usize>,
    /// The gradient-masking checks of an evaluation that ran AutoAttack: the warnings of the checks that tripped
    /// (empty: none did); `None` when no AutoAttack ran.
    pub masking_checks: Option<Vec<MaskingWarning>>,
    /// The label of each test image, in evaluation order (for per_image.csv).
    #[serde(skip)]
    pub image_labels: Vec<usize>,
    pub attacks: Vec<AttackReport>,
    /// Training curves of the run that produced the checkpoint, relative to the report folder.
    pub training_curves: Vec<String>,
}

/// `s z - tau log(pi)` as evaluated.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct LogitAdjustmentReport {
    pub tau: f64,
    pub scale: f64,
}

impl EvalReport {
    /// Writes report.json, per_class.png, per_image.csv and report.md into `dir` as one unit: all replace the previous
    /// report, or none does (a disk that fills midway keeps the old report whole).
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        let categories: Vec<String> = self.head_to_tail.iter().map(|&c| self.classes[c].clone()).collect();
        let series: Vec<Series> = self
            .attacks
            .iter()
            .map(|a| Series {
                name: a.attack.clone(),
                values: self.head_to_tail.iter().map(|&c| a.summary.per_class[c]).collect(),
            })
            .collect();
        let chart = grouped_bars(
            &format!(
                "Per-class accuracy, head to tail ({}, eps {:.1}/255)",
                self.arch, self.eps_255
            ),
            &categories,
            &series,
        )?;
        let mut report = FileGroup::new(dir);
        report
            .add("report.json", serde_json::to_vec_pretty(self)?)
            .add("per_class.png", chart)
            .add("per_image.csv", self.per_image_csv().into_bytes())
            .add("report.md", self.markdown().into_bytes());
        report.commit()?;
        Ok(())
    }

    /// One row per test image in evaluation order (`image,label,` then one cell per attack): `-` where the image
    /// stayed correct, else what broke it: AutoAttack's stage (`clean` when it was misclassified already,
    /// `apgd-ce`, `apgd-t`, `fab-t`, `square`), `x` for any other attack. Defences evaluated with the same seed and
    /// split list the same images in the same order, so their files compare line by line.
    pub fn per_image_csv(&self) -> String {
        let mut csv = String::from("image,label");
        for attack in &self.attacks {
            csv.push(',');
            csv.push_str(&attack.attack);
        }
        csv.push('\n');
        for (image, label) in self.image_labels.iter().enumerate() {
            let _ = write!(csv, "{image},{label}");
            for attack in &self.attacks {
                let cell = match attack.robust.get(image) {
                    Some(true) => "-",
                    _ => attack
                        .stages
                        .as_ref()
                        .and_then(|s| s.broken_at.get(image).copied().flatten())
                        .map_or("x", |stage| STAGE_NAMES[stage as usize]),
                };
                csv.push(',');
                csv.push_str(cell);
            }
            csv.push('\n');
        }
        csv
    }

    /// The strongest attack evaluated: lowest balanced accuracy, not counting clean; on ties the one listed last
    /// (the attack lists run from weak to strong).
    fn strongest(&self) -> Option<&AttackReport> {
        self.attacks
            .iter()
            .filter(|a| a.attack != "clean")
            .fold(None, |best: Option<&AttackReport>, a| match best {
                Some(b) if b.summary.balanced_accuracy < a.summary.balanced_accuracy => Some(b),
                _ => Some(a),
            })
    }

    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let split = match self.lt_test {
            Some(rho) => format!("long-tailed test split (rho {rho})"),
            None => "test set".to_string(),
        };
        let _ = writeln!(md, "# Robustness report\n");
        let _ = writeln!(
            md,
            "`{}` ({} weights; {}, {} classes) on the {} {} ({} images{}), {}, {} backend, {}.\n",
            self.checkpoint,
            if self.weights == "ema" { "averaged (EMA)" } else { "raw" },
            self.arch,
            self.classes.len(),
            self.dataset,
            split,
            self.test_images,
            self.limit
                .map(|_| format!(", seeded subset, seed {}", self.seed))
                .unwrap_or_default(),
            if self.norm == "l2" {
                format!("L2 eps = {}", self.eps)
            } else {
                format!("L-inf eps = {:.2}/255 ({:.4})", self.eps_255, self.eps)
            },
            self.backend,
            self.date
        );
        if let Some(a) = self.logit_adjustment {
            let _ = writeln!(
                md,
                "Logits adjusted after the fact (RoBal-N style): `{} z - {} log(pi)`, pi the training class \
                 frequencies; the attacks see the adjusted logits.\n",
                a.scale, a.tau
            );
        }
        if let Some(clean) = self.attacks.iter().find(|a| a.attack == "clean") {
            let _ = writeln!(
                md,
                "- **Balanced accuracy** (mean per-class clean accuracy): {}%",
                percent(Some(clean.summary.balanced_accuracy))
            );
        }
        if let Some(strongest) = self.strongest() {
            let _ = writeln!(
                md,
                "- **Balanced robustness** (mean per-class accuracy under {}, the strongest attack run): {}%",
                strongest.attack,
                percent(Some(strongest.summary.balanced_accuracy))
            );
        }
        let _ = writeln!(md);
        let _ = writeln!(
            md,
            "| attack | accuracy | balanced | worst class | many | medium | few | tail (80%) | time (s) |"
        );
        let _ = writeln!(md, "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |");
        for a in &self.attacks {
            let s = &a.summary;
            let worst = s
                .worst_class
                .map(|w| format!("{} {}", self.classes[w.class], percent(Some(w.accuracy))))
                .unwrap_or_else(|| "-".into());
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {:.1} |",
                a.attack,
                percent(Some(s.accuracy)),
                percent(Some(s.balanced_accuracy)),
                worst,
                percent(s.groups.many),
                percent(s.groups.medium),
                percent(s.groups.few),
                percent(s.groups.tail),
                a.seconds
            );
        }
        if self.groups.is_none() {
            let _ = writeln!(
                md,
                "\nGroups need per-class training counts (`--train-counts`); none were known."
            );
        } else {
            let _ = writeln!(
                md,
                "\nGroups by training images: many > 100, medium 20-100, few < 20; tail = the 80% least frequent classes."
            );
        }
        for a in &self.attacks {
            if let Some(s) = &a.stages {
                let n = self.test_images.max(1) as f64;
                let steps: Vec<String> = s
                    .rows()
                    .iter()
                    .map(|(stage, robust, seconds)| {
                        let after = if *stage == "clean" { "" } else { "after " };
                        format!("{after}{stage} {:.2}% ({seconds:.1} s)", 100.0 * *robust as f64 / n)
                    })
                    .collect();
                let _ = writeln!(
                    md,
                    "\n{} stages (robust accuracy, seconds): {}.",
                    a.attack,
                    steps.join(", ")
                );
            }
        }
        let _ = writeln!(md, "\n![Per-class accuracy, head to tail](per_class.png)\n");
        match &self.masking_checks {
            Some(warnings) if warnings.is_empty() => {
                let _ = writeln!(
                    md,
                    "Gradient-masking checks (randomness, probabilities, zero gradients, logit scale, black-box \
                     stages): none tripped.\n"
                );
            }
            Some(warnings) => {
                let _ = writeln!(md, "## Gradient-masking warnings\n");
                for w in warnings {
                    let _ = writeln!(md, "- **{}**: {}. {}.", w.check, w.finding, w.advice);
                }
                let _ = writeln!(md);
            }
            None => {}
        }
        let _ = writeln!(
            md,
            "Per image: `per_image.csv` (`-` where an image stayed correct, else the attack or AutoAttack stage that \
             broke it).\n"
        );
        if !self.training_curves.is_empty() {
            let _ = writeln!(md, "## Training\n");
            for curve in &self.training_curves {
                let _ = writeln!(md, "![{curve}]({curve})");
            }
            let _ = writeln!(md);
        }
        let _ = writeln!(md, "## Per class (head to tail)\n");
        let mut header = String::from("| class | train images | test images |");
        let mut rule = String::from("| --- | ---: | ---: |");
        for a in &self.attacks {
            header.push_str(&format!(" {} |", a.attack));
            rule.push_str(" ---: |");
        }
        let _ = writeln!(md, "{header}\n{rule}");
        for &c in &self.head_to_tail {
            let train = self
                .train_counts
                .as_ref()
                .map(|t| t[c].to_string())
                .unwrap_or_else(|| "-".into());
            let mut row = format!("| {} | {} | {} |", self.classes[c], train, self.test_counts[c]);
            for a in &self.attacks {
                row.push_str(&format!(" {} |", percent(a.summary.per_class[c])));
            }
            let _ = writeln!(md, "{row}");
        }
        let absent: Vec<&str> = (0..self.classes.len())
            .filter(|&c| self.test_counts[c] == 0)
            .map(|c| self.classes[c].as_str())
            .collect();
        if !absent.is_empty() {
            let _ = writeln!(
                md,
                "\nAbsent from the test set (not averaged in): {}.",
                absent.join(", ")
            );
        }
        md
    }
}
