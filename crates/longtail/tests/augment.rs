//! AutoAugment and RandAugment operations against torchvision on PIL images, pixel for pixel. The fixtures come from
//! `tests/augment/generate.py` (torchvision and Pillow versions recorded in cases.json).

use serde_json::Value;
use tailguard_longtail::ImageShape;
use tailguard_longtail::augment::ImageOp;
use tailguard_longtail::augment::policy::{
    AUTOAUGMENT_BINS, CIFAR10_POLICY, RANDAUGMENT_BINS, RANDAUGMENT_OPS, apply_sub_policy,
};

struct Fixture {
    meta: Value,
    outputs: Vec<u8>,
    images: Vec<(ImageShape, Vec<u8>)>,
}

fn fixture() -> Fixture {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/augment");
    let meta: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json")).unwrap()).unwrap();
    let outputs = std::fs::read(dir.join("outputs.bin")).unwrap();
    let images = meta["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|image| {
            let shape = ImageShape {
                channels: 3,
                height: image["height"].as_u64().unwrap() as usize,
                width: image["width"].as_u64().unwrap() as usize,
            };
            let hwc: Vec<u8> = image["pixels"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u8)
                .collect();
            (shape, to_chw(&hwc, shape))
        })
        .collect();
    Fixture { meta, outputs, images }
}

fn to_chw(hwc: &[u8], shape: ImageShape) -> Vec<u8> {
    let plane = shape.height * shape.width;
    let mut chw = vec![0; hwc.len()];
    for i in 0..plane {
        for c in 0..shape.channels {
            chw[c * plane + i] = hwc[i * shape.channels + c];
        }
    }
    chw
}

/// The expected output of case `case`, CHW.
fn expected(fx: &Fixture, case: &Value, shape: ImageShape) -> Vec<u8> {
    let offset = case["offset"].as_u64().unwrap() as usize;
    to_chw(&fx.outputs[offset..offset + shape.len()], shape)
}

fn differing(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).filter(|(x, y)| x != y).count()
}

#[test]
fn magnitude_tables_equal_torchvision() {
    let fx = fixture();
    for (label, bins) in [("autoaugment", AUTOAUGMENT_BINS), ("randaugment", RANDAUGMENT_BINS)] {
        for (h, w) in [(32, 32), (12, 20)] {
            let table = &fx.meta["magnitudes"][format!("{label}-{h}x{w}")];
            for (name, values) in table.as_object().unwrap() {
                let op = ImageOp::from_name(name).unwrap();
                let values = values.as_array().unwrap();
                if values.len() == 1 {
                    assert_eq!(op.magnitude(0, bins, h, w), 0.0, "{name}");
                    continue;
                }
                assert_eq!(values.len(), bins);
                for (bin, value) in values.iter().enumerate() {
                    // torch's tables are float32; serde_json may parse a decimal one unit in the last place off, so
                    // the comparison is in float32, and ours must be a float32 value.
                    let ours = op.magnitude(bin, bins, h, w);
                    assert_eq!(ours as f32 as f64, ours, "{name}");
                    assert_eq!(
                        ours as f32,
                        value.as_f64().unwrap() as f32,
                        "{label} {h}x{w} {name} bin {bin}"
                    );
                }
            }
        }
    }
}

#[test]
fn policy_tables_equal_torchvision() {
    let fx = fixture();
    let policies = fx.meta["policies"].as_array().unwrap();
    assert_eq!(policies.len(), CIFAR10_POLICY.len());
    for (ours, theirs) in CIFAR10_POLICY.iter().zip(policies) {
        for (step, t) in ours.iter().zip(theirs.as_array().unwrap()) {
            assert_eq!(step.op.name(), t[0].as_str().unwrap());
            assert_eq!(step.probability, t[1].as_f64().unwrap());
            assert_eq!(step.bin.map(|b| b as u64), t[2].as_u64());
        }
    }
    let names: Vec<&str> = fx.meta["randaugment_ops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let ours: Vec<&str> = RANDAUGMENT_OPS.iter().map(|op| op.name()).collect();
    assert_eq!(ours, names);
}

#[test]
fn every_operation_equals_torchvision_on_pil_images() {
    let fx = fixture();
    let mut scratch = Vec::new();
    let mut checked = std::collections::BTreeMap::<&str, usize>::new();
    let mut failures = Vec::new();
    for case in fx.meta["cases"].as_array().unwrap() {
        let name = case["op"].as_str().unwrap();
        if name == "policy" {
            continue;
        }
        let (shape, input) = &fx.images[case["image"].as_u64().unwrap() as usize];
        let magnitude = case["magnitude"].as_f64().unwrap();
        let op = ImageOp::from_name(name).unwrap();
        let mut image = input.clone();
        op.apply(magnitude, &mut image, *shape, &mut scratch);
        let want = expected(&fx, case, *shape);
        let wrong = differing(&image, &want);
        if wrong > 0 {
            failures.push(format!(
                "{name} {magnitude} on image {}: {wrong} values differ",
                case["image"]
            ));
        }
        *checked.entry(op.name()).or_default() += 1;
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Every operation of both spaces was exercised, the geometric ones at several signed magnitudes.
    assert_eq!(checked.len(), 14, "{checked:?}");
    assert!(checked["Rotate"] >= 18 && checked["Posterize"] >= 24, "{checked:?}");
    // The fixtures are not trivial: most operations change the image.
    let (shape, input) = &fx.images[0];
    let mut image = input.clone();
    ImageOp::Rotate.apply(20.0, &mut image, *shape, &mut scratch);
    assert!(differing(&image, input) > 1000);
}

#[test]
fn whole_sub_policies_equal_torchvision() {
    let fx = fixture();
    let mut scratch = Vec::new();
    let (shape, input) = &fx.images[0];
    let mut count = 0;
    for case in fx.meta["cases"].as_array().unwrap() {
        if case["op"] != "policy" {
            continue;
        }
        let index = case["magnitude"].as_f64().unwrap() as usize;
        let signs: Vec<bool> = case["signs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_u64() == Some(1))
            .collect();
        let mut image = input.clone();
        apply_sub_policy(
            index,
            [true, true],
            [signs[0], signs[1]],
            &mut image,
            *shape,
            &mut scratch,
        );
        assert_eq!(
            differing(&image, &expected(&fx, case, *shape)),
            0,
            "sub-policy {index}, signs {signs:?}"
        );
        count += 1;
    }
    assert_eq!(count, 50);
}
