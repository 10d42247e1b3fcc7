//! TensorBoard event files: the scalars of a run (loss, learning rate, training and validation accuracies,
//! per-class validation robustness, RobustLT's budgets) as TensorBoard reads them, beside `log.jsonl`.
//!
//! The format is TensorBoard's: TFRecord framing (length, masked CRC-32C of the length, an `Event` protocol buffer,
//! masked CRC-32C of the event) with `Event { wall_time, step, summary { value { tag, simple_value } } }`. The
//! messages are encoded with `prost` and the checksums computed with `crc32c`; the framing is four fields. Each
//! process writes a file of its own (`events.out.tfevents.SECONDS.HOST.PID`), as TensorBoard expects of a
//! resumed run, and TensorBoard reads every file of the folder as one run.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::epoch::{EpochRecord, StepFigures};
use crate::observer::TrainObserver;

/// `Event` of TensorBoard's `event.proto` (the fields tailguard writes).
#[derive(Clone, PartialEq, prost::Message)]
struct Event {
    #[prost(double, tag = "1")]
    wall_time: f64,
    #[prost(int64, tag = "2")]
    step: i64,
    #[prost(oneof = "What", tags = "3, 5")]
    what: Option<What>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum What {
    /// The first event of a file: the format version.
    #[prost(string, tag = "3")]
    FileVersion(String),
    #[prost(message, tag = "5")]
    Summary(Summary),
}

/// `Summary` of `summary.proto`: values with their tags.
#[derive(Clone, PartialEq, prost::Message)]
struct Summary {
    #[prost(message, repeated, tag = "1")]
    value: Vec<SummaryValue>,
}

/// `Summary.Value` with a `simple_value` (a scalar). The value is a member of a `oneof` there, so it is written
/// even when it is 0 (a plain proto3 field of value 0 would be left out, and TensorBoard would see no scalar).
#[derive(Clone, PartialEq, prost::Message)]
struct SummaryValue {
    #[prost(string, tag = "1")]
    tag: String,
    #[prost(float, optional, tag = "2")]
    simple_value: Option<f32>,
}

/// TFRecord's checksum: CRC-32C, rotated right by 15 bits, plus a constant.
fn masked_crc(bytes: &[u8]) -> u32 {
    let crc = crc32c::crc32c(bytes);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// An event file being written.
pub struct EventWriter {
    file: std::io::BufWriter<std::fs::File>,
    path: PathBuf,
}

impl EventWriter {
    /// Creates a new event file in `dir` (created if missing) and writes its version event.
    pub fn create(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let seconds = now().floor() as u64;
        let host = std::env::var("HOSTNAME")
            .ok()
            .filter(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.'))
            .unwrap_or_else(|| "localhost".into());
        let path = dir.join(format!("events.out.tfevents.{seconds}.{host}.{}", std::process::id()));
        let file = std::fs::OpenOptions::new().create_new(true).write(true).open(&path)?;
        let mut writer = Self {
            file: std::io::BufWriter::new(file),
            path,
        };
        writer.write_event(&Event {
            wall_time: now(),
            step: 0,
            what: Some(What::FileVersion("brain.Event:2".into())),
        })?;
        writer.file.flush()?;
        Ok(writer)
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes the scalars `values` (tag, value) at `step`, in one event.
    pub fn scalars(&mut self, step: u64, values: &[(String, f64)]) -> std::io::Result<()> {
        if values.is_empty() {
            return Ok(());
        }
        let summary = Summary {
            value: values
                .iter()
                .map(|(tag, value)| SummaryValue {
                    tag: tag.clone(),
                    simple_value: Some(*value as f32),
                })
                .collect(),
        };
        self.write_event(&Event {
            wall_time: now(),
            step: step as i64,
            what: Some(What::Summary(summary)),
        })
    }

    /// Writes buffered events to the file.
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }

    fn write_event(&mut self, event: &Event) -> std::io::Result<()> {
        let data = prost::Message::encode_to_vec(event);
        let length = (data.len() as u64).to_le_bytes();
        self.file.write_all(&length)?;
        self.file.write_all(&masked_crc(&length).to_le_bytes())?;
        self.file.write_all(&data)?;
        self.file.write_all(&masked_crc(&data).to_le_bytes())
    }
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The scalars of an epoch's log line, tagged as TensorBoard shows them (`epoch/...`), at step = the epoch.
pub fn epoch_scalars(record: &EpochRecord) -> Vec<(String, f64)> {
    let mut values = vec![
        ("epoch/loss".to_string(), record.loss),
        ("epoch/lr".to_string(), record.lr),
    ];
    let optional = [
        ("epoch/train_clean_accuracy", record.clean_accuracy),
        ("epoch/train_adversarial_accuracy", record.adversarial_accuracy),
        ("epoch/validation_clean_balanced", record.validation_clean),
        ("epoch/validation_robust_balanced", record.validation_robust),
    ];
    values.extend(
        optional
            .into_iter()
            .filter_map(|(tag, v)| v.map(|v| (tag.to_string(), v))),
    );
    for (class, value) in record.validation_robust_per_class.iter().flatten().enumerate() {
        if let Some(value) = value {
            values.push((format!("validation_robust_per_class/{class}"), *value));
        }
    }
    for (class, eps) in record.eps_per_class.iter().flatten().enumerate() {
        values.push((format!("robustlt_budget_x255/{class}"), *eps));
    }
    values
}

/// A [`TrainObserver`] that writes a run's scalars as TensorBoard events: per step (every few steps, when the loop
/// reads its figures) the loss and the training accuracies so far, at the global step; per epoch
/// [`epoch_scalars`], at the epoch. The first write error stops the writing and is kept for the caller
/// ([`TensorBoardObserver::take_failure`]); training goes on.
pub struct TensorBoardObserver {
    writer: EventWriter,
    failure: Option<std::io::Error>,
}

impl TensorBoardObserver {
    /// Writes into a new event file in `dir`.
    pub fn create(dir: &Path) -> std::io::Result<Self> {
        Ok(Self {
            writer: EventWriter::create(dir)?,
            failure: None,
        })
    }

    /// The event file.
    pub fn path(&self) -> &Path {
        self.writer.path()
    }

    /// The first write error, if any (writing stopped there).
    pub fn take_failure(&mut self) -> Option<std::io::Error> {
        self.failure.take()
    }

    fn write(&mut self, step: u64, values: &[(String, f64)], flush: bool) {
        if self.failure.is_some() {
            return;
        }
        let written = self
            .writer
            .scalars(step, values)
            .and_then(|()| if flush { self.writer.flush() } else { Ok(()) });
        if let Err(e) = written {
            self.failure = Some(e);
        }
    }
}

impl TrainObserver for TensorBoardObserver {
    fn on_step(&mut self, epoch: usize, step: usize, steps: usize, figures: Option<StepFigures>) {
        let Some(f) = figures else {
            return;
        };
        let mut values = vec![("step/loss".to_string(), f.loss)];
        if let Some(a) = f.clean_accuracy {
            values.push(("step/train_clean_accuracy".into(), a));
        }
        if let Some(a) = f.adversarial_accuracy {
            values.push(("step/train_adversarial_accuracy".into(), a));
        }
        self.write((epoch * steps + step) as u64, &values, false);
    }

    fn on_epoch_end(&mut self, record: &EpochRecord, _dir: &Path) {
        self.write(record.epoch as u64, &epoch_scalars(record), true);
    }
}
