//! Attacks against ground truth: a linear classifier's exact worst case, finite differences, and invariants.

use burn::backend::Autodiff;

use burn::module::{AutodiffModule, Module};
use burn::tensor::{Bool, Distribution, Int, Tensor, TensorData};
use tailguard_attacks::{
    ApgdConfig, AttackLoss, AttackPreset, AutoAttackLiteConfig, Ball, FrozenModel, Norm, PgdConfig, RandomStart,
    StartClip, StartRadius, checkpoints,
};
use tailguard_flex::Flex;
use tailguard_models::{Architecture, Classifier, Mode, Model, ModelConfig, Network};

type B = Autodiff<Flex>;

use crate::serial;

fn flags(t: Tensor<Flex, 1, Bool>) -> Vec<bool> {
    t.into_data().convert::<bool>().to_vec().unwrap()
}

fn floats<const D: usize>(t: Tensor<Flex, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec().unwrap()
}

#[test]
fn checkpoint_schedule_matches_the_reference() {
    let _serial = serial();
    assert_eq!(checkpoints(100), vec![22, 41, 57, 70, 80, 87, 93, 99]);
    // torchattacks' 10-iteration APGD: a check after 2, then after every iteration.
    assert_eq!(checkpoints(10), vec![2, 3, 4, 5, 6, 7, 8, 9, 10]);
    // N = 20: windows 4, 3, 2, 1, ... (0.22 N = 4, 0.03 N -> 1, 0.06 N -> 1).
    assert_eq!(
        checkpoints(20),
        vec![4, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20]
    );
    // N = 50: windows 11, 10, 9, 8, 7, then 6 would end at 51 > 50.
    assert_eq!(checkpoints(50), vec![11, 21, 30, 38, 45]);
}

#[test]
fn published_checkpoint_formula_agrees_at_100() {
    let _serial = serial();
    // w_j = ceil(p_j N), p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06).
    let (mut previous, mut current) = (0.0f64, 0.22f64);
    let mut marks = Vec::new();
    while current <= 1.0 {
        marks.push((current * 100.0 - 1e-9).ceil() as usize);
        let next = current + (current - previous - 0.03).max(0.06);
        previous = current;
        current = next;
    }
    assert_eq!(marks, checkpoints(100));
}

/// A linear model on 3x4x4 images and the exact minimum, over the eps-ball intersected with [0, 1], of
/// `z_y - z_t` for every wrong class t: per pixel the minimum sits at a bound chosen by the sign of `w_y - w_t`.
struct LinearCase {
    model: Model<B>,
    images: Tensor<Flex, 4>,
    labels: Tensor<Flex, 1, Int>,
    /// Smallest achievable margin per sample (negative: breakable).
    worst_margin: Vec<f32>,
}

fn linear_case(eps: f64, n: usize) -> LinearCase {
    let device = Default::default();
    let classes = 5;
    let model = ModelConfig::new(Architecture::Linear, classes)
        .with_input_shape([3, 4, 4])
        .init::<B>(&device)
        .unwrap();
    let Network::Linear(linear) = &model.network else {
        unreachable!()
    };
    let weight = floats(linear.head.weight.val().inner()); // (48, classes), row-major
    let bias = floats(linear.head.bias.as_ref().unwrap().val().inner());
    let images = Tensor::<Flex, 4>::random([n, 3, 4, 4], Distribution::Uniform(0.0, 1.0), &device);
    let logits = model.valid().forward(images.clone(), Mode::Inference);
    let labels = logits.argmax(1).reshape([n]); // the model is right on every clean point
    let x = floats(images.clone());
    let y: Vec<i64> = labels.clone().into_data().convert::<i64>().to_vec().unwrap();
    let d = 48;
    let worst_margin = (0..n)
        .map(|i| {
            let yi = y[i] as usize;
            (0..classes)
                .filter(|&t| t != yi)
                .map(|t| {
                    let mut margin = bias[yi] - bias[t];
                    for j in 0..d {
                        let w = weight[j * classes + yi] - weight[j * classes + t];
                        let v = x[i * d + j] as f64;
                        let lower = (v - eps).max(0.0) as f32;
                        let upper = (v + eps).min(1.0) as f32;
                        margin += (w * lower).min(w * upper);
                    }
                    margin
                })
                .fold(f32::INFINITY, f32::min)
        })
        .collect();
    LinearCase {
        model,
        images,
        labels,
        worst_margin,
    }
}

#[test]
fn attacks_agree_with_the_closed_form_worst_case_of_a_linear_model() {
    let _serial = serial();
    <B as burn::tensor::backend::Backend>::seed(&Default::default(), 5);
    let eps = 0.05;
    let case = linear_case(eps, 96);
    let frozen = FrozenModel::new(&case.model);
    let breakable: Vec<bool> = case.worst_margin.iter().map(|&m| m < 0.0).collect();
    let clear: Vec<bool> = case.worst_margin.iter().map(|&m| m.abs() > 1e-3).collect();
    let n_breakable = breakable.iter().filter(|&&b| b).count();
    assert!(
        n_breakable > 10 && n_breakable < 86,
        "{n_breakable} breakable points: choose another eps"
    );

    let apgd = ApgdConfig::new().with_eps(eps);
    let all = model_correct(&frozen, &case);
    let (_, robust_t) = apgd.apgd_t(&frozen, case.images.clone(), case.labels.clone(), all.clone());
    let (_, robust_aa, _) =
        AutoAttackLiteConfig::new()
            .with_apgd(apgd)
            .run(&frozen, case.images.clone(), case.labels.clone());
    let pgd = PgdConfig::new().with_eps(eps).with_steps(20).with_step_size(eps / 4.0);
    let pgd_adv = pgd.perturb(&frozen, case.images.clone(), case.labels.clone(), None);
    let robust_pgd = frozen.correct(pgd_adv, case.labels.clone());

    for (i, ((&b, &c), ((&t, &a), &p))) in breakable
        .iter()
        .zip(&clear)
        .zip(flags(robust_t).iter().zip(&flags(robust_aa)).zip(&flags(robust_pgd)))
        .enumerate()
    {
        if !c {
            continue; // within float rounding of the boundary
        }
        if b {
            assert!(
                !t,
                "APGD-T missed breakable point {i} (worst margin {})",
                case.worst_margin[i]
            );
            assert!(!a, "AA-lite missed breakable point {i}");
        } else {
            assert!(t && a && p, "point {i} is provably robust but an attack broke it");
        }
    }
}

fn model_correct(frozen: &FrozenModel<B, Model<B>>, case: &LinearCase) -> Tensor<Flex, 1, Bool> {
    frozen.correct(case.images.clone(), case.labels.clone())
}

/// A small CNN whose BatchNorm running statistics are no longer the initial (0, 1).
fn warmed_up_cnn() -> Model<B> {
    let device = Default::default();
    let model = ModelConfig::new(Architecture::SmallCnn { width: 4 }, 6)
        .init::<B>(&device)
        .unwrap();
    for shift in 0..3 {
        let x = Tensor::<B, 4>::random(
            [16, 3, 8, 8],
            Distribution::Normal(0.3 + 0.2 * shift as f64, 0.2),
            &device,
        );
        let _ = model.forward(x, Mode::Train);
    }
    model
}

fn record_bytes(model: &Model<B>) -> Vec<u8> {
    use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
    Recorder::<B>::record(
        &NamedMpkBytesRecorder::<FullPrecisionSettings>::new(),
        model.clone().into_record(),
        (),
    )
    .unwrap()
}

#[test]
fn attacks_stay_in_the_ball_and_box_and_leave_the_model_alone() {
    let _serial = serial();
    let device = Default::default();
    let model = warmed_up_cnn();
    let before = record_bytes(&model);
    let frozen = FrozenModel::new(&model);
    let n = 12;
    // Pixels at 0 and 1 exercise the box.
    let images = Tensor::<Flex, 4>::random([n, 3, 8, 8], Distribution::Uniform(-0.5, 1.5), &device).clamp(0.0, 1.0);
    let labels = Tensor::<Flex, 1, Int>::from_data(
        TensorData::new((0..n as i64).map(|i| i % 6).collect::<Vec<_>>(), [n]),
        &device,
    );
    let eps = 8.0 / 255.0;

    // AA+ is its parts (each checked here) run in sequence, at several times standard AA's cost: left out.
    for preset in AttackPreset::ALL.into_iter().filter(|p| *p != AttackPreset::AaPlus) {
        let outcome = preset.run(&frozen, images.clone(), labels.clone(), eps);
        let budget = if preset == AttackPreset::TaetTraining {
            0.031
        } else {
            eps
        };
        let distance: f32 = (outcome.adversarial.clone() - images.clone()).abs().max().into_scalar();
        let low: f32 = outcome.adversarial.clone().min().into_scalar();
        let high: f32 = outcome.adversarial.clone().max().into_scalar();
        assert!(distance <= budget as f32 + 1e-6, "{preset}: distance {distance}");
        assert!(low >= 0.0 && high <= 1.0, "{preset}: pixels in [{low}, {high}]");
    }
    // Per-sample budgets: sample i may move at most eps_i.
    let budgets: Vec<f32> = (0..n).map(|i| i as f32 / 255.0).collect();
    let eps_t = Tensor::<Flex, 1>::from_data(TensorData::new(budgets.clone(), [n]), &device);
    let adv = PgdConfig::new()
        .with_eps(eps)
        .perturb_with_budgets(&frozen, images.clone(), labels.clone(), None, eps_t);
    let moved = floats(
        (adv - images.clone())
            .abs()
            .max_dim(3)
            .max_dim(2)
            .max_dim(1)
            .reshape([n]),
    );
    for (i, (m, b)) in moved.iter().zip(&budgets).enumerate() {
        assert!(*m <= b + 1e-6, "sample {i} moved {m} with budget {b}");
    }
    assert!(moved[n - 1] > 0.5 * budgets[n - 1], "the attack should use its budget");
    assert_eq!(
        record_bytes(&model),
        before,
        "attacks must not change parameters or running statistics"
    );
}

#[test]
fn attack_loss_gradients_match_finite_differences() {
    let _serial = serial();
    let device = Default::default();
    <Flex as burn::tensor::backend::Backend>::seed(&device, 11);
    let model = warmed_up_cnn();
    let frozen = FrozenModel::new(&model);
    let n = 3;
    let images = Tensor::<Flex, 4>::random([n, 3, 8, 8], Distribution::Uniform(0.2, 0.8), &device);
    let labels = Tensor::<Flex, 1, Int>::from_ints([0, 3, 5], &device);
    let targets = Tensor::<Flex, 1, Int>::from_ints([1, 2, 4], &device);
    let losses = [
        (AttackLoss::CrossEntropy, None),
        (AttackLoss::CrossEntropy, Some(targets.clone())),
        // kappa 5 rather than 50: the code path is the same, and a loss near -50 per sample leaves too few f32
        // digits for a central difference.
        (AttackLoss::CwMargin { kappa: 5.0 }, None),
        (AttackLoss::CwMargin { kappa: 5.0 }, Some(targets.clone())),
        (AttackLoss::Dlr, None),
        (AttackLoss::Dlr, Some(targets)),
    ];
    let inner = model.valid();
    for (loss, target) in losses {
        let probe = frozen.probe(images.clone(), loss, labels.clone(), target.clone());
        let gradient = floats(probe.gradient);
        let total_at = |data: Vec<f32>| -> f64 {
            let x = Tensor::<Flex, 4>::from_data(TensorData::new(data, [n, 3, 8, 8]), &device);
            let logits = inner.forward(x, Mode::Inference);
            loss.per_sample(logits, labels.clone(), target.clone())
                .sum()
                .into_scalar() as f64
        };
        let base = floats(images.clone());
        let result = tailguard_models::testing::check_gradient(|data| total_at(data.to_vec()), &base, &gradient, 37);
        assert!(
            result.is_ok(),
            "{loss:?} targeted={}: {}",
            target.is_some(),
            result.unwrap_err()
        );
    }
}

#[test]
fn sign_of_a_zero_gradient_is_zero() {
    let _serial = serial();
    // PyTorch's sign(0) = 0: a pixel with no gradient does not move.
    let t = Tensor::<Flex, 1>::from_floats([-2.0, 0.0, 3.0], &Default::default());
    assert_eq!(floats(t.sign()), vec![-1.0, 0.0, 1.0]);
}

#[test]
fn fgsm_on_a_linear_model_moves_every_pixel_by_eps_against_the_margin() {
    let _serial = serial();
    let case = linear_case(0.03, 4);
    let frozen = FrozenModel::new(&case.model);
    let images = Tensor::<Flex, 4>::full([4, 3, 4, 4], 0.5, &Default::default());
    let adv = PgdConfig::fgsm(0.03).perturb(&frozen, images.clone(), case.labels.clone(), None);
    let moved = floats((adv - images).abs());
    // Interior pixels of a linear model all have non-zero gradient: FGSM moves each by exactly eps.
    assert!(moved.iter().all(|m| (m - 0.03).abs() < 1e-6), "{moved:?}");
}

#[test]
fn starts_follow_their_radius_and_clip() {
    let _serial = serial();
    let device = Default::default();
    // Pixels at 0 and 1, budgets 0 and 0.02: the start clip and radius decide where the first gradient is taken.
    let images = Tensor::<Flex, 4>::from_data(TensorData::new(vec![0.0f32, 1.0, 0.5, 0.5], [2, 1, 1, 2]), &device);
    let ball = Ball::new(images.clone(), Tensor::from_floats([0.0, 0.02], &device));
    let distance = |x: Tensor<Flex, 4>| floats((x - images.clone()).abs());
    let pgd = PgdConfig::new().with_eps(0.05).with_start(RandomStart::Uniform);
    // Each sample's budget: the zero-budget sample starts at its image.
    let budget = distance(pgd.clone().with_start_clip(StartClip::None).first_iterate(&ball, None));
    assert!(
        budget[..2].iter().all(|&d| d == 0.0) && budget[2..].iter().all(|&d| d <= 0.02 + 1e-6),
        "{budget:?}"
    );
    // The configured eps (RobustLT's port): every sample draws within 0.05, and only the box clips it.
    let configured = pgd.clone().with_start_radius(StartRadius::Configured);
    let unclipped = configured
        .clone()
        .with_start_clip(StartClip::None)
        .first_iterate(&ball, None);
    let d = distance(unclipped);
    assert!(
        d.iter().all(|&d| d <= 0.05 + 1e-6) && d[..2].iter().any(|&d| d > 0.0),
        "{d:?}"
    );
    let boxed = configured.with_start_clip(StartClip::Box).first_iterate(&ball, None);
    assert!(floats(boxed).iter().all(|&v| (0.0..=1.0).contains(&v)));
    // A given start is used as it is, clipped as configured.
    let given = Tensor::<Flex, 4>::from_data(TensorData::new(vec![-0.1f32, 1.2, 0.6, 0.4], [2, 1, 1, 2]), &device);
    let kept = floats(
        pgd.clone()
            .with_start_clip(StartClip::None)
            .first_iterate(&ball, Some(given.clone())),
    );
    assert_eq!(kept, vec![-0.1, 1.2, 0.6, 0.4]);
    let projected = floats(pgd.with_start_clip(StartClip::Ball).first_iterate(&ball, Some(given)));
    assert_eq!(projected, vec![0.0, 1.0, 0.52, 0.48]);
}

#[test]
fn random_starts_are_inside_the_ball() {
    let _serial = serial();
    let case = linear_case(0.02, 8);
    let frozen = FrozenModel::new(&case.model);
    for start in [
        RandomStart::Uniform,
        RandomStart::Gaussian { std: 0.001 },
        RandomStart::UniformPositive,
    ] {
        let adv = PgdConfig::new().with_eps(0.02).with_steps(0).with_start(start).perturb(
            &frozen,
            case.images.clone(),
            case.labels.clone(),
            None,
        );
        let distance: f32 = (adv.clone() - case.images.clone()).abs().max().into_scalar();
        assert!(distance <= 0.02 + 1e-6 && distance > 0.0, "{start:?}: {distance}");
    }
}

/// The L-inf projection onto a hyperplane within the box: the result lies on the hyperplane, inside [0, 1], and its
/// norm is the smallest that can reach the hyperplane (found independently by bisection on the reachable change).
#[test]
fn fab_projection_is_the_smallest_step_onto_the_hyperplane() {
    let _serial = serial();
    use tailguard_attacks::fab::project_linf;
    let device = Default::default();
    <Flex as burn::tensor::backend::Backend>::seed(&device, 11);
    let (rows, dims) = (24, 40);
    let t = Tensor::<Flex, 2>::random([rows, dims], Distribution::Uniform(0.0, 1.0), &device);
    let mut w = Tensor::<Flex, 2>::random([rows, dims], Distribution::Uniform(-1.0, 1.0), &device);
    // Some zero weights, which the projection must leave alone.
    let mask: Vec<bool> = (0..rows * dims).map(|i| i % 7 == 3).collect();
    w = w.mask_fill(Tensor::from_data(TensorData::new(mask, [rows, dims]), &device), 0.0);
    let shift = Tensor::<Flex, 1>::random([rows], Distribution::Uniform(-3.0, 3.0), &device);
    let b = (w.clone() * t.clone()).sum_dim(1).reshape([rows]) + shift;
    let d = floats(project_linf(t.clone(), w.clone(), b.clone()));
    let (t, w, b) = (floats(t), floats(w), floats(b));
    let mut checked = 0;
    for r in 0..rows {
        let row = |v: &[f32]| v[r * dims..(r + 1) * dims].to_vec();
        let (tr, wr, dr) = (row(&t), row(&w), row(&d));
        let target = b[r] as f64 - tr.iter().zip(&wr).map(|(x, w)| (*x * *w) as f64).sum::<f64>();
        // The most w . x can change within radius rho, moving each coordinate towards the sign that helps.
        let reach = |rho: f64| -> f64 {
            tr.iter()
                .zip(&wr)
                .map(|(&x, &w)| {
                    let room = if (w as f64) * target > 0.0 {
                        1.0 - x as f64
                    } else {
                        x as f64
                    };
                    (w as f64).abs() * rho.min(room)
                })
                .sum()
        };
        let norm = dr.iter().fold(0f64, |m, v| m.max(v.abs() as f64));
        for ((x, w), step) in tr.iter().zip(&wr).zip(&dr) {
            assert!((-1e-5..=1.0 + 1e-5).contains(&(x + step)), "row {r} leaves the box");
            if *w == 0.0 {
                assert_eq!(*step, 0.0, "row {r} moves a coordinate with zero weight");
            }
        }
        if reach(1.0) < target.abs() - 1e-4 {
            continue; // the box cannot reach the hyperplane: the projection goes as far as it can
        }
        let reached = tr
            .iter()
            .zip(&wr)
            .zip(&dr)
            .map(|((x, w), s)| ((x + s) * w) as f64)
            .sum::<f64>();
        assert!(
            (reached - b[r] as f64).abs() < 1e-3,
            "row {r}: w.x = {reached}, b = {}",
            b[r]
        );
        let (mut lo, mut hi) = (0.0, 1.0);
        for _ in 0..60 {
            let mid = 0.5 * (lo + hi);
            if reach(mid) >= target.abs() { hi = mid } else { lo = mid }
        }
        assert!((norm - hi).abs() < 1e-4, "row {r}: norm {norm}, smallest possible {hi}");
        checked += 1;
    }
    assert!(checked >= 12, "only {checked} rows could reach their hyperplane");
}

#[test]
fn fab_t_and_square_agree_with_the_closed_form_worst_case_of_a_linear_model() {
    let _serial = serial();
    use tailguard_attacks::{FabConfig, SquareConfig};
    // Seeded: the linear model and images are the same on every run, whichever tests ran before.
    <B as burn::tensor::backend::Backend>::seed(&Default::default(), 5);
    let eps = 0.05;
    let case = linear_case(eps, 96);
    let frozen = FrozenModel::new(&case.model);
    let all = model_correct(&frozen, &case);
    let (fab_adv, fab_robust) =
        FabConfig::new()
            .with_eps(eps)
            .fab_t(&frozen, case.images.clone(), case.labels.clone(), all.clone());
    let (square_adv, square_robust) = SquareConfig::new().with_eps(eps).with_queries(1000).square(
        &frozen,
        case.images.clone(),
        case.labels.clone(),
        all,
    );
    let (fab, square) = (flags(fab_robust), flags(square_robust));
    let (mut breakable, mut fab_broke, mut square_broke) = (0, 0, 0);
    for i in 0..96 {
        let margin = case.worst_margin[i];
        if margin > 1e-3 {
            assert!(
                fab[i] && square[i],
                "point {i} is provably robust but an attack broke it"
            );
        } else if margin < -1e-3 {
            breakable += 1;
            fab_broke += usize::from(!fab[i]);
            square_broke += usize::from(!square[i]);
        }
    }
    // On a linear model FAB's linearisation is exact: it finds every breakable point. Square, blind, finds many.
    assert!(breakable > 10, "{breakable} breakable points");
    assert_eq!(fab_broke, breakable, "FAB-T broke {fab_broke} of {breakable}");
    assert!(
        square_broke * 2 >= breakable,
        "Square broke {square_broke} of {breakable}"
    );
    // Every result stays in the eps-ball and the box.
    let x = floats(case.images.clone());
    for adv in [floats(fab_adv), floats(square_adv)] {
        for (a, c) in adv.iter().zip(&x) {
            assert!((a - c).abs() <= eps as f32 + 1e-6 && (0.0..=1.0).contains(a));
        }
    }
}

/// Mean, standard deviation, minimum and maximum of `values`.
fn moments(values: &[f32]) -> (f64, f64, f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = values.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
    let min = values.iter().fold(f64::INFINITY, |m, &v| m.min(v as f64));
    let max = values.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
    (mean, var.sqrt(), min, max)
}

#[test]
fn start_draws_follow_the_reference_distributions_and_the_clip_is_separate() {
    let _serial = serial();
    // The reference codes draw `0.001 * torch.randn` (TRADES, AT-BSL, TAET), `uniform_(-eps, eps)` (PGD-AT, RobustLT's
    // port) and RoBal's one-sided `uniform_(0, eps)`; the parity fixtures inject their starts, so the draws are
    // checked here by their moments over 153,600 pixels (standard errors well below the tolerances), and the clip
    // on its own: at a black image half of a Gaussian start lies below 0, which only the box clip removes.
    let device = Default::default();
    <Flex as burn::tensor::backend::Backend>::seed(&device, 11);
    let eps = 8.0 / 255.0;
    let grey = Ball::uniform(Tensor::<Flex, 4>::full([50, 3, 32, 32], 0.5, &device), eps);
    let noise = |start: RandomStart| {
        let x = PgdConfig::new()
            .with_eps(eps)
            .with_start(start)
            .with_start_clip(StartClip::None)
            .first_iterate(&grey, None);
        floats(x.sub_scalar(0.5))
    };
    let (mean, std, min, max) = moments(&noise(RandomStart::Gaussian { std: 0.001 }));
    assert!(
        mean.abs() < 2e-5 && (std / 0.001 - 1.0).abs() < 0.02,
        "gaussian {mean} {std}"
    );
    assert!(
        min < -0.004 && max > 0.004,
        "a Gaussian has tails beyond 4 std: {min} {max}"
    );
    let (mean, std, min, max) = moments(&noise(RandomStart::Uniform));
    let uniform_std = eps / 3f64.sqrt();
    assert!(
        mean.abs() < 3e-4 && (std / uniform_std - 1.0).abs() < 0.02,
        "uniform {mean} {std}"
    );
    assert!(
        min >= -eps - 1e-6 && max <= eps + 1e-6 && min < -0.99 * eps && max > 0.99 * eps,
        "{min} {max}"
    );
    let (mean, std, min, max) = moments(&noise(RandomStart::UniformPositive));
    assert!(
        (mean / (eps / 2.0) - 1.0).abs() < 0.02 && (std / (uniform_std / 2.0) - 1.0).abs() < 0.02,
        "{mean} {std}"
    );
    assert!(min >= 0.0 && max <= eps + 1e-6, "{min} {max}");

    let black = Ball::uniform(Tensor::<Flex, 4>::zeros([50, 3, 32, 32], &device), eps);
    let gaussian = PgdConfig::new()
        .with_eps(eps)
        .with_start(RandomStart::Gaussian { std: 0.001 });
    let below = |clip: StartClip| {
        let x = floats(gaussian.clone().with_start_clip(clip).first_iterate(&black, None));
        x.iter().filter(|&&v| v < 0.0).count() as f64 / x.len() as f64
    };
    let unclipped = below(StartClip::None);
    assert!(
        (unclipped - 0.5).abs() < 0.01,
        "TAET's start (no clip) keeps the negative half: {unclipped}"
    );
    assert_eq!(below(StartClip::Box), 0.0, "RobustLT's port clips the start to [0, 1]");
}

/// L2 norm per sample of (N, C, H, W).
fn l2_norms(x: Tensor<Flex, 4>) -> Vec<f32> {
    let n = x.dims()[0];
    floats(x.powi_scalar(2).reshape([n as i32, -1]).sum_dim(1).sqrt().reshape([n]))
}

#[test]
fn l2_attacks_agree_with_the_closed_form_worst_case_of_a_linear_model() {
    let _serial = serial();
    // Images well inside [0, 1] and a budget whose worst-case perturbation moves no pixel by more than eps: the box
    // never binds, so the smallest margin over the L2 ball is exactly z_y - z_t - eps |w_y - w_t|_2.
    <B as burn::tensor::backend::Backend>::seed(&Default::default(), 7);
    let device = Default::default();
    let (eps, n, classes, d) = (0.03, 96, 5, 48);
    let model = ModelConfig::new(Architecture::Linear, classes)
        .with_input_shape([3, 4, 4])
        .init::<B>(&device)
        .unwrap();
    let Network::Linear(linear) = &model.network else {
        unreachable!()
    };
    let weight = floats(linear.head.weight.val().inner());
    let images = Tensor::<Flex, 4>::random([n, 3, 4, 4], Distribution::Uniform(0.3, 0.7), &device);
    let logits = model.valid().forward(images.clone(), Mode::Inference);
    let labels = logits.clone().argmax(1).reshape([n]);
    let z = floats(logits);
    let y: Vec<i64> = labels.clone().into_data().convert::<i64>().to_vec().unwrap();
    let worst: Vec<f32> = (0..n)
        .map(|i| {
            let yi = y[i] as usize;
            (0..classes)
                .filter(|&t| t != yi)
                .map(|t| {
                    let norm = (0..d)
                        .map(|j| (weight[j * classes + yi] - weight[j * classes + t]).powi(2))
                        .sum::<f32>()
                        .sqrt();
                    z[i * classes + yi] - z[i * classes + t] - eps as f32 * norm
                })
                .fold(f32::INFINITY, f32::min)
        })
        .collect();
    let breakable = worst.iter().filter(|&&m| m < -1e-3).count();
    assert!(
        (10..86).contains(&breakable),
        "{breakable} breakable points: choose another eps"
    );

    let frozen = FrozenModel::new(&model);
    let norm = Norm::L2;
    let lite = AttackPreset::AaLite.run_in(&frozen, images.clone(), labels.clone(), eps, norm);
    let pgd = AttackPreset::Pgd20.run_in(&frozen, images.clone(), labels.clone(), eps, norm);
    let fgsm = AttackPreset::Fgsm.run_in(&frozen, images.clone(), labels.clone(), eps, norm);
    for (name, outcome) in [("aa-lite", &lite), ("pgd20", &pgd), ("fgsm", &fgsm)] {
        let moved = l2_norms(outcome.adversarial.clone() - images.clone());
        assert!(
            moved.iter().all(|&m| m <= eps as f32 + 1e-5),
            "{name} left the ball: {moved:?}"
        );
    }
    // FAB's L2 projection is exact on a linear model: targeted and untargeted, it finds every breakable point.
    // Square never breaks a provably robust one.
    let fab = AttackPreset::FabT.run_in(&frozen, images.clone(), labels.clone(), eps, norm);
    let untargeted = AttackPreset::Fab.run_in(&frozen, images.clone(), labels.clone(), eps, norm);
    let square = AttackPreset::Square.run_in(&frozen, images.clone(), labels.clone(), eps, norm);
    for (name, outcome) in [("fab-t", &fab), ("fab", &untargeted), ("square", &square)] {
        let moved = l2_norms(outcome.adversarial.clone() - images.clone());
        assert!(
            moved.iter().all(|&m| m <= eps as f32 + 1e-5),
            "{name} left the ball: {moved:?}"
        );
    }
    let (lite, pgd) = (flags(lite.robust), flags(pgd.robust));
    let (fab, square, untargeted) = (flags(fab.robust), flags(square.robust), flags(untargeted.robust));
    for i in 0..n {
        if worst[i].abs() < 1e-3 {
            continue; // within float rounding of the boundary
        }
        if worst[i] < 0.0 {
            assert!(
                !lite[i],
                "AA-lite L2 missed breakable point {i} (worst margin {})",
                worst[i]
            );
            assert!(
                !fab[i],
                "FAB-T L2 missed breakable point {i} (worst margin {})",
                worst[i]
            );
            assert!(
                !untargeted[i],
                "FAB L2 missed breakable point {i} (worst margin {})",
                worst[i]
            );
        } else {
            let all = lite[i] && pgd[i] && fab[i] && square[i] && untargeted[i];
            assert!(all, "point {i} is provably L2-robust but an attack broke it");
        }
    }
    assert!(square.iter().any(|&r| !r), "Square broke nothing");
    // The same budget read as L-inf is a far larger set: the L-inf attack breaks more.
    let linf = flags(
        AttackPreset::AaLite
            .run(&frozen, images.clone(), labels.clone(), eps)
            .robust,
    );
    assert!(linf.iter().filter(|&&r| r).count() < lite.iter().filter(|&&r| r).count());
}

#[test]
fn l2_attacks_stay_in_the_ball_and_box() {
    let _serial = serial();
    let device = Default::default();
    let model = warmed_up_cnn();
    let frozen = FrozenModel::new(&model);
    let n = 8;
    let images = Tensor::<Flex, 4>::random([n, 3, 8, 8], Distribution::Uniform(-0.5, 1.5), &device).clamp(0.0, 1.0);
    let labels = Tensor::<Flex, 1, Int>::from_data(
        TensorData::new((0..n as i64).map(|i| i % 6).collect::<Vec<_>>(), [n]),
        &device,
    );
    let eps = 0.5;
    // Left out here for time: the presets that repeat a checked one's iterations (restarts, 20 gradient samples per
    // step, AA+'s sequence of checked parts); the L-inf test above runs all but AA+.
    let repeats = [
        AttackPreset::AaPlus,
        AttackPreset::AaRand,
        AttackPreset::ApgdCePlus,
        AttackPreset::ApgdDlrPlus,
        AttackPreset::ApgdCeEot,
        AttackPreset::ApgdDlrEot,
    ];
    let checked = AttackPreset::ALL
        .into_iter()
        .filter(|p| p.supports(Norm::L2) && !repeats.contains(p));
    for preset in checked {
        let outcome = preset.run_in(&frozen, images.clone(), labels.clone(), eps, Norm::L2);
        let moved = l2_norms(outcome.adversarial.clone() - images.clone());
        let low: f32 = outcome.adversarial.clone().min().into_scalar();
        let high: f32 = outcome.adversarial.clone().max().into_scalar();
        assert!(
            moved.iter().all(|&m| m <= eps as f32 + 1e-5),
            "{preset}: moved {moved:?}"
        );
        assert!(low >= 0.0 && high <= 1.0, "{preset}: pixels in [{low}, {high}]");
        if preset.pgd_in(eps, Norm::L2).is_some() {
            // The L2 steps use the budget: some image moves more than a tenth of it (AutoAttack returns clean images
            // where it fails, so only the PGD-type attacks are checked here).
            assert!(moved.iter().any(|&m| m > 0.1 * eps as f32), "{preset}: moved {moved:?}");
        }
    }
    assert!(AttackPreset::Aa.supports(Norm::L2) && !AttackPreset::TaetTraining.supports(Norm::L2));
    let bad = PgdConfig::new()
        .with_norm(Norm::L2)
        .with_start(RandomStart::UniformPositive);
    assert!(bad.validate().unwrap_err().to_string().contains("L-inf ball only"));
}

#[test]
fn fab_l2_projection_is_the_smallest_step_onto_the_hyperplane() {
    let _serial = serial();
    use tailguard_attacks::fab::project_l2;
    let device = Default::default();
    <Flex as burn::tensor::backend::Backend>::seed(&device, 13);
    let (rows, dims) = (24, 40);
    let t = Tensor::<Flex, 2>::random([rows, dims], Distribution::Uniform(0.0, 1.0), &device);
    let mut w = Tensor::<Flex, 2>::random([rows, dims], Distribution::Uniform(-1.0, 1.0), &device);
    let mask: Vec<bool> = (0..rows * dims).map(|i| i % 7 == 3).collect();
    w = w.mask_fill(Tensor::from_data(TensorData::new(mask, [rows, dims]), &device), 0.0);
    let shift = Tensor::<Flex, 1>::random([rows], Distribution::Uniform(-3.0, 3.0), &device);
    let b = (w.clone() * t.clone()).sum_dim(1).reshape([rows]) + shift;
    let d = floats(project_l2(t.clone(), w.clone(), b.clone()));
    let (t, w, b) = (floats(t), floats(w), floats(b));
    let (mut checked, mut clipped) = (0, 0);
    for r in 0..rows {
        let row = |v: &[f32]| {
            v[r * dims..(r + 1) * dims]
                .iter()
                .map(|&x| x as f64)
                .collect::<Vec<f64>>()
        };
        let (tr, wr, dr) = (row(&t), row(&w), row(&d));
        for ((x, w), step) in tr.iter().zip(&wr).zip(&dr) {
            assert!((-1e-5..=1.0 + 1e-5).contains(&(x + step)), "row {r} leaves the box");
            if *w == 0.0 {
                assert_eq!(*step, 0.0, "row {r} moves a coordinate with zero weight");
            }
        }
        // KKT: the smallest L2 step to w . (t + d) = b in the box is d_i = clamp(-lambda w_i, -t_i, 1 - t_i) for the
        // lambda (of the sign of w . t - b) that reaches the plane; the reach is monotone in lambda, so bisect.
        let gap = tr.iter().zip(&wr).map(|(x, w)| x * w).sum::<f64>() - b[r] as f64;
        let step = |lambda: f64| -> Vec<f64> {
            tr.iter()
                .zip(&wr)
                .map(|(x, w)| (-lambda * w).clamp(-x, 1.0 - x))
                .collect()
        };
        let change = |lambda: f64| -> f64 { step(lambda).iter().zip(&wr).map(|(s, w)| s * w).sum() };
        let big = 1e6 * gap.signum();
        if change(big).abs() < gap.abs() - 1e-4 {
            continue; // the box cannot reach the hyperplane
        }
        let (mut lo, mut hi) = (0.0, big);
        for _ in 0..200 {
            let mid = 0.5 * (lo + hi);
            if change(mid).abs() >= gap.abs() {
                hi = mid
            } else {
                lo = mid
            }
        }
        let expected = step(hi);
        let worst = expected.iter().zip(&dr).map(|(e, d)| (e - d).abs()).fold(0.0, f64::max);
        assert!(worst < 1e-3, "row {r}: step differs from the KKT solution by {worst}");
        if expected
            .iter()
            .zip(&tr)
            .any(|(e, x)| (x + e) <= 1e-9 || (x + e) >= 1.0 - 1e-9)
        {
            clipped += 1;
        }
        checked += 1;
    }
    assert!(checked >= 12, "only {checked} rows could reach their hyperplane");
    assert!(clipped >= 4, "only {clipped} rows exercise the box");
}
