//! Procedural PA chest radiographs with lesions and their masks: the one generator behind the
//! demo's radiographs and the training data of Lucent's own CXR model (`lucent synth-cxr`).
//!
//! The image is a projection: every structure is a water-equivalent path length (mm) along the
//! ray, summed per pixel, turned into log exposure (`mu * w`), with quantum noise whose size
//! depends on the exposure and on the pixel area, a heel gradient, the dynamic-range compression
//! and tone curve a CR/DR console applies, and 12-bit quantisation.
//!
//! Anatomy (all sizes in mm, drawn per seed from adult ranges): body outline with neck, shoulders
//! and lateral chest wall; two lung fields with apices, costophrenic angles and a depth profile;
//! mediastinum with aortic knob, trachea and main bronchi; a left-bulging heart (cardiothoracic
//! ratio 0.38-0.52); hemidiaphragms (the right higher); posterior and anterior ribs; clavicles;
//! vertebral bodies with pedicles and discs; humeral heads; branching pulmonary vessels fading to
//! the periphery; optional breast shadows and gastric bubble; patient rotation, shift, size,
//! inspiration, exposure and processing vary too.
//!
//! Lesions ([`CxrLesion`]) each come with a binary mask: nodule (5-30 mm, round or lobulated,
//! faint to dense: 50-100% of solid tissue), consolidation (patchy airspace opacity in a zone, sharp at the minor fissure,
//! optional air bronchograms), pleural effusion (meniscus, blunted costophrenic angle, small to
//! large), interstitial opacity (reticular or reticulonodular, lower zones) and pneumothorax (a
//! visceral pleural line with no lung markings beyond it, apical and lateral).
//!
//! Everything is deterministic from the seed string and the lesion list; anatomy is defined in mm,
//! so one seed gives the same patient at any pixel size (fine structures are drawn with profiles
//! that keep their integrated density, so a small rendering matches a large one shrunk).

use serde::{Deserialize, Serialize};

use super::{hash_str, mix64};

/// The findings the generator draws, in the order Lucent's CXR model reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CxrFinding {
    Nodule,
    Consolidation,
    Effusion,
    InterstitialOpacity,
    Pneumothorax,
}

impl CxrFinding {
    pub const ALL: [Self; 5] =
        [Self::Nodule, Self::Consolidation, Self::Effusion, Self::InterstitialOpacity, Self::Pneumothorax];

    /// Column name in `labels.csv` and mask file suffix.
    pub fn key(self) -> &'static str {
        match self {
            Self::Nodule => "nodule",
            Self::Consolidation => "consolidation",
            Self::Effusion => "effusion",
            Self::InterstitialOpacity => "interstitial_opacity",
            Self::Pneumothorax => "pneumothorax",
        }
    }

    /// Human-readable name (the model's label names).
    pub fn label(self) -> &'static str {
        match self {
            Self::Nodule => "Nodule",
            Self::Consolidation => "Consolidation",
            Self::Effusion => "Pleural effusion",
            Self::InterstitialOpacity => "Interstitial opacity",
            Self::Pneumothorax => "Pneumothorax",
        }
    }
}

/// Which hemithorax (the patient's side: the right is on the image's left in a PA view).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Right,
    Left,
    Both,
}

impl Side {
    /// Indices into per-side arrays (0 = right, 1 = left).
    fn indices(self) -> &'static [usize] {
        match self {
            Self::Right => &[0],
            Self::Left => &[1],
            Self::Both => &[0, 1],
        }
    }
}

/// One lesion. What `at`, `size_mm` and `density` mean depends on the finding:
///
/// | finding | `at` | `size_mm` | `density` (0..1) |
/// |---|---|---|---|
/// | nodule | position in the hemithorax | diameter (5-30) | faint (ground glass) .. dense (solid) |
/// | consolidation | centre in the hemithorax | extent (35-110) | fraction of air replaced |
/// | effusion | - | meniscus height above the costophrenic angle (12-150) | - |
/// | interstitial opacity | - | height of the involved zone from the base (70-170) | coarseness / conspicuity |
/// | pneumothorax | - | rim width at the apex (6-50) | `at[1]`: how far down the lateral wall it runs (0..1) |
///
/// `at = [lateral, vertical]`: 0 = medial / apex, 1 = lateral / base, within the lung field.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CxrLesion {
    pub finding: CxrFinding,
    pub side: Side,
    pub at: [f64; 2],
    pub size_mm: f64,
    pub density: f64,
    /// Seeds the lesion's own shape (lobulation, patches, texture).
    pub seed: u64,
}

impl CxrLesion {
    pub fn nodule(side: Side, at: [f64; 2], diameter_mm: f64, density: f64) -> Self {
        Self { finding: CxrFinding::Nodule, side, at, size_mm: diameter_mm, density, seed: 1 }
    }

    pub fn consolidation(side: Side, at: [f64; 2], extent_mm: f64, density: f64) -> Self {
        Self { finding: CxrFinding::Consolidation, side, at, size_mm: extent_mm, density, seed: 2 }
    }

    pub fn effusion(side: Side, height_mm: f64) -> Self {
        Self { finding: CxrFinding::Effusion, side, at: [0.5, 1.0], size_mm: height_mm, density: 1.0, seed: 3 }
    }

    pub fn interstitial(side: Side, zone_mm: f64, density: f64) -> Self {
        Self { finding: CxrFinding::InterstitialOpacity, side, at: [0.5, 1.0], size_mm: zone_mm, density, seed: 4 }
    }

    pub fn pneumothorax(side: Side, rim_mm: f64, extent: f64) -> Self {
        Self { finding: CxrFinding::Pneumothorax, side, at: [1.0, extent], size_mm: rim_mm, density: 1.0, seed: 5 }
    }

    /// A lesion of `finding` with size, place and density drawn from the generator's ranges.
    pub fn sample(finding: CxrFinding, seed: u64) -> Self {
        let mut r = Rng::new(seed ^ 0x6C65_7369_6F6E);
        let side = if r.f() < 0.5 { Side::Right } else { Side::Left };
        let at = [r.range(0.15, 0.9), r.range(0.1, 0.88)];
        let lesion_seed = r.next();
        match finding {
            CxrFinding::Nodule => {
                Self { finding, side, at, size_mm: r.range(5.0, 30.0), density: r.range(0.5, 1.0), seed: lesion_seed }
            }
            CxrFinding::Consolidation => Self {
                finding,
                side: if r.f() < 0.1 { Side::Both } else { side },
                at: [r.range(0.2, 0.8), r.range(0.2, 0.85)],
                size_mm: r.range(40.0, 110.0),
                density: r.range(0.45, 0.95),
                seed: lesion_seed,
            },
            CxrFinding::Effusion => {
                let size = r.f();
                let height = if size < 0.3 {
                    r.range(12.0, 35.0)
                } else if size < 0.75 {
                    r.range(35.0, 90.0)
                } else {
                    r.range(90.0, 150.0)
                };
                Self {
                    finding,
                    side: if r.f() < 0.15 { Side::Both } else { side },
                    at: [0.5, 1.0],
                    size_mm: height,
                    density: 1.0,
                    seed: lesion_seed,
                }
            }
            CxrFinding::InterstitialOpacity => Self {
                finding,
                side: if r.f() < 0.8 { Side::Both } else { side },
                at: [0.5, 1.0],
                size_mm: r.range(70.0, 170.0),
                density: r.range(0.35, 1.0),
                seed: lesion_seed,
            },
            CxrFinding::Pneumothorax => Self {
                finding,
                side,
                at: [1.0, r.range(0.4, 1.0)],
                size_mm: r.range(6.0, 50.0),
                density: 1.0,
                seed: lesion_seed,
            },
        }
    }
}

/// The lesions of a random training case: about 30% normal, else one finding (60%) or two.
pub fn sample_case(seed: &str) -> Vec<CxrLesion> {
    let mut r = Rng::new(hash_str(seed) ^ 0x6361_7365);
    if r.f() < 0.3 {
        return Vec::new();
    }
    let n = if r.f() < 0.6 { 1 } else { 2 };
    let mut findings: Vec<CxrFinding> = Vec::with_capacity(n);
    while findings.len() < n {
        let f = CxrFinding::ALL[(r.next() % 5) as usize];
        if !findings.contains(&f) {
            findings.push(f);
        }
    }
    findings.iter().map(|&f| CxrLesion::sample(f, r.next())).collect()
}

/// A rendered radiograph: MONOCHROME2 12-bit values and one mask per finding present.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderedChest {
    pub columns: usize,
    pub rows: usize,
    /// Row-major, 0..=4095, bright = dense (MONOCHROME2).
    pub values: Vec<u16>,
    /// The lung fields (both hemithoraces above the diaphragm, including behind the heart).
    pub lung_field: Vec<bool>,
    /// One mask per finding present (union over lesions of that finding), in [`CxrFinding::ALL`] order.
    pub masks: Vec<(CxrFinding, Vec<bool>)>,
}

impl RenderedChest {
    pub fn mask(&self, finding: CxrFinding) -> Option<&[bool]> {
        self.masks.iter().find(|(f, _)| *f == finding).map(|(_, m)| m.as_slice())
    }
}

// ---------------------------------------------------------------------------------------------
// Randomness and small helpers.

/// A splitmix64 stream.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(mix64(seed))
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix64(self.0)
    }

    /// Uniform in [0, 1).
    fn f(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.f()
    }

    /// Approximately normal, mean 0, sd 1.
    fn normal(&mut self) -> f64 {
        (0..4).map(|_| self.f()).sum::<f64>() * 3f64.sqrt() - 2.0 * 3f64.sqrt()
    }
}

fn smoothstep(e0: f64, e1: f64, x: f64) -> f64 {
    let t = ((x - e0) / (e1 - e0)).clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

/// Uniform in [0, 1) from a lattice point.
fn lattice(ix: i64, iy: i64, seed: u64) -> f64 {
    let h =
        mix64(seed ^ (ix as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (iy as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F));
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// Smooth value noise in [0, 1] with unit lattice spacing.
fn value_noise(x: f64, y: f64, seed: u64) -> f64 {
    let (fx, fy) = (x.floor(), y.floor());
    let (ix, iy) = (fx as i64, fy as i64);
    let (tx, ty) = (x - fx, y - fy);
    let (sx, sy) = (tx * tx * (3.0 - 2.0 * tx), ty * ty * (3.0 - 2.0 * ty));
    let a = lattice(ix, iy, seed);
    let b = lattice(ix + 1, iy, seed);
    let c = lattice(ix, iy + 1, seed);
    let d = lattice(ix + 1, iy + 1, seed);
    let top = a + (b - a) * sx;
    let bottom = c + (d - c) * sx;
    top + (bottom - top) * sy
}

/// Two octaves of value noise, in [0, 1].
fn fbm(x: f64, y: f64, seed: u64) -> f64 {
    (value_noise(x, y, seed) * 2.0 + value_noise(x * 2.03 + 17.0, y * 2.03 - 5.0, seed ^ 0xABCD)) / 3.0
}

/// Normal deviate for pixel `p` of an image seeded `seed`.
fn pixel_gauss(seed: u64, p: u64) -> f64 {
    let base = mix64(seed ^ p.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut sum = 0.0;
    let mut h = base;
    for _ in 0..4 {
        h = mix64(h);
        sum += (h >> 11) as f64 / (1u64 << 53) as f64;
    }
    sum * 3f64.sqrt() - 2.0 * 3f64.sqrt()
}

/// Path length through a cylinder of radius `r` at distance `d` (either sign) from its axis,
/// blurred by `blur` (mm, e.g. half a pixel) so that thin tubes keep their integrated density at
/// any pixel size.
fn tube_profile(d: f64, r: f64, blur: f64) -> f64 {
    let d = d.abs();
    if r > 2.5 * blur {
        return if d < r { 2.0 * (r * r - d * d).sqrt() } else { 0.0 };
    }
    // A Gaussian with the same area (pi r^2) and a comparable width.
    let sigma = ((r * 0.5).powi(2) + blur * blur).sqrt();
    let amplitude = std::f64::consts::PI * r * r / (sigma * (2.0 * std::f64::consts::PI).sqrt());
    amplitude * (-0.5 * (d / sigma).powi(2)).exp()
}

/// Where a tube profile is (almost) zero.
fn tube_reach(r: f64, blur: f64) -> f64 {
    if r > 2.5 * blur { r } else { 3.5 * ((r * 0.5).powi(2) + blur * blur).sqrt() }
}

/// Squared distance from `p` to segment `a`-`b` and the position along it in [0, 1].
fn segment_distance(p: [f64; 2], a: [f64; 2], b: [f64; 2]) -> (f64, f64) {
    let (vx, vy) = (b[0] - a[0], b[1] - a[1]);
    let len2 = vx * vx + vy * vy;
    let t = if len2 > 0.0 { (((p[0] - a[0]) * vx + (p[1] - a[1]) * vy) / len2).clamp(0.0, 1.0) } else { 0.0 };
    let (dx, dy) = (p[0] - a[0] - t * vx, p[1] - a[1] - t * vy);
    ((dx * dx + dy * dy).sqrt(), t)
}

// ---------------------------------------------------------------------------------------------
// Anatomy.

#[derive(Debug, Clone, Copy)]
struct Ellipse {
    cx: f64,
    cy: f64,
    a: f64,
    b: f64,
    cos: f64,
    sin: f64,
}

impl Ellipse {
    fn new(cx: f64, cy: f64, a: f64, b: f64, angle: f64) -> Self {
        Self { cx, cy, a, b, cos: angle.cos(), sin: angle.sin() }
    }

    /// Squared normalised radius (1 on the outline).
    fn r2(&self, x: f64, y: f64) -> f64 {
        let (dx, dy) = (x - self.cx, y - self.cy);
        let u = (dx * self.cos + dy * self.sin) / self.a;
        let v = (-dx * self.sin + dy * self.cos) / self.b;
        u * u + v * v
    }
}

/// A patient, drawn from the seed. Coordinates: `x` to the image's right (the patient's left),
/// `y` down, origin on the midline at the level of the lung apices. Per-side arrays: 0 = the
/// patient's right (x < 0), 1 = left.
#[derive(Debug, Clone)]
struct Anatomy {
    /// Lung height, apex to costophrenic angle.
    h: f64,
    /// Inner half-width of each hemithorax at its widest.
    wt: [f64; 2],
    apex_u: [f64; 2],
    apex_curve: f64,
    dome_top: [f64; 2],
    dome_peak_u: [f64; 2],
    cp_y: [f64; 2],
    med_upper: f64,
    aortic_knob: f64,
    heart: Ellipse,
    heart_occlusion: f64,
    depth_base: f64,
    body_extra: f64,
    body_half_depth: f64,
    neck: f64,
    trachea_x: f64,
    carina_y: f64,
    hila: [[f64; 2]; 2],
    rib_first: f64,
    rib_step: f64,
    clavicle_y: f64,
    clavicle_tilt: f64,
    breast: Option<(f64, f64)>,
    gastric_bubble: Option<(f64, f64)>,
    vertebra_period: f64,
    minor_fissure: f64,
    // Pose and exposure.
    rotation: f64,
    shift: [f64; 2],
    center_y: f64,
    mu: f64,
    noise: f64,
    heel: f64,
    drc: f64,
    drc_ref: f64,
    detail: f64,
    lo: f64,
    hi: f64,
    gamma: f64,
    marker: Option<(usize, f64)>,
}

impl Anatomy {
    fn new(seed: u64) -> Self {
        let mut r = Rng::new(seed ^ 0x616E_6174);
        let scale = 1.0 + 0.06 * r.normal().clamp(-2.0, 2.0);
        let inspiration = r.range(0.9, 1.06);
        let h = 255.0 * scale * inspiration;
        let wt0 = 138.0 * scale * r.range(0.94, 1.06);
        let wt = [wt0 * r.range(0.97, 1.03), wt0 * r.range(0.97, 1.03)];
        let dome_top_r = h * r.range(0.78, 0.86);
        let dome_top = [dome_top_r, dome_top_r + r.range(6.0, 24.0)];
        let cp_y = [dome_top[0] + r.range(30.0, 50.0), dome_top[1] + r.range(28.0, 48.0)];
        let ctr = r.range(0.38, 0.52);
        let heart_width = ctr * (wt[0] + wt[1]);
        let heart_a = heart_width * 0.5;
        let heart_b = h * r.range(0.27, 0.33);
        let heart_cx = heart_width * r.range(0.12, 0.2);
        let heart_cy = dome_top[1] - heart_b * r.range(0.35, 0.5);
        let heart = Ellipse::new(heart_cx, heart_cy, heart_a, heart_b, r.range(-0.45, -0.2));
        let med_upper = r.range(20.0, 28.0);
        let carina_y = h * r.range(0.26, 0.32);
        let hila = [
            [-(med_upper + r.range(12.0, 20.0)), h * r.range(0.4, 0.47)],
            [med_upper + r.range(14.0, 22.0), h * r.range(0.36, 0.43)],
        ];
        let female = r.f() < 0.5;
        let breast = if female && r.f() < 0.85 { Some((r.range(55.0, 85.0), r.range(12.0, 40.0))) } else { None };
        let gastric_bubble = if r.f() < 0.65 { Some((r.range(22.0, 45.0), r.range(12.0, 24.0))) } else { None };
        let marker = if r.f() < 0.6 { Some(((r.next() % 4) as usize, r.range(0.0, 1.0))) } else { None };
        Self {
            h,
            wt,
            apex_u: [wt[0] * r.range(0.3, 0.38), wt[1] * r.range(0.3, 0.38)],
            apex_curve: r.range(26.0, 40.0),
            dome_top,
            dome_peak_u: [wt[0] * r.range(0.4, 0.5), wt[1] * r.range(0.4, 0.5)],
            cp_y,
            med_upper,
            aortic_knob: r.range(6.0, 18.0),
            heart,
            heart_occlusion: r.range(0.65, 0.8),
            depth_base: r.range(150.0, 190.0) * scale,
            body_extra: r.range(18.0, 45.0),
            body_half_depth: r.range(90.0, 125.0) * scale,
            neck: r.range(52.0, 66.0) * scale,
            trachea_x: r.range(-3.0, 5.0),
            carina_y,
            hila,
            rib_first: r.range(-22.0, -12.0),
            rib_step: h * r.range(0.088, 0.1),
            clavicle_y: h * r.range(0.02, 0.1),
            clavicle_tilt: r.range(0.12, 0.3),
            breast,
            gastric_bubble,
            vertebra_period: r.range(23.0, 27.0) * scale,
            minor_fissure: h * r.range(0.44, 0.52),
            rotation: r.range(-4.0, 4.0).to_radians(),
            shift: [r.range(-14.0, 14.0), r.range(-15.0, 15.0)],
            center_y: h * 0.52 + r.range(-5.0, 20.0),
            mu: 0.02,
            noise: r.range(0.003, 0.008),
            heel: r.range(-0.08, 0.08),
            drc: r.range(0.3, 0.65),
            drc_ref: r.range(2.0, 2.5),
            detail: r.range(1.6, 2.4),
            lo: r.range(-0.15, 0.25),
            hi: r.range(3.6, 4.4),
            gamma: r.range(0.9, 1.5),
            marker,
        }
    }

    /// The same patient on another day: a new pose, exposure, processing and side marker.
    fn reacquire(&mut self, seed: u64) {
        let mut r = Rng::new(seed ^ 0x6163_7175);
        let h = self.h;
        self.rotation = r.range(-4.0, 4.0).to_radians();
        self.shift = [r.range(-14.0, 14.0), r.range(-15.0, 15.0)];
        self.center_y = h * 0.52 + r.range(-5.0, 20.0);
        self.noise = r.range(0.003, 0.008);
        self.heel = r.range(-0.08, 0.08);
        self.drc = r.range(0.3, 0.65);
        self.drc_ref = r.range(2.0, 2.5);
        self.detail = r.range(1.6, 2.4);
        self.lo = r.range(-0.15, 0.25);
        self.hi = r.range(3.6, 4.4);
        self.gamma = r.range(0.9, 1.5);
        self.marker = if r.f() < 0.6 { Some(((r.next() % 4) as usize, r.range(0.0, 1.0))) } else { None };
    }

    /// Lateral (inner rib) margin of hemithorax `s` at height `y`.
    fn lateral(&self, s: usize, y: f64) -> f64 {
        let k = (y / (0.78 * self.h)).clamp(0.0, 1.0);
        self.wt[s] * (0.42 + 0.58 * (1.0 - (1.0 - k).powi(2)).max(0.0).powf(0.6))
    }

    /// Top of the lung (apex) above distance `u` from the midline.
    fn apex(&self, s: usize, u: f64) -> f64 {
        let w = 0.27 * self.wt[s];
        self.apex_curve * ((u - self.apex_u[s]) / w).powi(2)
    }

    /// The hemidiaphragm under distance `u` from the midline.
    fn dome(&self, s: usize, u: f64) -> f64 {
        let k = (self.cp_y[s] - self.dome_top[s]) / (self.wt[s] - self.dome_peak_u[s]).powi(2);
        self.dome_top[s] + k * (u - self.dome_peak_u[s]).powi(2)
    }

    /// Mediastinal margin of hemithorax `s` at height `y` (the heart is separate).
    fn medial(&self, s: usize, y: f64) -> f64 {
        let mut m = self.med_upper + 6.0 * smoothstep(0.55 * self.h, 0.2 * self.h, y) * (1.0 - y / self.h).max(0.0);
        if s == 1 {
            m += self.aortic_knob * (-((y - 0.25 * self.h) / 16.0).powi(2)).exp();
            m += 5.0 * (-((y - 0.38 * self.h) / 13.0).powi(2)).exp();
        }
        m
    }

    /// Distance (mm, approximate, positive inside) to the edge of the lung field of side `s`.
    fn lung_sdf(&self, s: usize, u: f64, y: f64) -> f64 {
        (self.lateral(s, y) - u).min(y - self.apex(s, u)).min(self.dome(s, u) - y).min(u - self.medial(s, y))
    }

    /// Fraction of the cavity depth filled by lung at (u, y): it thins gradually towards the
    /// chest wall and the apex, and ends sharply at the mediastinum and the diaphragm.
    fn air_profile(lateral: f64, apex: f64, dome: f64, medial: f64) -> f64 {
        let circle = |d: f64, r: f64| {
            let e = (d / r).clamp(0.0, 1.0);
            (e * (2.0 - e)).sqrt()
        };
        // x^0.75 without powf.
        let soft = |d: f64, r: f64| {
            let e = (d / r).clamp(0.0, 1.0).sqrt();
            e * e.sqrt()
        };
        soft(lateral, 40.0) * soft(apex, 45.0) * circle(dome, 30.0) * circle(medial, 22.0)
    }

    /// AP depth of the thoracic cavity at height `y`.
    fn depth(&self, y: f64) -> f64 {
        let t = (y / (0.8 * self.h)).clamp(0.0, 1.0);
        self.depth_base * (0.42 + 0.58 * t.powf(0.6))
    }

    /// Half-width of the body outline at height `y`.
    fn body_half_width(&self, y: f64) -> f64 {
        let chest = self.wt[0].max(self.wt[1]) + self.body_extra;
        let shoulders = chest + 55.0;
        let up = smoothstep(-95.0, -5.0, y).powf(0.8);
        let down = smoothstep(10.0, 0.4 * self.h, y);
        self.neck + (shoulders - self.neck) * up - (shoulders - chest) * down
    }

    fn body_half_depth(&self, y: f64) -> f64 {
        let neck = self.body_half_depth * 0.55;
        neck + (self.body_half_depth - neck) * smoothstep(-70.0, 10.0, y)
    }

    /// A point in the lung field of side `s` from fractions `at` (lateral, vertical), pulled
    /// inwards until it is at least `margin` mm from the edge.
    fn lung_point(&self, s: usize, at: [f64; 2], margin: f64) -> [f64; 2] {
        let y = self.h * (0.06 + at[1].clamp(0.0, 1.0) * 0.82);
        let (lo, hi) = (self.medial(s, y), self.lateral(s, y));
        let u = lo + at[0].clamp(0.0, 1.0) * (hi - lo);
        let centre = [0.55 * self.wt[s], 0.55 * self.h];
        let mut p = [u, y];
        for _ in 0..40 {
            if self.lung_sdf(s, p[0], p[1]) >= margin {
                break;
            }
            p = [p[0] + 0.1 * (centre[0] - p[0]), p[1] + 0.1 * (centre[1] - p[1])];
        }
        let sign = if s == 0 { -1.0 } else { 1.0 };
        [sign * p[0], p[1]]
    }
}

/// The anatomy's functions of height, tabulated every 0.25 mm for the pixel loop.
struct YTable {
    y0: f64,
    inv_step: f64,
    /// lateral (right, left), medial (right, left), cavity depth, body half-width, body half-depth.
    rows: Vec<[f64; 7]>,
}

impl YTable {
    fn new(a: &Anatomy) -> Self {
        let (y0, y1, step) = (-600.0, 800.0, 0.25);
        let n = ((y1 - y0) / step) as usize + 2;
        let rows = (0..n)
            .map(|k| {
                let y = y0 + k as f64 * step;
                [
                    a.lateral(0, y),
                    a.lateral(1, y),
                    a.medial(0, y),
                    a.medial(1, y),
                    a.depth(y),
                    a.body_half_width(y),
                    a.body_half_depth(y),
                ]
            })
            .collect();
        Self { y0, inv_step: 1.0 / step, rows }
    }

    fn at(&self, y: f64) -> [f64; 7] {
        let f = ((y - self.y0) * self.inv_step).clamp(0.0, (self.rows.len() - 2) as f64);
        let k = f as usize;
        let t = f - k as f64;
        let (a, b) = (&self.rows[k], &self.rows[k + 1]);
        std::array::from_fn(|i| a[i] + (b[i] - a[i]) * t)
    }
}

// ---------------------------------------------------------------------------------------------
// Lesions prepared for rendering.

#[derive(Debug, Clone)]
enum Prepared {
    Nodule {
        c: [f64; 2],
        r: f64,
        density: f64,
        lobes: f64,
        lobe_amp: f64,
        phase: f64,
    },
    Consolidation {
        side: usize,
        lumps: Vec<([f64; 2], f64)>,
        reach: [f64; 4],
        density: f64,
        fissure: Option<f64>,
        bronchi: Vec<([f64; 2], [f64; 2], f64)>,
        seed: u64,
    },
    Effusion {
        side: usize,
        height: f64,
        thickness: f64,
    },
    Interstitial {
        side: usize,
        top: f64,
        scale: f64,
        amp: f64,
        nodular: bool,
        seed: u64,
    },
    Pneumothorax {
        side: usize,
        rim: f64,
        extent: f64,
    },
}

impl Prepared {
    fn finding(&self) -> CxrFinding {
        match self {
            Self::Nodule { .. } => CxrFinding::Nodule,
            Self::Consolidation { .. } => CxrFinding::Consolidation,
            Self::Effusion { .. } => CxrFinding::Effusion,
            Self::Interstitial { .. } => CxrFinding::InterstitialOpacity,
            Self::Pneumothorax { .. } => CxrFinding::Pneumothorax,
        }
    }
}

fn prepare(anatomy: &Anatomy, lesions: &[CxrLesion]) -> Vec<Prepared> {
    let mut out = Vec::new();
    for lesion in lesions {
        for &s in lesion.side.indices() {
            let mut r = Rng::new(lesion.seed ^ (s as u64 + 1).wrapping_mul(0x51_7CC1_B727_220A));
            match lesion.finding {
                CxrFinding::Nodule => {
                    let radius = lesion.size_mm.clamp(2.0, 60.0) / 2.0;
                    let c = anatomy.lung_point(s, lesion.at, radius + 4.0);
                    let lobulated = r.f() < 0.5;
                    out.push(Prepared::Nodule {
                        c,
                        r: radius,
                        density: lesion.density.clamp(0.05, 1.0),
                        lobes: (3 + r.next() % 4) as f64,
                        lobe_amp: if lobulated { r.range(0.06, 0.16) } else { r.range(0.0, 0.04) },
                        phase: r.range(0.0, std::f64::consts::TAU),
                    });
                }
                CxrFinding::Consolidation => {
                    let extent = lesion.size_mm.clamp(15.0, 160.0);
                    let c = anatomy.lung_point(s, lesion.at, extent * 0.25);
                    let n = 4 + (r.next() % 5) as usize;
                    let mut lumps = Vec::with_capacity(n);
                    for _ in 0..n {
                        let p = [c[0] + r.normal() * extent * 0.18, c[1] + r.normal() * extent * 0.18];
                        lumps.push((p, extent * r.range(0.12, 0.22)));
                    }
                    let reach = extent * 0.9;
                    // An upper-zone patch on the right stops at the minor fissure.
                    let fissure =
                        (s == 0 && c[1] < anatomy.minor_fissure - 5.0 && r.f() < 0.8).then_some(anatomy.minor_fissure);
                    let mut bronchi = Vec::new();
                    if r.f() < 0.55 {
                        let hilum = anatomy.hila[s];
                        for _ in 0..(3 + r.next() % 3) {
                            let start = [c[0] + r.normal() * extent * 0.15, c[1] + r.normal() * extent * 0.15];
                            let (dx, dy) = (start[0] - hilum[0], start[1] - hilum[1]);
                            let len = (dx * dx + dy * dy).sqrt().max(1.0);
                            let dir = [dx / len, dy / len];
                            let mut a = [start[0] - dir[0] * extent * 0.2, start[1] - dir[1] * extent * 0.2];
                            let mut radius = r.range(1.3, 2.2);
                            let mut angle = dir[1].atan2(dir[0]);
                            for _ in 0..3 {
                                angle += r.normal() * 0.25;
                                let step = extent * r.range(0.12, 0.2);
                                let b = [a[0] + angle.cos() * step, a[1] + angle.sin() * step];
                                bronchi.push((a, b, radius));
                                a = b;
                                radius *= 0.8;
                            }
                        }
                    }
                    out.push(Prepared::Consolidation {
                        side: s,
                        lumps,
                        reach: [c[0] - reach, c[1] - reach, c[0] + reach, c[1] + reach],
                        density: lesion.density.clamp(0.1, 1.0),
                        fissure,
                        bronchi,
                        seed: r.next(),
                    });
                }
                CxrFinding::Effusion => {
                    let height = lesion.size_mm.clamp(5.0, 220.0);
                    out.push(Prepared::Effusion { side: s, height, thickness: (45.0 + 0.55 * height).min(140.0) });
                }
                CxrFinding::InterstitialOpacity => {
                    let base = anatomy.dome_top[s];
                    out.push(Prepared::Interstitial {
                        side: s,
                        top: (base - lesion.size_mm.clamp(30.0, 260.0)).max(0.05 * anatomy.h),
                        scale: r.range(3.2, 5.5),
                        amp: 0.16 + 0.22 * lesion.density.clamp(0.0, 1.0),
                        nodular: r.f() < 0.5,
                        seed: r.next(),
                    });
                }
                CxrFinding::Pneumothorax => {
                    out.push(Prepared::Pneumothorax {
                        side: s,
                        rim: lesion.size_mm.clamp(2.0, 90.0),
                        extent: lesion.at[1].clamp(0.0, 1.0),
                    });
                }
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Rasterised tubes (ribs, clavicles, vessels) on the image grid.

/// The image grid and the anatomy-to-image transform.
struct Grid {
    w: usize,
    h: usize,
    /// mm per pixel.
    s: f64,
    cos: f64,
    sin: f64,
    shift: [f64; 2],
    center_y: f64,
}

impl Grid {
    /// Image mm (from the image centre) of pixel centre (i, j).
    fn pixel_mm(&self, i: usize, j: usize) -> [f64; 2] {
        [
            (i as f64 + 0.5) * self.s - self.w as f64 * self.s / 2.0,
            (j as f64 + 0.5) * self.s - self.h as f64 * self.s / 2.0,
        ]
    }

    fn to_anatomy(&self, p: [f64; 2]) -> [f64; 2] {
        let (x, y) = (p[0] - self.shift[0], p[1] - self.shift[1]);
        [self.cos * x + self.sin * y, -self.sin * x + self.cos * y + self.center_y]
    }

    fn to_image(&self, a: [f64; 2]) -> [f64; 2] {
        let (x, y) = (a[0], a[1] - self.center_y);
        [self.cos * x - self.sin * y + self.shift[0], self.sin * x + self.cos * y + self.shift[1]]
    }

    /// Pixel index range covering image-mm box [x0, x1] x [y0, y1].
    fn pixel_box(&self, x0: f64, y0: f64, x1: f64, y1: f64) -> Option<(usize, usize, usize, usize)> {
        let half_w = self.w as f64 * self.s / 2.0;
        let half_h = self.h as f64 * self.s / 2.0;
        let i0 = ((x0 + half_w) / self.s - 0.5).floor().max(0.0);
        let i1 = ((x1 + half_w) / self.s - 0.5).ceil().min(self.w as f64 - 1.0);
        let j0 = ((y0 + half_h) / self.s - 0.5).floor().max(0.0);
        let j1 = ((y1 + half_h) / self.s - 0.5).ceil().min(self.h as f64 - 1.0);
        (i1 >= i0 && j1 >= j0).then_some((i0 as usize, j0 as usize, i1 as usize, j1 as usize))
    }
}

/// A buffer that sums tubes over objects but takes the maximum within one object (so the joints
/// of a polyline are not counted twice).
struct TubeLayer {
    value: Vec<f32>,
    best: Vec<f32>,
    stamp: Vec<u32>,
    next_id: u32,
}

/// How a tube's cross-section is filled.
#[derive(Clone, Copy)]
enum TubeKind {
    /// Solid (vessels, bronchi), blurred when thin.
    Solid,
    /// Bone with a cortex: hollow profile, flattened by `ratio` (depth / width).
    Bone { ratio: f64 },
}

impl TubeLayer {
    fn new(n: usize) -> Self {
        Self { value: vec![0.0; n], best: vec![0.0; n], stamp: vec![0; n], next_id: 0 }
    }

    /// Draws a polyline (anatomy coordinates) with radii per point as one object, scaled by `gain`.
    fn polyline(&mut self, grid: &Grid, points: &[[f64; 2]], radii: &[f64], kind: TubeKind, gain: f64) {
        let id = self.new_object();
        self.polyline_in(grid, id, points, radii, kind, gain);
    }

    /// A new object id: polylines drawn with the same id take their maximum, not their sum.
    fn new_object(&mut self) -> u32 {
        self.next_id += 1;
        self.next_id
    }

    /// Draws a polyline as part of object `id`.
    fn polyline_in(&mut self, grid: &Grid, id: u32, points: &[[f64; 2]], radii: &[f64], kind: TubeKind, gain: f64) {
        let blur = 0.5 * grid.s;
        for k in 1..points.len().min(radii.len()) {
            let (a, b) = (grid.to_image(points[k - 1]), grid.to_image(points[k]));
            let (ra, rb) = (radii[k - 1], radii[k]);
            let reach = tube_reach(ra.max(rb), blur) + grid.s;
            let Some((i0, j0, i1, j1)) = grid.pixel_box(
                a[0].min(b[0]) - reach,
                a[1].min(b[1]) - reach,
                a[0].max(b[0]) + reach,
                a[1].max(b[1]) + reach,
            ) else {
                continue;
            };
            for j in j0..=j1 {
                for i in i0..=i1 {
                    let p = grid.pixel_mm(i, j);
                    let (d, t) = segment_distance(p, a, b);
                    let r = ra + (rb - ra) * t;
                    let v = match kind {
                        TubeKind::Solid => tube_profile(d, r, blur),
                        TubeKind::Bone { ratio } => {
                            if d >= r {
                                0.0
                            } else {
                                let inner = (r - 1.6).max(0.0);
                                let outer_path = 2.0 * (r * r - d * d).sqrt();
                                let inner_path = if d < inner { 2.0 * (inner * inner - d * d).sqrt() } else { 0.0 };
                                ratio * ((outer_path - inner_path) + 0.4 * inner_path)
                            }
                        }
                    } * gain;
                    if v <= 0.0 {
                        continue;
                    }
                    let q = j * grid.w + i;
                    let v = v as f32;
                    if self.stamp[q] != id {
                        self.stamp[q] = id;
                        self.best[q] = v;
                        self.value[q] += v;
                    } else if v > self.best[q] {
                        self.value[q] += v - self.best[q];
                        self.best[q] = v;
                    }
                }
            }
        }
    }
}

fn draw_ribs_and_clavicles(anatomy: &Anatomy, grid: &Grid, bones: &mut TubeLayer, r: &mut Rng) {
    for s in 0..2 {
        let sign = if s == 0 { -1.0 } else { 1.0 };
        let wt = anatomy.wt[s];
        for k in 0..11 {
            let y0 = anatomy.rib_first + k as f64 * anatomy.rib_step + r.normal() * 1.5;
            if y0 > anatomy.cp_y[s] + 20.0 {
                break;
            }
            // Posterior rib: from the spine, up and out, then down along the lateral wall.
            let lateral = anatomy.lateral(s, y0 + 20.0) + 6.0;
            // The arc's top is `rise` mm above the start, `apex` mm from the spine.
            let rise = r.range(8.0, 16.0);
            let apex = r.range(35.0, 55.0);
            let b = rise / (apex * apex);
            let mut pts = Vec::new();
            let mut radii = Vec::new();
            let n = 24;
            for q in 0..=n {
                let t = q as f64 / n as f64;
                let u = 18.0 + t * (lateral - 18.0);
                let d = u - 18.0;
                let bend = smoothstep(lateral - 45.0, lateral + 4.0, u);
                let y = y0 - 2.0 * b * apex * d + b * d * d + 18.0 * bend.powi(2);
                pts.push([sign * u, y]);
                let full = if k == 0 { 4.0 } else { 4.8 + 0.8 * t };
                radii.push(full * (0.45 + 0.55 * smoothstep(0.0, 0.15, t)));
            }
            bones.polyline(grid, &pts, &radii, TubeKind::Bone { ratio: 0.6 }, 1.0);
            // Anterior rib: from the lateral wall, down and in, fading before the cartilage.
            if (1..=7).contains(&k) {
                let ya = y0 + r.range(18.0, 30.0) + k as f64 * 2.0;
                let slope = r.range(0.45, 0.7) + k as f64 * 0.03;
                let lateral = anatomy.lateral(s, ya) - 4.0;
                let end = wt * r.range(0.3, 0.42);
                let mut pts = Vec::new();
                let mut radii = Vec::new();
                let n = 14;
                for q in 0..=n {
                    let t = q as f64 / n as f64;
                    let u = lateral - t * (lateral - end);
                    let y = ya + slope * (lateral - u) - 8.0 * (1.0 - (2.0 * t - 1.0).powi(2));
                    pts.push([sign * u, y]);
                    radii.push(5.5 - 1.0 * t);
                }
                bones.polyline(grid, &pts, &radii, TubeKind::Bone { ratio: 0.4 }, 0.8);
            }
        }
        // Clavicle: from the sternal end up and out, gently S-shaped.
        let mut pts = Vec::new();
        let mut radii = Vec::new();
        let (u0, u1) = (14.0, wt + 45.0);
        for q in 0..=20 {
            let t = q as f64 / 20.0;
            let u = u0 + t * (u1 - u0);
            let y = anatomy.clavicle_y - anatomy.clavicle_tilt * (u - u0)
                + 6.0 * (std::f64::consts::PI * t * 2.0).sin()
                - 10.0 * t * t;
            pts.push([sign * u, y]);
            radii.push(if t < 0.1 { 9.0 } else { 6.5 });
        }
        bones.polyline(grid, &pts, &radii, TubeKind::Bone { ratio: 0.9 }, 1.0);
        // Humeral head.
        let head = [sign * (wt + anatomy.body_extra + 38.0), -28.0 + r.normal() * 6.0];
        bones.polyline(
            grid,
            &[head, [head[0] + sign * 12.0, head[1] + 45.0]],
            &[24.0, 16.0],
            TubeKind::Bone { ratio: 1.0 },
            0.9,
        );
    }
}

/// Pulmonary vessels: branching trees from each hilum.
fn draw_vessels(anatomy: &Anatomy, grid: &Grid, vessels: &mut TubeLayer, r: &mut Rng) {
    struct Branch {
        p: [f64; 2],
        angle: f64,
        diameter: f64,
        depth: u32,
        /// One object per tree: branches meet without summing into a bright dot.
        tree: u32,
    }
    for s in 0..2 {
        let sign = if s == 0 { -1.0 } else { 1.0 };
        let hilum = anatomy.hila[s];
        let mut stack: Vec<Branch> = Vec::new();
        // Trunks to the upper, middle and lower zones (down-going ones larger: upright patient).
        let trunks: [(f64, f64); 7] =
            [(-1.3, 7.5), (-0.8, 7.0), (-0.35, 8.0), (0.1, 8.5), (0.5, 10.0), (0.9, 10.5), (1.3, 9.0)];
        for (angle, diameter) in trunks {
            // Angles measured from the lateral direction, positive downwards.
            let a = angle + r.normal() * 0.12;
            let dir = if s == 0 { std::f64::consts::PI - a } else { a };
            // Trunks leave the hilum a little apart (their common origin would sum into a dot).
            let start = [hilum[0] + dir.cos() * 6.0, hilum[1] + dir.sin() * 6.0];
            let tree = vessels.new_object();
            stack.push(Branch { p: start, angle: dir, diameter: diameter * r.range(0.85, 1.1), depth: 0, tree });
        }
        let mut drawn = 0;
        while let Some(b) = stack.pop() {
            if drawn > 1500 {
                break;
            }
            let length = b.diameter * r.range(5.0, 8.0) + 4.0;
            let mut pts = vec![b.p];
            let mut radii = vec![b.diameter / 2.0];
            let mut p = b.p;
            let mut angle = b.angle;
            let pieces = 3;
            let mut alive = true;
            for q in 1..=pieces {
                angle += r.normal() * 0.08;
                p = [p[0] + angle.cos() * length / pieces as f64, p[1] + angle.sin() * length / pieces as f64];
                let u = sign * p[0];
                if anatomy.lung_sdf(s, u, p[1]) < 4.0 + b.diameter {
                    alive = q > 1;
                    break;
                }
                pts.push(p);
                radii.push(b.diameter / 2.0 * (1.0 - 0.08 * q as f64));
            }
            if pts.len() >= 2 {
                // Vessels fade towards the periphery: fainter as they thin.
                vessels.polyline_in(grid, b.tree, &pts, &radii, TubeKind::Solid, 1.0);
                drawn += 1;
            }
            if !alive || b.diameter < 0.9 || b.depth > 9 {
                continue;
            }
            let spread = r.range(0.3, 0.65);
            let share = r.range(0.35, 0.65);
            for (da, frac) in
                [(-spread * (1.0 - share), 0.72 + 0.2 * share), (spread * share, 0.72 + 0.2 * (1.0 - share))]
            {
                stack.push(Branch {
                    p,
                    angle: angle + da,
                    diameter: b.diameter * frac * 0.95,
                    depth: b.depth + 1,
                    tree: b.tree,
                });
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Rendering.

/// Renders a `columns` x `rows` PA chest radiograph at `spacing_mm` per pixel of the patient
/// `seed`. `acquisition` 0 is the seed's own image; any other value keeps the patient's anatomy and
/// draws a new pose, exposure, processing and noise (another study of the same patient).
pub fn render_chest(
    seed: &str,
    acquisition: u32,
    columns: usize,
    rows: usize,
    spacing_mm: f64,
    lesions: &[CxrLesion],
) -> RenderedChest {
    let anatomy_seed = hash_str(seed);
    let mut base_seed = anatomy_seed;
    let mut anatomy = Anatomy::new(anatomy_seed);
    if acquisition != 0 {
        base_seed = mix64(base_seed ^ u64::from(acquisition).wrapping_mul(0x2545_F491_4F6C_DD1D));
        anatomy.reacquire(base_seed);
    }
    let n = columns * rows;
    let spacing = if spacing_mm.is_finite() && spacing_mm > 0.0 { spacing_mm } else { 1.0 };
    let grid = Grid {
        w: columns,
        h: rows,
        s: spacing,
        cos: anatomy.rotation.cos(),
        sin: anatomy.rotation.sin(),
        shift: anatomy.shift,
        center_y: anatomy.center_y,
    };
    let prepared = prepare(&anatomy, lesions);
    let table = YTable::new(&anatomy);
    let mut r = Rng::new(anatomy_seed ^ 0x7475_6265);
    let mut bones = TubeLayer::new(n);
    draw_ribs_and_clavicles(&anatomy, &grid, &mut bones, &mut r);
    let mut vessels = TubeLayer::new(n);
    draw_vessels(&anatomy, &grid, &mut vessels, &mut r);
    let mut airways = TubeLayer::new(n);
    let carina = [anatomy.trachea_x, anatomy.carina_y];
    airways.polyline(&grid, &[[anatomy.trachea_x * 0.5, -140.0], carina], &[8.5, 8.0], TubeKind::Solid, 1.0);
    for s in 0..2 {
        let hilum = anatomy.hila[s];
        let mid = [(carina[0] + hilum[0]) * 0.5, (carina[1] + hilum[1]) * 0.5 - 4.0];
        airways.polyline(&grid, &[carina, mid, hilum], &[6.5, 5.5, 4.0], TubeKind::Solid, 1.0);
    }
    drop(vessels.best);
    drop(vessels.stamp);
    let vessel_layer = vessels.value;

    let mut masks: Vec<(CxrFinding, Vec<bool>)> = Vec::new();
    for f in CxrFinding::ALL {
        if prepared.iter().any(|p| p.finding() == f) {
            masks.push((f, vec![false; n]));
        }
    }
    let mask_index = |f: CxrFinding| masks.iter().position(|(g, _)| *g == f);
    let mask_slots: Vec<Option<usize>> = prepared.iter().map(|p| mask_index(p.finding())).collect();
    let mut lung_field = vec![false; n];
    let mut log_exposure = vec![0f32; n];
    let blur = 0.5 * spacing;
    let mut hits: Vec<usize> = Vec::with_capacity(8);

    for j in 0..rows {
        for i in 0..columns {
            let q = j * columns + i;
            let img = grid.pixel_mm(i, j);
            let [x, y] = grid.to_anatomy(img);
            hits.clear();
            let row = table.at(y);
            let body = 1.0 - (x / row[5]).powi(2);
            let tissue = if body > 0.0 { 2.0 * row[6] * body.sqrt() } else { 0.0 };
            let s = usize::from(x >= 0.0);
            let u = x.abs();
            let (lateral, medial, depth) = (row[s], row[2 + s], row[4]);
            let (apex, dome) = (anatomy.apex(s, u), anatomy.dome(s, u));
            let sdf = (lateral - u).min(y - apex).min(dome - y).min(u - medial);
            let in_lung = sdf > 0.0;
            lung_field[q] = in_lung;
            let mut air = 0.0;
            if sdf > 0.0 {
                air = depth * Anatomy::air_profile(lateral - u, y - apex, dome - y, u - medial);
                let hr2 = anatomy.heart.r2(x, y);
                if hr2 < 1.0 {
                    air *= 1.0 - anatomy.heart_occlusion * (1.0 - hr2).sqrt();
                }
            }
            let lung_air = air;
            let mut w = tissue;
            let mut vessel_gate = if lung_air > 0.0 { (lung_air / 25.0).min(1.0) } else { 0.0 };
            let mut extra = 0.0; // tissue added by lesions (mm water)
            let mut pure_air = 0.0; // air without lung tissue (pneumothorax)
            for (k, lesion) in prepared.iter().enumerate() {
                match *lesion {
                    Prepared::Pneumothorax { side, rim, extent } if side == s && in_lung => {
                        let dw = (lateral - u).min(y - apex);
                        let fade_end = anatomy.h * (0.25 + 0.75 * extent);
                        let width = rim * (1.0 - smoothstep(0.15 * anatomy.h, fade_end, y));
                        if width > 0.5 {
                            // The cavity keeps its air column; the lung within it now ends at the
                            // visceral pleura, `width` from the wall: pleural air has no lung tissue
                            // and no vessels, and the pleura itself is a thin line.
                            let e = ((dw - width) / 32.0).clamp(0.0, 1.0);
                            let lung = air * (e * (2.0 - e)).sqrt();
                            pure_air += air - lung;
                            air = lung;
                            vessel_gate = if dw < width { 0.0 } else { vessel_gate * e.min(1.0) };
                            if dw < width {
                                hits.push(k);
                            } else {
                                extra += 0.05 * air * (rim / 50.0).min(1.0);
                            }
                            // Seen edge-on, the visceral pleura is a long tangential path.
                            extra += 6.0 * tube_profile(dw - width, 0.4, blur);
                        }
                    }
                    Prepared::Effusion { side, height, thickness } if side == s && sdf > -3.0 => {
                        let meniscus =
                            anatomy.cp_y[s] - height * (0.4 + 0.6 * (u / lateral.max(1.0)).clamp(0.0, 1.0).powi(2));
                        let fluid = thickness * smoothstep(meniscus - 3.0, meniscus + 22.0, y);
                        if fluid > 0.0 {
                            let replaced = fluid.min(air);
                            air -= replaced;
                            vessel_gate *= 1.0 - (fluid / thickness);
                            if in_lung && fluid > 0.3 * thickness {
                                hits.push(k);
                            }
                        }
                    }
                    _ => {}
                }
            }
            for (k, lesion) in prepared.iter().enumerate() {
                match lesion {
                    Prepared::Nodule { c, r: radius, density, lobes, lobe_amp, phase } => {
                        let (dx, dy) = (x - c[0], y - c[1]);
                        let d2 = dx * dx + dy * dy;
                        let reach = radius * (1.0 + lobe_amp) + blur;
                        if d2 < reach * reach {
                            let theta = dy.atan2(dx);
                            let re = radius * (1.0 + lobe_amp * (lobes * theta + phase).sin());
                            let d = d2.sqrt();
                            if d < re {
                                extra += 1.3 * density * 2.0 * (re * re - d2).sqrt();
                                if in_lung {
                                    hits.push(k);
                                }
                            }
                        }
                    }
                    Prepared::Consolidation { side, lumps, reach, density, fissure, bronchi, seed } => {
                        if *side != s || !in_lung || x < reach[0] || x > reach[2] || y < reach[1] || y > reach[3] {
                            continue;
                        }
                        let mut field = 0.0;
                        for (p, sigma) in lumps {
                            let d2 = (x - p[0]).powi(2) + (y - p[1]).powi(2);
                            field += (-0.5 * d2 / (sigma * sigma)).exp();
                        }
                        field *= 0.7 + 0.6 * fbm(x / 9.0, y / 9.0, *seed);
                        // Ill-defined margins except at a fissure.
                        let mut fill = 0.75 * density * smoothstep(0.3, 0.85, field);
                        if let Some(f) = fissure {
                            fill *= smoothstep(f + 1.0, f - 1.0, y);
                        }
                        if fill > 0.0 {
                            let mut bronchus = 0.0f64;
                            for (a, b, rb) in bronchi {
                                let (d, _) = segment_distance([x, y], *a, *b);
                                if d < rb * 1.6 {
                                    bronchus = bronchus.max(1.0 - (d / (rb * 1.6)).powi(2));
                                }
                            }
                            fill *= 1.0 - 0.75 * bronchus;
                            let replaced = air * fill;
                            air -= replaced;
                            vessel_gate *= 1.0 - fill;
                            if fill > 0.5 * density {
                                hits.push(k);
                            }
                        }
                    }
                    Prepared::Interstitial { side, top, scale, amp, nodular, seed } => {
                        if *side != s || !in_lung || y < top - 15.0 {
                            continue;
                        }
                        let edge = top + 25.0 * (value_noise(x / 40.0, 3.0, seed ^ 0x5) - 0.5);
                        let zone = smoothstep(edge, edge + 30.0, y);
                        let n1 = value_noise(x / scale, y / scale, *seed);
                        let ridge = (1.0 - (2.0 * n1 - 1.0).abs()).powi(6);
                        let n2 = value_noise(x / (scale * 0.5) + 31.0, y / (scale * 0.5), seed ^ 0x77);
                        let fine = (1.0 - (2.0 * n2 - 1.0).abs()).powi(8);
                        let mut pattern = 0.7 * ridge + 0.3 * fine + 0.12;
                        if *nodular {
                            let cell = scale * 1.6;
                            let (cx, cy) = ((x / cell).floor(), (y / cell).floor());
                            let h = lattice(cx as i64, cy as i64, seed ^ 0x99);
                            if h < 0.5 {
                                let ox = (cx + 0.25 + 0.5 * lattice(cx as i64, cy as i64, seed ^ 0x31)) * cell;
                                let oy = (cy + 0.25 + 0.5 * lattice(cx as i64, cy as i64, seed ^ 0x32)) * cell;
                                let d = ((x - ox).powi(2) + (y - oy).powi(2)).sqrt();
                                pattern += 0.8 * (1.0 - (d / 1.6).min(1.0).powi(2));
                            }
                        }
                        let base = air.max(0.35 * depth).min(air + 10.0);
                        extra += base * amp * pattern * zone;
                        if zone > 0.5 {
                            hits.push(k);
                        }
                    }
                    _ => {}
                }
            }
            let vessel = f64::from(vessel_layer[q]).min(0.8 * lung_air) * vessel_gate;
            let airway = f64::from(airways.value[q]).min(tissue * 0.3);
            let bone = f64::from(bones.value[q]);
            w += -0.8 * air - 1.0 * pure_air + extra + vessel - airway;
            // Spine: vertebral bodies with discs and pedicles, only inside the body.
            if tissue > 0.0 && x.abs() < 30.0 {
                let period = anatomy.vertebra_period;
                let local = (y + 400.0).rem_euclid(period) / period;
                let disc = 1.0 - 0.45 * smoothstep(0.82, 0.9, local) * smoothstep(1.0, 0.92, local);
                let body_w = 23.0;
                if x.abs() < body_w {
                    w += 0.3 * 2.0 * (body_w * body_w - x * x).sqrt() * (0.85 + 0.15 * disc);
                }
                for side in [-1.0, 1.0] {
                    let (px, py) = (x - side * 16.0, (local - 0.3) * period);
                    let rr = (px / 4.5).powi(2) + (py / 6.5).powi(2);
                    if rr < 1.0 {
                        w += 4.0 * (1.0 - (1.0 - rr).powi(2));
                    }
                }
            }
            w += 1.8 * bone;
            // Breasts: soft tissue over the lower zones with a sharp lower edge.
            if let Some((radius, thickness)) = anatomy.breast {
                let c = [0.55 * anatomy.wt[s], anatomy.dome_top[s] - 5.0];
                let rr = ((u - c[0]) / (radius * 1.2)).powi(2) + ((y - c[1]) / radius).powi(2);
                if rr < 1.0 {
                    w += thickness * (1.0 - rr).sqrt() * smoothstep(c[1] - radius, c[1] + 0.4 * radius, y);
                }
            }
            if let Some((a, b)) = anatomy.gastric_bubble
                && s == 1
            {
                let c = [0.55 * anatomy.wt[1], anatomy.dome(1, 0.55 * anatomy.wt[1]) + b + 3.0];
                let rr = ((u - c[0]) / a).powi(2) + ((y - c[1]) / b).powi(2);
                if rr < 1.0 && y < c[1] + 0.3 * b {
                    w -= 30.0 * (1.0 - rr).sqrt();
                }
            }
            let heel = anatomy.heel * (img[1] / (rows as f64 * spacing).max(1.0));
            log_exposure[q] = (anatomy.mu * w.max(0.0) + heel) as f32;
            for &k in &hits {
                if let Some(slot) = mask_slots[k] {
                    masks[slot].1[q] = true;
                }
            }
        }
    }
    // Every nodule marks at least the pixel of its centre (tiny images).
    for (k, lesion) in prepared.iter().enumerate() {
        if let (Prepared::Nodule { c, .. }, Some(slot)) = (lesion, mask_slots[k]) {
            let p = grid.to_image(*c);
            let i = ((p[0] + columns as f64 * spacing / 2.0) / spacing).floor();
            let j = ((p[1] + rows as f64 * spacing / 2.0) / spacing).floor();
            if i >= 0.0 && j >= 0.0 && (i as usize) < columns && (j as usize) < rows {
                masks[slot].1[j as usize * columns + i as usize] = true;
            }
        }
    }
    let values = develop(&anatomy, &log_exposure, columns, rows, spacing, base_seed);
    let mut values = values;
    if let Some((corner, t)) = anatomy.marker {
        draw_marker(&mut values, columns, rows, spacing, corner, t);
    }
    // Masks only where the lesion can be: inside the lung fields.
    for (_, m) in &mut masks {
        for (v, &inside) in m.iter_mut().zip(&lung_field) {
            *v &= inside;
        }
    }
    RenderedChest { columns, rows, values, lung_field, masks }
}

/// Detector and console: quantum noise, dynamic range compression, tone curve, 12 bits.
fn develop(anatomy: &Anatomy, l: &[f32], w: usize, h: usize, spacing: f64, seed: u64) -> Vec<u16> {
    // Low-pass of the log exposure on a coarse grid (blocks of about 12 mm, three box passes).
    let block = ((12.0 / spacing).round() as usize).max(1);
    let (bw, bh) = (w.div_ceil(block), h.div_ceil(block));
    let mut coarse = vec![0f64; bw * bh];
    let mut counts = vec![0u32; bw * bh];
    for j in 0..h {
        for i in 0..w {
            let c = (j / block) * bw + i / block;
            coarse[c] += f64::from(l[j * w + i]);
            counts[c] += 1;
        }
    }
    for (v, &n) in coarse.iter_mut().zip(&counts) {
        *v /= f64::from(n.max(1));
    }
    for _ in 0..3 {
        let src = coarse.clone();
        for j in 0..bh {
            for i in 0..bw {
                let mut sum = 0.0;
                let mut n = 0.0;
                for dj in -1i64..=1 {
                    for di in -1i64..=1 {
                        let (ii, jj) = (i as i64 + di, j as i64 + dj);
                        if ii >= 0 && jj >= 0 && (ii as usize) < bw && (jj as usize) < bh {
                            sum += src[jj as usize * bw + ii as usize];
                            n += 1.0;
                        }
                    }
                }
                coarse[j * bw + i] = sum / n;
            }
        }
    }
    let sample = |x: f64, y: f64| -> f64 {
        let fx = (x / block as f64 - 0.5).clamp(0.0, (bw - 1) as f64);
        let fy = (y / block as f64 - 0.5).clamp(0.0, (bh - 1) as f64);
        let (i0, j0) = (fx.floor() as usize, fy.floor() as usize);
        let (i1, j1) = ((i0 + 1).min(bw - 1), (j0 + 1).min(bh - 1));
        let (tx, ty) = (fx - i0 as f64, fy - j0 as f64);
        let top = coarse[j0 * bw + i0] * (1.0 - tx) + coarse[j0 * bw + i1] * tx;
        let bottom = coarse[j1 * bw + i0] * (1.0 - tx) + coarse[j1 * bw + i1] * tx;
        top * (1.0 - ty) + bottom * ty
    };
    let noise_scale = anatomy.noise * (0.17 / spacing);
    // Tone curve (a gamma with a soft shoulder) as a table over [0, 1].
    const TONE: usize = 16384;
    let tone: Vec<u16> = (0..=TONE)
        .map(|k| {
            let toned = (k as f64 / TONE as f64).powf(anatomy.gamma);
            let shoulder = toned * (1.0 + 2.0) / (toned + 2.0);
            (shoulder.clamp(0.0, 1.0) * 4095.0).round() as u16
        })
        .collect();
    let mut out = Vec::with_capacity(w * h);
    for j in 0..h {
        for i in 0..w {
            let q = j * w + i;
            let lv = f64::from(l[q]);
            let low = sample(i as f64 + 0.5, j as f64 + 0.5);
            let noisy = lv + noise_scale * (0.5 * lv).exp() * pixel_gauss(seed, q as u64);
            let eq = low + anatomy.detail * (noisy - low) - anatomy.drc * (low - anatomy.drc_ref).max(0.0);
            let v = ((eq - anatomy.lo) / (anatomy.hi - anatomy.lo)).clamp(0.0, 1.0);
            out.push(tone[(v * TONE as f64).round() as usize]);
        }
    }
    out
}

/// A lead side marker (a bright square with a dark letter-like gap) near one corner.
fn draw_marker(values: &mut [u16], w: usize, h: usize, spacing: f64, corner: usize, t: f64) {
    let size = (14.0 / spacing).round() as usize;
    if size < 3 || size * 4 > w || size * 4 > h {
        return;
    }
    let margin = (12.0 / spacing + t * 30.0 / spacing) as usize;
    let x0 = if corner.is_multiple_of(2) { margin } else { w.saturating_sub(margin + size) };
    let y0 = if corner < 2 { margin } else { h.saturating_sub(margin + size * 3) };
    for j in y0..(y0 + size).min(h) {
        for i in x0..(x0 + size).min(w) {
            let (a, b) = (i - x0, j - y0);
            let stroke = a < size / 4 || b >= size - size / 4;
            values[j * w + i] = if stroke { 4095 } else { 3600 };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lungs_fraction(r: &RenderedChest) -> f64 {
        r.lung_field.iter().filter(|&&v| v).count() as f64 / r.lung_field.len() as f64
    }

    #[test]
    fn deterministic_and_seed_dependent() {
        let lesions = sample_case("det-1");
        let a = render_chest("det", 0, 192, 240, 1.8, &lesions);
        let b = render_chest("det", 0, 192, 240, 1.8, &lesions);
        assert_eq!(a, b);
        let c = render_chest("det-other", 0, 192, 240, 1.8, &lesions);
        assert_ne!(a.values, c.values);
        // Another acquisition of the same patient: same anatomy (lung area), new pose and noise.
        let d = render_chest("det", 1, 192, 240, 1.8, &lesions);
        assert_eq!(d, render_chest("det", 1, 192, 240, 1.8, &lesions));
        assert_ne!(a.values, d.values);
        let area = |r: &RenderedChest| r.lung_field.iter().filter(|&&v| v).count() as f64;
        assert!((area(&a) / area(&d) - 1.0).abs() < 0.05, "{} vs {}", area(&a), area(&d));
    }

    #[test]
    fn a_small_rendering_matches_a_large_one_shrunk() {
        // The same patient at 0.68 mm and at 2.72 mm: block means of the first equal the second
        // up to noise and edge sampling.
        let lesions = [CxrLesion::nodule(Side::Left, [0.5, 0.5], 14.0, 0.9)];
        let big = render_chest("scale", 0, 512, 624, 0.68, &lesions);
        let small = render_chest("scale", 0, 128, 156, 2.72, &lesions);
        let mut total = 0.0;
        for j in 0..156 {
            for i in 0..128 {
                let mut sum = 0.0;
                for dj in 0..4 {
                    for di in 0..4 {
                        sum += f64::from(big.values[(j * 4 + dj) * 512 + i * 4 + di]);
                    }
                }
                total += (sum / 16.0 - f64::from(small.values[j * 128 + i])).abs();
            }
        }
        let mean = total / (128.0 * 156.0);
        assert!(mean < 60.0, "mean absolute difference {mean} of 4095");
    }

    #[test]
    fn anatomy_is_plausible() {
        let r = render_chest("anatomy", 0, 256, 256, 1.68, &[]);
        let f = lungs_fraction(&r);
        assert!((0.15..0.55).contains(&f), "lung fraction {f}");
        // Lungs darker than the mediastinum and the abdomen; the background darkest.
        let at = |x: f64, y: f64| f64::from(r.values[(y * 255.0) as usize * 256 + (x * 255.0) as usize]);
        let mean_in = |mask: &dyn Fn(usize) -> bool| {
            let (mut sum, mut n) = (0.0f64, 0.0f64);
            for (q, &v) in r.values.iter().enumerate() {
                if mask(q) {
                    sum += f64::from(v);
                    n += 1.0;
                }
            }
            sum / n.max(1.0)
        };
        let lung = mean_in(&|q| r.lung_field[q]);
        let spine = at(0.5, 0.35);
        let abdomen = at(0.3, 0.95);
        assert!(lung < spine && lung < abdomen, "lung {lung} spine {spine} abdomen {abdomen}");
        assert!(at(0.01, 0.6) < lung, "background {} lung {lung}", at(0.01, 0.6));
        assert!(r.masks.is_empty());
    }

    #[test]
    fn lesion_present_iff_mask_nonempty_and_masks_inside_lung_fields() {
        for k in 0..24 {
            let seed = format!("mask-{k}");
            let lesions = sample_case(&seed);
            let r = render_chest(&seed, 0, 200, 240, 1.75, &lesions);
            for f in CxrFinding::ALL {
                let present = lesions.iter().any(|l| l.finding == f);
                let pixels = r.mask(f).map_or(0, |m| m.iter().filter(|&&v| v).count());
                assert_eq!(present, pixels > 0, "{seed}: {f:?} present {present}, {pixels} mask pixels");
                if let Some(m) = r.mask(f) {
                    assert!(
                        m.iter().zip(&r.lung_field).all(|(&v, &lung)| !v || lung),
                        "{seed}: {f:?} outside the lungs"
                    );
                }
            }
        }
    }

    #[test]
    fn every_finding_changes_the_image_where_its_mask_is() {
        let seed = "lesion-effect";
        let base = render_chest(seed, 0, 256, 256, 1.68, &[]);
        let cases = [
            CxrLesion::nodule(Side::Right, [0.6, 0.4], 20.0, 0.9),
            CxrLesion::consolidation(Side::Left, [0.5, 0.7], 80.0, 0.85),
            CxrLesion::effusion(Side::Right, 80.0),
            CxrLesion::interstitial(Side::Both, 120.0, 0.9),
            CxrLesion::pneumothorax(Side::Left, 35.0, 0.8),
        ];
        for lesion in cases {
            let r = render_chest(seed, 0, 256, 256, 1.68, &[lesion]);
            let m = r.mask(lesion.finding).unwrap_or(&[]);
            let (mut diff, mut n) = (0.0f64, 0.0f64);
            for (q, &inside) in m.iter().enumerate() {
                if inside {
                    diff += f64::from(r.values[q]) - f64::from(base.values[q]);
                    n += 1.0;
                }
            }
            let mean = diff / n.max(1.0);
            if lesion.finding == CxrFinding::Pneumothorax {
                assert!(mean < -20.0, "{:?}: mean change {mean} over {n} pixels", lesion.finding);
            } else {
                assert!(mean > 40.0, "{:?}: mean change {mean} over {n} pixels", lesion.finding);
            }
        }
    }

    #[test]
    fn tube_profiles_are_symmetric_and_finite() {
        for (r, blur) in [(0.4, 0.085), (0.4, 0.34), (5.0, 0.085), (0.3, 1.4)] {
            for d in [0.0, 0.1, 0.39, 0.5, 2.0, 30.0] {
                let (a, b) = (tube_profile(d, r, blur), tube_profile(-d, r, blur));
                assert!(a.is_finite() && a >= 0.0 && a == b, "r {r} blur {blur} d {d}: {a} {b}");
            }
        }
    }

    #[test]
    fn tiny_and_odd_sizes_do_not_panic() {
        let lesions = [CxrLesion::nodule(Side::Left, [0.5, 0.5], 10.0, 1.0)];
        for (w, h) in [(1, 1), (16, 16), (17, 40), (64, 64)] {
            let r = render_chest("tiny", 0, w, h, 430.0 / w as f64, &lesions);
            assert_eq!(r.values.len(), w * h);
        }
    }

    #[test]
    fn sample_case_distribution() {
        let n = 600;
        let mut normal = 0;
        let mut counts = [0usize; 5];
        for k in 0..n {
            let lesions = sample_case(&format!("dist-{k}"));
            if lesions.is_empty() {
                normal += 1;
            }
            assert!(lesions.len() <= 2);
            for (i, f) in CxrFinding::ALL.iter().enumerate() {
                if lesions.iter().any(|l| l.finding == *f) {
                    counts[i] += 1;
                }
            }
        }
        let normal = normal as f64 / n as f64;
        assert!((0.24..0.36).contains(&normal), "normal fraction {normal}");
        for c in counts {
            let p = c as f64 / n as f64;
            assert!((0.12..0.3).contains(&p), "prevalence {p}");
        }
    }
}
