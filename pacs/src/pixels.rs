//! The pixel pipeline, in one place: stored value -> modality LUT -> VOI -> presentation.
//!
//! * Modality LUT: Rescale Slope/Intercept or the Modality LUT Sequence (HU for CT).
//! * VOI: every window (center/width with its explanation) and every VOI LUT of the file,
//!   with the LINEAR, LINEAR_EXACT and SIGMOID functions of PS3.3 C.11.2.1.2.
//! * Presentation: MONOCHROME1 and Presentation LUT Shape INVERSE invert for display only;
//!   modality values (HU) are never inverted.
//! * Pixel padding (Pixel Padding Value and Range Limit) is excluded from statistics and shown black.
//!
//! The GPU shader implements [`apply_window`] and [`PixelTransform::display_value`]; the
//! CPU versions here are the reference the parity test compares against.

use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use serde::Serialize;

use crate::attrs::{float, floats, int, items, string};
use crate::decode::{Frame, Photometric, Samples};

/// VOI LUT Function (0028,1056).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub enum VoiFunction {
    #[default]
    Linear,
    LinearExact,
    Sigmoid,
}

impl VoiFunction {
    fn parse(text: &str) -> Self {
        match text.trim().to_ascii_uppercase().as_str() {
            "LINEAR_EXACT" => Self::LinearExact,
            "SIGMOID" => Self::Sigmoid,
            _ => Self::Linear,
        }
    }

    /// Stable id used by the shader uniform.
    pub fn shader_id(self) -> u32 {
        match self {
            Self::Linear => 0,
            Self::LinearExact => 1,
            Self::Sigmoid => 2,
        }
    }
}

/// A window in modality units (HU for CT).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Window {
    pub center: f64,
    pub width: f64,
    pub function: VoiFunction,
}

impl Window {
    pub fn new(center: f64, width: f64) -> Self {
        Self { center, width, function: VoiFunction::Linear }
    }
}

/// Maps a modality value through a window to [0, 1] (PS3.3 C.11.2.1.2).
#[inline]
pub fn apply_window(x: f64, window: &Window) -> f64 {
    let c = window.center;
    match window.function {
        VoiFunction::Linear => {
            let w = window.width.max(1.0);
            if x <= c - 0.5 - (w - 1.0) / 2.0 {
                0.0
            } else if x > c - 0.5 + (w - 1.0) / 2.0 {
                1.0
            } else if w <= 1.0 {
                // Degenerate width 1: a threshold at the centre.
                if x >= c { 1.0 } else { 0.0 }
            } else {
                (x - (c - 0.5)) / (w - 1.0) + 0.5
            }
        }
        VoiFunction::LinearExact => {
            let w = window.width.max(f64::MIN_POSITIVE);
            if x <= c - w / 2.0 {
                0.0
            } else if x > c + w / 2.0 {
                1.0
            } else {
                (x - c) / w + 0.5
            }
        }
        VoiFunction::Sigmoid => {
            let w = window.width.max(f64::MIN_POSITIVE);
            1.0 / (1.0 + (-4.0 * (x - c) / w).exp())
        }
    }
}

/// A lookup table (Modality LUT, VOI LUT or palette channel).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Lut {
    /// The input value mapped to the first entry.
    pub first_mapped: i64,
    /// Bits per entry (8 or 16).
    pub bits: u16,
    pub data: Vec<u16>,
}

impl Lut {
    /// Reads LUTDescriptor + LUTData from a sequence item.
    fn read(item: &InMemDicomObject, descriptor: Tag, data: Tag) -> Option<Self> {
        let desc = floats(item, descriptor)?;
        if desc.len() < 3 {
            return None;
        }
        let entries = if desc[0] as i64 == 0 { 65536 } else { desc[0] as i64 } as usize;
        let mut first = desc[1] as i64;
        // LUTDescriptor's second value is US or SS; a US value above 32767 may mean a negative SS one.
        if first > 32767 && int(item, tags::PIXEL_REPRESENTATION) != Some(0) && first < 65536 {
            first -= 65536;
        }
        let bits = (desc[2] as u16).clamp(1, 16);
        let elem = item.get(data)?;
        let mut values: Vec<u16> =
            elem.to_multi_int::<u32>().ok().map(|v| v.into_iter().map(|x| x as u16).collect()).or_else(|| {
                elem.to_bytes().ok().map(|b| b.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect())
            })?;
        if bits <= 8 && values.len() * 2 == entries {
            // 8-bit entries packed two per 16-bit word.
            values = values.iter().flat_map(|w| [w & 0xFF, w >> 8]).collect();
        }
        if values.is_empty() {
            return None;
        }
        values.truncate(entries.max(1));
        Some(Self { first_mapped: first, bits, data: values })
    }

    #[inline]
    pub fn lookup(&self, x: f64) -> u16 {
        let index = (x.round() as i64 - self.first_mapped).clamp(0, self.data.len() as i64 - 1);
        self.data[index as usize]
    }

    pub fn max_output(&self) -> f64 {
        f64::from((1u32 << self.bits) - 1)
    }
}

/// The modality transform.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum ModalityLut {
    Identity,
    Rescale { slope: f64, intercept: f64 },
    Table(Lut),
}

impl ModalityLut {
    #[inline]
    pub fn apply(&self, stored: f64) -> f64 {
        match self {
            Self::Identity => stored,
            Self::Rescale { slope, intercept } => stored * slope + intercept,
            Self::Table(lut) => f64::from(lut.lookup(stored)),
        }
    }

    /// Slope and intercept where the transform is linear.
    pub fn linear(&self) -> Option<(f64, f64)> {
        match self {
            Self::Identity => Some((1.0, 0.0)),
            Self::Rescale { slope, intercept } => Some((*slope, *intercept)),
            Self::Table(_) => None,
        }
    }
}

/// A VOI preset found in the file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum VoiPreset {
    Window { window: Window, explanation: String },
    Table { lut: Lut, explanation: String },
}

impl VoiPreset {
    pub fn explanation(&self) -> &str {
        match self {
            Self::Window { explanation, .. } | Self::Table { explanation, .. } => explanation,
        }
    }
}

/// The VOI to apply for display.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Voi {
    Window(Window),
    Table(Lut),
}

/// Palette colour LUTs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Palette {
    pub red: Lut,
    pub green: Lut,
    pub blue: Lut,
}

/// Everything needed to turn stored samples of one frame into modality values and display values.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PixelTransform {
    pub modality: ModalityLut,
    /// Rescale Type or the unit implied by the modality ("HU" for CT).
    pub unit: String,
    pub presets: Vec<VoiPreset>,
    pub photometric: Photometric,
    /// Presentation LUT Shape INVERSE on a MONOCHROME2 image.
    pub presentation_inverse: bool,
    /// Stored values from .0 to .1 (inclusive) are padding.
    pub padding: Option<(f64, f64)>,
    pub palette: Option<Palette>,
}

/// Item of the per-frame (first) or shared functional group sequence `seq`, if any.
fn group_item(obj: &InMemDicomObject, frame: u32, seq: Tag) -> Option<&InMemDicomObject> {
    items(obj, tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE)
        .get(frame as usize)
        .and_then(|f| items(f, seq).first())
        .or_else(|| items(obj, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE).first().and_then(|s| items(s, seq).first()))
}

impl PixelTransform {
    /// A transform with no presets, padding or palette (synthetic images, tests).
    pub fn simple(modality: ModalityLut, unit: &str, photometric: Photometric) -> Self {
        Self {
            modality,
            unit: unit.to_owned(),
            presets: vec![],
            photometric,
            presentation_inverse: false,
            padding: None,
            palette: None,
        }
    }

    /// Reads the transform for `frame` of an object whose first frame was decoded as `decoded`.
    pub fn from_object(obj: &InMemDicomObject, frame: u32, decoded: &Frame) -> Self {
        let rescale_source = group_item(obj, frame, tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE).unwrap_or(obj);
        let modality = if let Some(lut) = items(obj, tags::MODALITY_LUT_SEQUENCE)
            .first()
            .and_then(|item| Lut::read(item, tags::LUT_DESCRIPTOR, tags::LUT_DATA))
        {
            ModalityLut::Table(lut)
        } else {
            match (float(rescale_source, tags::RESCALE_SLOPE), float(rescale_source, tags::RESCALE_INTERCEPT)) {
                (None, None) => ModalityLut::Identity,
                (slope, intercept) => {
                    let slope = slope.filter(|s| *s != 0.0).unwrap_or(1.0);
                    let intercept = intercept.unwrap_or(0.0);
                    if slope == 1.0 && intercept == 0.0 {
                        ModalityLut::Identity
                    } else {
                        ModalityLut::Rescale { slope, intercept }
                    }
                }
            }
        };
        let modality_text = string(obj, tags::MODALITY).unwrap_or_default();
        let unit = string(rescale_source, tags::RESCALE_TYPE)
            .or_else(|| (modality_text == "CT").then(|| "HU".to_owned()))
            .unwrap_or_default();

        let voi_source = group_item(obj, frame, tags::FRAME_VOILUT_SEQUENCE).unwrap_or(obj);
        let mut presets = Vec::new();
        let centers = floats(voi_source, tags::WINDOW_CENTER).unwrap_or_default();
        let widths = floats(voi_source, tags::WINDOW_WIDTH).unwrap_or_default();
        let explanations: Vec<String> = voi_source
            .get(tags::WINDOW_CENTER_WIDTH_EXPLANATION)
            .and_then(|e| e.to_multi_str().ok())
            .map(|v| v.iter().map(|s| s.trim().to_owned()).collect())
            .unwrap_or_default();
        let function =
            string(voi_source, tags::VOILUT_FUNCTION).map_or(VoiFunction::Linear, |f| VoiFunction::parse(&f));
        for (i, (&center, &width)) in centers.iter().zip(widths.iter()).enumerate() {
            if width > 0.0 {
                presets.push(VoiPreset::Window {
                    window: Window { center, width, function },
                    explanation: explanations.get(i).cloned().unwrap_or_default(),
                });
            }
        }
        for item in items(obj, tags::VOILUT_SEQUENCE) {
            if let Some(lut) = Lut::read(item, tags::LUT_DESCRIPTOR, tags::LUT_DATA) {
                presets.push(VoiPreset::Table {
                    lut,
                    explanation: string(item, tags::LUT_EXPLANATION).unwrap_or_default(),
                });
            }
        }

        let presentation_inverse = decoded.photometric == Photometric::Monochrome2
            && string(obj, tags::PRESENTATION_LUT_SHAPE).is_some_and(|s| s.eq_ignore_ascii_case("INVERSE"));
        let padding = float(obj, tags::PIXEL_PADDING_VALUE).map(|value| {
            let limit = float(obj, tags::PIXEL_PADDING_RANGE_LIMIT).unwrap_or(value);
            (value.min(limit), value.max(limit))
        });
        let palette = (decoded.photometric == Photometric::PaletteColor)
            .then(|| {
                Some(Palette {
                    red: Lut::read(
                        obj,
                        tags::RED_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR,
                        tags::RED_PALETTE_COLOR_LOOKUP_TABLE_DATA,
                    )?,
                    green: Lut::read(
                        obj,
                        tags::GREEN_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR,
                        tags::GREEN_PALETTE_COLOR_LOOKUP_TABLE_DATA,
                    )?,
                    blue: Lut::read(
                        obj,
                        tags::BLUE_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR,
                        tags::BLUE_PALETTE_COLOR_LOOKUP_TABLE_DATA,
                    )?,
                })
            })
            .flatten();
        Self { modality, unit, presets, photometric: decoded.photometric, presentation_inverse, padding, palette }
    }

    /// True when a stored value is pixel padding.
    #[inline]
    pub fn is_padding(&self, stored: f64) -> bool {
        self.padding.is_some_and(|(lo, hi)| stored >= lo && stored <= hi)
    }

    /// Modality values (e.g. HU) of a grey frame, as f32. Padding keeps its modality value.
    pub fn modality_values(&self, frame: &Frame) -> Vec<f32> {
        let n = frame.samples.len();
        let mut out = Vec::with_capacity(n);
        match (&frame.samples, self.modality.linear()) {
            (Samples::I16(v), Some((s, b))) => out.extend(v.iter().map(|&x| (f64::from(x) * s + b) as f32)),
            (Samples::U16(v), Some((s, b))) => out.extend(v.iter().map(|&x| (f64::from(x) * s + b) as f32)),
            (samples, _) => out.extend((0..n).map(|i| self.modality.apply(samples.get_f64(i)) as f32)),
        }
        out
    }

    /// Whether display inverts (MONOCHROME1, or INVERSE presentation on MONOCHROME2).
    pub fn inverts_for_display(&self) -> bool {
        self.photometric == Photometric::Monochrome1 || self.presentation_inverse
    }

    /// The VOI to show first: the file's first preset, else one computed from the histogram.
    pub fn default_voi(&self, frame: &Frame) -> Voi {
        match self.presets.first() {
            Some(VoiPreset::Window { window, .. }) => Voi::Window(*window),
            Some(VoiPreset::Table { lut, .. }) => Voi::Table(lut.clone()),
            None => Voi::Window(self.auto_window(frame)),
        }
    }

    /// A window from the 0.5th to 99.5th percentile of modality values, padding excluded.
    pub fn auto_window(&self, frame: &Frame) -> Window {
        let values: Vec<f32> = (0..frame.samples.len())
            .step_by(frame.samples_per_pixel.max(1) as usize)
            .filter_map(|i| {
                let stored = frame.samples.get_f64(i);
                (!self.is_padding(stored)).then(|| self.modality.apply(stored) as f32)
            })
            .collect();
        percentile_window(values)
    }

    /// Display value in [0, 1] of one stored grey value, with `voi` and `invert` (the user's toggle).
    #[inline]
    pub fn display_value(&self, stored: f64, voi: &Voi, invert: bool) -> f64 {
        if self.is_padding(stored) {
            return 0.0;
        }
        let x = self.modality.apply(stored);
        let y = match voi {
            Voi::Window(w) => apply_window(x, w),
            Voi::Table(lut) => f64::from(lut.lookup(x)) / lut.max_output(),
        };
        if self.inverts_for_display() != invert { 1.0 - y } else { y }
    }

    /// CPU reference rendering of one frame to 8-bit grey (or RGB for colour), for thumbnails,
    /// exports and the GPU parity test. Never used per frame by the viewer.
    pub fn render_u8(&self, frame: &Frame, voi: &Voi, invert: bool) -> Vec<u8> {
        match frame.photometric {
            Photometric::Rgb => rgb_to_u8(&frame.samples, frame.bits_stored),
            Photometric::PaletteColor => match &self.palette {
                Some(p) => (0..frame.samples.len())
                    .flat_map(|i| {
                        let x = frame.samples.get_f64(i);
                        [&p.red, &p.green, &p.blue]
                            .map(|lut| (f64::from(lut.lookup(x)) / lut.max_output() * 255.0).round() as u8)
                    })
                    .collect(),
                None => (0..frame.samples.len()).map(|i| frame.samples.get_f64(i).clamp(0.0, 255.0) as u8).collect(),
            },
            _ => (0..frame.samples.len())
                .map(|i| (self.display_value(frame.samples.get_f64(i), voi, invert) * 255.0).round() as u8)
                .collect(),
        }
    }
}

fn rgb_to_u8(samples: &Samples, bits_stored: u16) -> Vec<u8> {
    match samples {
        Samples::U8(v) => v.clone(),
        other => {
            let max = f64::from((1u32 << bits_stored.clamp(1, 16)) - 1);
            (0..other.len()).map(|i| (other.get_f64(i) / max * 255.0).round().clamp(0.0, 255.0) as u8).collect()
        }
    }
}

/// The window from the 0.5th to the 99.5th percentile of `values` (modality values, padding
/// already left out): the automatic window when a file gives none. One implementation for
/// [`PixelTransform::auto_window`] and the viewer (which passes a subsample of a slice).
pub fn percentile_window(mut values: Vec<f32>) -> Window {
    if values.is_empty() {
        return Window::new(0.5, 1.0);
    }
    let lo_index = values.len() / 200;
    let hi_index = (values.len() - 1).saturating_sub(values.len() / 200);
    let (_, lo, _) = values.select_nth_unstable_by(lo_index, f32::total_cmp);
    let lo = f64::from(*lo);
    let (_, hi, _) = values.select_nth_unstable_by(hi_index, f32::total_cmp);
    let hi = f64::from(*hi).max(lo + 1.0);
    Window { center: (lo + hi) / 2.0, width: hi - lo, function: VoiFunction::Linear }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_window_matches_the_standard_formula() {
        let w = Window::new(40.0, 400.0);
        assert_eq!(apply_window(-200.0, &w), 0.0);
        assert_eq!(apply_window(300.0, &w), 1.0);
        // Centre maps to just above half for LINEAR (c - 0.5 is the midpoint).
        let mid = apply_window(40.0, &w);
        assert!((mid - (0.5 / 399.0 + 0.5)).abs() < 1e-12, "{mid}");
    }

    #[test]
    fn linear_exact_and_sigmoid_are_centred() {
        let exact = Window { center: 100.0, width: 50.0, function: VoiFunction::LinearExact };
        assert!((apply_window(100.0, &exact) - 0.5).abs() < 1e-12);
        assert_eq!(apply_window(75.0, &exact), 0.0);
        let sig = Window { center: 100.0, width: 50.0, function: VoiFunction::Sigmoid };
        assert!((apply_window(100.0, &sig) - 0.5).abs() < 1e-12);
        assert!(apply_window(150.0, &sig) > 0.98);
    }

    #[test]
    fn monochrome1_inverts_display_but_not_modality_values() {
        let frame = Frame {
            columns: 2,
            rows: 1,
            samples_per_pixel: 1,
            photometric: Photometric::Monochrome1,
            bits_stored: 12,
            samples: Samples::U16(vec![0, 4095]),
        };
        let t =
            PixelTransform::simple(ModalityLut::Rescale { slope: 2.0, intercept: -10.0 }, "", Photometric::Monochrome1);
        assert_eq!(t.modality_values(&frame), vec![-10.0, 8180.0]);
        let voi = Voi::Window(Window { center: 4085.0, width: 8190.0, function: VoiFunction::LinearExact });
        assert_eq!(t.render_u8(&frame, &voi, false), vec![255, 0]);
        assert_eq!(t.render_u8(&frame, &voi, true), vec![0, 255]);
    }

    #[test]
    fn lut_lookup_clamps_to_the_table() {
        let lut = Lut { first_mapped: -10, bits: 8, data: vec![0, 100, 255] };
        assert_eq!(lut.lookup(-100.0), 0);
        assert_eq!(lut.lookup(-9.0), 100);
        assert_eq!(lut.lookup(1000.0), 255);
    }
}
