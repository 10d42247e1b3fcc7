//! What a run needs besides weights and optimizer to continue exactly: the next epoch, the best validation
//! robustness, the method's state, and the method and loop settings it was trained with. One type for both ways a
//! trainer is continued: from a checkpoint on disk (`train_state.json`) and from device 0 when a data-parallel run
//! starts; one "same run" comparison for both.

use serde_json::json;

use crate::settings::TrainerConfig;

/// Progress that is not in the model or optimizer.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ResumeState {
    /// 0-based index of the next epoch to run.
    pub next_epoch: usize,
    /// Best balanced validation robustness so far (a run's; `None` elsewhere).
    pub best_validation_robust: Option<f64>,
    /// The method's own state ([`crate::Method::state`]).
    #[serde(default)]
    pub method: serde_json::Value,
    /// The method's name (absent in runs of tailguard < 0.1.1).
    #[serde(default)]
    pub method_name: Option<String>,
    /// The loop settings the run was started with (absent in runs of tailguard < 0.1.1).
    #[serde(default)]
    pub trainer: Option<TrainerConfig>,
    /// Updates of the weight average so far, when the run keeps one (its decay warms up over them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub average_updates: Option<u64>,
}

/// Which settings may differ between the state's trainer and the one continuing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameRun {
    /// A resumed run: only the number of epochs may change.
    AnyEpochs,
    /// Devices of one data-parallel run: nothing may differ.
    Exactly,
}

impl ResumeState {
    /// Every way a trainer of method `method_name` with loop settings `config` differs from the trainer this state
    /// was taken from (`key: old -> new`); empty when it may continue the state.
    pub fn differences(&self, method_name: &str, config: &TrainerConfig, same: SameRun) -> Vec<String> {
        let mut changes = Vec::new();
        if let Some(name) = &self.method_name
            && name != method_name
        {
            changes.push(format!("method: {name} -> {method_name}"));
        }
        if let Some(stored) = &self.trainer {
            let mut stored = stored.clone();
            if same == SameRun::AnyEpochs {
                stored.epochs = config.epochs;
            }
            changes.extend(
                changed_keys(&json!(stored), &json!(config))
                    .into_iter()
                    .map(|(_, change)| change),
            );
        }
        changes
    }
}

/// `key -> value` for every leaf of a JSON tree, with dotted keys.
fn flatten(prefix: &str, value: &serde_json::Value, out: &mut std::collections::BTreeMap<String, String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, child) in map {
                let key = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                flatten(&key, child, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

/// Equal leaves; numbers within 1e-12 relative count as equal, since a float written to config.toml does not always
/// read back bit for bit (`3/255` came back one unit in the last place away).
fn same_value(a: Option<&String>, b: Option<&String>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => match (a.parse::<f64>(), b.parse::<f64>()) {
            (Ok(x), Ok(y)) => x == y || (x - y).abs() <= 1e-12 * x.abs().max(y.abs()),
            _ => a == b,
        },
        (a, b) => a == b,
    }
}

/// The keys whose values differ between two JSON trees, as `(key, "key: old -> new")`.
pub(crate) fn changed_keys(stored: &serde_json::Value, edited: &serde_json::Value) -> Vec<(String, String)> {
    let (mut a, mut b) = (Default::default(), Default::default());
    flatten("", stored, &mut a);
    flatten("", edited, &mut b);
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    let missing = "(unset)".to_string();
    keys.into_iter()
        .filter(|k| !same_value(a.get(*k), b.get(*k)))
        .map(|k| {
            let (old, new) = (a.get(k).unwrap_or(&missing), b.get(k).unwrap_or(&missing));
            (k.clone(), format!("{k}: {old} -> {new}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_float_that_does_not_read_back_exactly_is_not_an_edit() {
        // 3/255 as computed, and as config.toml gave it back.
        let stored = json!({ "attack": { "step_size": 3.0 / 255.0, "steps": 3 } });
        let read_back = json!({ "attack": { "step_size": 0.01176470588235294, "steps": 3 } });
        assert!(changed_keys(&stored, &read_back).is_empty());
        let edited = json!({ "attack": { "step_size": 0.0118, "steps": 4 } });
        let keys: Vec<String> = changed_keys(&stored, &edited).into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, vec!["attack.step_size".to_string(), "attack.steps".to_string()]);
    }
}
