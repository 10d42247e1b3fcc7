fn main() -> Result<(), Box<dyn std::error::Error>> {
    // As `tailguard` does on the CPU: freed tensors' memory serves the next operation.
    tailguard_models::keep_freed_memory();
    let dir = std::env::args()
        .nth(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "runs/custom-model".into());
    let (accuracy, robustness) = tailguard_example_custom_model::run(&dir, 6, 20)?;
    println!(
        "balanced accuracy {:.1}%, balanced robustness under AA-lite {:.1}%",
        100.0 * accuracy,
        100.0 * robustness
    );
    Ok(())
}
