fn main() -> Result<(), Box<dyn std::error::Error>> {
    let robustness = tailguard_example_custom_model::run(4, 200)?;
    println!("balanced robustness under AA-lite: {:.1}%", 100.0 * robustness);
    Ok(())
}
