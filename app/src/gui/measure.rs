//! Measurements on images: length, angle, and ellipse / rectangle ROIs with statistics in
//! modality units (HU on CT). Geometry is kept in image pixel coordinates; distances and areas
//! use the pixel spacing and say when it is the uncalibrated detector spacing.

use pacs::SpacingSource;
use pacs::store::MeasurementRecord;

use super::loader::SliceImage;

/// The drawing tool in use (left button).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Tool {
    #[default]
    WindowLevel,
    Select,
    Length,
    Angle,
    Ellipse,
    Rectangle,
}

impl Tool {
    pub fn label(self) -> &'static str {
        match self {
            Self::WindowLevel => "W/L",
            Self::Select => "Select",
            Self::Length => "Length",
            Self::Angle => "Angle",
            Self::Ellipse => "Ellipse",
            Self::Rectangle => "Rectangle",
        }
    }

    pub fn kind(self) -> Option<&'static str> {
        match self {
            Self::Length => Some("length"),
            Self::Angle => Some("angle"),
            Self::Ellipse => Some("ellipse"),
            Self::Rectangle => Some("rectangle"),
            _ => None,
        }
    }

    /// Points that complete a shape of this tool.
    pub fn points_needed(self) -> usize {
        match self {
            Self::Angle => 3,
            _ => 2,
        }
    }
}

/// Statistics of the pixels inside a region.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RoiStats {
    pub pixels: usize,
    pub mean: f64,
    pub sd: f64,
    pub min: f64,
    pub max: f64,
    pub area_mm2: Option<f64>,
}

/// Spacing (column mm, row mm, calibrated) of a slice.
fn spacing(slice: &SliceImage) -> Option<(f64, f64, bool)> {
    slice.info.spacing().map(|s| (s.column_mm, s.row_mm, s.source == SpacingSource::PixelSpacing))
}

/// Length in mm (or pixels when there is no spacing), and whether the spacing is calibrated.
pub fn length(slice: &SliceImage, a: [f64; 2], b: [f64; 2]) -> (f64, Option<bool>) {
    let (dx, dy) = (b[0] - a[0], b[1] - a[1]);
    match spacing(slice) {
        Some((sx, sy, calibrated)) => (((dx * sx).powi(2) + (dy * sy).powi(2)).sqrt(), Some(calibrated)),
        None => ((dx * dx + dy * dy).sqrt(), None),
    }
}

/// Angle at `vertex` between the arms to `a` and `b`, in degrees (in physical space).
pub fn angle_deg(slice: &SliceImage, a: [f64; 2], vertex: [f64; 2], b: [f64; 2]) -> f64 {
    let (sx, sy) = spacing(slice).map_or((1.0, 1.0), |(x, y, _)| (x, y));
    let u = [(a[0] - vertex[0]) * sx, (a[1] - vertex[1]) * sy];
    let v = [(b[0] - vertex[0]) * sx, (b[1] - vertex[1]) * sy];
    let cos = (u[0] * v[0] + u[1] * v[1]) / ((u[0].hypot(u[1]) * v[0].hypot(v[1])).max(1e-12));
    cos.clamp(-1.0, 1.0).acos().to_degrees()
}

/// Statistics of modality values inside an ellipse or rectangle spanned by corners `a` and `b`.
pub fn roi_stats(slice: &SliceImage, ellipse: bool, a: [f64; 2], b: [f64; 2]) -> Option<RoiStats> {
    let (x0, x1) = (a[0].min(b[0]), a[0].max(b[0]));
    let (y0, y1) = (a[1].min(b[1]), a[1].max(b[1]));
    let (cx, cy, rx, ry) = ((x0 + x1) / 2.0, (y0 + y1) / 2.0, (x1 - x0) / 2.0, (y1 - y0) / 2.0);
    let mut values = Vec::new();
    let ys = (y0.floor().max(0.0) as usize)..(y1.ceil().min(f64::from(slice.height)) as usize);
    for y in ys {
        let xs = (x0.floor().max(0.0) as usize)..(x1.ceil().min(f64::from(slice.width)) as usize);
        for x in xs {
            let (px, py) = (x as f64 + 0.5, y as f64 + 0.5);
            let inside = if ellipse {
                rx > 0.0 && ry > 0.0 && ((px - cx) / rx).powi(2) + ((py - cy) / ry).powi(2) <= 1.0
            } else {
                px >= x0 && px <= x1 && py >= y0 && py <= y1
            };
            if inside && let Some(v) = slice.modality_value(x, y) {
                values.push(v);
            }
        }
    }
    if values.is_empty() {
        return None;
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let sd = (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
    let (min, max) = values.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    let area_mm2 = spacing(slice).map(|(sx, sy, _)| n * sx * sy);
    Some(RoiStats { pixels: values.len(), mean, sd, min, max, area_mm2 })
}

/// The text shown beside a measurement.
pub fn label(slice: &SliceImage, m: &MeasurementRecord) -> String {
    let p = &m.points;
    let unit = if slice.transform.unit.is_empty() { String::new() } else { format!(" {}", slice.transform.unit) };
    match (m.kind.as_str(), p.len()) {
        ("length", 2) => match length(slice, p[0], p[1]) {
            (mm, Some(true)) => format!("{mm:.1} mm"),
            (mm, Some(false)) => format!("{mm:.1} mm (uncalibrated)"),
            (px, None) => format!("{px:.1} px"),
        },
        ("angle", 3) => format!("{:.1}°", angle_deg(slice, p[0], p[1], p[2])),
        ("ellipse" | "rectangle", 2) => match roi_stats(slice, m.kind == "ellipse", p[0], p[1]) {
            Some(s) => {
                let area = s.area_mm2.map_or_else(|| format!("{} px", s.pixels), |a| format!("{a:.1} mm²"));
                format!("mean {:.1}{unit} ± {:.1}\nmin {:.0} max {:.0}\narea {area}", s.mean, s.sd, s.min, s.max)
            }
            None => "empty".into(),
        },
        _ => String::new(),
    }
}

/// Distance (image pixels) from `p` to a measurement's outline, for picking.
pub fn distance_to(m: &MeasurementRecord, p: [f64; 2]) -> f64 {
    let segment = |a: [f64; 2], b: [f64; 2]| {
        let (dx, dy) = (b[0] - a[0], b[1] - a[1]);
        let t = (((p[0] - a[0]) * dx + (p[1] - a[1]) * dy) / (dx * dx + dy * dy).max(1e-12)).clamp(0.0, 1.0);
        (p[0] - a[0] - t * dx).hypot(p[1] - a[1] - t * dy)
    };
    match (m.kind.as_str(), m.points.as_slice()) {
        ("length", [a, b]) => segment(*a, *b),
        ("angle", [a, v, b]) => segment(*a, *v).min(segment(*v, *b)),
        ("rectangle", [a, b]) => {
            let c = [[a[0], b[1]], [b[0], a[1]]];
            segment(*a, c[0]).min(segment(c[0], *b)).min(segment(*b, c[1])).min(segment(c[1], *a))
        }
        ("ellipse", [a, b]) => {
            let (cx, cy) = ((a[0] + b[0]) / 2.0, (a[1] + b[1]) / 2.0);
            let (rx, ry) = (((b[0] - a[0]) / 2.0).abs().max(1e-6), ((b[1] - a[1]) / 2.0).abs().max(1e-6));
            let r = (((p[0] - cx) / rx).powi(2) + ((p[1] - cy) / ry).powi(2)).sqrt();
            (r - 1.0).abs() * rx.min(ry)
        }
        _ => f64::INFINITY,
    }
}

/// An undoable change to a study's measurements.
#[derive(Debug, Clone)]
pub enum Edit {
    Added(MeasurementRecord),
    Removed(usize, MeasurementRecord),
    Moved(usize, MeasurementRecord),
}

/// The measurements of the open study, with an undo stack.
#[derive(Debug, Default)]
pub struct Measurements {
    pub study_uid: String,
    pub items: Vec<MeasurementRecord>,
    pub selected: Option<usize>,
    undo: Vec<Edit>,
    /// Set when the list changed and must be saved.
    pub dirty: bool,
}

impl Measurements {
    pub fn load(study_uid: String, items: Vec<MeasurementRecord>) -> Self {
        Self { study_uid, items, ..Default::default() }
    }

    pub fn add(&mut self, m: MeasurementRecord) {
        self.undo.push(Edit::Added(m.clone()));
        self.items.push(m);
        self.selected = Some(self.items.len() - 1);
        self.dirty = true;
    }

    pub fn delete_selected(&mut self) {
        if let Some(i) = self.selected.take()
            && i < self.items.len()
        {
            let m = self.items.remove(i);
            self.undo.push(Edit::Removed(i, m));
            self.dirty = true;
        }
    }

    /// Moves item `i` by (dx, dy) image pixels; `record_undo` once per drag.
    pub fn translate(&mut self, i: usize, delta: [f64; 2], record_undo: bool) {
        let Some(m) = self.items.get_mut(i) else { return };
        if record_undo {
            self.undo.push(Edit::Moved(i, m.clone()));
        }
        for p in &mut m.points {
            p[0] += delta[0];
            p[1] += delta[1];
        }
        self.dirty = true;
    }

    pub fn undo(&mut self) {
        let Some(edit) = self.undo.pop() else { return };
        match edit {
            Edit::Added(_) => {
                self.items.pop();
            }
            Edit::Removed(i, m) => self.items.insert(i.min(self.items.len()), m),
            Edit::Moved(i, before) => {
                if let Some(m) = self.items.get_mut(i) {
                    *m = before;
                }
            }
        }
        self.selected = None;
        self.dirty = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pacs::pixels::{ModalityLut, PixelTransform};
    use pacs::{InstanceInfo, Photometric};

    fn slice(calibrated: bool) -> SliceImage {
        let mut info = InstanceInfo::default();
        if calibrated {
            info.pixel_spacing_mm = Some([0.5, 0.25]);
        } else {
            info.imager_pixel_spacing_mm = Some([0.5, 0.25]);
        }
        // Values: x + 100 * y (as HU through slope 1, intercept -1000).
        let samples: Vec<u16> = (0..20u16).flat_map(|y| (0..10u16).map(move |x| 1000 + x + 100 * y)).collect();
        SliceImage {
            width: 10,
            height: 20,
            samples: super::super::loader::SliceSamples::U16(samples),
            transform: PixelTransform::simple(
                ModalityLut::Rescale { slope: 1.0, intercept: -1000.0 },
                "HU",
                Photometric::Monochrome2,
            ),
            info,
            frame_index: 0,
            overlays: Vec::new(),
        }
    }

    #[test]
    fn length_uses_column_and_row_spacing() {
        // 4 columns (0.25 mm) and 3 rows (0.5 mm): sqrt(1 + 2.25).
        let (mm, calibrated) = length(&slice(true), [0.0, 0.0], [4.0, 3.0]);
        assert!((mm - 3.25f64.sqrt()).abs() < 1e-12);
        assert_eq!(calibrated, Some(true));
        assert_eq!(length(&slice(false), [0.0, 0.0], [4.0, 0.0]).1, Some(false));
    }

    #[test]
    fn right_angle_in_physical_space() {
        assert!((angle_deg(&slice(true), [4.0, 0.0], [0.0, 0.0], [0.0, 2.0]) - 90.0).abs() < 1e-9);
    }

    #[test]
    fn rectangle_statistics_in_hu() {
        // Pixels x 2..4, y 1..3 (centres inside [2, 5] x [1, 3]).
        let s = roi_stats(&slice(true), false, [2.0, 1.0], [5.0, 3.0]).unwrap();
        assert_eq!(s.pixels, 6);
        assert_eq!((s.min, s.max), (102.0, 204.0));
        assert!((s.mean - 153.0).abs() < 1e-9);
        assert!((s.area_mm2.unwrap() - 6.0 * 0.125).abs() < 1e-12);
    }

    #[test]
    fn undo_reverts_add_move_and_delete() {
        let mut ms = Measurements::default();
        let m = MeasurementRecord {
            series_uid: "s".into(),
            sop_uid: "i".into(),
            frame: 0,
            kind: "length".into(),
            points: vec![[0.0, 0.0], [1.0, 1.0]],
        };
        ms.add(m.clone());
        ms.translate(0, [2.0, 0.0], true);
        assert_eq!(ms.items[0].points[0], [2.0, 0.0]);
        ms.selected = Some(0);
        ms.delete_selected();
        assert!(ms.items.is_empty());
        ms.undo();
        assert_eq!(ms.items[0].points[0], [2.0, 0.0]);
        ms.undo();
        assert_eq!(ms.items[0], m);
        ms.undo();
        assert!(ms.items.is_empty());
    }
}
