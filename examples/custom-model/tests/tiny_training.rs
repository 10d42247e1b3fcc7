#[test]
fn the_example_trains_and_evaluates() {
    let robustness = tailguard_example_custom_model::run(2, 20).unwrap();
    assert!((0.0..=1.0).contains(&robustness), "{robustness}");
}
