//! Parsing of argument values shared by several subcommands.

/// Per-class counts given on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counts(pub Vec<usize>);

/// `ema` or `raw`: which weights of a checkpoint (see [`tailguard_models::Weights`]).
pub fn parse_weights(text: &str) -> Result<tailguard_models::Weights, String> {
    match text {
        "ema" => Ok(tailguard_models::Weights::Ema),
        "raw" => Ok(tailguard_models::Weights::Raw),
        other => Err(format!("'{other}' is not ema or raw")),
    }
}

/// A comma-separated list of non-negative integers (`5000,2997,1796`).
pub fn parse_counts(text: &str) -> Result<Counts, String> {
    let parse = |part: &str| {
        part.trim()
            .parse::<usize>()
            .map_err(|_| format!("'{part}' is not a count"))
    };
    text.split(',').map(parse).collect::<Result<Vec<_>, _>>().map(Counts)
}

/// Today's date (UTC) as YYYY-MM-DD, for reports.
pub fn today() -> String {
    let days = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() / 86_400)
        .unwrap_or(0) as i64;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + (month <= 2) as i64;
    format!("{year:04}-{month:02}-{day:02}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tailguard_attacks::{parse_budget, parse_eps};

    #[test]
    fn eps_fractions_and_numbers() {
        assert_eq!(parse_eps("8/255").unwrap(), 8.0 / 255.0);
        assert_eq!(parse_eps("0.031").unwrap(), 0.031);
        assert!(parse_eps("-1/255").unwrap_err().to_string().contains("[0, 1]"));
        assert!(parse_eps("8/0").unwrap_err().to_string().contains("zero"));
        assert!(parse_eps("eight").unwrap_err().to_string().contains("not a number"));
        // An L2 budget may exceed 1, never be negative.
        assert_eq!(parse_budget("2").unwrap(), 2.0);
        assert!(parse_eps("2").is_err());
        assert!(parse_budget("-1/2").unwrap_err().to_string().contains("non-negative"));
    }

    #[test]
    fn counts_list() {
        assert_eq!(parse_counts("5, 3,1").unwrap(), Counts(vec![5, 3, 1]));
        assert!(parse_counts("5,x").is_err());
    }

    #[test]
    fn date_has_the_right_shape() {
        let today = today();
        assert_eq!(today.len(), 10);
        assert!(today.starts_with("20"));
    }
}
