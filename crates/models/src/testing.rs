//! Test support shared by the workspace's crates: checking an autodiff gradient against finite differences.

/// Compares `analytic` (the gradient of `f` at `base`) with central differences at every `stride`-th coordinate.
///
/// A coordinate where the forward and backward one-sided differences disagree has a kink (a ReLU switching, a change
/// of logit order) within the step and no derivative to compare; it is skipped. Fails if a compared coordinate is
/// off by more than `2e-3 + 5 %`, or if more than a fifth of the coordinates had to be skipped.
pub fn check_gradient(
    f: impl Fn(&[f32]) -> f64,
    base: &[f32],
    analytic: &[f32],
    stride: usize,
) -> Result<usize, String> {
    let h = 1e-3f32;
    let at_base = f(base);
    let (mut compared, mut skipped) = (0usize, 0usize);
    let mut point = base.to_vec();
    for index in (0..base.len()).step_by(stride.max(1)) {
        point[index] = base[index] + h;
        let plus = f(&point);
        point[index] = base[index] - h;
        let minus = f(&point);
        point[index] = base[index];
        let (forward, backward) = ((plus - at_base) / h as f64, (at_base - minus) / h as f64);
        if (forward - backward).abs() > 2e-3 + 0.02 * forward.abs() {
            skipped += 1;
            continue;
        }
        let numeric = (plus - minus) / (2.0 * h as f64);
        let exact = analytic[index] as f64;
        if (numeric - exact).abs() > 2e-3 + 0.05 * exact.abs() {
            return Err(format!(
                "coordinate {index}: finite difference {numeric}, autodiff {exact}"
            ));
        }
        compared += 1;
    }
    if compared < 4 * skipped || compared < 10 {
        return Err(format!(
            "only {compared} coordinates comparable ({skipped} skipped at kinks)"
        ));
    }
    Ok(compared)
}
