//! Series to volume: geometric sorting, spacing, the `patient_from_voxel` affine, and an honest
//! list of what is odd about the series.
//!
//! Slices are ordered by ImagePositionPatient projected on the slice normal (the cross product
//! of the ImageOrientationPatient direction cosines), never by file name or instance number
//! (instance number is only the fallback when geometry is missing, with a warning).
//! Series holding several stacks (orientations, sizes, repeated acquisitions) are split.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use serde::Serialize;

use crate::attrs::{InstanceInfo, SpacingSource};
use crate::decode::{self, Samples};
use crate::error::{Error, Result};
use crate::file;

/// One 2D image of a series: a file, and a frame inside it.
#[derive(Debug, Clone, Serialize)]
pub struct SliceRef {
    pub path: PathBuf,
    pub frame: u32,
    pub sop_instance_uid: String,
    pub instance_number: Option<i64>,
    pub acquisition_number: Option<i64>,
    pub position: Option<[f64; 3]>,
    #[serde(skip)]
    info: InstanceInfo,
}

impl SliceRef {
    /// All slices of one file (one per frame for enhanced multi-frame objects).
    pub fn from_info(path: PathBuf, info: InstanceInfo) -> Vec<Self> {
        if info.number_of_frames > 1 && info.frame_positions.len() == info.number_of_frames as usize {
            info.frame_positions
                .iter()
                .enumerate()
                .map(|(frame, &position)| Self {
                    path: path.clone(),
                    frame: frame as u32,
                    sop_instance_uid: info.sop_instance_uid.clone(),
                    instance_number: info.instance_number,
                    acquisition_number: info.acquisition_number,
                    position: Some(position),
                    info: info.clone(),
                })
                .collect()
        } else {
            (0..info.number_of_frames.max(1))
                .map(|frame| Self {
                    path: path.clone(),
                    frame,
                    sop_instance_uid: info.sop_instance_uid.clone(),
                    instance_number: info.instance_number.map(|n| n * 10_000 + i64::from(frame)),
                    acquisition_number: info.acquisition_number,
                    position: if info.number_of_frames > 1 { None } else { info.image_position_patient },
                    info: info.clone(),
                })
                .collect()
        }
    }

    pub fn info(&self) -> &InstanceInfo {
        &self.info
    }
}

/// Something odd about a series, reported rather than guessed away.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum VolumeWarning {
    /// No ImagePositionPatient/ImageOrientationPatient: ordered by instance number.
    NoGeometry,
    /// A gap of `gap_mm` after slice `after_slice` where about `missing` slices should be.
    MissingSlices { after_slice: usize, missing: usize, gap_mm: f64 },
    /// Several images at one position; only the first (by instance number) was kept.
    DuplicateSlices { position_mm: f64, count: usize },
    /// Spacing between slices varies.
    IrregularSpacing { min_mm: f64, max_mm: f64 },
    /// The slice stack is sheared (gantry tilt).
    GantryTilt { degrees: f64 },
    /// The series held several stacks; this volume is one of them.
    SplitStack { stack: usize, stacks: usize, reason: String },
    /// No pixel spacing at all: 1 mm assumed.
    MissingPixelSpacing,
    /// Only ImagerPixelSpacing: distances are at the detector, not the patient.
    UncalibratedSpacing,
    /// Slices have different rescale slope/intercept: stored as float modality values.
    MixedRescale,
    /// A single slice: no slice spacing is known (SliceThickness or 1 mm used).
    SingleSlice,
}

impl std::fmt::Display for VolumeWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NoGeometry => write!(f, "no image position/orientation: ordered by instance number"),
            Self::MissingSlices { after_slice, missing, gap_mm } => {
                write!(f, "about {missing} missing slice(s) after slice {after_slice} (gap {gap_mm:.2} mm)")
            }
            Self::DuplicateSlices { position_mm, count } => {
                write!(f, "{count} images at the same position {position_mm:.2} mm; kept the first")
            }
            Self::IrregularSpacing { min_mm, max_mm } => {
                write!(f, "irregular slice spacing: {min_mm:.3} to {max_mm:.3} mm")
            }
            Self::GantryTilt { degrees } => write!(f, "gantry tilt / sheared stack of {degrees:.2} degrees"),
            Self::SplitStack { stack, stacks, reason } => {
                write!(f, "series split into {stacks} stacks ({reason}); this is stack {}", stack + 1)
            }
            Self::MissingPixelSpacing => write!(f, "no pixel spacing: 1 mm assumed"),
            Self::UncalibratedSpacing => {
                write!(f, "ImagerPixelSpacing only: measurements are at the detector, not calibrated")
            }
            Self::MixedRescale => write!(f, "slices have different rescale slope/intercept"),
            Self::SingleSlice => write!(f, "single slice: slice spacing unknown"),
        }
    }
}

/// Voxels in their stored type (or float modality values when slices disagree on rescale).
#[derive(Debug, Clone, PartialEq)]
pub enum VoxelData {
    U8(Vec<u8>),
    I16(Vec<i16>),
    U16(Vec<u16>),
    F32(Vec<f32>),
}

impl VoxelData {
    pub fn len(&self) -> usize {
        match self {
            Self::U8(v) => v.len(),
            Self::I16(v) => v.len(),
            Self::U16(v) => v.len(),
            Self::F32(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn size_bytes(&self) -> usize {
        match self {
            Self::U8(v) => v.len(),
            Self::I16(v) => v.len() * 2,
            Self::U16(v) => v.len() * 2,
            Self::F32(v) => v.len() * 4,
        }
    }

    #[inline]
    pub fn get_f64(&self, i: usize) -> f64 {
        match self {
            Self::U8(v) => f64::from(v[i]),
            Self::I16(v) => f64::from(v[i]),
            Self::U16(v) => f64::from(v[i]),
            Self::F32(v) => f64::from(v[i]),
        }
    }

    pub fn type_name(&self) -> &'static str {
        match self {
            Self::U8(_) => "u8",
            Self::I16(_) => "i16",
            Self::U16(_) => "u16",
            Self::F32(_) => "f32",
        }
    }
}

/// A planned stack: sorted slices and their geometry, before any pixel is decoded.
#[derive(Debug, Clone, Serialize)]
pub struct StackPlan {
    pub slices: Vec<SliceRef>,
    pub columns: usize,
    pub rows: usize,
    /// Between columns (x), between rows (y), between slices (z), mm.
    pub spacing_mm: [f64; 3],
    pub spacing_source: Option<SpacingSource>,
    /// Maps (column, row, slice, 1) to patient mm (LPS).
    pub patient_from_voxel: [[f64; 4]; 4],
    /// Slice positions along the normal, mm.
    pub slice_positions_mm: Vec<f64>,
    pub warnings: Vec<VolumeWarning>,
}

/// A loaded volume: one contiguous buffer, slice-major (index = (k * rows + j) * columns + i).
#[derive(Debug, Clone)]
pub struct Volume {
    pub plan: StackPlan,
    pub voxels: VoxelData,
    /// Modality transform shared by all slices (identity when voxels are float modality values).
    pub rescale_slope: f64,
    pub rescale_intercept: f64,
}

impl Volume {
    pub fn dims(&self) -> [usize; 3] {
        [self.plan.columns, self.plan.rows, self.plan.slices.len()]
    }

    pub fn slice_len(&self) -> usize {
        self.plan.columns * self.plan.rows
    }

    /// Modality value (HU for CT) of voxel (i, j, k).
    #[inline]
    pub fn value_at(&self, i: usize, j: usize, k: usize) -> f64 {
        let index = (k * self.plan.rows + j) * self.plan.columns + i;
        self.voxels.get_f64(index) * self.rescale_slope + self.rescale_intercept
    }

    /// Minimum and maximum modality value.
    pub fn value_range(&self) -> Option<(f64, f64)> {
        if self.voxels.is_empty() {
            return None;
        }
        let (lo, hi) = match &self.voxels {
            VoxelData::U8(v) => min_max(v.iter().map(|&x| f64::from(x))),
            VoxelData::I16(v) => {
                let lo = v.iter().copied().min().unwrap_or(0);
                let hi = v.iter().copied().max().unwrap_or(0);
                (f64::from(lo), f64::from(hi))
            }
            VoxelData::U16(v) => {
                let lo = v.iter().copied().min().unwrap_or(0);
                let hi = v.iter().copied().max().unwrap_or(0);
                (f64::from(lo), f64::from(hi))
            }
            VoxelData::F32(v) => min_max(v.iter().map(|&x| f64::from(x))),
        };
        let a = lo * self.rescale_slope + self.rescale_intercept;
        let b = hi * self.rescale_slope + self.rescale_intercept;
        Some((a.min(b), a.max(b)))
    }

    /// Modality values of the whole volume as f32 (for inference).
    pub fn to_modality_f32(&self) -> Vec<f32> {
        let (s, b) = (self.rescale_slope, self.rescale_intercept);
        (0..self.voxels.len()).map(|i| (self.voxels.get_f64(i) * s + b) as f32).collect()
    }
}

fn min_max(values: impl Iterator<Item = f64>) -> (f64, f64) {
    values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)))
}

type Vec3 = [f64; 3];

fn cross(a: Vec3, b: Vec3) -> Vec3 {
    [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]]
}

fn dot(a: Vec3, b: Vec3) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

fn norm(a: Vec3) -> f64 {
    dot(a, a).sqrt()
}

fn normalize(a: Vec3) -> Vec3 {
    let n = norm(a);
    if n > 0.0 { [a[0] / n, a[1] / n, a[2] / n] } else { a }
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        0.0
    } else if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    }
}

/// Splits and sorts the slices of one series into stacks, with geometry and warnings.
pub fn plan_stacks(slices: Vec<SliceRef>) -> Result<Vec<StackPlan>> {
    if slices.is_empty() {
        return Err(Error::Volume { reason: "the series has no images".into() });
    }
    // Group by size and orientation (rounded), which must be uniform inside a stack.
    let mut groups: BTreeMap<(u32, u32, [i64; 6]), Vec<SliceRef>> = BTreeMap::new();
    for slice in slices {
        let orientation =
            slice.info.image_orientation_patient.map_or([0; 6], |o| o.map(|c| (c * 1000.0).round() as i64));
        groups.entry((slice.info.columns, slice.info.rows, orientation)).or_default().push(slice);
    }
    let mut reasons = Vec::new();
    if groups.keys().map(|k| (k.0, k.1)).collect::<std::collections::BTreeSet<_>>().len() > 1 {
        reasons.push("different image sizes");
    }
    if groups.keys().map(|k| k.2).collect::<std::collections::BTreeSet<_>>().len() > 1 {
        reasons.push("different orientations");
    }

    // Inside each group, repeated acquisitions at the same positions form separate stacks.
    let mut stacks: Vec<Vec<SliceRef>> = Vec::new();
    for (_, group) in groups {
        let acquisitions: BTreeMap<Option<i64>, Vec<SliceRef>> = group.iter().fold(BTreeMap::new(), |mut m, s| {
            m.entry(s.acquisition_number).or_insert_with(Vec::new).push(s.clone());
            m
        });
        let has_duplicates = has_duplicate_positions(&group);
        if acquisitions.len() > 1 && has_duplicates && acquisitions.values().all(|a| !has_duplicate_positions(a)) {
            reasons.push("repeated acquisitions");
            stacks.extend(acquisitions.into_values());
        } else {
            stacks.push(group);
        }
    }
    let count = stacks.len();
    let reason = reasons.join(", ");
    let mut plans = Vec::with_capacity(count);
    for (index, stack) in stacks.into_iter().enumerate() {
        let mut plan = plan_one(stack)?;
        if count > 1 {
            plan.warnings.insert(0, VolumeWarning::SplitStack { stack: index, stacks: count, reason: reason.clone() });
        }
        plans.push(plan);
    }
    // Largest stack first: that is the one a viewer opens.
    plans.sort_by_key(|p| std::cmp::Reverse(p.slices.len()));
    Ok(plans)
}

fn has_duplicate_positions(slices: &[SliceRef]) -> bool {
    let mut seen = std::collections::BTreeSet::new();
    slices.iter().filter_map(|s| s.position).any(|p| !seen.insert(p.map(|c| (c * 100.0).round() as i64)))
}

fn plan_one(mut slices: Vec<SliceRef>) -> Result<StackPlan> {
    let first = slices[0].info.clone();
    let columns = first.columns as usize;
    let rows = first.rows as usize;
    if columns == 0 || rows == 0 {
        return Err(Error::Volume { reason: "images have no Rows/Columns".into() });
    }
    let mut warnings = Vec::new();
    let (spacing_xy, spacing_source) = match first.spacing() {
        Some(s) => {
            if !s.source.is_calibrated() {
                warnings.push(VolumeWarning::UncalibratedSpacing);
            }
            ([s.column_mm, s.row_mm], Some(s.source))
        }
        None => {
            warnings.push(VolumeWarning::MissingPixelSpacing);
            ([1.0, 1.0], None)
        }
    };

    let orientation = first.image_orientation_patient;
    let geometry = orientation.filter(|_| slices.iter().all(|s| s.position.is_some()));
    let (row_dir, col_dir) = match orientation {
        Some(o) => (normalize([o[0], o[1], o[2]]), normalize([o[3], o[4], o[5]])),
        None => ([1.0, 0.0, 0.0], [0.0, 1.0, 0.0]),
    };
    let normal = normalize(cross(row_dir, col_dir));

    let positions: Vec<f64>;
    if geometry.is_some() {
        slices.sort_by(|a, b| {
            let pa = dot(a.position.unwrap_or_default(), normal);
            let pb = dot(b.position.unwrap_or_default(), normal);
            pa.total_cmp(&pb).then(a.instance_number.cmp(&b.instance_number))
        });
        // Duplicates: keep the first by instance number at each position.
        let mut kept: Vec<SliceRef> = Vec::with_capacity(slices.len());
        let mut dup_count: BTreeMap<i64, (f64, usize)> = BTreeMap::new();
        for s in slices {
            let p = dot(s.position.unwrap_or_default(), normal);
            if let Some(last) = kept.last() {
                let lp = dot(last.position.unwrap_or_default(), normal);
                if (p - lp).abs() < 1e-3 {
                    dup_count.entry((p * 1000.0).round() as i64).or_insert((p, 1)).1 += 1;
                    continue;
                }
            }
            kept.push(s);
        }
        for (_, (position_mm, count)) in dup_count {
            warnings.push(VolumeWarning::DuplicateSlices { position_mm, count });
        }
        slices = kept;
        positions = slices.iter().map(|s| dot(s.position.unwrap_or_default(), normal)).collect();
    } else {
        warnings.push(VolumeWarning::NoGeometry);
        slices.sort_by_key(|s| s.instance_number);
        let step = first.slice_thickness_mm.filter(|t| *t > 0.0).unwrap_or(1.0);
        positions = (0..slices.len()).map(|k| k as f64 * step).collect();
    }

    let diffs: Vec<f64> = positions.windows(2).map(|w| w[1] - w[0]).collect();
    let slice_spacing = if diffs.is_empty() {
        warnings.push(VolumeWarning::SingleSlice);
        first.slice_thickness_mm.filter(|t| *t > 0.0).unwrap_or(1.0)
    } else {
        median(&diffs)
    };
    if !diffs.is_empty() && slice_spacing > 0.0 {
        for (k, d) in diffs.iter().enumerate() {
            if *d > 1.5 * slice_spacing {
                warnings.push(VolumeWarning::MissingSlices {
                    after_slice: k,
                    missing: ((d / slice_spacing).round() as usize).saturating_sub(1).max(1),
                    gap_mm: *d,
                });
            }
        }
        let regular: Vec<f64> = diffs.iter().copied().filter(|d| *d <= 1.5 * slice_spacing).collect();
        let (lo, hi) = min_max(regular.iter().copied());
        if hi - lo > 0.1 * slice_spacing {
            warnings.push(VolumeWarning::IrregularSpacing { min_mm: lo, max_mm: hi });
        }
    }

    // The slice step: the real displacement between consecutive slices (sheared when tilted).
    let origin = slices[0].position.unwrap_or_default();
    let step: Vec3 = if geometry.is_some() && slices.len() > 1 {
        let last = slices[slices.len() - 1].position.unwrap_or_default();
        let total = positions[positions.len() - 1] - positions[0];
        let along = [last[0] - origin[0], last[1] - origin[1], last[2] - origin[2]];
        if total.abs() > 0.0 {
            let per_mm = [along[0] / total, along[1] / total, along[2] / total];
            let tilt = dot(normalize(along), normal).clamp(-1.0, 1.0).acos().to_degrees();
            let tilt_from_header = first.gantry_tilt_deg.unwrap_or(0.0);
            if tilt > 0.5 || tilt_from_header.abs() > 0.5 {
                warnings.push(VolumeWarning::GantryTilt {
                    degrees: if tilt > 0.5 { tilt } else { tilt_from_header.abs() },
                });
            }
            [per_mm[0] * slice_spacing, per_mm[1] * slice_spacing, per_mm[2] * slice_spacing]
        } else {
            [normal[0] * slice_spacing, normal[1] * slice_spacing, normal[2] * slice_spacing]
        }
    } else {
        [normal[0] * slice_spacing, normal[1] * slice_spacing, normal[2] * slice_spacing]
    };

    for slice in &slices {
        slice.info.checked_rescale()?;
        slice.info.check_geometry()?;
    }
    let rescale = first.rescale();
    if slices.iter().any(|s| s.info.rescale() != rescale) {
        warnings.push(VolumeWarning::MixedRescale);
    }

    let x = [row_dir[0] * spacing_xy[0], row_dir[1] * spacing_xy[0], row_dir[2] * spacing_xy[0]];
    let y = [col_dir[0] * spacing_xy[1], col_dir[1] * spacing_xy[1], col_dir[2] * spacing_xy[1]];
    let patient_from_voxel = [
        [x[0], y[0], step[0], origin[0]],
        [x[1], y[1], step[1], origin[1]],
        [x[2], y[2], step[2], origin[2]],
        [0.0, 0.0, 0.0, 1.0],
    ];
    Ok(StackPlan {
        slices,
        columns,
        rows,
        spacing_mm: [spacing_xy[0], spacing_xy[1], slice_spacing],
        spacing_source,
        patient_from_voxel,
        slice_positions_mm: positions,
        warnings,
    })
}

/// Reads the headers of `paths` in parallel (`threads` workers) and plans the stacks.
pub fn scan_series(paths: &[PathBuf], threads: usize) -> Result<Vec<StackPlan>> {
    let mut slices = Vec::new();
    for (path, info) in paths.iter().zip(file::read_infos(paths, threads)) {
        let info = info?;
        if info.has_pixel_data {
            slices.extend(SliceRef::from_info(path.clone(), info));
        }
    }
    plan_stacks(slices)
}

/// Progress and cancellation for long loads.
pub struct LoadControl<'a> {
    pub cancel: &'a AtomicBool,
    pub on_slice: &'a (dyn Fn(usize, usize) + Sync),
}

/// Decodes every slice of a plan into one contiguous buffer, `threads` at a time.
pub fn load_stack(plan: StackPlan, threads: usize, control: Option<&LoadControl<'_>>) -> Result<Volume> {
    let slice_len = plan.columns * plan.rows;
    let n = plan.slices.len();
    let mixed = plan.warnings.contains(&VolumeWarning::MixedRescale);
    let first = &plan.slices[0].info;
    let mut voxels = if mixed || first.bits_allocated > 16 {
        VoxelData::F32(vec![0.0; slice_len * n])
    } else if first.bits_allocated <= 8 && first.pixel_representation == 0 {
        VoxelData::U8(vec![0; slice_len * n])
    } else if first.pixel_representation == 1 {
        VoxelData::I16(vec![0; slice_len * n])
    } else {
        VoxelData::U16(vec![0; slice_len * n])
    };
    let done = AtomicUsize::new(0);
    {
        let chunks: Vec<SliceTarget<'_>> = match &mut voxels {
            VoxelData::U8(v) => v.chunks_mut(slice_len).map(SliceTarget::U8).collect(),
            VoxelData::I16(v) => v.chunks_mut(slice_len).map(SliceTarget::I16).collect(),
            VoxelData::U16(v) => v.chunks_mut(slice_len).map(SliceTarget::U16).collect(),
            VoxelData::F32(v) => v.chunks_mut(slice_len).map(SliceTarget::F32).collect(),
        };
        let work = Mutex::new(chunks.into_iter().zip(plan.slices.iter()));
        let first_error: Mutex<Option<Error>> = Mutex::new(None);
        std::thread::scope(|scope| {
            for t in 0..threads.max(1) {
                let (work, first_error, done) = (&work, &first_error, &done);
                let _ = std::thread::Builder::new().name(format!("lucent-decode-{t}")).spawn_scoped(scope, move || {
                    loop {
                        if control.is_some_and(|c| c.cancel.load(Ordering::Relaxed)) {
                            set_error(first_error, Error::Cancelled);
                            break;
                        }
                        let item = match work.lock() {
                            Ok(mut it) => it.next(),
                            Err(_) => None,
                        };
                        let Some((target, slice)) = item else { break };
                        if let Err(e) = fill_slice(target, slice, mixed) {
                            set_error(first_error, e);
                            break;
                        }
                        let count = done.fetch_add(1, Ordering::Relaxed) + 1;
                        if let Some(c) = control {
                            (c.on_slice)(count, n);
                        }
                    }
                });
            }
        });
        if let Some(e) = first_error.into_inner().ok().flatten() {
            return Err(e);
        }
    }
    if done.load(Ordering::Relaxed) != n {
        return Err(Error::Volume { reason: format!("only {} of {n} slices decoded", done.load(Ordering::Relaxed)) });
    }
    let (rescale_slope, rescale_intercept) = if mixed { (1.0, 0.0) } else { first.rescale() };
    Ok(Volume { plan, voxels, rescale_slope, rescale_intercept })
}

fn set_error(slot: &Mutex<Option<Error>>, e: Error) {
    if let Ok(mut s) = slot.lock() {
        s.get_or_insert(e);
    }
}

enum SliceTarget<'a> {
    U8(&'a mut [u8]),
    I16(&'a mut [i16]),
    U16(&'a mut [u16]),
    F32(&'a mut [f32]),
}

fn fill_slice(target: SliceTarget<'_>, slice: &SliceRef, as_modality: bool) -> Result<()> {
    let obj = file::open(&slice.path)?;
    let frame = decode::decode_frame(&obj, slice.frame)?;
    drop(obj);
    if frame.samples_per_pixel != 1 {
        return Err(Error::Volume { reason: "colour images cannot form a volume".into() });
    }
    let expected = match &target {
        SliceTarget::U8(t) => t.len(),
        SliceTarget::I16(t) => t.len(),
        SliceTarget::U16(t) => t.len(),
        SliceTarget::F32(t) => t.len(),
    };
    if frame.samples.len() != expected {
        return Err(Error::Volume { reason: format!("slice has {} pixels, expected {expected}", frame.samples.len()) });
    }
    let (slope, intercept) = slice.info.rescale();
    match (target, frame.samples) {
        (SliceTarget::I16(t), Samples::I16(s)) => t.copy_from_slice(&s),
        (SliceTarget::U16(t), Samples::U16(s)) => t.copy_from_slice(&s),
        (SliceTarget::U8(t), Samples::U8(s)) => t.copy_from_slice(&s),
        (SliceTarget::F32(t), s) => {
            for (i, v) in t.iter_mut().enumerate() {
                let stored = s.get_f64(i);
                *v = if as_modality { (stored * slope + intercept) as f32 } else { stored as f32 };
            }
        }
        (SliceTarget::I16(t), s) => {
            for (i, v) in t.iter_mut().enumerate() {
                *v = s.get_f64(i).clamp(f64::from(i16::MIN), f64::from(i16::MAX)) as i16;
            }
        }
        (SliceTarget::U16(t), s) => {
            for (i, v) in t.iter_mut().enumerate() {
                *v = s.get_f64(i).clamp(0.0, f64::from(u16::MAX)) as u16;
            }
        }
        (SliceTarget::U8(t), s) => {
            for (i, v) in t.iter_mut().enumerate() {
                *v = s.get_f64(i).clamp(0.0, 255.0) as u8;
            }
        }
    }
    Ok(())
}

/// Scans and loads every stack of a series (largest first).
pub fn load_series(paths: &[PathBuf], threads: usize) -> Result<Vec<Volume>> {
    scan_series(paths, threads)?.into_iter().map(|plan| load_stack(plan, threads, None)).collect()
}

/// Worker count for decoding: all cores.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}
