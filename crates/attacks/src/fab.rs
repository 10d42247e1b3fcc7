//! FAB-T (Croce and Hein 2020), the targeted fast adaptive boundary attack in the L-inf or the L2 ball, as
//! AutoAttack's standard version runs it (`fra31/auto-attack`, `fab_base.py`, `fab_pt.py`, `fab_projections.py`): for
//! each of the 9 most likely wrong classes of the clean logits in turn, 100 iterations that linearise the boundary
//! between the true and the target class, project onto it (the exact L-inf or L2 projection intersected with the
//! box), and mix the step
//! from the current iterate with the step from the clean image; adversarial iterates are kept when closer and pulled
//! back by `beta`. One restart, no random start (AutoAttack's `fab-t`). A point counts as broken only if its
//! adversarial image is within `eps`.

use burn::config::Config;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Bool, Distribution, Int, Tensor};
use tailguard_models::Classifier;

use crate::ball::{Norm, l2_norm, l2_normalize};
use crate::probe::{FrozenModel, Inner, predictions};
use crate::subset::Subset;

/// Configuration of FAB-T; defaults are AutoAttack's standard L-inf settings.
#[derive(Config, Debug, PartialEq)]
pub struct FabConfig {
    /// Budget a result must respect to count, in `norm`.
    #[config(default = "8.0 / 255.0")]
    pub eps: f64,
    /// The norm whose distance FAB minimises and whose ball the result must lie in.
    #[config(default = "Norm::Linf")]
    pub norm: Norm,
    /// Iterations per target.
    #[config(default = 100)]
    pub iterations: usize,
    /// How many of the most likely wrong classes to target, at most classes - 1.
    #[config(default = 9)]
    pub target_classes: usize,
    /// Largest weight of the step from the clean image.
    #[config(default = 0.1)]
    pub alpha_max: f64,
    /// Overshoot of each projection step.
    #[config(default = 1.05)]
    pub eta: f64,
    /// Backward step towards the clean image after a success.
    #[config(default = 0.9)]
    pub beta: f64,
    /// Seeds the backend's generator for the random starts of restarts (AutoAttack uses seed 0).
    #[config(default = 0)]
    pub seed: u64,
}

impl FabConfig {
    /// FAB-T on the rows of `images` still flagged `robust` (those rows must hold their clean image). Returns the
    /// adversarial images (unchanged where nothing succeeded) and the robust flags.
    pub fn fab_t<B: AutodiffBackend, M: Classifier<B>>(
        &self,
        model: &FrozenModel<B, M>,
        images: Tensor<Inner<B>, 4>,
        labels: Tensor<Inner<B>, 1, Int>,
        robust: Tensor<Inner<B>, 1, Bool>,
    ) -> (Tensor<Inner<B>, 4>, Tensor<Inner<B>, 1, Bool>) {
        let clean_images = images.clone();
        let mut state = (images, robust);
        for rank in 1..=self.target_classes.min(model.num_classes().saturating_sub(1)) {
            let Some(subset) = Subset::of(&state.1) else { break };
            let clean = subset.rows(&clean_images);
            let y = subset.rows(&labels);
            let (adversarial, still) = self.targeted_run(model, clean, y, rank);
            state = subset.merge(state.0, state.1, adversarial, still);
        }
        state
    }

    /// FAB (untargeted, the `plus` version's `fab`): `restarts` runs on the rows still flagged `robust`, the first
    /// from the clean image, the others from a random point at half the budget; each iteration linearises the
    /// boundary to the wrong class that looks closest (`|z_k - z_y| / |grad (z_k - z_y)|`, the dual norm), which costs
    /// one gradient per class. Returns the adversarial images (unchanged where nothing succeeded) and robust flags.
    pub fn fab<B: AutodiffBackend, M: Classifier<B>>(
        &self,
        model: &FrozenModel<B, M>,
        images: Tensor<Inner<B>, 4>,
        labels: Tensor<Inner<B>, 1, Int>,
        robust: Tensor<Inner<B>, 1, Bool>,
        restarts: usize,
    ) -> (Tensor<Inner<B>, 4>, Tensor<Inner<B>, 1, Bool>) {
        <Inner<B> as Backend>::seed(&images.device(), self.seed);
        let clean_images = images.clone();
        let mut state = (images, robust);
        for restart in 0..restarts {
            let Some(subset) = Subset::of(&state.1) else { break };
            let clean = subset.rows(&clean_images);
            let y = subset.rows(&labels);
            let (adversarial, still) = self.run(model, clean, y, None, restart > 0);
            state = subset.merge(state.0, state.1, adversarial, still);
        }
        state
    }

    /// One targeted run against the class of clean-logit rank `rank` (1 = the most likely wrong class for a
    /// correctly classified point) on `clean` (N, C, H, W); returns (adversarial images, still robust).
    fn targeted_run<B: AutodiffBackend, M: Classifier<B>>(
        &self,
        model: &FrozenModel<B, M>,
        clean: Tensor<Inner<B>, 4>,
        labels: Tensor<Inner<B>, 1, Int>,
        rank: usize,
    ) -> (Tensor<Inner<B>, 4>, Tensor<Inner<B>, 1, Bool>) {
        let n = clean.dims()[0];
        let (_, order) = model.logits(clean.clone()).sort_descending_with_indices(1);
        let targets = order.slice([0..n, rank..rank + 1]).reshape([n]);
        self.run(model, clean, labels, Some(targets), false)
    }

    /// One run on `clean` (N, C, H, W): towards `targets` where given, else towards the closest-looking wrong
    /// class; from the clean image, or with `random_start` from `x + eps / 2 * t / |t|` (the reference's restarts).
    fn run<B: AutodiffBackend, M: Classifier<B>>(
        &self,
        model: &FrozenModel<B, M>,
        clean: Tensor<Inner<B>, 4>,
        labels: Tensor<Inner<B>, 1, Int>,
        targets: Option<Tensor<Inner<B>, 1, Int>>,
        random_start: bool,
    ) -> (Tensor<Inner<B>, 4>, Tensor<Inner<B>, 1, Bool>) {
        let [n, c, h, w] = clean.dims();
        let features = c * h * w;
        let device = clean.device();
        let y = Tensor::<B, 2, Int>::from_inner(labels.clone().reshape([n, 1]));
        let flat = |x: Tensor<Inner<B>, 4>| x.reshape([n, features]);
        let x0 = flat(clean.clone());
        let mut x1 = if random_start {
            let direction = match self.norm {
                Norm::Linf => {
                    let t = Tensor::<Inner<B>, 4>::random([n, c, h, w], Distribution::Uniform(-1.0, 1.0), &device);
                    let largest = t.clone().abs().reshape([n, features]).max_dim(1).reshape([n, 1, 1, 1]);
                    t / largest
                }
                Norm::L2 => l2_normalize(Tensor::<Inner<B>, 4>::random(
                    [n, c, h, w],
                    Distribution::Normal(0.0, 1.0),
                    &device,
                )),
            };
            (clean.clone() + direction.mul_scalar(0.5 * self.eps)).clamp(0.0, 1.0)
        } else {
            clean.clone()
        };
        let mut best = clean.clone();
        let mut best_norm = Tensor::<Inner<B>, 1>::full([n], 1e10, &device);
        for _ in 0..self.iterations {
            // df = z_t - z_y at x1 and its input gradient (the boundary's linearisation).
            let (df, gradient) = match &targets {
                Some(targets) => {
                    let t = Tensor::<B, 2, Int>::from_inner(targets.clone().reshape([n, 1]));
                    let probe = model.probe_with(x1.clone(), |z| {
                        (z.clone().gather(1, t.clone()) - z.gather(1, y.clone())).reshape([n])
                    });
                    (probe.loss, flat(probe.gradient))
                }
                None => self.closest_boundary(model, x1.clone(), &labels),
            };
            let b = df.neg() + (gradient.clone() * flat(x1.clone())).sum_dim(1).reshape([n]);
            let (points, planes, offsets) = (
                Tensor::cat(vec![flat(x1.clone()), x0.clone()], 0),
                Tensor::cat(vec![gradient.clone(), gradient], 0),
                Tensor::cat(vec![b.clone(), b], 0),
            );
            let d3 = match self.norm {
                Norm::Linf => project_linf(points, planes, offsets),
                Norm::L2 => project_l2(points, planes, offsets),
            };
            let a0 = match self.norm {
                Norm::Linf => d3.clone().abs().max_dim(1),
                Norm::L2 => d3.clone().powi_scalar(2).sum_dim(1).sqrt(),
            }
            .clamp_min(1e-8); // (2n, 1)
            let a1 = a0.clone().slice([0..n, 0..1]);
            let a2 = a0.slice([n..2 * n, 0..1]);
            let alpha = (a1.clone() / (a1 + a2))
                .clamp(0.0, self.alpha_max)
                .reshape([n, 1, 1, 1]);
            let d1 = d3.clone().slice([0..n, 0..features]).reshape([n, c, h, w]);
            let d2 = d3.slice([n..2 * n, 0..features]).reshape([n, c, h, w]);
            x1 = ((x1 + d1.mul_scalar(self.eta)) * (alpha.clone().neg().add_scalar(1.0))
                + (clean.clone() + d2.mul_scalar(self.eta)) * alpha)
                .clamp(0.0, 1.0);
            let adversarial = predictions(model.logits(x1.clone())).not_equal(labels.clone());
            let norm = self.distance(x1.clone(), clean.clone());
            let closer = adversarial.clone().bool_and(norm.clone().lower(best_norm.clone()));
            best = best.mask_where(closer.clone().reshape([n, 1, 1, 1]).expand([n, c, h, w]), x1.clone());
            best_norm = best_norm.mask_where(closer, norm);
            // Successful iterates step back towards the clean image.
            let pulled = clean.clone() + (x1.clone() - clean.clone()).mul_scalar(self.beta);
            x1 = x1.mask_where(adversarial.reshape([n, 1, 1, 1]).expand([n, c, h, w]), pulled);
        }
        // AutoAttack's `perturb`: a result counts when it is misclassified and within eps.
        let broken = predictions(model.logits(best.clone()))
            .not_equal(labels)
            .bool_and(self.distance(best.clone(), clean).lower_equal_elem(self.eps));
        (best, broken.bool_not())
    }

    /// The boundary to the wrong class that looks closest at `x` (N, C, H, W): per class k, `z_k - z_y` and its input
    /// gradient; the class with the smallest `|z_k - z_y| / |gradient|_*` (the dual norm: L1 for L-inf, L2 for L2)
    /// is kept. Returns (`z_k - z_y` (N), its gradient (N, D)).
    fn closest_boundary<B: AutodiffBackend, M: Classifier<B>>(
        &self,
        model: &FrozenModel<B, M>,
        x: Tensor<Inner<B>, 4>,
        labels: &Tensor<Inner<B>, 1, Int>,
    ) -> (Tensor<Inner<B>, 1>, Tensor<Inner<B>, 2>) {
        let [n, c, h, w] = x.dims();
        let features = c * h * w;
        let classes = model.num_classes();
        let y = Tensor::<B, 2, Int>::from_inner(labels.clone().reshape([n, 1]));
        let mut differences = Vec::with_capacity(classes);
        let mut gradients = Vec::with_capacity(classes);
        for k in 0..classes {
            let probe = model.probe_with(x.clone(), |z| {
                let z_k = z.clone().slice([0..n, k..k + 1]);
                (z_k - z.gather(1, y.clone())).reshape([n])
            });
            differences.push(probe.loss.reshape([n, 1]));
            gradients.push(probe.gradient.reshape([n, 1, features]));
        }
        let df = Tensor::cat(differences, 1); // (N, K)
        let dg = Tensor::cat(gradients, 1); // (N, K, D)
        let dual = match self.norm {
            Norm::Linf => dg.clone().abs().sum_dim(2),
            Norm::L2 => dg.clone().powi_scalar(2).sum_dim(2).sqrt(),
        }
        .reshape([n, classes]);
        // The true class is never the boundary (the reference sets its difference to 1e10).
        let is_true = labels.clone().reshape([n, 1]).expand([n, classes]).equal(
            Tensor::arange(0..classes as i64, &x.device())
                .unsqueeze::<2>()
                .expand([n, classes]),
        );
        let distance = (df.clone().abs() / dual.add_scalar(1e-12)).mask_fill(is_true, 1e10);
        let closest = distance.argmin(1); // (N, 1)
        let chosen = df.gather(1, closest.clone()).reshape([n]);
        let gradient = dg
            .gather(1, closest.reshape([n, 1, 1]).expand([n, 1, features]))
            .reshape([n, features]);
        (chosen, gradient)
    }

    /// Distance per row in the attack's norm, (N).
    fn distance<B: Backend>(&self, a: Tensor<B, 4>, b: Tensor<B, 4>) -> Tensor<B, 1> {
        let n = a.dims()[0];
        match self.norm {
            Norm::Linf => linf_distance(a, b),
            Norm::L2 => l2_norm(a - b).reshape([n]),
        }
    }
}

/// Largest absolute difference per row, (N).
fn linf_distance<B: Backend>(a: Tensor<B, 4>, b: Tensor<B, 4>) -> Tensor<B, 1> {
    let n = a.dims()[0];
    (a - b).abs().reshape([n as i64, -1]).max_dim(1).reshape([n])
}

/// The smallest L-inf step `d` (R, D) that moves each point `t` (R, D) onto its hyperplane `w . x = b` (R) within
/// the box [0, 1] (`fab_projections.projection_linf`: sort the coordinates by how far they can move, find the
/// breakpoint by bisection on cumulative sums, then solve for the step length).
pub fn project_linf<B: Backend>(t: Tensor<B, 2>, w: Tensor<B, 2>, b: Tensor<B, 1>) -> Tensor<B, 2> {
    let [rows, dims] = t.dims();
    let column = |x: Tensor<B, 1>| x.reshape([rows, 1]);
    let row_sum = |x: Tensor<B, 2>| x.sum_dim(1).reshape([rows]);
    // Orient each hyperplane so the point lies on its non-negative side.
    let sign = row_sum(w.clone() * t.clone())
        .sub(b.clone())
        .greater_equal_elem(0.0)
        .float()
        .mul_scalar(2.0)
        .sub_scalar(1.0);
    let w = w * column(sign.clone());
    let b = b * sign;
    let a = w.clone().lower_elem(0.0).float();
    let nonzero = w.clone().not_equal_elem(0.0).float();
    let d = (a.clone() - t.clone()) * nonzero.clone();
    let p = a.clone() - t.clone() * (a.clone().mul_scalar(2.0).sub_scalar(1.0));
    let order = p.clone().argsort(1);
    let b = b - row_sum(w.clone() * t);
    let b0 = row_sum(w.clone() * d.clone());
    let reversed = order.clone().flip([1]);
    let ws = w.clone().gather(1, reversed.clone());
    let bs2 = ws.clone().neg() * d.clone().gather(1, reversed);
    let s = ws.abs().cumsum(1);
    let sb = bs2.cumsum(1) + column(b0.clone());
    let last = |x: &Tensor<B, 2>| x.clone().slice([0..rows, dims - 1..dims]).reshape([rows]);
    let smallest_p = p
        .clone()
        .gather(1, order.clone().slice([0..rows, 0..1]))
        .reshape([rows]);
    let b2 = last(&sb) - last(&s) * smallest_p;
    let c_l = b.clone().sub(b2).greater_elem(0.0);
    let c2 = b.clone().sub(b0).greater_elem(0.0).bool_and(c_l.clone().bool_not());
    // Bisection for the breakpoint (rows outside c2 compute a value that is not used).
    let device = p.device();
    let mut lb = Tensor::<B, 1>::zeros([rows], &device);
    let mut ub = Tensor::<B, 1>::full([rows], (dims - 1) as f64, &device);
    let steps = (dims as f64).log2().ceil() as usize;
    for _ in 0..steps {
        let mid = (lb.clone() + ub.clone()).div_scalar(2.0).floor();
        let mid_index = column(mid.clone()).int();
        let current = order
            .clone()
            .gather(1, mid_index.clone().neg().add_scalar((dims - 1) as i64));
        let b2 = (sb.clone().gather(1, mid_index.clone())
            - s.clone().gather(1, mid_index) * p.clone().gather(1, current))
        .reshape([rows]);
        let c = b.clone().sub(b2).greater_elem(0.0);
        lb = lb.mask_where(c.clone(), mid.clone());
        ub = mid.mask_where(c, ub);
    }
    let lb = column(lb).int();
    let lambda_l = ((b.clone() - last(&sb)) / last(&s).neg()).clamp_min(0.0);
    let d_l = (a.clone().mul_scalar(2.0).sub_scalar(1.0)) * column(lambda_l);
    let at_lb = |x: &Tensor<B, 2>| x.clone().gather(1, lb.clone()).reshape([rows]);
    let lambda_2 = column(((b - at_lb(&sb)) / at_lb(&s).neg()).clamp_min(0.0));
    let d_2 = d.clone().min_pair(lambda_2.clone().expand([rows, dims])) * a.clone()
        + d.clone().max_pair(lambda_2.neg().expand([rows, dims])) * (a.neg().add_scalar(1.0));
    let d = d.mask_where(column_mask(c2, dims), d_2);
    let d = d.mask_where(column_mask(c_l, dims), d_l);
    d * nonzero
}

/// The smallest L2 step `d` (R, D) that moves each point `t` (R, D) onto its hyperplane `w . x = b` (R) within the
/// box [0, 1] (`fab_projections.projection_l2`): the coordinates are released in the order they hit the box as the
/// step grows along `-w`, the breakpoint found by bisection on the cumulative decrease of `w . x - b`, and the step
/// length solved between breakpoints.
pub fn project_l2<B: Backend>(t: Tensor<B, 2>, w: Tensor<B, 2>, b: Tensor<B, 1>) -> Tensor<B, 2> {
    let [rows, dims] = t.dims();
    let device = t.device();
    let column = |x: Tensor<B, 1>| x.reshape([rows, 1]);
    let row_sum = |x: Tensor<B, 2>| x.sum_dim(1).reshape([rows]);
    const BIG: f64 = 1e12;
    // Orient each hyperplane so the point lies on its non-negative side: c = w . t - b >= 0.
    let c = row_sum(w.clone() * t.clone()) - b;
    let sign = c
        .clone()
        .greater_equal_elem(0.0)
        .float()
        .mul_scalar(2.0)
        .sub_scalar(1.0);
    let w = w * column(sign.clone());
    let c = c * sign;
    let live = w.clone().abs().greater_elem(1e-8);
    let live_f = live.clone().float();
    // The step (along -w) at which each coordinate reaches the box; dead coordinates never do.
    let r = (t.clone() / w.clone())
        .max_pair((t.clone().sub_scalar(1.0)) / w.clone())
        .clamp(-BIG, BIG);
    let r = r.mask_fill(live.clone().bool_not(), BIG);
    let r = r.clone().mask_fill(r.equal_elem(-BIG), BIG);
    let (rs, order) = r.clone().sort_with_indices(1);
    let zero_column = Tensor::<B, 2>::zeros([rows, 1], &device);
    let rs2 = Tensor::cat(vec![rs.clone().slice([0..rows, 1..dims]), zero_column], 1);
    let rs = rs.clone().mask_fill(rs.equal_elem(BIG), 0.0);
    let rs2 = rs2.clone().mask_fill(rs2.equal_elem(BIG), 0.0);
    let w3s = w.clone().powi_scalar(2).gather(1, order);
    let w5 = w3s.clone().sum_dim(1); // (rows, 1)
    let ws = w5.clone() - w3s.cumsum(1);
    let d = (r.clone() * w.clone()).neg() * live_f.clone();
    let first = rs.clone().slice([0..rows, 0..1]);
    let s = Tensor::cat(
        vec![
            w5.clone().neg() * first.clone(),
            ((rs.clone() - rs2) * ws.clone()).cumsum(1) - w5.clone() * first,
        ],
        1,
    ); // (rows, dims + 1)
    let c4 = s
        .clone()
        .slice([0..rows, 0..1])
        .reshape([rows])
        .add(c.clone())
        .lower_elem(0.0);
    let c3 = row_sum(d.clone() * w.clone()).add(c.clone()).greater_elem(0.0);
    let c2 = c4.clone().bool_or(c3).bool_not();
    // Bisection for the breakpoint (rows outside c2 compute a value that is not used).
    let mut lb = Tensor::<B, 1>::zeros([rows], &device);
    let mut ub = Tensor::<B, 1>::full([rows], (dims - 1) as f64, &device);
    for _ in 0..(dims as f64).log2().ceil() as usize {
        let mid = (lb.clone() + ub.clone()).div_scalar(2.0).floor();
        let above = s
            .clone()
            .gather(1, column(mid.clone()).int())
            .reshape([rows])
            .add(c.clone())
            .greater_elem(0.0);
        lb = lb.mask_where(above.clone(), mid.clone());
        ub = mid.mask_where(above, ub);
    }
    let lb = column(lb).int();
    let at_lb = |x: &Tensor<B, 2>| x.clone().gather(1, lb.clone()).reshape([rows]);
    // Every coordinate free: the plain projection onto the hyperplane.
    let alpha_4 = column(c.clone() / w5.reshape([rows]));
    let d_4 = (alpha_4 * w.clone()).neg();
    // Between breakpoints: coordinates past their bound stay there, the rest move by alpha along -w.
    let ws_lb = at_lb(&ws);
    let alpha_2 = ((at_lb(&s) + c) / ws_lb.clone() + at_lb(&rs)).mask_fill(ws_lb.equal_elem(0.0), 0.0);
    let alpha_2 = column(alpha_2).expand([rows, dims]);
    let past = alpha_2.clone().greater(r).float();
    let d_2 = d.clone() * past.clone() - alpha_2 * w * (past.neg().add_scalar(1.0));
    let d = d.mask_where(column_mask(c2, dims), d_2);
    let d = d.mask_where(column_mask(c4, dims), d_4);
    d * live_f
}

fn column_mask<B: Backend>(mask: Tensor<B, 1, Bool>, dims: usize) -> Tensor<B, 2, Bool> {
    let rows = mask.dims()[0];
    mask.reshape([rows, 1]).expand([rows, dims])
}
