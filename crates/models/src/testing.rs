//! Test support shared by the workspace's crates: checking an autodiff gradient against finite differences.

/// Why a gradient check failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GradientMismatch {
    /// The autodiff gradient disagrees with the finite difference at a coordinate.
    #[error("coordinate {index}: finite difference {numeric}, autodiff {exact}")]
    Coordinate {
        /// The coordinate.
        index: usize,
        /// Central finite difference.
        numeric: f64,
        /// Autodiff gradient.
        exact: f64,
    },
    /// Too many coordinates sat at kinks to conclude.
    #[error("only {compared} coordinates comparable ({skipped} skipped at kinks)")]
    TooFewComparable {
        /// Coordinates compared.
        compared: usize,
        /// Coordinates skipped.
        skipped: usize,
    },
}

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
) -> Result<usize, GradientMismatch> {
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
            return Err(GradientMismatch::Coordinate { index, numeric, exact });
        }
        compared += 1;
    }
    if compared < 4 * skipped || compared < 10 {
        return Err(GradientMismatch::TooFewComparable { compared, skipped });
    }
    Ok(compared)
}

/// Writes a `torch.save`-style zip: `archive/data.pkl` holding `pickle`, and raw storages `archive/data/KEY`. For
/// tests of the `.pt` reader on hostile or broken files.
pub fn write_torch_zip(path: &std::path::Path, pickle: &[u8], storages: &[(&str, &[u8])]) -> std::io::Result<()> {
    use std::io::Write;
    let mut zip = zip::ZipWriter::new(std::fs::File::create(path)?);
    let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    zip.start_file("archive/data.pkl", options)
        .map_err(std::io::Error::other)?;
    zip.write_all(pickle)?;
    for (key, bytes) in storages {
        zip.start_file(format!("archive/data/{key}"), options)
            .map_err(std::io::Error::other)?;
        zip.write_all(bytes)?;
    }
    zip.finish().map_err(std::io::Error::other)?;
    Ok(())
}

/// A pickle of `depth` nested tuples (`((( ... )))`): recursion over it would overflow the stack.
pub fn nested_tuples_pickle(depth: usize) -> Vec<u8> {
    let mut pickle = vec![0x80, 2];
    pickle.extend(std::iter::repeat_n(b'(', depth));
    pickle.extend(std::iter::repeat_n(b't', depth));
    pickle.push(b'.');
    pickle
}

/// A pickle whose every level is a tuple of ten memo copies of the level below: 10^`levels` values if expanded.
pub fn memo_bomb_pickle(levels: u8) -> Vec<u8> {
    let mut pickle = vec![0x80, 2, b')', b'q', 0];
    for level in 0..levels {
        pickle.push(b'(');
        for _ in 0..10 {
            pickle.extend([b'h', level]);
        }
        pickle.extend([b't', b'q', level + 1]);
    }
    pickle.push(b'.');
    pickle
}

/// Every float tensor of a module (parameters and BatchNorm statistics) as host values, in visiting order: for
/// comparing two models (a resumed run and an uninterrupted one, two backends, a model and its clone).
pub fn float_tensors<B: burn::tensor::backend::Backend, M: burn::module::Module<B>>(module: &M) -> Vec<Vec<f32>> {
    use burn::module::{ModuleVisitor, Param};
    use burn::tensor::Tensor;
    struct Collect(Vec<Vec<f32>>);
    impl<B: burn::tensor::backend::Backend> ModuleVisitor<B> for Collect {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            self.0
                .push(param.val().into_data().convert::<f32>().to_vec().unwrap_or_default());
        }
    }
    crate::parameters::sync_running_statistics(module);
    let mut collect = Collect(Vec::new());
    module.visit(&mut collect);
    collect.0
}
