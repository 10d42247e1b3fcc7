//! Attacking only some rows of a batch (the points still robust) and writing the results back.

use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Int, Tensor, TensorData};

/// The rows of a batch where a flag is set.
pub struct Subset<B: Backend> {
    /// Row indices into the full batch.
    positions: Vec<usize>,
    indices: Tensor<B, 1, Int>,
    batch: usize,
}

impl<B: Backend> Subset<B> {
    /// The rows where `flags` is true; `None` when there are none. Reads the flags on the host (one small
    /// transfer per attack stage, not per step).
    pub fn of(flags: &Tensor<B, 1, Bool>) -> Option<Self> {
        let values: Vec<bool> = flags.to_data().convert::<bool>().to_vec().ok()?;
        let positions: Vec<usize> = values.iter().enumerate().filter(|(_, f)| **f).map(|(i, _)| i).collect();
        if positions.is_empty() {
            return None;
        }
        let data: Vec<i64> = positions.iter().map(|&p| p as i64).collect();
        let indices = Tensor::from_data(TensorData::new(data, [positions.len()]), &flags.device());
        Some(Self {
            positions,
            indices,
            batch: values.len(),
        })
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.positions.len()
    }

    /// Whether no row is selected.
    pub fn is_empty(&self) -> bool {
        self.positions.is_empty()
    }

    /// The selected rows of `x`.
    pub fn rows<const D: usize, K: burn::tensor::BasicOps<B>>(&self, x: &Tensor<B, D, K>) -> Tensor<B, D, K> {
        x.clone().select(0, self.indices.clone())
    }

    /// Writes an attack's results back: rows of the subset that the attack broke (`sub_robust` false) take
    /// `sub_adversarial` and lose their robust flag; all other rows keep their values.
    pub fn merge(
        &self,
        adversarial: Tensor<B, 4>,
        robust: Tensor<B, 1, Bool>,
        sub_adversarial: Tensor<B, 4>,
        sub_robust: Tensor<B, 1, Bool>,
    ) -> (Tensor<B, 4>, Tensor<B, 1, Bool>) {
        let broken: Vec<bool> = sub_robust
            .to_data()
            .convert::<bool>()
            .to_vec::<bool>()
            .expect("bool flags")
            .into_iter()
            .map(|r| !r)
            .collect();
        let mut robust_host: Vec<bool> = robust.to_data().convert::<bool>().to_vec().expect("bool flags");
        let mut source: Vec<i64> = (0..self.batch as i64).collect();
        for (row, (&position, &is_broken)) in self.positions.iter().zip(&broken).enumerate() {
            if is_broken {
                robust_host[position] = false;
                source[position] = (self.batch + row) as i64;
            }
        }
        let device = adversarial.device();
        let adversarial = merge_rows(adversarial, sub_adversarial, source);
        let robust = Tensor::from_data(TensorData::new(robust_host, [self.batch]), &device);
        (adversarial, robust)
    }
}

/// Row `i` of the result is row `source[i]` of `full` stacked on `extra` (indices past `full` pick `extra`).
pub fn merge_rows<B: Backend>(full: Tensor<B, 4>, extra: Tensor<B, 4>, source: Vec<i64>) -> Tensor<B, 4> {
    let n = source.len();
    let device = full.device();
    let indices = Tensor::from_data(TensorData::new(source, [n]), &device);
    Tensor::cat(vec![full, extra], 0).select(0, indices)
}
