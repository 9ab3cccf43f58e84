//! `lucent eval-nodule-measure`: Lucent's CT nodule measurement ([`inference::ct::measure`], the
//! code `lucent read` and the workstation run) checked against real nodules with reference masks:
//! the LIDC-IDRI patches of `ct-nodule-patches/` (40³ voxels at 1 mm, HU, a voxel mask and the
//! LUNA16 diameter each; see `../shared/data/README.md`).
//!
//! Each nodule is measured at 1 mm and again after its slices are averaged into thicker ones
//! (2.5 mm by default, a typical screening reconstruction; the reference mask is averaged the same
//! way and kept where it covers at least half of a voxel). Reported, for all nodules and for each
//! half of the scans (split by a hash of the series UID, so no scan is in both):
//! * Dice of Lucent's segmentation against the reference mask (median, and the share ≥ 0.7);
//! * the long axis on the axial slice of largest extent, Lucent's against the same definition on
//!   the reference mask (like with like), mean absolute error for 4-30 mm nodules (by the LUNA16
//!   diameter); the Lung-RADS mean axial diameter beside it; and Lucent's long axis against the
//!   LUNA16 diameter (a reader's estimate, another definition);
//! * volume error against the reference mask's volume (median absolute, percent);
//! * how many were "not measurable" (and why).
//!
//! The measurement has no fitted weights; its few parameters ([`MeasureParams`]) were set on
//! synthetic phantoms, so every real nodule here is held out. The box of the segmentation is 18 mm
//! each way here (the patch is 40 mm; the product uses 25 mm) so that a region reaching it is a
//! leak and not the patch's end.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use inference::ct::{self, HuSamples, HuVolume, MeasureParams};
use serde::Serialize;

/// `lucent eval-nodule-measure`
#[derive(Debug, Clone, clap::Args)]
pub struct MeasureEvalArgs {
    /// The patches folder (`nodules.csv`, `ct_NN.npy.xz`, `mask_NN.npy.xz`).
    #[arg(long, value_name = "DIR")]
    pub patches: PathBuf,
    /// Slice thickness of the second pass, mm (0: only 1 mm).
    #[arg(long, default_value_t = 2.5)]
    pub slice_mm: f64,
    /// Measure only the first N nodules (a quick check).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Lowest HU level of the segmentation (default: the product's).
    #[arg(long)]
    pub threshold_hu: Option<f32>,
    /// Highest HU level (the half-way level is clamped to it; equal to --threshold-hu: fixed).
    #[arg(long)]
    pub max_level_hu: Option<f32>,
    /// Write every nodule's numbers and the summaries as JSON here.
    #[arg(long, value_name = "OUT.json")]
    pub json: Option<PathBuf>,
}

/// One nodule at one slice thickness.
#[derive(Debug, Clone, Serialize)]
pub struct NoduleResult {
    pub index: usize,
    pub series_uid: String,
    pub half: u8,
    pub luna16_diameter_mm: f64,
    /// None when not measurable.
    pub dice: Option<f64>,
    pub long_axis_mm: Option<f64>,
    pub mean_diameter_mm: Option<f64>,
    pub reference_long_axis_mm: Option<f64>,
    pub reference_mean_diameter_mm: Option<f64>,
    pub volume_mm3: Option<f64>,
    pub reference_volume_mm3: f64,
    pub nodule_type: Option<String>,
    pub not_measurable: Option<String>,
}

/// Summary of a set of nodules.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub nodules: usize,
    pub not_measurable: usize,
    pub median_dice: f64,
    pub share_dice_at_least_0_7: f64,
    /// 4-30 mm nodules (LUNA16 diameter) measured: long axis against the mask's long axis.
    pub nodules_4_30_mm: usize,
    pub long_axis_mae_mm: f64,
    pub mean_diameter_mae_mm: f64,
    pub long_axis_vs_luna16_mae_mm: f64,
    pub median_abs_volume_error_pct: f64,
}

/// Results at one slice thickness.
#[derive(Debug, Clone, Serialize)]
pub struct PassResult {
    pub slice_mm: f64,
    pub all: Summary,
    pub half_a: Summary,
    pub half_b: Summary,
    pub nodules: Vec<NoduleResult>,
}

/// The most an `.npy.xz` shard may inflate to (the real ones are about 26 MB).
const MAX_SHARD_BYTES: usize = 1 << 30;

/// A `Vec` writer that refuses to grow past `cap` bytes (an xz bomb stops there).
struct CappedVec {
    bytes: Vec<u8>,
    cap: usize,
}

impl std::io::Write for CappedVec {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len().saturating_add(buf.len()) > self.cap {
            return Err(std::io::Error::other(format!("inflates past {} bytes", self.cap)));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// An int16 or uint8 array of shape [N, 40, 40, 40] from an `.npy.xz` file.
fn read_npy_xz(path: &Path) -> Result<(Vec<usize>, Vec<i16>)> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut out = CappedVec { bytes: Vec::new(), cap: MAX_SHARD_BYTES };
    lzma_rs::xz_decompress(&mut std::io::BufReader::new(file), &mut out)
        .map_err(|e| anyhow::anyhow!("{}: not a readable xz file: {e:?}", path.display()))?;
    let raw = out.bytes;
    anyhow::ensure!(raw.starts_with(b"\x93NUMPY") && raw.len() > 10, "{}: not a .npy array", path.display());
    let (header_len, start) = match raw[6] {
        1 => (usize::from(u16::from_le_bytes([raw[8], raw[9]])), 10),
        _ => {
            anyhow::ensure!(raw.len() > 12, "{}: truncated .npy header", path.display());
            (u32::from_le_bytes([raw[8], raw[9], raw[10], raw[11]]) as usize, 12)
        }
    };
    let header = std::str::from_utf8(raw.get(start..start + header_len).context("truncated .npy header")?)?;
    anyhow::ensure!(!header.contains("'fortran_order': True"), "{}: Fortran order", path.display());
    let shape: Vec<usize> = header
        .split("'shape': (")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .context("no shape in the .npy header")?
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse::<usize>())
        .collect::<Result<_, _>>()?;
    let body = &raw[start + header_len..];
    let n = shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .with_context(|| format!("{}: shape {shape:?} overflows", path.display()))?;
    let values: Vec<i16> = if header.contains("'<i2'") {
        anyhow::ensure!(n.checked_mul(2).is_some_and(|bytes| body.len() >= bytes), "{}: short data", path.display());
        body.chunks_exact(2).take(n).map(|b| i16::from_le_bytes([b[0], b[1]])).collect()
    } else if header.contains("'|u1'") || header.contains("'|b1'") {
        anyhow::ensure!(body.len() >= n, "{}: short data", path.display());
        body.iter().take(n).map(|&b| i16::from(b)).collect()
    } else {
        anyhow::bail!("{}: unsupported dtype in {header}", path.display());
    };
    Ok((shape, values))
}

/// Averages 1 mm slices (z, the slowest axis) into slabs of `slice_mm`.
fn thicken(values: &[f32], dims: [usize; 3], slice_mm: f64) -> (Vec<f32>, usize) {
    let nz = (dims[2] as f64 / slice_mm).floor() as usize;
    let plane = dims[0] * dims[1];
    let mut out = vec![0.0f32; plane * nz];
    for k in 0..nz {
        let (z0, z1) = (k as f64 * slice_mm, (k + 1) as f64 * slice_mm);
        let mut total = 0.0;
        for j in (z0.floor() as usize)..(z1.ceil() as usize).min(dims[2]) {
            let w = (z1.min(j as f64 + 1.0) - z0.max(j as f64)).max(0.0);
            if w <= 0.0 {
                continue;
            }
            total += w;
            for i in 0..plane {
                out[k * plane + i] += (w * f64::from(values[j * plane + i])) as f32;
            }
        }
        for v in &mut out[k * plane..(k + 1) * plane] {
            *v /= total.max(f64::MIN_POSITIVE) as f32;
        }
    }
    (out, nz)
}

fn half_of(series_uid: &str) -> u8 {
    use sha2::Digest;
    sha2::Sha256::digest(series_uid.as_bytes())[0] & 1
}

fn measure_one(
    hu: &[f32],
    mask: &[bool],
    dims: [usize; 3],
    spacing_mm: [f64; 3],
    params: &MeasureParams,
) -> Result<(ct::NoduleMeasurement, f64)> {
    let identity = [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]];
    let volume = HuVolume::new(HuSamples::F32(hu), dims, spacing_mm, identity)?;
    let centre = [dims[0] as f64 / 2.0, dims[1] as f64 / 2.0, (dims[2] as f64 / 2.0 - 0.5).max(0.0)];
    let (m, segmented) = ct::measure_with_mask(&volume, centre, params)?;
    let (mut both, mut a, mut b) = (0usize, 0usize, 0usize);
    for (s, r) in segmented.iter().zip(mask) {
        both += usize::from(*s && *r);
        a += usize::from(*s);
        b += usize::from(*r);
    }
    let dice = if a + b == 0 { 0.0 } else { 2.0 * both as f64 / (a + b) as f64 };
    Ok((m, dice))
}

fn mae(pairs: impl Iterator<Item = (f64, f64)>) -> f64 {
    let v: Vec<f64> = pairs.map(|(a, b)| (a - b).abs()).collect();
    if v.is_empty() { f64::NAN } else { v.iter().sum::<f64>() / v.len() as f64 }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    inference::eval::percentile_sorted(&v, 0.5).unwrap_or(f64::NAN)
}

fn summarise<'a>(results: impl Iterator<Item = &'a NoduleResult> + Clone) -> Summary {
    let measured: Vec<&NoduleResult> = results.clone().filter(|r| r.not_measurable.is_none()).collect();
    let nodules = results.count();
    // A nodule that could not be measured counts as Dice 0 (it was not segmented).
    let mut dice: Vec<f64> = measured.iter().filter_map(|r| r.dice).collect();
    dice.resize(nodules, 0.0);
    let sized: Vec<&&NoduleResult> = measured.iter().filter(|r| (4.0..=30.0).contains(&r.luna16_diameter_mm)).collect();
    Summary {
        nodules,
        not_measurable: nodules - measured.len(),
        share_dice_at_least_0_7: dice.iter().filter(|&&d| d >= 0.7).count() as f64 / nodules.max(1) as f64,
        median_dice: median(dice),
        nodules_4_30_mm: sized.len(),
        long_axis_mae_mm: mae(sized.iter().filter_map(|r| Some((r.long_axis_mm?, r.reference_long_axis_mm?)))),
        mean_diameter_mae_mm: mae(sized
            .iter()
            .filter_map(|r| Some((r.mean_diameter_mm?, r.reference_mean_diameter_mm?)))),
        long_axis_vs_luna16_mae_mm: mae(sized.iter().filter_map(|r| Some((r.long_axis_mm?, r.luna16_diameter_mm)))),
        median_abs_volume_error_pct: median(
            measured
                .iter()
                .filter_map(|r| Some(100.0 * (r.volume_mm3? - r.reference_volume_mm3).abs() / r.reference_volume_mm3))
                .collect(),
        ),
    }
}

/// Runs the evaluation and prints the tables.
pub fn run(args: &MeasureEvalArgs) -> Result<Vec<PassResult>> {
    let csv = std::fs::read_to_string(args.patches.join("nodules.csv"))
        .with_context(|| format!("reading {}", args.patches.join("nodules.csv").display()))?;
    let mut rows = Vec::new();
    for line in csv.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        anyhow::ensure!(f.len() >= 7, "nodules.csv: short row {line:?}");
        rows.push((
            f[0].parse::<usize>()?,
            f[1].parse::<usize>()?,
            f[2].parse::<usize>()?,
            f[3].to_owned(),
            f[5].parse::<f64>()?,
        ));
    }
    if let Some(n) = args.limit {
        rows.truncate(n);
    }
    let defaults = MeasureParams::default();
    let params = MeasureParams {
        max_radius_mm: 18.0,
        threshold_hu: args.threshold_hu.unwrap_or(defaults.threshold_hu),
        max_level_hu: args.max_level_hu.unwrap_or(defaults.max_level_hu),
        ..defaults
    };
    let mut passes: Vec<f64> = vec![1.0];
    if args.slice_mm > 1.0 {
        passes.push(args.slice_mm);
    }
    let mut results: Vec<Vec<NoduleResult>> = vec![Vec::new(); passes.len()];
    let mut shard_cache: Option<(usize, Vec<i16>, Vec<i16>)> = None;
    for (index, shard, in_shard, series_uid, diameter) in rows {
        if shard_cache.as_ref().is_none_or(|c| c.0 != shard) {
            let (shape, ct) = read_npy_xz(&args.patches.join(format!("ct_{shard:02}.npy.xz")))?;
            let (mshape, mask) = read_npy_xz(&args.patches.join(format!("mask_{shard:02}.npy.xz")))?;
            anyhow::ensure!(
                shape == mshape && shape.len() == 4 && shape[1..] == [40, 40, 40],
                "shard {shard}: shape {shape:?}"
            );
            shard_cache = Some((shard, ct, mask));
        }
        let Some((_, ct_all, mask_all)) = &shard_cache else { continue };
        let n = 40 * 40 * 40;
        anyhow::ensure!(
            (in_shard + 1).saturating_mul(n) <= ct_all.len(),
            "nodules.csv row {index}: shard {shard} holds no patch {in_shard}"
        );
        let (hu, mask): (Vec<f32>, Vec<f32>) = (
            ct_all[in_shard * n..(in_shard + 1) * n].iter().map(|&v| f32::from(v)).collect(),
            mask_all[in_shard * n..(in_shard + 1) * n].iter().map(|&v| f32::from(v)).collect(),
        );
        for (p, &slice_mm) in passes.iter().enumerate() {
            let (hu, mask, nz) = if slice_mm > 1.0 {
                let (h, nz) = thicken(&hu, [40, 40, 40], slice_mm);
                let (m, _) = thicken(&mask, [40, 40, 40], slice_mm);
                (h, m, nz)
            } else {
                (hu.clone(), mask.clone(), 40)
            };
            let dims = [40, 40, nz];
            let spacing = [1.0, 1.0, slice_mm];
            let reference: Vec<bool> = mask.iter().map(|&m| m >= 0.5).collect();
            let reference_voxels: Vec<[usize; 3]> =
                (0..reference.len()).filter(|&i| reference[i]).map(|i| [i % 40, (i / 40) % 40, i / 1600]).collect();
            let reference_axes = ct::axial_axes(&reference_voxels, spacing);
            let voxel_mm3 = slice_mm;
            let mut r = NoduleResult {
                index,
                series_uid: series_uid.clone(),
                half: half_of(&series_uid),
                luna16_diameter_mm: diameter,
                dice: None,
                long_axis_mm: None,
                mean_diameter_mm: None,
                reference_long_axis_mm: reference_axes.map(|a| a.long_axis_mm),
                reference_mean_diameter_mm: reference_axes.map(|a| a.mean_diameter_mm),
                volume_mm3: None,
                reference_volume_mm3: reference_voxels.len() as f64 * voxel_mm3,
                nodule_type: None,
                not_measurable: None,
            };
            match measure_one(&hu, &reference, dims, spacing, &params) {
                Ok((m, dice)) => {
                    r.dice = Some(dice);
                    r.long_axis_mm = Some(m.axes.long_axis_mm);
                    r.mean_diameter_mm = Some(m.axes.mean_diameter_mm);
                    r.volume_mm3 = Some(m.volume_mm3);
                    r.nodule_type = Some(format!("{:?}", m.nodule_type));
                }
                Err(e) => r.not_measurable = Some(e.to_string()),
            }
            results[p].push(r);
        }
    }
    let mut out = Vec::new();
    for (p, nodules) in results.into_iter().enumerate() {
        let pass = PassResult {
            slice_mm: passes[p],
            all: summarise(nodules.iter()),
            half_a: summarise(nodules.iter().filter(|r| r.half == 0)),
            half_b: summarise(nodules.iter().filter(|r| r.half == 1)),
            nodules,
        };
        println!("slices {:.1} mm:", pass.slice_mm);
        println!(
            "  {:<8} {:>7} {:>9} {:>11} {:>9} {:>8} {:>13} {:>13} {:>15} {:>12}",
            "scans",
            "nodules",
            "not meas.",
            "median Dice",
            "Dice>=0.7",
            "4-30 mm",
            "long-axis MAE",
            "mean-diam MAE",
            "vs LUNA16 MAE",
            "|vol err| %"
        );
        for (name, s) in [("all", &pass.all), ("half A", &pass.half_a), ("half B", &pass.half_b)] {
            println!(
                "  {:<8} {:>7} {:>9} {:>11.3} {:>9.2} {:>8} {:>13.2} {:>13.2} {:>15.2} {:>12.1}",
                name,
                s.nodules,
                s.not_measurable,
                s.median_dice,
                s.share_dice_at_least_0_7,
                s.nodules_4_30_mm,
                s.long_axis_mae_mm,
                s.mean_diameter_mae_mm,
                s.long_axis_vs_luna16_mae_mm,
                s.median_abs_volume_error_pct
            );
        }
        out.push(pass);
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&out)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn xz(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        lzma_rs::xz_compress(&mut std::io::Cursor::new(bytes), &mut out).unwrap();
        out
    }

    fn npy(header: &str, body: &[u8]) -> Vec<u8> {
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend_from_slice(&u16::try_from(header.len()).unwrap().to_le_bytes());
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(body);
        out
    }

    /// Hostile shards: a shape whose product overflows, a body shorter than its shape, a file
    /// that is not xz; each is a clear error, never a panic or a huge allocation.
    #[test]
    fn hostile_npy_xz_files_are_refused_with_a_reason() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.npy.xz");
        let cases: [(&[u8], &str); 3] = [
            (
                &xz(&npy("{'descr': '<i2', 'fortran_order': False, 'shape': (4294967296, 4294967296, 2), }", &[0; 8])),
                "overflows",
            ),
            (&xz(&npy("{'descr': '<i2', 'fortran_order': False, 'shape': (1, 40, 40, 40), }", &[0; 8])), "short data"),
            (b"not xz at all", "xz"),
        ];
        for (bytes, why) in cases {
            std::fs::write(&path, bytes).unwrap();
            let err = read_npy_xz(&path).unwrap_err().to_string();
            assert!(err.contains(why), "{err}");
        }
        std::fs::write(&path, xz(&npy("{'descr': '<i2', 'fortran_order': False, 'shape': (2,), }", &[1, 0, 2, 0])))
            .unwrap();
        assert_eq!(read_npy_xz(&path).unwrap(), (vec![2], vec![1, 2]));
    }
}
