//! Multiplanar reformatting of a loaded CT series: axial, coronal and sagittal planes, with a
//! thick-slab mode (MIP, MinIP, mean) whose thickness is given in mm — the way nodules are
//! hunted on low-dose CT. Reformats run on the `lucent-mpr` thread; the UI keeps showing the
//! last image until the new one arrives. Output pixels are modality values (HU) as f32, so
//! window/level stays on the GPU.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_channel::{Receiver, Sender};
use pacs::pixels::{ModalityLut, PixelTransform};

use super::loader::{SeriesData, SliceImage, SliceSamples};

/// A plane through the volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Plane {
    Axial,
    Coronal,
    Sagittal,
}

impl Plane {
    pub fn label(self) -> &'static str {
        match self {
            Self::Axial => "Axial",
            Self::Coronal => "Coronal",
            Self::Sagittal => "Sagittal",
        }
    }

    /// The volume axis (0 = i/columns, 1 = j/rows, 2 = k/slices) normal to the plane.
    pub fn normal_axis(self) -> usize {
        match self {
            Self::Axial => 2,
            Self::Coronal => 1,
            Self::Sagittal => 0,
        }
    }
}

/// How a slab is collapsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SlabMode {
    Mip,
    MinIp,
    Mean,
}

impl SlabMode {
    pub fn label(self) -> &'static str {
        match self {
            Self::Mip => "MIP",
            Self::MinIp => "MinIP",
            Self::Mean => "Mean",
        }
    }
}

/// One reformatted view.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MprSpec {
    pub plane: Plane,
    /// Voxel index along the plane's normal axis.
    pub index: usize,
    /// Slab thickness in mm (0 = one voxel).
    pub slab_mm: f32,
    pub mode: SlabMode,
}

/// Volume geometry of a series, in voxel axes (i, j, k).
#[derive(Debug, Clone, Copy)]
pub struct Geometry {
    pub dims: [usize; 3],
    pub spacing_mm: [f64; 3],
}

impl Geometry {
    pub fn of(series: &SeriesData) -> Self {
        let p = &series.plan;
        Self { dims: [p.columns, p.rows, p.slices.len()], spacing_mm: p.spacing_mm }
    }

    /// Number of positions along the plane's normal.
    pub fn depth(&self, plane: Plane) -> usize {
        self.dims[plane.normal_axis()]
    }

    /// Voxels in a slab of `mm` along `plane`'s normal (at least 1).
    pub fn slab_voxels(&self, plane: Plane, mm: f32) -> usize {
        let spacing = self.spacing_mm[plane.normal_axis()].max(1e-6);
        (f64::from(mm) / spacing).round().max(1.0) as usize
    }
}

static NEXT_IMAGE_ID: AtomicU64 = AtomicU64::new(1 << 48);

/// A reformatted image and the spec it was made for.
pub struct MprImage {
    pub spec: MprSpec,
    pub series_id: u64,
    /// Unique id (keys the GPU texture).
    pub id: u64,
    pub image: Arc<SliceImage>,
}

fn value(slice: &SliceImage, index: usize) -> f32 {
    let stored = slice.samples.value(index).unwrap_or(0.0);
    slice.transform.modality.apply(stored) as f32
}

/// Reformats `spec` from a fully decoded grey series; `None` while slices are missing or colour.
pub fn reformat(series: &SeriesData, spec: MprSpec) -> Option<SliceImage> {
    let g = Geometry::of(series);
    let [ni, nj, nk] = g.dims;
    let slices: Vec<Arc<SliceImage>> = (0..nk).map(|k| series.slice(k)).collect::<Option<_>>()?;
    if slices.iter().any(|s| s.is_colour() || s.width as usize != ni || s.height as usize != nj) {
        return None;
    }
    let depth = g.depth(spec.plane);
    // n voxels centred on the index: (n-1)/2 before it, n/2 after it.
    let n = g.slab_voxels(spec.plane, spec.slab_mm);
    let centre = spec.index.min(depth.saturating_sub(1));
    let layers: Vec<usize> = (centre.saturating_sub((n - 1) / 2)..=(centre + n / 2).min(depth - 1)).collect();
    // Output (width, height) and the voxel of output pixel (x, y) at layer d.
    // Coronal and sagittal put the head at the top: output row 0 is the last slice.
    let (width, height) = match spec.plane {
        Plane::Axial => (ni, nj),
        Plane::Coronal => (ni, nk),
        Plane::Sagittal => (nj, nk),
    };
    let voxel = |x: usize, y: usize, d: usize| -> (usize, usize, usize) {
        match spec.plane {
            Plane::Axial => (x, y, d),
            Plane::Coronal => (x, d, nk - 1 - y),
            Plane::Sagittal => (d, x, nk - 1 - y),
        }
    };
    let mut out = Vec::with_capacity(width * height);
    for y in 0..height {
        for x in 0..width {
            let mut acc = match spec.mode {
                SlabMode::Mip => f32::NEG_INFINITY,
                SlabMode::MinIp => f32::INFINITY,
                SlabMode::Mean => 0.0,
            };
            for &d in &layers {
                let (i, j, k) = voxel(x, y, d);
                let v = value(&slices[k], j * ni + i);
                acc = match spec.mode {
                    SlabMode::Mip => acc.max(v),
                    SlabMode::MinIp => acc.min(v),
                    SlabMode::Mean => acc + v,
                };
            }
            if spec.mode == SlabMode::Mean {
                acc /= layers.len() as f32;
            }
            out.push(acc);
        }
    }
    let first = &slices[0];
    let mut info = first.info.clone();
    let [dx, dy, dz] = g.spacing_mm;
    let (row_dir, col_dir, spacing) = {
        let o = info.image_orientation_patient.unwrap_or([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]);
        let r = [o[0], o[1], o[2]];
        let c = [o[3], o[4], o[5]];
        let n = [r[1] * c[2] - r[2] * c[1], r[2] * c[0] - r[0] * c[2], r[0] * c[1] - r[1] * c[0]];
        let up = n.map(|v| -v);
        match spec.plane {
            Plane::Axial => (r, c, [dy, dx]),
            Plane::Coronal => (r, up, [dz, dx]),
            Plane::Sagittal => (c, up, [dz, dy]),
        }
    };
    info.image_orientation_patient = Some([row_dir[0], row_dir[1], row_dir[2], col_dir[0], col_dir[1], col_dir[2]]);
    info.pixel_spacing_mm = Some(spacing);
    info.imager_pixel_spacing_mm = None;
    info.slice_thickness_mm = Some(layers.len() as f64 * g.spacing_mm[spec.plane.normal_axis()]);
    let transform = PixelTransform { modality: ModalityLut::Identity, padding: None, ..first.transform.clone() };
    Some(SliceImage {
        width: width as u32,
        height: height as u32,
        samples: SliceSamples::F32(out),
        transform,
        info,
        frame_index: 0,
        overlays: Vec::new(),
    })
}

/// A request to the MPR worker.
pub struct MprRequest {
    pub viewport: usize,
    pub series: Arc<SeriesData>,
    pub spec: MprSpec,
}

/// The MPR worker.
pub struct MprWorker {
    requests: Sender<MprRequest>,
    pub done: Receiver<(usize, MprImage)>,
}

impl MprWorker {
    pub fn start(repaint: Arc<dyn Fn() + Send + Sync>) -> std::io::Result<Self> {
        let (requests, rx) = crossbeam_channel::bounded::<MprRequest>(16);
        let (tx, done) = crossbeam_channel::bounded::<(usize, MprImage)>(16);
        std::thread::Builder::new().name("lucent-mpr".into()).spawn(move || {
            while let Ok(first) = rx.recv() {
                // Only the newest request per viewport matters.
                let mut latest = vec![first];
                while let Ok(more) = rx.try_recv() {
                    latest.retain(|r| r.viewport != more.viewport);
                    latest.push(more);
                }
                for request in latest {
                    if let Some(image) = reformat(&request.series, request.spec) {
                        let result = MprImage {
                            spec: request.spec,
                            series_id: request.series.id,
                            id: NEXT_IMAGE_ID.fetch_add(1, Ordering::Relaxed),
                            image: Arc::new(image),
                        };
                        if tx.send((request.viewport, result)).is_err() {
                            return;
                        }
                        repaint();
                    }
                }
            }
        })?;
        Ok(Self { requests, done })
    }

    pub fn request(&self, request: MprRequest) {
        // A full queue drops this request; the viewport asks again next frame.
        let _ = self.requests.try_send(request);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pacs::synth::{self, CtSeriesSpec};

    fn series(slices: usize) -> SeriesData {
        let dir = tempfile::tempdir().unwrap();
        let spec = CtSeriesSpec { noise_hu: 5.0, ..CtSeriesSpec::chest("mpr", slices, 40) };
        let files = synth::write_ct_series(dir.path(), &spec).unwrap();
        let plan = pacs::volume::scan_series(&files, 2).unwrap().remove(0);
        let decoded =
            plan.slices.iter().map(|s| super::super::loader::decode_slice(&s.path, s.frame).unwrap()).collect();
        SeriesData::from_decoded("mpr".into(), plan, decoded)
    }

    fn hu(s: &SeriesData, i: usize, j: usize, k: usize) -> f32 {
        s.slice(k).unwrap().modality_value(i, j).unwrap() as f32
    }

    fn at(img: &SliceImage, x: usize, y: usize) -> f32 {
        img.samples.value(y * img.width as usize + x).unwrap() as f32
    }

    #[test]
    fn coronal_and_sagittal_put_the_head_at_the_top() {
        let s = series(12);
        let coronal =
            reformat(&s, MprSpec { plane: Plane::Coronal, index: 20, slab_mm: 0.0, mode: SlabMode::Mip }).unwrap();
        assert_eq!((coronal.width, coronal.height), (40, 12));
        let sagittal =
            reformat(&s, MprSpec { plane: Plane::Sagittal, index: 7, slab_mm: 0.0, mode: SlabMode::Mip }).unwrap();
        assert_eq!((sagittal.width, sagittal.height), (40, 12));
        for k in [0, 5, 11] {
            assert_eq!(at(&coronal, 13, 11 - k), hu(&s, 13, 20, k));
            assert_eq!(at(&sagittal, 30, 11 - k), hu(&s, 7, 30, k));
        }
        // Coronal rows are slices: spacing (slice spacing, column spacing).
        let spacing = coronal.info.pixel_spacing_mm.unwrap();
        assert!((spacing[0] - 2.5).abs() < 1e-9);
        // The column direction points to the feet (-z for an axial stack sorted feet to head).
        assert!(coronal.info.image_orientation_patient.unwrap()[5] < -0.99);
    }

    #[test]
    fn slabs_take_the_max_min_and_mean_over_their_thickness() {
        let s = series(9);
        // 7.5 mm at 2.5 mm spacing = 3 slices: k = 3, 4, 5.
        let spec = |mode| MprSpec { plane: Plane::Axial, index: 4, slab_mm: 7.5, mode };
        let mip = reformat(&s, spec(SlabMode::Mip)).unwrap();
        let minip = reformat(&s, spec(SlabMode::MinIp)).unwrap();
        let mean = reformat(&s, spec(SlabMode::Mean)).unwrap();
        for (i, j) in [(5, 5), (20, 20), (31, 12)] {
            let v = [hu(&s, i, j, 3), hu(&s, i, j, 4), hu(&s, i, j, 5)];
            assert_eq!(at(&mip, i, j), v.iter().copied().fold(f32::MIN, f32::max));
            assert_eq!(at(&minip, i, j), v.iter().copied().fold(f32::MAX, f32::min));
            assert!((at(&mean, i, j) - v.iter().sum::<f32>() / 3.0).abs() < 1e-3);
        }
        assert!((mip.info.slice_thickness_mm.unwrap() - 7.5).abs() < 1e-9);
    }
}
