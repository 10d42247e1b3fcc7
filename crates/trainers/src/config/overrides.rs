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
    let header = key
        .strip_prefix('[')
        .and_then(|h| h.trim_start_matches('[').split(']').next())
        .map(normalise);
    match (section, key.is_empty() || key.starts_with('[')) {
        (_, true) => match (key_holding_quoted_value(table, &message), header) {
            (Some(key), _) => format!("{key}: {message}"),
            // An error about a whole section (a missing field) names the section.
            (None, Some(header)) if !header.is_empty() => format!("[{header}]: {message}"),
            (None, _) => message,
        },
        (Some(section), false) => format!("{section}.{key}: {message}"),
        (None, false) => format!("{key}: {message}"),
    }
}

/// Adds where the key that `message` starts with was set: `line 7: method.alpha must be ...` for a key of the
/// file's text, `... (set by --set)` for one an override set. A message about no key is kept as it is.
pub(super) fn with_place(text: &str, overrides: &[String], message: String) -> String {
    let key: String = message
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '.' || *c == '-')
        .collect();
    if !key.contains('.') {
        return message;
    }
    let overridden = overrides
        .iter()
        .any(|assignment| assignment.split_once('=').is_some_and(|(k, _)| k.trim() == key));
    if overridden {
        return format!("{message} (set by --set)");
    }
    match key_line(text, &key) {
        Some(line) => format!("line {line}: {message}"),
        None => message,
    }
}

/// The line (1-based) of `text` that sets the dotted `key`: `key = ...` inside `[section]` headers or with a
/// dotted left-hand side (`method.alpha = 1` at the top, `alpha = 1` under `[method]`).
pub(super) fn key_line(text: &str, key: &str) -> Option<usize> {
    let mut section = String::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if let Some(header) = line.strip_prefix('[') {
            let header = header.trim_start_matches('[');
            let end = header.find(']').unwrap_or(header.len());
            section = normalise(&header[..end]);
            continue;
        }
        let Some((left, _)) = line.split_once('=') else {
            continue;
        };
        if left.trim_start().starts_with('#') {
            continue;
        }
        let local = normalise(left);
        let full = if section.is_empty() {
            local
        } else {
            format!("{section}.{local}")
        };
        if full == key {
            return Some(index + 1);
        }
    }
    None
}

/// A TOML key as dotted text without quotes or spaces around its parts.
fn normalise(key: &str) -> String {
    key.split('.')
        .map(|part| part.trim().trim_matches('"').trim_matches('\''))
        .collect::<Vec<_>>()
        .join(".")
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
