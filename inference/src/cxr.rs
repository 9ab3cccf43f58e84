//! Chest radiograph pipeline: a grey image in, per-finding scores, contours and boxes out.
//!
//! [`preprocess`] builds the model input exactly as the manifest says, in this order (the order
//! torchxrayvision uses: it normalises at load time, then crops, then resizes):
//!
//! 1. **VOI** to `[0, maxval]` (`maxval` = the normalisation's, 1 for `unit`/`mean_std`): the
//!    manifest's window, or the image's own ([`GreyImage::voi`]), or the full range
//!    (`[0, 2^bits_stored - 1]` for integer samples, the data's min..max for float samples). Windows
//!    use the DICOM linear VOI function (PS3.3 C.11.2.1.2.1). torchxrayvision's own DICOM reader
//!    (`read_xray_dcm`, `voi_lut=False`) corresponds to `voi = "full_range"`.
//! 2. **MONOCHROME1** inverted (`maxval - x`) unless the manifest says `keep`.
//! 3. **Normalisation**: `xrv` = torchxrayvision's `normalize(img, maxval)` =
//!    `(2 * (x / maxval) - 1) * 1024`; `mean_std` = `(x - mean) / std`; `unit` = nothing.
//! 4. **Crop**: `center_square` = torchxrayvision's `XRayCenterCrop`.
//! 5. **Resize** with the named interpolation ([`crate::resample`]); `bilinear` with antialias is
//!    `skimage.transform.resize(..., mode="constant", preserve_range=True)`, i.e. torchxrayvision's
//!    `XRayResizer` (skimage engine).
//! 6. Channels replicated when the model wants 3.
//!
//! Back: logits go through a sigmoid; each label's score is compared with its threshold
//! (`score >= threshold` is positive). Each per-label map is contoured at the label's map
//! threshold (marching squares) and split into connected regions with boxes, all in original image
//! pixels (centre of pixel (c, r) at (c, r)) and in mm from the centre of the first pixel when the
//! pixel spacing is known.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::contour::{self, Polygon};
use crate::error::{Error, Result};
use crate::manifest::{Activation, Crop, ModelManifest, Monochrome1, OutputKind, PreprocessingKind, VoiMode, VoiSpec};
use crate::resample::{self, Plane};
use crate::session::{ModelSession, Tensor};
use crate::worker::JobContext;

/// Stored pixel samples.
#[derive(Debug, Clone, PartialEq)]
pub enum GreySamples {
    U16(Vec<u16>),
    F32(Vec<f32>),
}

/// A VOI window in stored-value units.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Window {
    pub center: f64,
    pub width: f64,
}

/// Pixel spacing and whether it is calibrated (Pixel Spacing, or Imager Pixel Spacing corrected
/// for magnification) or only nominal at the detector.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PixelSpacing {
    /// Between rows (vertical), mm.
    pub row_mm: f64,
    /// Between columns (horizontal), mm.
    pub column_mm: f64,
    pub calibrated: bool,
}

/// A single-frame grey radiograph, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct GreyImage {
    pub width: usize,
    pub height: usize,
    pub samples: GreySamples,
    /// Bits Stored: the full range of integer samples is `[0, 2^bits_stored - 1]`.
    pub bits_stored: u8,
    /// Photometric Interpretation MONOCHROME1 (low values bright).
    pub monochrome1: bool,
    /// The image's own VOI window, if it has one.
    pub voi: Option<Window>,
    pub pixel_spacing: Option<PixelSpacing>,
}

impl GreyImage {
    /// An 8-bit MONOCHROME2 image without VOI or spacing (e.g. a PNG).
    pub fn from_u8(width: usize, height: usize, pixels: &[u8]) -> Self {
        Self {
            width,
            height,
            samples: GreySamples::U16(pixels.iter().map(|&v| u16::from(v)).collect()),
            bits_stored: 8,
            monochrome1: false,
            voi: None,
            pixel_spacing: None,
        }
    }

    fn validate(&self) -> Result<()> {
        let n = match &self.samples {
            GreySamples::U16(v) => v.len(),
            GreySamples::F32(v) => v.len(),
        };
        if self.width == 0 || self.height == 0 || n != self.width * self.height {
            return Err(Error::Input(format!(
                "a {}x{} image needs {} samples, got {n}",
                self.width,
                self.height,
                self.width * self.height
            )));
        }
        if let GreySamples::U16(_) = self.samples
            && !(1..=16).contains(&self.bits_stored)
        {
            return Err(Error::Input(format!("bits_stored {} is not in 1..=16", self.bits_stored)));
        }
        if let GreySamples::F32(v) = &self.samples
            && v.iter().any(|x| !x.is_finite())
        {
            return Err(Error::Input(
                "the image has values that are not finite numbers (an extreme or invalid rescale?)".into(),
            ));
        }
        if let Some(w) = self.voi
            && !(w.center.is_finite() && w.width.is_finite())
        {
            return Err(Error::Input("the image's VOI window is not a finite number".into()));
        }
        if let Some(s) = self.pixel_spacing
            && !(s.row_mm.is_finite() && s.column_mm.is_finite() && s.row_mm > 0.0 && s.column_mm > 0.0)
        {
            return Err(Error::Input("the pixel spacing is not a positive finite number".into()));
        }
        Ok(())
    }
}

/// Where the model input came from in the original image.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct InputGeometry {
    pub image_width: usize,
    pub image_height: usize,
    /// The crop rectangle in original pixels (`x0`, `y0`, width, height).
    pub crop: [usize; 4],
    pub input_width: usize,
    pub input_height: usize,
}

impl InputGeometry {
    /// Original-image coordinates of a point on a `map_w` x `map_h` grid covering the model input
    /// (both with pixel centres at integers).
    pub fn map_to_image(&self, map_w: usize, map_h: usize, p: [f64; 2]) -> [f64; 2] {
        let sx = self.crop[2] as f64 / map_w as f64;
        let sy = self.crop[3] as f64 / map_h as f64;
        [self.crop[0] as f64 + (p[0] + 0.5) * sx - 0.5, self.crop[1] as f64 + (p[1] + 0.5) * sy - 0.5]
    }
}

/// A model input built from an image.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    /// `[1, C, H, W]`.
    pub tensor: Tensor,
    pub geometry: InputGeometry,
}

/// VOI-map, invert, normalise, crop and resize `image` as `manifest` says.
pub fn preprocess(manifest: &ModelManifest, image: &GreyImage) -> Result<Prepared> {
    image.validate()?;
    let p = &manifest.preprocessing;
    if p.kind != PreprocessingKind::Cxr {
        return Err(Error::Input(format!("model `{}` is a {:?} model, not cxr", manifest.id, p.kind)));
    }
    let input = manifest.inputs.first().ok_or_else(|| Error::Input("manifest has no input".into()))?;
    let channels = input.shape.get(1).copied().unwrap_or(1).max(1) as usize;
    let maxval = f64::from(p.normalization.maxval());

    // 1. VOI to [0, maxval].
    let window = match p.voi {
        VoiSpec::Window { center, width } => Some(Window { center, width }),
        VoiSpec::Named(VoiMode::Image) => image.voi,
        VoiSpec::Named(VoiMode::FullRange) => None,
    };
    let voi: Box<dyn Fn(f64) -> f64> = match window {
        Some(Window { center, width }) => {
            let (c, w) = (center - 0.5, (width - 1.0).max(1e-9));
            Box::new(move |x: f64| {
                if x <= c - w / 2.0 {
                    0.0
                } else if x > c + w / 2.0 {
                    maxval
                } else {
                    ((x - c) / w + 0.5) * maxval
                }
            })
        }
        None => match &image.samples {
            GreySamples::U16(_) => {
                let top = f64::from((1u32 << image.bits_stored) - 1);
                Box::new(move |x: f64| (x.min(top) / top) * maxval)
            }
            GreySamples::F32(v) => {
                let (lo, hi) = v.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
                    (lo.min(f64::from(x)), hi.max(f64::from(x)))
                });
                let span = if hi > lo { hi - lo } else { 1.0 };
                Box::new(move |x: f64| ((x - lo) / span) * maxval)
            }
        },
    };
    // 4. Crop rectangle.
    let (x0, y0, cw, ch) = match p.crop {
        Crop::None => (0, 0, image.width, image.height),
        Crop::CenterSquare => {
            let (x0, y0, side) = resample::center_square(image.width, image.height);
            (x0, y0, side, side)
        }
    };
    let (out_h, out_w) = match &p.resize {
        Some(r) => (r.size[0], r.size[1]),
        None => (ch, cw),
    };
    // An image much smaller than the size the model resizes to holds too little detail to be read.
    let (min_w, min_h) = (out_w / 4, out_h / 4);
    if p.resize.is_some() && (cw < min_w || ch < min_h) {
        return Err(Error::Input(format!(
            "the image is too small: {cw}x{ch} pixels to read, and model `{}` needs at least {min_w}x{min_h} (its input is {out_w}x{out_h})",
            manifest.id
        )));
    }
    // 2. MONOCHROME1.
    let invert = image.monochrome1 && p.monochrome1 == Monochrome1::Invert;
    let grey = |x: f64| -> f32 {
        let v = voi(x);
        (if invert { maxval - v } else { v }) as f32
    };
    // 3, 4, 5 per channel (the normalisation may differ per channel): VOI, inversion and
    // normalisation in one pass over the crop rectangle only (a table per stored value for
    // integer samples: the same function, evaluated once per value instead of once per pixel).
    let per_channel_differs = matches!(&p.normalization, crate::manifest::Normalization::MeanStd { mean, std } if mean.len() > 1 || std.len() > 1);
    let table: Vec<f32> = match &image.samples {
        GreySamples::U16(v) => {
            let top = v.iter().copied().max().unwrap_or(0);
            (0..=top).map(|x| grey(f64::from(x))).collect()
        }
        GreySamples::F32(_) => Vec::new(),
    };
    let crop_plane = |c: usize| -> Plane {
        let mut values = Vec::with_capacity(cw * ch);
        for y in y0..y0 + ch {
            let row = y * image.width + x0..y * image.width + x0 + cw;
            match &image.samples {
                GreySamples::U16(v) => {
                    values.extend(v[row].iter().map(|&x| p.normalization.apply(table[usize::from(x)], c)))
                }
                GreySamples::F32(v) => {
                    values.extend(v[row].iter().map(|&x| p.normalization.apply(grey(f64::from(x)), c)))
                }
            }
        }
        Plane::new(cw, ch, values)
    };
    let mut data = Vec::with_capacity(channels * out_h * out_w);
    for c in 0..channels {
        if c > 0 && !per_channel_differs {
            data.extend_from_within(..out_h * out_w);
            continue;
        }
        let plane = crop_plane(c);
        match &p.resize {
            Some(r) => {
                data.extend_from_slice(&resample::resize(&plane, out_w, out_h, r.interpolation, r.antialias).data)
            }
            None => data.extend_from_slice(&plane.data),
        }
    }
    Ok(Prepared {
        tensor: Tensor { shape: vec![1, channels, out_h, out_w], data },
        geometry: InputGeometry {
            image_width: image.width,
            image_height: image.height,
            crop: [x0, y0, cw, ch],
            input_width: out_w,
            input_height: out_h,
        },
    })
}

/// A contour in original image pixels, and in mm when the spacing is known.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Contour {
    pub points_px: Vec<[f64; 2]>,
    pub points_mm: Option<Vec<[f64; 2]>>,
}

/// A connected region of a finding's map: its box (pixel edges, so a one-pixel region at (c, r)
/// spans `c - 0.5 ..= c + 0.5`) and its peak.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FindingBox {
    pub min_px: [f64; 2],
    pub max_px: [f64; 2],
    pub min_mm: Option<[f64; 2]>,
    pub max_mm: Option<[f64; 2]>,
    /// Area of the region's map pixels, in original pixels and mm².
    pub area_px: f64,
    pub area_mm2: Option<f64>,
    pub peak: f32,
}

/// A label's map after its activation (values in [0, 1] for sigmoid maps), covering the crop
/// rectangle `crop` (`x0`, `y0`, width, height in original pixels). Not written to JSON.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FindingMap {
    pub width: usize,
    pub height: usize,
    pub values: Vec<f32>,
    pub crop: [usize; 4],
}

/// Where a finding is, from its per-label map.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FindingGeometry {
    /// The map value the contours are drawn at.
    pub level: f32,
    pub contours: Vec<Contour>,
    /// One per connected region, strongest first.
    pub boxes: Vec<FindingBox>,
    /// `Some(calibrated)` when mm values are given.
    pub spacing_calibrated: Option<bool>,
    /// The map itself, for heat-map display.
    #[serde(skip)]
    pub map: FindingMap,
}

/// One label's result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    pub model_id: String,
    pub model_version: String,
    pub label: String,
    pub radlex: Option<String>,
    pub snomed: Option<String>,
    /// Probability in [0, 1] (the map's peak when the model has no multilabel output).
    pub score: f32,
    pub threshold: f32,
    pub positive: bool,
    /// The manifest's `shown_by_default` for the label (see [`crate::manifest::Label`]).
    pub shown_by_default: bool,
    pub geometry: Option<FindingGeometry>,
}

/// All findings for one image.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CxrResult {
    pub model_id: String,
    pub model_version: String,
    pub execution_provider: String,
    pub geometry: InputGeometry,
    pub findings: Vec<Finding>,
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// Turn one image's slice of the model outputs into findings.
pub fn postprocess(
    manifest: &ModelManifest,
    outputs: &BTreeMap<String, Tensor>,
    batch_index: usize,
    geometry: &InputGeometry,
    spacing: Option<PixelSpacing>,
) -> Result<Vec<Finding>> {
    let n_labels = manifest.labels.len();
    let bad = |output: &str, message: String| Error::Output {
        model: manifest.id.clone(),
        output: output.to_owned(),
        message,
    };
    let mut scores: Option<Vec<f32>> = None;
    let mut maps: Option<(usize, usize, Vec<f32>, Activation)> = None;
    for spec in &manifest.outputs {
        let t = outputs.get(&spec.name).ok_or_else(|| bad(&spec.name, "missing".into()))?;
        if t.shape.first().copied().unwrap_or(0) <= batch_index {
            return Err(bad(&spec.name, format!("has shape {:?}, no batch item {batch_index}", t.shape)));
        }
        let per_item: usize = t.shape[1..].iter().product();
        let item = &t.data[batch_index * per_item..(batch_index + 1) * per_item];
        match spec.kind {
            OutputKind::MultilabelLogits | OutputKind::MultilabelProbabilities if scores.is_none() => {
                if per_item != n_labels {
                    return Err(bad(&spec.name, format!("{per_item} values per image for {n_labels} labels")));
                }
                let logits = spec.kind == OutputKind::MultilabelLogits;
                scores = Some(item.iter().map(|&v| if logits { sigmoid(v) } else { v }).collect());
            }
            OutputKind::SegmentationPerLabel | OutputKind::HeatmapPerLabel if maps.is_none() => {
                if t.shape.len() != 4 || t.shape[1] != n_labels {
                    return Err(bad(&spec.name, format!("shape {:?} is not [N, {n_labels}, h, w]", t.shape)));
                }
                maps = Some((t.shape[3], t.shape[2], item.to_vec(), spec.activation));
            }
            _ => {}
        }
    }
    let mm = |p: [f64; 2]| spacing.map(|s| [p[0] * s.column_mm, p[1] * s.row_mm]);
    let mut findings = Vec::with_capacity(n_labels);
    for (k, label) in manifest.labels.iter().enumerate() {
        let geometry = maps.as_ref().map(|(mw, mh, data, activation)| {
            let plane_data: Vec<f32> = data[k * mw * mh..(k + 1) * mw * mh]
                .iter()
                .map(|&v| if *activation == Activation::Sigmoid { sigmoid(v) } else { v })
                .collect();
            let plane = Plane::new(*mw, *mh, plane_data);
            let level = label.map_level();
            let to_image = |p: [f64; 2]| geometry.map_to_image(*mw, *mh, p);
            let contours = contour::marching_squares(&plane, level)
                .into_iter()
                .map(|poly: Polygon| {
                    let points_px: Vec<[f64; 2]> = poly.into_iter().map(to_image).collect();
                    let points_mm = spacing.map(|_| points_px.iter().filter_map(|&p| mm(p)).collect());
                    Contour { points_px, points_mm }
                })
                .collect();
            let (sx, sy) = (geometry.crop[2] as f64 / *mw as f64, geometry.crop[3] as f64 / *mh as f64);
            let boxes = contour::regions(&plane, level)
                .into_iter()
                .map(|r| {
                    let min_px = to_image([r.bounds[0] as f64 - 0.5, r.bounds[1] as f64 - 0.5]);
                    let max_px = to_image([r.bounds[2] as f64 + 0.5, r.bounds[3] as f64 + 0.5]);
                    let area_px = r.pixel_count as f64 * sx * sy;
                    FindingBox {
                        min_px,
                        max_px,
                        min_mm: mm(min_px),
                        max_mm: mm(max_px),
                        area_px,
                        area_mm2: spacing.map(|s| area_px * s.row_mm * s.column_mm),
                        peak: r.peak,
                    }
                })
                .collect();
            let map = FindingMap { width: *mw, height: *mh, values: plane.data.clone(), crop: geometry.crop };
            (FindingGeometry { level, contours, boxes, spacing_calibrated: spacing.map(|s| s.calibrated), map }, plane)
        });
        let score = match (&scores, &geometry) {
            (Some(s), _) => s[k],
            (None, Some((_, plane))) => plane.data.iter().copied().fold(0.0, f32::max),
            (None, None) => return Err(bad("outputs", "no multilabel or map output".into())),
        };
        findings.push(Finding {
            model_id: manifest.id.clone(),
            model_version: manifest.version.clone(),
            label: label.name.clone(),
            radlex: label.radlex.clone(),
            snomed: label.snomed.clone(),
            score,
            threshold: label.threshold,
            positive: score >= label.threshold,
            shown_by_default: label.shown_by_default,
            geometry: geometry.map(|(g, _)| g),
        });
    }
    Ok(findings)
}

/// Run the model on one image.
pub fn analyze(session: &mut ModelSession, image: &GreyImage, ctx: &JobContext) -> Result<CxrResult> {
    analyze_batch(session, std::slice::from_ref(image), ctx)?.pop().ok_or_else(|| Error::Input("no image".into()))
}

/// Run the model on several images, in batches as large as the model allows (8 at most);
/// checks the cancel flag between batches and reports `("inference", done, total)`.
pub fn analyze_batch(session: &mut ModelSession, images: &[GreyImage], ctx: &JobContext) -> Result<Vec<CxrResult>> {
    let manifest = session.manifest_arc();
    let fixed_batch = manifest.inputs.first().and_then(|i| i.shape.first()).copied().unwrap_or(-1);
    let batch = if fixed_batch > 0 { fixed_batch as usize } else { 8 };
    let mut results = Vec::with_capacity(images.len());
    ctx.report("inference", 0, images.len());
    for chunk in images.chunks(batch) {
        ctx.check_cancelled()?;
        let prepared: Vec<Prepared> = chunk.iter().map(|im| preprocess(&manifest, im)).collect::<Result<_>>()?;
        let mut shape = prepared[0].tensor.shape.clone();
        let per_item = prepared[0].tensor.data.len();
        let n_items = if fixed_batch > 0 { batch } else { chunk.len() };
        shape[0] = n_items;
        let mut data = Vec::with_capacity(n_items * per_item);
        for p in &prepared {
            data.extend_from_slice(&p.tensor.data);
        }
        data.resize(n_items * per_item, 0.0);
        let outputs = session.run(&Tensor { shape, data })?;
        for (i, (p, image)) in prepared.iter().zip(chunk).enumerate() {
            let findings = postprocess(&manifest, &outputs, i, &p.geometry, image.pixel_spacing)?;
            results.push(CxrResult {
                model_id: manifest.id.clone(),
                model_version: manifest.version.clone(),
                execution_provider: session.execution_provider().to_owned(),
                geometry: p.geometry,
                findings,
            });
        }
        ctx.report("inference", results.len(), images.len());
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn manifest() -> ModelManifest {
        ModelManifest::from_toml_str(include_str!("../../models/test/cxr_toy.toml"), Path::new("cxr_toy.toml")).unwrap()
    }

    #[test]
    fn an_image_with_non_finite_values_is_refused_not_resampled() {
        // A DX with RescaleSlope 1e308: the modality values overflow to infinity.
        let mut values = vec![100.0_f32; 64 * 64];
        values[10] = f32::INFINITY;
        values[20] = f32::NAN;
        let bad = GreyImage {
            width: 64,
            height: 64,
            samples: GreySamples::F32(values),
            bits_stored: 16,
            monochrome1: false,
            voi: None,
            pixel_spacing: None,
        };
        let err = preprocess(&manifest(), &bad).unwrap_err();
        assert!(err.to_string().contains("not finite"), "{err}");
        let window = GreyImage { voi: Some(Window { center: f64::NAN, width: 400.0 }), ..image(64, 64, |_, _| 7, 12) };
        assert!(preprocess(&manifest(), &window).is_err());
    }

    fn image(width: usize, height: usize, f: impl Fn(usize, usize) -> u16, bits: u8) -> GreyImage {
        let mut v = Vec::with_capacity(width * height);
        for y in 0..height {
            for x in 0..width {
                v.push(f(x, y));
            }
        }
        GreyImage {
            width,
            height,
            samples: GreySamples::U16(v),
            bits_stored: bits,
            monochrome1: false,
            voi: None,
            pixel_spacing: None,
        }
    }

    #[test]
    fn full_range_voi_and_xrv_normalisation() {
        let mut m = manifest();
        m.preprocessing.resize = None;
        m.preprocessing.crop = Crop::None;
        let im = image(3, 1, |x, _| [0, 2048, 4095][x], 12);
        let t = preprocess(&m, &im).unwrap().tensor;
        let expect = |x: f64| ((2.0 * (x / 4095.0) - 1.0) * 1024.0) as f32;
        for (got, want) in t.data.iter().zip([expect(0.0), expect(2048.0), expect(4095.0)]) {
            assert!((got - want).abs() < 1e-3, "{got} vs {want}");
        }
    }

    #[test]
    fn monochrome1_is_inverted_after_the_window() {
        let mut m = manifest();
        m.preprocessing.resize = None;
        m.preprocessing.crop = Crop::None;
        m.preprocessing.normalization = crate::manifest::Normalization::Unit;
        let mut im = image(2, 1, |x, _| [100, 300][x], 12);
        im.voi = Some(Window { center: 200.5, width: 201.0 });
        im.monochrome1 = true;
        let t = preprocess(&m, &im).unwrap().tensor;
        assert_eq!(t.data, vec![1.0, 0.0]);
        m.preprocessing.monochrome1 = Monochrome1::Keep;
        assert_eq!(preprocess(&m, &im).unwrap().tensor.data, vec![0.0, 1.0]);
        m.preprocessing.voi = VoiSpec::Named(VoiMode::FullRange);
        let t = preprocess(&m, &im).unwrap().tensor;
        assert!((t.data[0] - 100.0 / 4095.0).abs() < 1e-6);
    }

    #[test]
    fn dicom_linear_window() {
        let mut m = manifest();
        m.preprocessing.resize = None;
        m.preprocessing.crop = Crop::None;
        m.preprocessing.normalization = crate::manifest::Normalization::Unit;
        m.preprocessing.voi = VoiSpec::Window { center: 50.0, width: 11.0 };
        let im = image(4, 1, |x, _| [44, 45, 50, 56][x], 8);
        let t = preprocess(&m, &im).unwrap().tensor;
        // x <= c - 0.5 - (w-1)/2 = 44.5 -> 0; x > c - 0.5 + (w-1)/2 = 54.5 -> 1.
        assert_eq!(t.data[0], 0.0);
        assert!((t.data[1] - 0.05).abs() < 1e-6, "{}", t.data[1]);
        assert!((t.data[2] - 0.55).abs() < 1e-6);
        assert_eq!(t.data[3], 1.0);
    }

    #[test]
    fn map_coordinates_land_on_the_original_pixels() {
        let g = InputGeometry {
            image_width: 300,
            image_height: 200,
            crop: [50, 0, 200, 200],
            input_width: 224,
            input_height: 224,
        };
        // The map's first pixel centre covers original pixels 50..54 (4 per map pixel on a 50x50 map).
        assert_eq!(g.map_to_image(50, 50, [0.0, 0.0]), [51.5, 1.5]);
        assert_eq!(g.map_to_image(50, 50, [-0.5, -0.5]), [49.5, -0.5]);
        assert_eq!(g.map_to_image(50, 50, [49.5, 49.5]), [249.5, 199.5]);
    }

    #[test]
    fn postprocess_thresholds_and_locates() {
        let m = manifest();
        let mut outputs = BTreeMap::new();
        let logits = vec![2.0, -2.0, 0.0, 0.5, -0.1, 0.0];
        outputs.insert("logits".into(), Tensor { shape: vec![1, 6], data: logits });
        let mut maps = vec![0.0f32; 6 * 56 * 56];
        for y in 10..20 {
            for x in 30..36 {
                maps[y * 56 + x] = 0.9;
            }
        }
        outputs.insert("maps".into(), Tensor { shape: vec![1, 6, 56, 56], data: maps });
        let g = InputGeometry {
            image_width: 224,
            image_height: 224,
            crop: [0, 0, 224, 224],
            input_width: 224,
            input_height: 224,
        };
        let spacing = PixelSpacing { row_mm: 0.5, column_mm: 0.25, calibrated: false };
        let f = postprocess(&m, &outputs, 0, &g, Some(spacing)).unwrap();
        assert_eq!(f.len(), 6);
        assert!(f[0].positive && !f[1].positive);
        assert!((f[0].score - sigmoid(2.0)).abs() < 1e-6);
        // logits 0 -> 0.5, threshold 0.6 -> negative; 0.5 vs 0.5 -> positive.
        assert!(!f[2].positive);
        let geo = f[0].geometry.as_ref().unwrap();
        assert_eq!(geo.boxes.len(), 1);
        let b = &geo.boxes[0];
        assert_eq!(b.min_px, [119.5, 39.5]);
        assert_eq!(b.max_px, [143.5, 79.5]);
        assert_eq!(b.min_mm, Some([119.5 * 0.25, 39.5 * 0.5]));
        assert_eq!(b.area_px, 60.0 * 16.0);
        assert_eq!(geo.contours.len(), 1);
        assert_eq!(geo.spacing_calibrated, Some(false));
        assert!(f[1].geometry.as_ref().unwrap().boxes.is_empty());
    }
}
