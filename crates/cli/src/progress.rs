//! Progress bars on stderr (hidden with --json or when stderr is not a terminal).

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar of `total` steps.
pub fn bar(hidden: bool, total: u64, message: String) -> ProgressBar {
    let bar = ProgressBar::new(total).with_message(message);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {elapsed_precise} (eta {eta})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    if hidden {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    bar
}

/// A spinner for work of unknown length.
pub fn spinner(hidden: bool, message: String) -> ProgressBar {
    let spinner = ProgressBar::new_spinner().with_message(message);
    if hidden {
        spinner.set_draw_target(ProgressDrawTarget::hidden());
    } else {
        spinner.enable_steady_tick(std::time::Duration::from_millis(120));
    }
    spinner
}

/// "loss 0.1234  clean 45.6%  adv 12.3%" from a training step's figures.
pub fn step_message(figures: &tailguard_trainers::StepFigures) -> String {
    let mut message = format!("loss {:.4}", figures.loss);
    if let Some(a) = figures.clean_accuracy {
        message.push_str(&format!("  clean {:.1}%", 100.0 * a));
    }
    if let Some(a) = figures.adversarial_accuracy {
        message.push_str(&format!("  adv {:.1}%", 100.0 * a));
    }
    message
}
