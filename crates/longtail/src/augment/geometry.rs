//! The affine matrices torchvision hands to Pillow, and Pillow's nearest-neighbour sampling of them.

/// An inverse affine map `(x, y) -> (a x + b y + c, d x + e y + f)` from output to input coordinates, Pillow's
/// `Image.AFFINE` data.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Affine(pub [f64; 6]);

/// torchvision's `_get_inverse_affine_matrix(center, angle, translate, scale, shear)` (angles in degrees), as
/// `F.affine` computes it for PIL images.
pub fn inverse_affine(centre: [f64; 2], angle: f64, translate: [f64; 2], scale: f64, shear: [f64; 2]) -> Affine {
    let rot = angle.to_radians();
    let (sx, sy) = (shear[0].to_radians(), shear[1].to_radians());
    let [cx, cy] = centre;
    let [tx, ty] = translate;
    let a = (rot - sy).cos() / sy.cos();
    let b = -(rot - sy).cos() * sx.tan() / sy.cos() - rot.sin();
    let c = (rot - sy).sin() / sy.cos();
    let d = -(rot - sy).sin() * sx.tan() / sy.cos() + rot.cos();
    let mut m = [d, -b, 0.0, -c, a, 0.0].map(|v| v / scale);
    m[2] += m[0] * (-cx - tx) + m[1] * (-cy - ty);
    m[5] += m[3] * (-cx - tx) + m[4] * (-cy - ty);
    m[2] += cx;
    m[5] += cy;
    Affine(m)
}

/// Pillow's `Image.rotate(angle)` about the centre without expansion; `None` when the angle is a multiple of 360
/// (Pillow copies the image).
pub fn rotation(degrees: f64, width: usize, height: usize) -> Option<Affine> {
    let degrees = degrees.rem_euclid(360.0);
    if degrees == 0.0 {
        return None;
    }
    let (cx, cy) = (width as f64 / 2.0, height as f64 / 2.0);
    let angle = -degrees.to_radians();
    // Pillow rounds the rotation to 15 decimals (Python's correctly rounded `round`).
    let round15 = |v: f64| format!("{v:.15}").parse::<f64>().expect("a formatted float parses");
    let (cos, sin) = (round15(angle.cos()), round15(angle.sin()));
    let mut m = [cos, sin, 0.0, round15(-angle.sin()), cos, 0.0];
    let (x, y) = (-cx, -cy);
    m[2] += m[0] * x + m[1] * y;
    m[5] += m[3] * x + m[4] * y;
    m[2] += cx;
    m[5] += cy;
    Some(Affine(m))
}

/// Pillow's `COORD`: the integer pixel of a coordinate, -1 for negative ones.
fn coord(v: f64) -> i64 {
    if v < 0.0 { -1 } else { v as i64 }
}

impl Affine {
    /// For each output pixel (row-major), the input pixel it copies, or `None` for the fill; Pillow's own
    /// evaluation order (a scaling path for axis-aligned maps, incremental sums otherwise), so ties at pixel borders
    /// fall the same way.
    pub fn nearest_sources(&self, height: usize, width: usize) -> Vec<Option<u32>> {
        let a = &self.0;
        let (h, w) = (height as i64, width as i64);
        let inside = |x: i64, y: i64| (x >= 0 && x < w && y >= 0 && y < h).then_some((y * w + x) as u32);
        let mut sources = Vec::with_capacity(height * width);
        if a[1] == 0.0 && a[3] == 0.0 {
            let mut xo = a[2] + a[0] * 0.5;
            let columns: Vec<i64> = (0..width)
                .map(|_| {
                    let x = coord(xo);
                    xo += a[0];
                    x
                })
                .collect();
            let mut yo = a[5] + a[4] * 0.5;
            for _ in 0..height {
                let y = coord(yo);
                sources.extend(columns.iter().map(|&x| inside(x, y)));
                yo += a[4];
            }
        } else {
            let mut xo = a[2] + a[1] * 0.5 + a[0] * 0.5;
            let mut yo = a[5] + a[4] * 0.5 + a[3] * 0.5;
            for _ in 0..height {
                let (mut xx, mut yy) = (xo, yo);
                for _ in 0..width {
                    sources.push(inside(coord(xx), coord(yy)));
                    xx += a[0];
                    yy += a[3];
                }
                xo += a[1];
                yo += a[4];
            }
        }
        sources
    }
}
