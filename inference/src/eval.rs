//! Evaluation metrics for a model against reference labels: pure functions, no I/O.
//!
//! * **ROC / AUROC** ([`roc_curve`], [`auroc`]): the area is the Mann–Whitney statistic, ties
//!   between a positive and a negative count one half. A score is positive at threshold `t` when
//!   `score >= t`, as [`crate::cxr`] flags findings.
//! * **Bootstrap interval** ([`auroc_ci`]): the percentile bootstrap of
//!   `models/training/cxr.py` (`auroc_ci`): `resamples` (2000) plain resamples of all cases with
//!   replacement (not stratified), resamples that lack a class skipped, and the 2.5th and 97.5th
//!   percentiles with linear interpolation between order statistics (numpy's default). The
//!   resamples are numpy's own: [`NumpyRng`] reproduces `numpy.random.default_rng(seed)` and its
//!   `integers(0, n, n)` draw for draw, so with the same scores the bounds equal the Python ones
//!   (up to floating-point summation order); they are deterministic for a given seed.
//! * **Confusion at a threshold** ([`confusion_at`]): counts, sensitivity, specificity, PPV, NPV.
//! * **Threshold for a target sensitivity** ([`threshold_for_sensitivity`]): the highest threshold
//!   whose sensitivity reaches the target (ties among positives can carry it above the target).
//! * **FROC** ([`froc`]): lesion-level detection over scans. A candidate *hits* a lesion when its
//!   centre lies within the lesion's radius (half the diameter, but at least
//!   [`FrocOptions::min_hit_radius_mm`], so that a detector's centre a voxel or two off on a 3 mm
//!   nodule still counts); a candidate that hits several lesions is assigned to the one whose centre
//!   is nearest relative to its radius. A lesion is found at threshold `t` when any candidate
//!   assigned to it scores `>= t`; further candidates on a found lesion are neither hits nor false
//!   positives (as in LUNA16); candidates that hit nothing are false positives. The sensitivity at
//!   *r* false positives per scan is the best sensitivity among operating points with at most *r*
//!   false positives per scan (no interpolation); the CPM is the mean over 1/8, 1/4, 1/2, 1, 2, 4 and
//!   8 false positives per scan.
//! * **Image quality** ([`psnr`], [`ssim`], [`ImageWindow`]): a denoiser against a reference, as
//!   `models/training/ldct_denoise.py` measures it with scikit-image: both images clipped to a HU
//!   window and mapped to [0, 1]; PSNR = 10 log10(1 / MSE); SSIM with a 7 x 7 uniform window, sample
//!   covariances (N - 1), K1 = 0.01, K2 = 0.03, data range 1, averaged over the pixels whose window
//!   lies inside the image (`structural_similarity`'s defaults).

use serde::Serialize;

use crate::error::{Error, Result};

/// One point of a ROC curve: at `threshold`, `tpr` of positives and `fpr` of negatives score
/// `>= threshold`. The first point is (0, 0) at `+inf` (serialised as `null`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RocPoint {
    pub threshold: f64,
    pub fpr: f64,
    pub tpr: f64,
}

fn check(labels: &[bool], scores: &[f64]) -> Result<()> {
    if labels.len() != scores.len() {
        return Err(Error::Input(format!("{} labels but {} scores", labels.len(), scores.len())));
    }
    if let Some(i) = scores.iter().position(|s| s.is_nan()) {
        return Err(Error::Input(format!("score {i} is NaN")));
    }
    Ok(())
}

fn counts(labels: &[bool]) -> (usize, usize) {
    let pos = labels.iter().filter(|&&l| l).count();
    (pos, labels.len() - pos)
}

/// Indices sorted by score, highest first (stable: equal scores keep their order).
fn by_score_desc(scores: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    order
}

/// The ROC curve: one point per distinct score (from `(0, 0)` to `(1, 1)`); `None` without both
/// classes.
pub fn roc_curve(labels: &[bool], scores: &[f64]) -> Result<Option<Vec<RocPoint>>> {
    check(labels, scores)?;
    let (p, n) = counts(labels);
    if p == 0 || n == 0 {
        return Ok(None);
    }
    let order = by_score_desc(scores);
    let mut points = vec![RocPoint { threshold: f64::INFINITY, fpr: 0.0, tpr: 0.0 }];
    let (mut tp, mut fp) = (0usize, 0usize);
    let mut k = 0;
    while k < order.len() {
        let t = scores[order[k]];
        while k < order.len() && scores[order[k]] == t {
            if labels[order[k]] {
                tp += 1;
            } else {
                fp += 1;
            }
            k += 1;
        }
        points.push(RocPoint { threshold: t, fpr: fp as f64 / n as f64, tpr: tp as f64 / p as f64 });
    }
    Ok(Some(points))
}

/// AUROC with case weights (bootstrap multiplicities): `order` sorts the scores ascending.
fn weighted_auroc(labels: &[bool], scores: &[f64], order_asc: &[usize], weights: &[u32]) -> Option<f64> {
    let (mut neg_below, mut sum) = (0f64, 0f64);
    let (mut total_pos, mut total_neg) = (0f64, 0f64);
    let mut k = 0;
    while k < order_asc.len() {
        let t = scores[order_asc[k]];
        let (mut pos_g, mut neg_g) = (0f64, 0f64);
        while k < order_asc.len() && scores[order_asc[k]] == t {
            let i = order_asc[k];
            let w = f64::from(weights[i]);
            if labels[i] {
                pos_g += w;
            } else {
                neg_g += w;
            }
            k += 1;
        }
        sum += pos_g * (neg_below + 0.5 * neg_g);
        neg_below += neg_g;
        total_pos += pos_g;
        total_neg += neg_g;
    }
    (total_pos > 0.0 && total_neg > 0.0).then(|| sum / (total_pos * total_neg))
}

fn ascending(scores: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    order
}

/// Area under the ROC curve (Mann–Whitney U / (P·N), ties counted one half); `None` without both
/// classes.
pub fn auroc(labels: &[bool], scores: &[f64]) -> Result<Option<f64>> {
    check(labels, scores)?;
    let ones = vec![1u32; labels.len()];
    Ok(weighted_auroc(labels, scores, &ascending(scores), &ones))
}

/// Bootstrap settings (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Bootstrap {
    /// Number of resamples (2000, as `cxr.py`).
    pub resamples: usize,
    /// Seed of numpy's `default_rng` (0, as `cxr.py`'s `SEED`).
    pub seed: u64,
    /// Central coverage of the interval (0.95).
    pub level: f64,
}

impl Default for Bootstrap {
    fn default() -> Self {
        Self { resamples: 2000, seed: 0, level: 0.95 }
    }
}

/// numpy's `numpy.random.default_rng(seed)`, reimplemented so that the bootstrap draws exactly the
/// resamples `models/training/cxr.py` draws: `SeedSequence(seed)` → PCG64 (128-bit LCG, XSL-RR
/// output, numpy's stepping and seeding), 32-bit halves handed out low first, and
/// `integers(0, n)` by Lemire's method as numpy's `random_bounded_uint64_fill` does for ranges
/// under 2^32.
#[derive(Debug, Clone)]
pub struct NumpyRng {
    state: u128,
    inc: u128,
    pending: Option<u32>,
}

const PCG_MULT: u128 = (2_549_297_995_355_413_924u128 << 64) + 4_865_540_595_714_422_341u128;

/// `numpy.random.SeedSequence(seed).generate_state(words, uint32)` (no spawn key).
fn seed_sequence_state(seed: u64, words: usize) -> Vec<u32> {
    const INIT_A: u32 = 0x43b0_d7e5;
    const MULT_A: u32 = 0x931e_8875;
    const INIT_B: u32 = 0x8b51_f9dd;
    const MULT_B: u32 = 0x58f3_8ded;
    const MIX_MULT_L: u32 = 0xca01_f9dd;
    const MIX_MULT_R: u32 = 0x4973_f715;
    let mut entropy = vec![seed as u32];
    if seed >> 32 != 0 {
        entropy.push((seed >> 32) as u32);
    }
    let mut hash_const = INIT_A;
    let mut hashmix = |value: u32| {
        let mut v = value ^ hash_const;
        hash_const = hash_const.wrapping_mul(MULT_A);
        v = v.wrapping_mul(hash_const);
        v ^ (v >> 16)
    };
    let mix = |x: u32, y: u32| {
        let r = MIX_MULT_L.wrapping_mul(x).wrapping_sub(MIX_MULT_R.wrapping_mul(y));
        r ^ (r >> 16)
    };
    let mut pool = [0u32; 4];
    for (i, p) in pool.iter_mut().enumerate() {
        *p = hashmix(entropy.get(i).copied().unwrap_or(0));
    }
    for src in 0..4 {
        for dst in 0..4 {
            if src != dst {
                pool[dst] = mix(pool[dst], hashmix(pool[src]));
            }
        }
    }
    let mut hash_const = INIT_B;
    (0..words)
        .map(|i| {
            let mut v = pool[i % 4] ^ hash_const;
            hash_const = hash_const.wrapping_mul(MULT_B);
            v = v.wrapping_mul(hash_const);
            v ^ (v >> 16)
        })
        .collect()
}

impl NumpyRng {
    pub fn new(seed: u64) -> Self {
        let w = seed_sequence_state(seed, 8);
        let word = |k: usize| u128::from(w[2 * k]) | (u128::from(w[2 * k + 1]) << 32);
        let initstate = (word(0) << 64) | word(1);
        let initseq = (word(2) << 64) | word(3);
        let mut rng = Self { state: 0, inc: (initseq << 1) | 1, pending: None };
        rng.step();
        rng.state = rng.state.wrapping_add(initstate);
        rng.step();
        rng
    }

    fn step(&mut self) {
        self.state = self.state.wrapping_mul(PCG_MULT).wrapping_add(self.inc);
    }

    /// `bit_generator.random_raw()`.
    pub fn next_u64(&mut self) -> u64 {
        self.step();
        let s = self.state;
        (((s >> 64) as u64) ^ (s as u64)).rotate_right((s >> 122) as u32)
    }

    fn next_u32(&mut self) -> u32 {
        if let Some(v) = self.pending.take() {
            return v;
        }
        let n = self.next_u64();
        self.pending = Some((n >> 32) as u32);
        n as u32
    }

    /// `integers(0, n)`: uniform in `0..n`, for `1 <= n <= 2^32`, drawing as numpy does.
    pub fn below(&mut self, n: u64) -> u64 {
        let n = n.clamp(1, 1 << 32);
        if n == 1 {
            return 0;
        }
        if n == 1 << 32 {
            return u64::from(self.next_u32());
        }
        let m = |r: &mut Self| u64::from(r.next_u32()) * n;
        let mut v = m(self);
        if (v & 0xFFFF_FFFF) < n {
            let threshold = ((1u64 << 32) - n) % n;
            while (v & 0xFFFF_FFFF) < threshold {
                v = m(self);
            }
        }
        v >> 32
    }
}

/// Percentile `q` in [0, 1] of sorted values, linear between order statistics (numpy's default).
pub fn percentile_sorted(sorted: &[f64], q: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    let h = q.clamp(0.0, 1.0) * last as f64;
    let lo = h.floor() as usize;
    let hi = (lo + 1).min(last);
    Some(sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo]))
}

/// Percentile-bootstrap interval of the AUROC; `None` without both classes.
pub fn auroc_ci(labels: &[bool], scores: &[f64], bootstrap: &Bootstrap) -> Result<Option<[f64; 2]>> {
    check(labels, scores)?;
    let (p, n) = counts(labels);
    if p == 0 || n == 0 || bootstrap.resamples == 0 {
        return Ok(None);
    }
    let order = ascending(scores);
    let mut rng = NumpyRng::new(bootstrap.seed);
    let mut weights = vec![0u32; labels.len()];
    let mut values = Vec::with_capacity(bootstrap.resamples);
    for _ in 0..bootstrap.resamples {
        weights.iter_mut().for_each(|w| *w = 0);
        for _ in 0..labels.len() {
            weights[rng.below(labels.len() as u64) as usize] += 1;
        }
        if let Some(a) = weighted_auroc(labels, scores, &order, &weights) {
            values.push(a);
        }
    }
    values.sort_by(f64::total_cmp);
    let tail = (1.0 - bootstrap.level.clamp(0.0, 1.0)) / 2.0;
    Ok(percentile_sorted(&values, tail).zip(percentile_sorted(&values, 1.0 - tail)).map(|(lo, hi)| [lo, hi]))
}

/// Counts at a threshold (`score >= threshold` is positive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Confusion {
    pub tp: usize,
    pub fp: usize,
    pub tn: usize,
    #[serde(rename = "fn")]
    pub fn_: usize,
}

fn ratio(a: usize, b: usize) -> Option<f64> {
    (b > 0).then(|| a as f64 / b as f64)
}

impl Confusion {
    /// TP / (TP + FN); `None` without positives.
    pub fn sensitivity(&self) -> Option<f64> {
        ratio(self.tp, self.tp + self.fn_)
    }
    /// TN / (TN + FP); `None` without negatives.
    pub fn specificity(&self) -> Option<f64> {
        ratio(self.tn, self.tn + self.fp)
    }
    /// TP / (TP + FP); `None` when nothing is called positive.
    pub fn ppv(&self) -> Option<f64> {
        ratio(self.tp, self.tp + self.fp)
    }
    /// TN / (TN + FN); `None` when nothing is called negative.
    pub fn npv(&self) -> Option<f64> {
        ratio(self.tn, self.tn + self.fn_)
    }
}

/// The confusion counts at `threshold`.
pub fn confusion_at(labels: &[bool], scores: &[f64], threshold: f64) -> Result<Confusion> {
    check(labels, scores)?;
    let mut c = Confusion::default();
    for (&l, &s) in labels.iter().zip(scores) {
        match (l, s >= threshold) {
            (true, true) => c.tp += 1,
            (true, false) => c.fn_ += 1,
            (false, true) => c.fp += 1,
            (false, false) => c.tn += 1,
        }
    }
    Ok(c)
}

/// An operating point chosen for a sensitivity.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct OperatingPoint {
    pub threshold: f64,
    pub sensitivity: f64,
    pub specificity: Option<f64>,
}

/// The highest threshold at which at least `target` of the positives score `>= threshold`;
/// `None` without positives.
pub fn threshold_for_sensitivity(labels: &[bool], scores: &[f64], target: f64) -> Result<Option<OperatingPoint>> {
    check(labels, scores)?;
    let mut pos: Vec<f64> = labels.iter().zip(scores).filter(|(l, _)| **l).map(|(_, &s)| s).collect();
    if pos.is_empty() {
        return Ok(None);
    }
    pos.sort_by(|a, b| b.total_cmp(a));
    // The k-th highest positive score, k = ceil(target * P) (at least one).
    let need = ((target.clamp(0.0, 1.0) * pos.len() as f64) - 1e-9).ceil().max(1.0) as usize;
    let threshold = pos[need.min(pos.len()) - 1];
    let c = confusion_at(labels, scores, threshold)?;
    Ok(Some(OperatingPoint { threshold, sensitivity: c.sensitivity().unwrap_or(0.0), specificity: c.specificity() }))
}

/// Everything measured for one binary label.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BinaryMetrics {
    pub positives: usize,
    pub negatives: usize,
    pub auroc: Option<f64>,
    pub auroc_ci95: Option<[f64; 2]>,
    /// The operating threshold (the manifest's) and what it gives.
    pub threshold: f64,
    pub confusion: Confusion,
    pub sensitivity: Option<f64>,
    pub specificity: Option<f64>,
    pub ppv: Option<f64>,
    pub npv: Option<f64>,
    /// The threshold that reaches `target_sensitivity`.
    pub target_sensitivity: f64,
    pub at_target_sensitivity: Option<OperatingPoint>,
    pub roc: Option<Vec<RocPoint>>,
}

/// AUROC with its interval, the confusion at `threshold`, the threshold for `target_sensitivity`
/// and the ROC curve.
pub fn binary_metrics(
    labels: &[bool],
    scores: &[f64],
    threshold: f64,
    target_sensitivity: f64,
    bootstrap: &Bootstrap,
) -> Result<BinaryMetrics> {
    let (positives, negatives) = counts(labels);
    let confusion = confusion_at(labels, scores, threshold)?;
    Ok(BinaryMetrics {
        positives,
        negatives,
        auroc: auroc(labels, scores)?,
        auroc_ci95: auroc_ci(labels, scores, bootstrap)?,
        threshold,
        confusion,
        sensitivity: confusion.sensitivity(),
        specificity: confusion.specificity(),
        ppv: confusion.ppv(),
        npv: confusion.npv(),
        target_sensitivity,
        at_target_sensitivity: threshold_for_sensitivity(labels, scores, target_sensitivity)?,
        roc: roc_curve(labels, scores)?,
    })
}

/// A reference lesion of one scan, in patient mm.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Lesion {
    pub center_mm: [f64; 3],
    pub diameter_mm: f64,
}

/// A detector's candidate, in patient mm.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Candidate {
    pub center_mm: [f64; 3],
    pub score: f64,
}

/// The lesions and candidates of one scan.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct ScanCase {
    pub lesions: Vec<Lesion>,
    pub candidates: Vec<Candidate>,
}

/// FROC settings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FrocOptions {
    /// The hit radius is `max(diameter / 2, min_hit_radius_mm)` (3 mm).
    pub min_hit_radius_mm: f64,
    /// False positives per scan at which sensitivity is reported (1/8 ... 8).
    pub fp_rates: Vec<f64>,
}

impl Default for FrocOptions {
    fn default() -> Self {
        Self { min_hit_radius_mm: 3.0, fp_rates: vec![0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0] }
    }
}

/// One operating point of a FROC curve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct FrocPoint {
    pub threshold: f64,
    pub fps_per_scan: f64,
    pub sensitivity: f64,
}

/// The FROC analysis of a set of scans.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Froc {
    pub scans: usize,
    pub lesions: usize,
    pub candidates: usize,
    /// One point per distinct candidate score, from the highest down.
    pub curve: Vec<FrocPoint>,
    /// `(false positives per scan, sensitivity)` at each of the options' rates.
    pub at_fp_rates: Vec<(f64, f64)>,
    /// Mean of `at_fp_rates` (competition performance metric); `None` without lesions.
    pub cpm: Option<f64>,
    pub min_hit_radius_mm: f64,
}

fn distance(a: [f64; 3], b: [f64; 3]) -> f64 {
    (0..3).map(|k| (a[k] - b[k]).powi(2)).sum::<f64>().sqrt()
}

/// Lesion-level FROC over scans (see the module documentation for the hit rule).
pub fn froc(cases: &[ScanCase], options: &FrocOptions) -> Result<Froc> {
    // Events: (score, Some(global lesion index)) for hits, (score, None) for false positives.
    let mut events: Vec<(f64, Option<usize>)> = Vec::new();
    let mut lesions = 0usize;
    let mut candidates = 0usize;
    for case in cases {
        for c in &case.candidates {
            if c.score.is_nan() {
                return Err(Error::Input("a candidate's score is NaN".into()));
            }
            candidates += 1;
            let hit = case
                .lesions
                .iter()
                .enumerate()
                .filter_map(|(k, l)| {
                    let r = (l.diameter_mm / 2.0).max(options.min_hit_radius_mm);
                    let d = distance(c.center_mm, l.center_mm);
                    (d <= r).then_some((k, d / r))
                })
                .min_by(|a, b| a.1.total_cmp(&b.1))
                .map(|(k, _)| lesions + k);
            events.push((c.score, hit));
        }
        lesions += case.lesions.len();
    }
    // Each lesion counts once, at its best candidate's score; later hits on it are ignored.
    events.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut found = vec![false; lesions];
    let scans = cases.len().max(1) as f64;
    let (mut tp, mut fp) = (0usize, 0usize);
    let mut curve = Vec::new();
    let mut k = 0;
    while k < events.len() {
        let t = events[k].0;
        while k < events.len() && events[k].0 == t {
            match events[k].1 {
                Some(l) if !found[l] => {
                    found[l] = true;
                    tp += 1;
                }
                Some(_) => {}
                None => fp += 1,
            }
            k += 1;
        }
        curve.push(FrocPoint {
            threshold: t,
            fps_per_scan: fp as f64 / scans,
            sensitivity: if lesions == 0 { 0.0 } else { tp as f64 / lesions as f64 },
        });
    }
    let at_fp_rates: Vec<(f64, f64)> = options
        .fp_rates
        .iter()
        .map(|&rate| {
            let best =
                curve.iter().filter(|p| p.fps_per_scan <= rate + 1e-12).map(|p| p.sensitivity).fold(0.0f64, f64::max);
            (rate, best)
        })
        .collect();
    let cpm = (lesions > 0 && !at_fp_rates.is_empty())
        .then(|| at_fp_rates.iter().map(|(_, s)| s).sum::<f64>() / at_fp_rates.len() as f64);
    Ok(Froc {
        scans: cases.len(),
        lesions,
        candidates,
        curve,
        at_fp_rates,
        cpm,
        min_hit_radius_mm: options.min_hit_radius_mm,
    })
}

// ------------------------------------------------------------------------------------------------
// Image quality

/// The HU window both images are clipped to and mapped to [0, 1] from before PSNR / SSIM.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ImageWindow {
    pub min_hu: f64,
    pub max_hu: f64,
}

impl ImageWindow {
    /// Lung to soft tissue: [-1000, 400] HU (the denoiser cards' window).
    pub const CHEST: Self = Self { min_hu: -1000.0, max_hu: 400.0 };

    /// `hu` clipped to the window, in [0, 1].
    pub fn unit(&self, hu: f32) -> f64 {
        ((f64::from(hu) - self.min_hu) / (self.max_hu - self.min_hu)).clamp(0.0, 1.0)
    }

    fn map(&self, hu: &[f32]) -> Vec<f64> {
        hu.iter().map(|&v| self.unit(v)).collect()
    }
}

fn check_image(reference: &[f32], test: &[f32], width: usize, height: usize) -> Result<()> {
    if reference.len() != width * height || test.len() != width * height || width == 0 || height == 0 {
        return Err(Error::Input(format!(
            "images of {} and {} values for a {width} x {height} comparison",
            reference.len(),
            test.len()
        )));
    }
    Ok(())
}

/// Peak signal-to-noise ratio in dB of `test` against `reference` (HU, `width` x `height`) in
/// `window`; `None` when they are identical.
pub fn psnr(reference: &[f32], test: &[f32], width: usize, height: usize, window: &ImageWindow) -> Result<Option<f64>> {
    check_image(reference, test, width, height)?;
    let mse = reference.iter().zip(test).map(|(&r, &t)| (window.unit(r) - window.unit(t)).powi(2)).sum::<f64>()
        / reference.len() as f64;
    Ok((mse > 0.0).then(|| -10.0 * mse.log10()))
}

/// Summed-area table of `values` (`width` x `height`), one extra row and column of zeros.
fn integral(values: &[f64], width: usize, height: usize) -> Vec<f64> {
    let w1 = width + 1;
    let mut table = vec![0.0; w1 * (height + 1)];
    for y in 0..height {
        let mut row = 0.0;
        for x in 0..width {
            row += values[y * width + x];
            table[(y + 1) * w1 + x + 1] = table[y * w1 + x + 1] + row;
        }
    }
    table
}

/// Mean structural similarity of `test` against `reference` (HU, `width` x `height`) in `window`:
/// scikit-image's `structural_similarity(..., data_range=1)` on the windowed images. Needs at least
/// 7 x 7 pixels.
pub fn ssim(reference: &[f32], test: &[f32], width: usize, height: usize, window: &ImageWindow) -> Result<f64> {
    const WIN: usize = 7;
    check_image(reference, test, width, height)?;
    if width < WIN || height < WIN {
        return Err(Error::Input(format!("SSIM needs at least {WIN} x {WIN} pixels, got {width} x {height}")));
    }
    let (x, y) = (window.map(reference), window.map(test));
    let products = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(p, q)| p * q).collect::<Vec<f64>>();
    let tables = [&x, &y, &products(&x, &x), &products(&y, &y), &products(&x, &y)].map(|v| integral(v, width, height));
    let n = (WIN * WIN) as f64;
    let cov_norm = n / (n - 1.0);
    let (c1, c2) = (0.01f64.powi(2), 0.03f64.powi(2));
    let w1 = width + 1;
    let mut sum = 0.0;
    for y0 in 0..=height - WIN {
        for x0 in 0..=width - WIN {
            let [ux, uy, uxx, uyy, uxy] = tables.each_ref().map(|t| {
                (t[(y0 + WIN) * w1 + x0 + WIN] - t[y0 * w1 + x0 + WIN] - t[(y0 + WIN) * w1 + x0] + t[y0 * w1 + x0]) / n
            });
            let vx = cov_norm * (uxx - ux * ux);
            let vy = cov_norm * (uyy - uy * uy);
            let vxy = cov_norm * (uxy - ux * uy);
            sum += (2.0 * ux * uy + c1) * (2.0 * vxy + c2) / ((ux * ux + uy * uy + c1) * (vx + vy + c2));
        }
    }
    Ok(sum / ((width - WIN + 1) * (height - WIN + 1)) as f64)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn auroc_of_perfect_reversed_tied_and_a_small_hand_computed_case() {
        let y = [false, false, true, true];
        assert_eq!(auroc(&y, &[0.1, 0.2, 0.8, 0.9]).unwrap(), Some(1.0));
        assert_eq!(auroc(&y, &[0.9, 0.8, 0.2, 0.1]).unwrap(), Some(0.0));
        assert_eq!(auroc(&y, &[0.5; 4]).unwrap(), Some(0.5));
        // Pairs (pos, neg): 0.35 beats 0.1 and ties nothing, loses to 0.4; 0.8 beats both: 3/4.
        assert!(close(auroc(&[false, false, true, true], &[0.1, 0.4, 0.35, 0.8]).unwrap().unwrap(), 0.75));
        // One tie between a positive and a negative counts one half: (1 + 0.5 + 1 + 1) / 4.
        assert!(close(auroc(&y, &[0.1, 0.5, 0.5, 0.9]).unwrap().unwrap(), 0.875));
        assert_eq!(auroc(&[true, true], &[0.1, 0.2]).unwrap(), None);
        assert!(auroc(&[true], &[0.1, 0.2]).is_err());
        assert!(auroc(&[true, false], &[f64::NAN, 0.2]).is_err());
    }

    #[test]
    fn auroc_equals_the_area_under_the_roc_curve() {
        let y = [true, false, true, false, false, true, false, true, false, false];
        let s = [0.9, 0.8, 0.7, 0.7, 0.5, 0.4, 0.3, 0.3, 0.2, 0.1];
        let roc = roc_curve(&y, &s).unwrap().unwrap();
        assert_eq!(roc.first().map(|p| (p.fpr, p.tpr)), Some((0.0, 0.0)));
        assert_eq!(roc.last().map(|p| (p.fpr, p.tpr)), Some((1.0, 1.0)));
        assert_eq!(roc.len(), 9, "one point per distinct score plus the origin");
        let trapezoids: f64 = roc.windows(2).map(|w| (w[1].fpr - w[0].fpr) * (w[1].tpr + w[0].tpr) / 2.0).sum();
        assert!(close(auroc(&y, &s).unwrap().unwrap(), trapezoids));
    }

    #[test]
    fn bootstrap_interval_is_deterministic_contains_the_estimate_and_narrows_with_more_cases() {
        let mut rng = NumpyRng::new(7);
        let make = |n: usize, rng: &mut NumpyRng| -> (Vec<bool>, Vec<f64>) {
            (0..n)
                .map(|_| {
                    let y = rng.below(2) == 1;
                    let noise = rng.below(1000) as f64 / 1000.0;
                    (y, if y { 0.3 } else { 0.0 } + noise)
                })
                .unzip()
        };
        let (y, s) = make(200, &mut rng);
        let b = Bootstrap::default();
        let ci = auroc_ci(&y, &s, &b).unwrap().unwrap();
        assert_eq!(auroc_ci(&y, &s, &b).unwrap().unwrap(), ci, "fixed seed, same interval");
        let a = auroc(&y, &s).unwrap().unwrap();
        assert!(ci[0] < a && a < ci[1], "{ci:?} around {a}");
        let (y2, s2) = make(2000, &mut rng);
        let wide = ci[1] - ci[0];
        let ci2 = auroc_ci(&y2, &s2, &b).unwrap().unwrap();
        assert!(ci2[1] - ci2[0] < wide * 0.6, "{ci2:?} vs {ci:?}");
        // Perfect separation: every resample with both classes is 1.
        assert_eq!(auroc_ci(&[false, true, false, true], &[0.0, 1.0, 0.1, 0.9], &b).unwrap(), Some([1.0, 1.0]));
        assert_eq!(auroc_ci(&[true, true], &[0.0, 1.0], &b).unwrap(), None);
    }

    #[test]
    fn the_generator_draws_what_numpy_draws() {
        // numpy 2.4: SeedSequence(0).generate_state(4, np.uint64), default_rng(0).bit_generator.random_raw(2),
        // default_rng(0).integers(0, 600, 10), default_rng(0).integers(0, 125, 10),
        // default_rng(2**40 + 5).integers(0, 7, 10).
        let w = seed_sequence_state(0, 8);
        let w64: Vec<u64> = (0..4).map(|k| u64::from(w[2 * k]) | (u64::from(w[2 * k + 1]) << 32)).collect();
        assert_eq!(w64, [15793235383387715774, 12390638538380655177, 2361836109651742017, 3188717715514472916]);
        let mut r = NumpyRng::new(0);
        assert_eq!([r.next_u64(), r.next_u64()], [0xa30f_ebcf_d9c2_825f, 0x4510_bdf8_82d9_d721]);
        let draws = |seed: u64, n: u64| {
            let mut r = NumpyRng::new(seed);
            (0..10).map(|_| r.below(n)).collect::<Vec<u64>>()
        };
        assert_eq!(draws(0, 600), [510, 382, 306, 161, 184, 24, 45, 9, 105, 487]);
        assert_eq!(draws(0, 125), [106, 79, 63, 33, 38, 5, 9, 2, 21, 101]);
        assert_eq!(draws((1 << 40) + 5, 7), [0, 0, 3, 2, 6, 4, 6, 1, 0, 2]);
        let mut counts = [0usize; 6];
        for _ in 0..60_000 {
            counts[r.below(6) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| (9_500..10_500).contains(&c)), "{counts:?}");
    }

    #[test]
    fn percentiles_interpolate_like_numpy() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert!(close(percentile_sorted(&v, 0.025).unwrap(), 1.075));
        assert!(close(percentile_sorted(&v, 0.975).unwrap(), 3.925));
        assert!(close(percentile_sorted(&v, 0.5).unwrap(), 2.5));
        assert_eq!(percentile_sorted(&[], 0.5), None);
    }

    #[test]
    fn confusion_and_the_threshold_for_a_sensitivity() {
        let y = [true, true, true, true, false, false, false, false, false];
        let s = [0.9, 0.8, 0.6, 0.3, 0.7, 0.5, 0.2, 0.1, 0.05];
        let c = confusion_at(&y, &s, 0.5).unwrap();
        assert_eq!(c, Confusion { tp: 3, fp: 2, tn: 3, fn_: 1 });
        assert_eq!(c.sensitivity(), Some(0.75));
        assert_eq!(c.specificity(), Some(0.6));
        assert_eq!(c.ppv(), Some(0.6));
        assert_eq!(c.npv(), Some(0.75));
        // score == threshold is positive.
        assert_eq!(confusion_at(&y, &s, 0.9).unwrap().tp, 1);
        let op = threshold_for_sensitivity(&y, &s, 0.75).unwrap().unwrap();
        assert_eq!((op.threshold, op.sensitivity, op.specificity), (0.6, 0.75, Some(0.8)));
        let op = threshold_for_sensitivity(&y, &s, 0.9).unwrap().unwrap();
        assert_eq!((op.threshold, op.sensitivity, op.specificity), (0.3, 1.0, Some(0.6)));
        assert_eq!(threshold_for_sensitivity(&[false], &[0.1], 0.9).unwrap(), None);
        let none = Confusion::default();
        assert_eq!((none.sensitivity(), none.ppv()), (None, None));
    }

    #[test]
    fn binary_metrics_gather_everything() {
        let y = [false, false, true, true];
        let m = binary_metrics(&y, &[0.1, 0.6, 0.4, 0.9], 0.5, 0.9, &Bootstrap::default()).unwrap();
        assert_eq!((m.positives, m.negatives), (2, 2));
        assert_eq!(m.auroc, Some(0.75));
        assert_eq!(m.confusion, Confusion { tp: 1, fp: 1, tn: 1, fn_: 1 });
        assert_eq!(m.at_target_sensitivity.map(|o| o.threshold), Some(0.4));
        assert_eq!(m.roc.map(|r| r.len()), Some(5));
    }

    #[test]
    fn froc_on_a_constructed_example() {
        let lesion = |x: f64, d: f64| Lesion { center_mm: [x, 0.0, 0.0], diameter_mm: d };
        let cand = |x: f64, score: f64| Candidate { center_mm: [x, 0.0, 0.0], score };
        let cases = vec![
            // Scan 1: lesion A (10 mm at x=0) hit at 0.9 and again at 0.4 (ignored); a FP at 0.8;
            // lesion B (4 mm at x=100): a candidate 2.5 mm away hits it (3 mm floor) at 0.3.
            ScanCase {
                lesions: vec![lesion(0.0, 10.0), lesion(100.0, 4.0)],
                candidates: vec![cand(1.0, 0.9), cand(50.0, 0.8), cand(-2.0, 0.4), cand(102.5, 0.3)],
            },
            // Scan 2: lesion C missed (the candidate 6 mm away is outside its 5 mm radius): a FP at 0.6.
            ScanCase { lesions: vec![lesion(0.0, 10.0)], candidates: vec![cand(6.0, 0.6)] },
            // Scan 3: no lesion, one FP at 0.2.
            ScanCase { lesions: vec![], candidates: vec![cand(0.0, 0.2)] },
            // Scan 4: nothing.
            ScanCase::default(),
        ];
        let f = froc(&cases, &FrocOptions::default()).unwrap();
        assert_eq!((f.scans, f.lesions, f.candidates), (4, 3, 6));
        let pts: Vec<(f64, f64, f64)> = f.curve.iter().map(|p| (p.threshold, p.fps_per_scan, p.sensitivity)).collect();
        let (third, two) = (1.0 / 3.0, 2.0 / 3.0);
        assert_eq!(
            pts,
            vec![
                (0.9, 0.0, third),
                (0.8, 0.25, third),
                (0.6, 0.5, third),
                (0.4, 0.5, third),
                (0.3, 0.5, two),
                (0.2, 0.75, two),
            ]
        );
        let at: Vec<f64> = f.at_fp_rates.iter().map(|(_, s)| *s).collect();
        assert_eq!(at, vec![third, third, two, two, two, two, two]);
        assert!(close(f.cpm.unwrap(), (2.0 * third + 5.0 * two) / 7.0));
        // Without lesions there is no CPM.
        assert_eq!(froc(&cases[2..], &FrocOptions::default()).unwrap().cpm, None);
    }

    #[test]
    fn a_candidate_between_two_lesions_goes_to_the_nearer_one() {
        let cases = vec![ScanCase {
            lesions: vec![
                Lesion { center_mm: [0.0, 0.0, 0.0], diameter_mm: 20.0 },
                Lesion { center_mm: [8.0, 0.0, 0.0], diameter_mm: 20.0 },
            ],
            candidates: vec![Candidate { center_mm: [6.0, 0.0, 0.0], score: 0.5 }],
        }];
        let f = froc(&cases, &FrocOptions::default()).unwrap();
        assert_eq!(f.curve.last().map(|p| (p.sensitivity, p.fps_per_scan)), Some((0.5, 0.0)));
    }

    /// scikit-image 0.26's `peak_signal_noise_ratio` and `structural_similarity` (data_range=1) of
    /// these two images after the [-1000, 400] HU window, computed once in Python.
    #[test]
    fn psnr_and_ssim_match_scikit_image() {
        let (w, h) = (16usize, 12usize);
        let reference: Vec<f32> = (0..w * h).map(|k| (-1000 + (k * 37 % 1400) as i32) as f32).collect();
        let mut test: Vec<f32> =
            reference.iter().enumerate().map(|(k, &r)| r + ((k * 13 % 50) as f32 - 25.0)).collect();
        test[5] = 600.0; // outside the window: clipped to 1
        let window = ImageWindow::CHEST;
        let p = psnr(&reference, &test, w, h, &window).unwrap().unwrap();
        assert!((p - 23.949944817681068).abs() < 1e-9, "{p}");
        let s = ssim(&reference, &test, w, h, &window).unwrap();
        assert!((s - 0.9902120522959715).abs() < 1e-9, "{s}");
        assert_eq!(psnr(&reference, &reference, w, h, &window).unwrap(), None);
        assert!((ssim(&reference, &reference, w, h, &window).unwrap() - 1.0).abs() < 1e-12);
        assert!(ssim(&reference[..36], &test[..36], 6, 6, &window).is_err());
        assert!(psnr(&reference, &test[..10], w, h, &window).is_err());
    }
}
