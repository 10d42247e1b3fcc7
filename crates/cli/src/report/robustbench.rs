//! An evaluation as a RobustBench leaderboard entry: the fields of the RobustBench repository's
//! `model_info/<dataset>/<threat>/<id>.json` files, plus tailguard's long-tail figures under `tailguard`.

use anyhow::bail;
use serde::Serialize;
use serde_json::Value;

use super::eval_report::{AttackReport, EvalReport};

/// One leaderboard entry. Accuracies are strings of percentages with two decimals, as RobustBench writes them; the
/// fields only the model's authors know (link, paper, authors, venue, extra data) are left for them to fill.
#[derive(Debug, Serialize)]
pub struct RobustBenchEntry {
    pub link: String,
    pub name: String,
    pub authors: String,
    pub additional_data: bool,
    pub number_forward_passes: u32,
    pub dataset: String,
    pub venue: String,
    pub architecture: String,
    pub eps: String,
    pub clean_acc: String,
    pub reported: String,
    pub autoattack_acc: String,
    pub footnote: String,
    pub unreliable: bool,
    /// tailguard's additions: balanced figures, per class and per frequency group.
    pub tailguard: LongTailFields,
}

/// The long-tail view of the same evaluation.
#[derive(Debug, Serialize)]
pub struct LongTailFields {
    pub version: &'static str,
    /// `standard` (APGD-CE, APGD-T, FAB-T, Square), `plus` (AA+), `rand` (APGD-CE, APGD-DLR with EOT) or `lite`
    /// (APGD-CE, APGD-T).
    pub autoattack: &'static str,
    /// The leaderboard: `Linf` or `L2` (RobustBench keeps it in the folder name, `model_info/<dataset>/<threat>`).
    pub threat_model: &'static str,
    pub weights: String,
    pub test_images: usize,
    pub balanced_clean_acc: f64,
    pub balanced_autoattack_acc: f64,
    /// Robust accuracy per class under AutoAttack (`null` for a class without test images).
    pub per_class_autoattack_acc: Vec<Option<f64>>,
    pub classes: Vec<String>,
    pub tail_clean_acc: Option<f64>,
    pub tail_autoattack_acc: Option<f64>,
    pub many_autoattack_acc: Option<f64>,
    pub medium_autoattack_acc: Option<f64>,
    pub few_autoattack_acc: Option<f64>,
}

/// `8/255` for an eps of 8/255 (to 1e-6), else the number itself.
fn eps_text(eps: f64) -> String {
    let over_255 = eps * 255.0;
    if (over_255 - over_255.round()).abs() < 1e-6 {
        format!("{}/255", over_255.round() as i64)
    } else {
        format!("{eps}")
    }
}

fn percent(value: f64) -> String {
    format!("{:.2}", 100.0 * value)
}

impl RobustBenchEntry {
    /// The entry of `report`, which must hold the clean accuracy and an AutoAttack (standard `aa`, else `aa-lite`).
    pub fn from_report(report: &EvalReport, name: &str) -> anyhow::Result<Self> {
        let find = |attack: &str| report.attacks.iter().find(|a| a.attack == attack);
        let Some(clean) = find("clean") else {
            bail!("--robustbench-json needs the clean accuracy: add clean to --attacks");
        };
        let autoattack = (find("aa"), find("aa-plus"), find("aa-rand"), find("aa-lite"));
        let (autoattack, version): (&AttackReport, &'static str) = match autoattack {
            (Some(aa), ..) => (aa, "standard"),
            (None, Some(plus), ..) => (plus, "plus"),
            (None, None, Some(rand), _) => (rand, "rand"),
            (None, None, None, Some(lite)) => (lite, "lite"),
            (None, None, None, None) => bail!(
                "--robustbench-json needs an AutoAttack result: add aa (or aa-plus, aa-rand, aa-lite) to --attacks"
            ),
        };
        let mut footnote = match version {
            "standard" => String::new(),
            "plus" => "AutoAttack's plus version (AA+), stronger than the leaderboard's standard version.".to_string(),
            "rand" => "AutoAttack's rand version (APGD-CE and APGD-DLR with 20 EOT samples), for a randomised \
                       defence."
                .to_string(),
            _ => "AA-lite (APGD-CE and APGD-T only), not standard AutoAttack.".to_string(),
        };
        if report.test_images < 10_000 || report.lt_test.is_some() {
            let split = match report.lt_test {
                Some(rho) => format!("a long-tailed test split (rho {rho})"),
                None => "the test set".into(),
            };
            footnote = format!(
                "{footnote}{}Evaluated on {} images of {split}, not the leaderboard's 10,000.",
                if footnote.is_empty() { "" } else { " " },
                report.test_images
            )
            .trim()
            .to_string();
        }
        let robust = percent(autoattack.summary.accuracy);
        Ok(Self {
            link: String::new(),
            name: name.to_string(),
            authors: String::new(),
            additional_data: false,
            number_forward_passes: 1,
            dataset: report.dataset.clone(),
            venue: String::new(),
            architecture: report.arch.clone(),
            eps: eps_text(report.eps),
            clean_acc: percent(clean.summary.accuracy),
            reported: robust.clone(),
            autoattack_acc: robust,
            footnote,
            unreliable: false,
            tailguard: LongTailFields {
                version: env!("CARGO_PKG_VERSION"),
                autoattack: version,
                threat_model: if report.norm == "l2" { "L2" } else { "Linf" },
                weights: report.weights.clone(),
                test_images: report.test_images,
                balanced_clean_acc: clean.summary.balanced_accuracy,
                balanced_autoattack_acc: autoattack.summary.balanced_accuracy,
                per_class_autoattack_acc: autoattack.summary.per_class.clone(),
                classes: report.classes.clone(),
                tail_clean_acc: clean.summary.groups.tail,
                tail_autoattack_acc: autoattack.summary.groups.tail,
                many_autoattack_acc: autoattack.summary.groups.many,
                medium_autoattack_acc: autoattack.summary.groups.medium,
                few_autoattack_acc: autoattack.summary.groups.few,
            },
        })
    }

    /// The entry as RobustBench's files hold it (pretty JSON).
    pub fn to_json(&self) -> anyhow::Result<Vec<u8>> {
        let value: Value = serde_json::to_value(self)?;
        Ok(serde_json::to_vec_pretty(&value)?)
    }
}

#[cfg(test)]
mod tests {
    use super::eps_text;

    #[test]
    fn eps_is_written_as_the_leaderboard_writes_it() {
        assert_eq!(eps_text(8.0 / 255.0), "8/255");
        assert_eq!(eps_text(0.5), "0.5");
    }
}
