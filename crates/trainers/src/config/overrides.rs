//! `--set key=value` overrides and TOML errors that name their key.

use crate::error::{ConfigError, invalid};

/// `a.b.c=value`: sets a nested key. The value is read as TOML (`0.1`, `true`, `[75, 90]`, `"x"`); anything else
/// is taken as a string.
/// A syntax error of the file's text with its line: `line 12 (`[data]`): duplicate key`.
pub(super) fn syntax_error(text: &str, error: &toml::de::Error) -> String {
    let message = error.message().trim().to_string();
    let Some(span) = error.span() else {
        return message;
    };
    let start = span.start.min(text.len());
    let number = text[..start].matches('\n').count() + 1;
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line: String = text[line_start..]
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .chars()
        .take(80)
        .collect();
    format!("line {number} (`{line}`): {message}")
}

/// A deserialisation error with the key it is about: `attack.steps: invalid value: integer `-3`, expected usize`.
/// Errors inside `[method]` (a tagged section, whose errors carry no place) are matched to the one key holding the
/// value the message quotes.
pub(super) fn locate(text: &str, table: &toml::Table, error: &toml::de::Error) -> String {
    let message = error.message().to_string();
    let Some(span) = error.span() else {
        return match key_holding_quoted_value(table, &message) {
            Some(key) => format!("{key}: {message}"),
            None => message,
        };
    };
    let before = &text[..span.start.min(text.len())];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or_default();
    let key = line.split('=').next().unwrap_or_default().trim();
    let section = before
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix('[').and_then(|l| l.strip_suffix(']')))
        .map(str::to_string);
    match (section, key.is_empty() || key.starts_with('[')) {
        (_, true) => match key_holding_quoted_value(table, &message) {
            Some(key) => format!("{key}: {message}"),
            None => message,
        },
        (Some(section), false) => format!("{section}.{key}: {message}"),
        (None, false) => format!("{key}: {message}"),
    }
}

/// The dotted key of the only leaf whose value is the first `quoted` literal of `message` (serde's
/// `invalid value: integer `-1``), if exactly one leaf holds it.
fn key_holding_quoted_value(table: &toml::Table, message: &str) -> Option<String> {
    let quoted = message.split('`').nth(1)?;
    fn leaves(prefix: &str, table: &toml::Table, out: &mut Vec<(String, String)>) {
        for (key, value) in table {
            let key = if prefix.is_empty() {
                key.clone()
            } else {
                format!("{prefix}.{key}")
            };
            match value {
                toml::Value::Table(inner) => leaves(&key, inner, out),
                toml::Value::String(s) => out.push((key, s.clone())),
                other => out.push((key, other.to_string())),
            }
        }
    }
    let mut all = Vec::new();
    leaves("", table, &mut all);
    let mut holding = all.into_iter().filter(|(_, value)| value == quoted);
    match (holding.next(), holding.next()) {
        (Some((key, _)), None) => Some(key),
        _ => None,
    }
}

pub(super) fn apply_override(table: &mut toml::Table, assignment: &str) -> Result<(), ConfigError> {
    let (key, raw) = assignment
        .split_once('=')
        .ok_or_else(|| invalid(format!("--set expects key=value, got '{assignment}'")))?;
    if key.trim().is_empty() || key.split('.').any(|part| part.trim().is_empty()) {
        return Err(invalid(format!("--set '{assignment}': the key has an empty part")));
    }
    let value: toml::Value = format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    let parts: Vec<&str> = key.trim().split('.').collect();
    let mut current = table;
    for part in &parts[..parts.len() - 1] {
        current = current
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .ok_or_else(|| invalid(format!("--set {key}: '{part}' is not a section")))?;
    }
    current.insert(parts[parts.len() - 1].to_string(), value);
    Ok(())
}
