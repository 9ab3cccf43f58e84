//! Dose simulated in the projection domain: a slice's HU become linear attenuation, are
//! forward-projected (parallel beam), get Poisson + electronic detector noise at a chosen photon
//! count, and are reconstructed by filtered back-projection. Two doses of one slice are then two real
//! reconstructions of noisy sinograms, whose noise has CT's texture (streaks, correlated grain)
//! rather than white pixel noise: the pairs `lucent synth-ct --kind dose-pairs` writes for
//! evaluating a denoiser.
//!
//! The geometry is the textbook one (pixel-driven projector and back-projector with linear
//! interpolation on the detector, Ram-Lak filter in the spatial domain smoothed by a [1/4, 1/2, 1/4]
//! kernel, a Hann-like apodisation); it is deterministic and seeded, not a model of any scanner.

use serde::{Deserialize, Serialize};

/// Linear attenuation of water, 1/mm (about 70 keV).
pub const MU_WATER_PER_MM: f64 = 0.02;

/// How a slice is acquired: photons per detector ray and view, electronic noise, views over 180°.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct SimulatedDose {
    /// Incident photons per ray and view (I0); a quarter dose is a quarter of the routine count.
    pub photons_per_ray: f64,
    /// Standard deviation of the detector's electronic noise, in counts.
    pub electronic_noise_counts: f64,
    /// Projection angles over 180 degrees.
    pub views: usize,
}

impl SimulatedDose {
    /// A routine-dose chest protocol for 0.7-0.9 mm pixels: about 10-15 HU of noise in soft tissue.
    pub const ROUTINE: Self = Self { photons_per_ray: 2.7e5, electronic_noise_counts: 5.0, views: 512 };

    /// The same protocol at `fraction` of the dose (0.25: quarter dose).
    pub fn scaled(self, fraction: f64) -> Self {
        Self { photons_per_ray: self.photons_per_ray * fraction, ..self }
    }
}

/// Reconstructs `hu` (row-major, `rows` x `columns`, square pixels of `pixel_mm`) as if acquired at
/// `dose`; `seed` draws the noise. Returns HU.
pub fn simulate(hu: &[f32], rows: usize, columns: usize, pixel_mm: f64, dose: &SimulatedDose, seed: u64) -> Vec<f32> {
    if hu.len() != rows * columns || rows == 0 || columns == 0 || dose.views == 0 {
        return hu.to_vec();
    }
    let geometry = Geometry::new(rows, columns, dose.views);
    let mu: Vec<f64> = hu.iter().map(|&v| (MU_WATER_PER_MM * (1.0 + f64::from(v) / 1000.0)).max(0.0)).collect();
    let mut sinogram = geometry.project(&mu, pixel_mm);
    add_detector_noise(&mut sinogram, dose, seed);
    let filtered = geometry.filter(&sinogram, pixel_mm);
    geometry
        .back_project(&filtered)
        .into_iter()
        .map(|m| ((m / MU_WATER_PER_MM - 1.0) * 1000.0).clamp(-1024.0, 3071.0) as f32)
        .collect()
}

/// Post-log line integrals with the noise of `dose`: counts = I0 exp(-p), drawn as Poisson (a
/// normal of the same mean and variance: the counts are large) plus electronic noise, then -log.
fn add_detector_noise(sinogram: &mut [f64], dose: &SimulatedDose, seed: u64) {
    let i0 = dose.photons_per_ray.max(1.0);
    let var_e = dose.electronic_noise_counts.powi(2);
    for (k, p) in sinogram.iter_mut().enumerate() {
        let mean = i0 * (-*p).exp();
        let noise_seed = super::mix64(seed ^ (k as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let counts = mean + (mean + var_e).sqrt() * super::gauss(noise_seed);
        *p = -(counts.max(1.0) / i0).ln();
    }
}

/// Detector and angle layout shared by the projector and the back-projector.
struct Geometry {
    rows: usize,
    columns: usize,
    views: usize,
    /// Detector bins (pixel-sized), covering the image's diagonal.
    bins: usize,
    cos_sin: Vec<(f64, f64)>,
}

impl Geometry {
    fn new(rows: usize, columns: usize, views: usize) -> Self {
        let diagonal = ((rows * rows + columns * columns) as f64).sqrt();
        let bins = diagonal.ceil() as usize + 3;
        let cos_sin = (0..views)
            .map(|v| {
                let theta = std::f64::consts::PI * v as f64 / views as f64;
                (theta.cos(), theta.sin())
            })
            .collect();
        Self { rows, columns, views, bins, cos_sin }
    }

    /// Detector coordinate (in bins, fractional) of pixel (i, j) at a view.
    fn bin_of(&self, i: usize, j: usize, (c, s): (f64, f64)) -> f64 {
        let x = i as f64 - (self.columns as f64 - 1.0) / 2.0;
        let y = j as f64 - (self.rows as f64 - 1.0) / 2.0;
        x * c + y * s + (self.bins as f64 - 1.0) / 2.0
    }

    /// Line integrals of `mu` (1/mm): views x bins.
    fn project(&self, mu: &[f64], pixel_mm: f64) -> Vec<f64> {
        let mut sinogram = vec![0.0; self.views * self.bins];
        for (v, &cs) in self.cos_sin.iter().enumerate() {
            let row = &mut sinogram[v * self.bins..(v + 1) * self.bins];
            for j in 0..self.rows {
                for i in 0..self.columns {
                    let m = mu[j * self.columns + i];
                    if m == 0.0 {
                        continue;
                    }
                    let t = self.bin_of(i, j, cs);
                    let k = t.floor();
                    let w = t - k;
                    let k = k as usize;
                    if k + 1 < self.bins {
                        row[k] += m * (1.0 - w) * pixel_mm;
                        row[k + 1] += m * w * pixel_mm;
                    }
                }
            }
        }
        sinogram
    }

    /// Ramp-filters each view (Ram-Lak in the spatial domain, then [1/4, 1/2, 1/4] apodisation).
    fn filter(&self, sinogram: &[f64], pixel_mm: f64) -> Vec<f64> {
        let n = self.bins as isize;
        // h[0] = 1 / (4 d^2), h[odd k] = -1 / (k pi d)^2, h[even k] = 0; the convolution sums times d.
        let kernel: Vec<f64> = (-(n - 1)..n)
            .map(|k| match k {
                0 => 0.25 / pixel_mm,
                k if k % 2 != 0 => -1.0 / ((k as f64) * std::f64::consts::PI).powi(2) / pixel_mm,
                _ => 0.0,
            })
            .collect();
        let mut out = vec![0.0; sinogram.len()];
        let mut ramp = vec![0.0; self.bins];
        for v in 0..self.views {
            let p = &sinogram[v * self.bins..(v + 1) * self.bins];
            for (t, r) in ramp.iter_mut().enumerate() {
                // kernel index of (t - u) is t - u + n - 1
                let base = t + self.bins - 1;
                *r = p.iter().enumerate().map(|(u, &pu)| pu * kernel[base - u]).sum();
            }
            let q = &mut out[v * self.bins..(v + 1) * self.bins];
            for t in 0..self.bins {
                let left = if t > 0 { ramp[t - 1] } else { 0.0 };
                let right = if t + 1 < self.bins { ramp[t + 1] } else { 0.0 };
                q[t] = 0.25 * left + 0.5 * ramp[t] + 0.25 * right;
            }
        }
        out
    }

    /// Back-projects filtered views: mu (1/mm) per pixel.
    fn back_project(&self, filtered: &[f64]) -> Vec<f64> {
        let mut image = vec![0.0; self.rows * self.columns];
        let scale = std::f64::consts::PI / self.views as f64;
        for (v, &cs) in self.cos_sin.iter().enumerate() {
            let q = &filtered[v * self.bins..(v + 1) * self.bins];
            for j in 0..self.rows {
                for i in 0..self.columns {
                    let t = self.bin_of(i, j, cs);
                    let k = t.floor();
                    let w = t - k;
                    let k = k as usize;
                    if k + 1 < self.bins {
                        image[j * self.columns + i] += (q[k] * (1.0 - w) + q[k + 1] * w) * scale;
                    }
                }
            }
        }
        image
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A water disc in air, 64 x 64 pixels of 1 mm.
    fn disc() -> Vec<f32> {
        (0..64 * 64)
            .map(|k| {
                let (i, j) = ((k % 64) as f64 - 31.5, (k / 64) as f64 - 31.5);
                if i * i + j * j < 24.0f64.powi(2) { 0.0 } else { -1000.0 }
            })
            .collect()
    }

    fn mean_sd(values: impl Iterator<Item = f64>) -> (f64, f64) {
        let v: Vec<f64> = values.collect();
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        (mean, (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len() as f64).sqrt())
    }

    fn centre(image: &[f32]) -> impl Iterator<Item = f64> + '_ {
        (0..64 * 64)
            .filter(|k| ((k % 64) as f64 - 31.5).hypot((k / 64) as f64 - 31.5) < 16.0)
            .map(|k| f64::from(image[k]))
    }

    #[test]
    fn noiseless_reconstruction_keeps_the_hu_of_water_and_air() {
        let dose = SimulatedDose { photons_per_ray: 1e12, electronic_noise_counts: 0.0, views: 180 };
        let out = simulate(&disc(), 64, 64, 1.0, &dose, 1);
        let (mean, sd) = mean_sd(centre(&out));
        assert!(mean.abs() < 15.0 && sd < 10.0, "water {mean:.1} +- {sd:.1} HU");
        let corner = f64::from(out[2 * 64 + 2]);
        assert!((corner + 1000.0).abs() < 60.0, "air {corner:.1} HU");
    }

    #[test]
    fn a_quarter_of_the_dose_doubles_the_noise() {
        let routine = SimulatedDose { photons_per_ray: 2e4, electronic_noise_counts: 0.0, views: 180 };
        let full = simulate(&disc(), 64, 64, 1.0, &routine, 7);
        let quarter = simulate(&disc(), 64, 64, 1.0, &routine.scaled(0.25), 7);
        let (_, sd_full) = mean_sd(centre(&full));
        let (_, sd_quarter) = mean_sd(centre(&quarter));
        let ratio = sd_quarter / sd_full;
        // Noise SD goes as 1 / sqrt(dose): 2x (sampling of one small disc: within 25 %).
        assert!(
            (1.5..2.5).contains(&ratio),
            "quarter / routine noise SD {ratio:.2} ({sd_quarter:.1} / {sd_full:.1} HU)"
        );
        // The same seed and dose give the same image.
        assert_eq!(full, simulate(&disc(), 64, 64, 1.0, &routine, 7));
    }
}
