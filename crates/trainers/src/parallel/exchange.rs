//! What the devices of a data-parallel run exchange: gradients every step, the trainer's state once at the start,
//! BatchNorm's running statistics when asked.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Tensor, TensorData};
use tailguard_attacks::Inner;

use super::peer::Peer;
use crate::error::TrainError;

/// Replaces the gradients of `model`'s trainable parameters in `grads` by their sum over every device, each
/// device's multiplied by its `share` first. One exchange per step: every gradient, flattened in the model's
/// parameter order (the same on every device and machine, unlike parameter ids), behind one presence flag per
/// parameter, so a parameter without a gradient on every device stays without one.
pub fn reduce_gradients<B: AutodiffBackend, M: Module<B>>(
    peer: &Peer<B>,
    model: &M,
    grads: &mut B::Gradients,
    share: f64,
) -> Result<(), TrainError> {
    struct Take<'g, B: AutodiffBackend> {
        grads: &'g mut B::Gradients,
        flags: Vec<f32>,
        parts: Vec<Tensor<Inner<B>, 1>>,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Take<'_, B> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let tensor = param.val();
            if !tensor.is_require_grad() {
                return; // running statistics and frozen tensors
            }
            let n = tensor.shape().num_elements();
            let (flag, part) = match tensor.grad_remove(self.grads) {
                Some(grad) => (1.0, grad.reshape([n])),
                None => (0.0, Tensor::zeros([n], &tensor.device())),
            };
            self.flags.push(flag);
            self.parts.push(part);
        }
    }
    struct Put<'g, B: AutodiffBackend> {
        grads: &'g mut B::Gradients,
        flags: Vec<f32>,
        summed: Tensor<Inner<B>, 1>,
        index: usize,
        offset: usize,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Put<'_, B> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let tensor = param.val();
            if !tensor.is_require_grad() {
                return;
            }
            let shape = tensor.shape();
            let n = shape.num_elements();
            if self.flags[self.index] > 0.0 {
                let grad = self.summed.clone().narrow(0, self.offset, n).reshape(shape);
                tensor.grad_replace(self.grads, grad);
            }
            self.index += 1;
            self.offset += n;
        }
    }
    let mut take = Take {
        grads,
        flags: Vec::new(),
        parts: Vec::new(),
    };
    model.visit(&mut take);
    let Take { grads, flags, parts } = take;
    if parts.is_empty() {
        return Ok(());
    }
    let p = flags.len();
    let device = parts[0].device();
    let flags = Tensor::<Inner<B>, 1>::from_data(TensorData::new(flags, [p]), &device);
    let gradients = Tensor::cat(parts, 0).mul_scalar(share);
    let summed = peer.sum(Tensor::cat(vec![flags, gradients], 0), "gradient all-reduce")?;
    let total = summed.dims()[0];
    let flags: Vec<f32> = summed
        .clone()
        .narrow(0, 0, p)
        .into_data()
        .convert::<f32>()
        .to_vec()
        .unwrap_or_default();
    let mut put = Put {
        grads,
        flags,
        summed: summed.narrow(0, p, total - p),
        index: 0,
        offset: 0,
    };
    model.visit(&mut put);
    Ok(())
}

/// Bytes packed three to a float: every value below 2^24 is exact in f32, and adding the other devices' zeros
/// keeps it exact, so an all-reduce sum is a broadcast.
const BYTES_PER_FLOAT: usize = 3;

/// Sends `bytes` from the one device that passes `Some` to every device: an exact broadcast made of all-reduce
/// sums (burn-collective 0.21 broadcasts within one machine only).
pub fn broadcast_bytes<B: AutodiffBackend>(peer: &Peer<B>, bytes: Option<Vec<u8>>) -> Result<Vec<u8>, TrainError> {
    let device = peer.device();
    // Header: length in two 24-bit halves, and the number of senders (must be 1).
    let len = bytes.as_ref().map_or(0, Vec::len);
    let header = match &bytes {
        Some(_) => vec![(len & 0xFF_FFFF) as f32, (len >> 24) as f32, 1.0],
        None => vec![0.0; 3],
    };
    let header = peer.sum(
        Tensor::<Inner<B>, 1>::from_data(TensorData::new(header, [3]), device),
        "state broadcast",
    )?;
    let header: Vec<f32> = header.into_data().convert::<f32>().to_vec().unwrap_or_default();
    if header.get(2) != Some(&1.0) {
        return Err(TrainError::StateExchange {
            reason: format!(
                "{} devices sent their state, exactly one (device 0) must",
                header.get(2).copied().unwrap_or(0.0)
            ),
        });
    }
    let len = header[0] as usize | ((header[1] as usize) << 24);
    let words = len.div_ceil(BYTES_PER_FLOAT).max(1);
    let packed: Vec<f32> = match &bytes {
        Some(bytes) => {
            let mut packed: Vec<f32> = bytes
                .chunks(BYTES_PER_FLOAT)
                .map(|c| c.iter().rev().fold(0u32, |acc, &b| (acc << 8) | b as u32) as f32)
                .collect();
            packed.resize(words, 0.0);
            packed
        }
        None => vec![0.0; words],
    };
    let summed = peer.sum(
        Tensor::<Inner<B>, 1>::from_data(TensorData::new(packed, [words]), device),
        "state broadcast",
    )?;
    let packed: Vec<f32> = summed.into_data().convert::<f32>().to_vec().unwrap_or_default();
    let mut out = Vec::with_capacity(words * BYTES_PER_FLOAT);
    for word in packed {
        let word = word as u32;
        out.extend((0..BYTES_PER_FLOAT).map(|i| ((word >> (8 * i)) & 0xFF) as u8));
    }
    out.truncate(len);
    Ok(out)
}

/// `model` with every tensor that is not trained (BatchNorm's running statistics) replaced by its mean over every
/// device.
pub fn average_running_statistics<B: AutodiffBackend, M: Module<B>>(peer: &Peer<B>, model: M) -> Result<M, TrainError> {
    struct Take<B: AutodiffBackend>(Vec<Tensor<Inner<B>, 1>>);
    impl<B: AutodiffBackend> ModuleVisitor<B> for Take<B> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let tensor = param.val();
            if !tensor.is_require_grad() {
                let n = tensor.shape().num_elements();
                self.0.push(tensor.inner().reshape([n]));
            }
        }
    }
    struct Put<B: AutodiffBackend> {
        mean: Tensor<Inner<B>, 1>,
        offset: usize,
    }
    impl<B: AutodiffBackend> ModuleMapper<B> for Put<B> {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
            let tensor = param.val();
            if tensor.is_require_grad() {
                return param;
            }
            let shape = tensor.shape();
            let n = shape.num_elements();
            let mean = self.mean.clone().narrow(0, self.offset, n).reshape(shape);
            self.offset += n;
            Param::initialized(param.id, Tensor::from_inner(mean))
        }
    }
    // Updates burn queues in a running state are applied first, or the visitor would read the values before them.
    tailguard_models::sync_running_statistics(&model);
    let mut take = Take::<B>(Vec::new());
    model.visit(&mut take);
    if take.0.is_empty() {
        return Ok(model);
    }
    let summed = peer.sum(Tensor::cat(take.0, 0), "running-statistics average")?;
    let mean = summed.div_scalar(peer.world() as f64);
    Ok(model.map(&mut Put { mean, offset: 0 }))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use burn::backend::Autodiff;

    use burn::tensor::Tensor;
    use tailguard_collective::{CollectiveConfig, PeerId};
    use tailguard_flex::Flex;
    use tailguard_models::{ModalBatchNorm, ModalBatchNormConfig, Mode};

    use super::*;
    use crate::parallel::config::RunningStatistics;
    use crate::parallel::peer::ExchangeClock;

    type B = Autodiff<Flex>;

    fn running_mean(norm: &ModalBatchNorm<B>) -> Vec<f32> {
        tailguard_models::sync_running_statistics(norm);
        norm.running_mean.value_sync().into_data().to_vec().unwrap()
    }

    #[test]
    fn running_statistics_are_averaged_and_bytes_broadcast_exactly() {
        // Two devices (threads) whose BatchNorm saw different batches: afterwards both hold the mean.
        let results: Vec<(Vec<f32>, Vec<f32>, Vec<u8>)> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..2usize)
                .map(|rank| {
                    scope.spawn(move || {
                        let device = Default::default();
                        let peer = Peer::<B>::new(
                            rank,
                            2,
                            device,
                            Arc::new(ExchangeClock::default()),
                            RunningStatistics::Averaged,
                        );
                        tailguard_collective::register::<Flex>(
                            PeerId::from(rank),
                            device,
                            CollectiveConfig::default().with_num_devices(2),
                        )
                        .unwrap();
                        let norm = ModalBatchNormConfig::new(3).init::<B>(&device);
                        let x = Tensor::<B, 4>::ones([2, 3, 2, 2], &device).mul_scalar(10.0 * (rank as f64 + 1.0));
                        let _ = norm.forward(x, Mode::Train);
                        let before = running_mean(&norm);
                        let norm = average_running_statistics(&peer, norm).unwrap();
                        // A payload whose length is not a multiple of three, with every byte value.
                        let payload: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 256) as u8).collect();
                        let received = broadcast_bytes(&peer, (rank == 0).then_some(payload)).unwrap();
                        tailguard_collective::finish_collective::<Flex>(PeerId::from(rank)).unwrap();
                        (before, running_mean(&norm), received)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        // Momentum 0.1 from 0: the running means were 1.0 and 2.0; both now hold 1.5.
        assert_eq!(results[0].0, vec![1.0; 3]);
        assert_eq!(results[1].0, vec![2.0; 3]);
        for (_, after, _) in &results {
            assert_eq!(after, &vec![1.5; 3]);
        }
        let payload: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 256) as u8).collect();
        assert_eq!(results[0].2, payload);
        assert_eq!(results[1].2, payload);
    }
}
