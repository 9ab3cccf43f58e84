//! Background loading of series for the viewer (thread `lucent-loader`, decoders
//! `lucent-slices-N`, thumbnails `lucent-thumbs`).
//!
//! A series opens as soon as its headers are sorted: the viewer gets a [`SeriesData`] with empty
//! slots and shows the middle slice first, then the others as they decode (nearest to the slice
//! on screen first). Slices keep their stored sample type; colour and palette images become RGBA.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use pacs::pixels::{PixelTransform, Voi};
use pacs::volume::{self, StackPlan, VolumeWarning};
use pacs::{InstanceInfo, Photometric, Samples};

/// Stored samples of one slice, ready to upload.
#[derive(Debug, Clone)]
pub enum SliceSamples {
    U8(Vec<u8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    F32(Vec<f32>),
    /// Display colour (RGB, palette).
    Rgba8(Vec<u8>),
}

impl SliceSamples {
    pub fn as_render(&self) -> render::Samples<'_> {
        match self {
            Self::U8(v) => render::Samples::U8(v),
            Self::U16(v) => render::Samples::U16(v),
            Self::I16(v) => render::Samples::I16(v),
            Self::F32(v) => render::Samples::F32(v),
            Self::Rgba8(v) => render::Samples::Rgba8(v),
        }
    }

    /// The stored value at pixel index `i` (grey only).
    pub fn value(&self, i: usize) -> Option<f64> {
        match self {
            Self::U8(v) => v.get(i).map(|&x| f64::from(x)),
            Self::U16(v) => v.get(i).map(|&x| f64::from(x)),
            Self::I16(v) => v.get(i).map(|&x| f64::from(x)),
            Self::F32(v) => v.get(i).map(|&x| f64::from(x)),
            Self::Rgba8(_) => None,
        }
    }

    pub fn size_bytes(&self) -> usize {
        match self {
            Self::U8(v) | Self::Rgba8(v) => v.len(),
            Self::U16(v) => v.len() * 2,
            Self::I16(v) => v.len() * 2,
            Self::F32(v) => v.len() * 4,
        }
    }
}

/// One decoded slice with what is needed to display and annotate it.
#[derive(Debug)]
pub struct SliceImage {
    pub width: u32,
    pub height: u32,
    pub samples: SliceSamples,
    pub transform: PixelTransform,
    pub info: InstanceInfo,
    pub frame_index: u32,
    /// Overlay planes (60xx) of this frame.
    pub overlays: Vec<pacs::decode::OverlayBitmap>,
}

impl SliceImage {
    pub fn is_colour(&self) -> bool {
        matches!(self.samples, SliceSamples::Rgba8(_))
    }

    /// Modality value (e.g. HU) at image pixel (x, y).
    pub fn modality_value(&self, x: usize, y: usize) -> Option<f64> {
        if x >= self.width as usize || y >= self.height as usize {
            return None;
        }
        let stored = self.samples.value(y * self.width as usize + x)?;
        Some(self.transform.modality.apply(stored))
    }
}

/// Decodes one slice (file + frame) into a [`SliceImage`].
pub fn decode_slice(path: &std::path::Path, frame_index: u32) -> pacs::Result<SliceImage> {
    let image = pacs::file::load_image(path, frame_index)?;
    let frame = &image.frame;
    let samples = match (&frame.photometric, &frame.samples) {
        (Photometric::Rgb | Photometric::PaletteColor, _) => {
            let rgb = image.transform.render_u8(frame, &Voi::Window(pacs::Window::new(0.5, 1.0)), false);
            let channels =
                if frame.photometric == Photometric::Rgb || image.transform.palette.is_some() { 3 } else { 1 };
            SliceSamples::Rgba8(
                rgb.chunks_exact(channels)
                    .flat_map(|c| if channels == 3 { [c[0], c[1], c[2], 255] } else { [c[0], c[0], c[0], 255] })
                    .collect(),
            )
        }
        (_, Samples::U8(v)) => SliceSamples::U8(v.clone()),
        (_, Samples::U16(v)) => SliceSamples::U16(v.clone()),
        (_, Samples::I16(v)) => SliceSamples::I16(v.clone()),
        (_, Samples::I8(v)) => SliceSamples::I16(v.iter().map(|&x| i16::from(x)).collect()),
        (_, other) => SliceSamples::F32((0..other.len()).map(|i| other.get_f64(i) as f32).collect()),
    };
    Ok(SliceImage {
        width: frame.columns,
        height: frame.rows,
        samples,
        transform: image.transform,
        info: image.info,
        frame_index,
        overlays: image.overlays,
    })
}

static NEXT_SERIES_ID: AtomicU64 = AtomicU64::new(1);

/// A series being (or done) loading. Shared between the loader and the UI.
pub struct SeriesData {
    /// Unique per load (keys GPU textures).
    pub id: u64,
    pub series_uid: String,
    pub plan: StackPlan,
    slots: Vec<OnceLock<Arc<SliceImage>>>,
    decoded: AtomicUsize,
    errors: Mutex<Vec<String>>,
    /// The slice the user is looking at: decoded next if still missing.
    wanted: AtomicUsize,
    /// Set when no viewport shows the series any more.
    pub cancel: AtomicBool,
}

impl SeriesData {
    /// A series whose slices are all decoded already (tests, exports).
    pub fn from_decoded(series_uid: String, plan: StackPlan, slices: Vec<SliceImage>) -> Self {
        let n = slices.len();
        let slots: Vec<OnceLock<Arc<SliceImage>>> = slices.into_iter().map(|s| OnceLock::from(Arc::new(s))).collect();
        Self {
            id: NEXT_SERIES_ID.fetch_add(1, Ordering::Relaxed),
            series_uid,
            plan,
            slots,
            decoded: AtomicUsize::new(n),
            errors: Mutex::new(Vec::new()),
            wanted: AtomicUsize::new(0),
            cancel: AtomicBool::new(false),
        }
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    pub fn slice(&self, index: usize) -> Option<Arc<SliceImage>> {
        self.slots.get(index).and_then(|s| s.get().cloned())
    }

    pub fn decoded(&self) -> usize {
        self.decoded.load(Ordering::Relaxed)
    }

    pub fn want(&self, index: usize) {
        self.wanted.store(index, Ordering::Relaxed);
    }

    pub fn errors(&self) -> Vec<String> {
        self.errors.lock().map(|e| e.clone()).unwrap_or_default()
    }

    pub fn warnings(&self) -> &[VolumeWarning] {
        &self.plan.warnings
    }

    /// The first decoded slice (for series-wide overlays).
    pub fn any_slice(&self) -> Option<Arc<SliceImage>> {
        self.slots.iter().find_map(|s| s.get().cloned())
    }

    /// Bytes of decoded samples held.
    pub fn size_bytes(&self) -> usize {
        self.slots.iter().filter_map(|s| s.get()).map(|s| s.samples.size_bytes()).sum()
    }
}

/// What the UI asks the loader.
#[derive(Debug, Clone)]
pub struct LoadRequest {
    pub series_uid: String,
    pub paths: Vec<PathBuf>,
    /// Viewport the series is for.
    pub viewport: usize,
    /// Window to start with (from a hanging protocol).
    pub window: Option<pacs::Window>,
}

/// What the loader tells the UI.
pub enum LoaderEvent {
    Opened { viewport: usize, series: Arc<SeriesData>, window: Option<pacs::Window> },
    Failed { series_uid: String, message: String },
}

/// Handle to the loader thread.
pub struct Loader {
    requests: Sender<LoadRequest>,
    pub events: Receiver<LoaderEvent>,
}

impl Loader {
    /// Starts the loader thread; `repaint` wakes the UI.
    pub fn start(repaint: Arc<dyn Fn() + Send + Sync>) -> std::io::Result<Self> {
        let (requests, request_rx) = crossbeam_channel::bounded::<LoadRequest>(8);
        let (event_tx, events) = crossbeam_channel::bounded::<LoaderEvent>(32);
        std::thread::Builder::new().name("lucent-loader".into()).spawn(move || {
            for request in request_rx.iter() {
                load(request, &event_tx, repaint.as_ref());
            }
        })?;
        Ok(Self { requests, events })
    }

    /// Queues a load; fails (without blocking) when the queue is full.
    pub fn request(&self, request: LoadRequest) -> Result<(), String> {
        match self.requests.try_send(request) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err("the loader is busy; try again".into()),
            Err(TrySendError::Disconnected(_)) => Err("the loader stopped".into()),
        }
    }
}

fn load(request: LoadRequest, events: &Sender<LoaderEvent>, repaint: &(dyn Fn() + Send + Sync)) {
    let fail = |message: String| {
        let _ = events.send(LoaderEvent::Failed { series_uid: request.series_uid.clone(), message });
        repaint();
    };
    let threads = volume::default_threads();
    let plans = match volume::scan_series(&request.paths, threads) {
        Ok(p) => p,
        Err(e) => return fail(e.to_string()),
    };
    let Some(plan) = plans.into_iter().next() else { return fail("no images in the series".into()) };
    let n = plan.slices.len();
    let series = Arc::new(SeriesData {
        id: NEXT_SERIES_ID.fetch_add(1, Ordering::Relaxed),
        series_uid: request.series_uid.clone(),
        slots: (0..n).map(|_| OnceLock::new()).collect(),
        decoded: AtomicUsize::new(0),
        errors: Mutex::new(Vec::new()),
        wanted: AtomicUsize::new(n / 2),
        cancel: AtomicBool::new(false),
        plan,
    });
    if events
        .send(LoaderEvent::Opened { viewport: request.viewport, series: series.clone(), window: request.window })
        .is_err()
    {
        return;
    }
    repaint();
    decode_all(&series, threads, repaint);
}

/// Decodes every slot, the wanted one first, then outward from it.
fn decode_all(series: &SeriesData, threads: usize, repaint: &(dyn Fn() + Send + Sync)) {
    let claimed: Vec<AtomicBool> = (0..series.len()).map(|_| AtomicBool::new(false)).collect();
    std::thread::scope(|scope| {
        for t in 0..threads.max(1) {
            let claimed = &claimed;
            let worker = move || {
                while !series.cancel.load(Ordering::Relaxed) {
                    let Some(index) = next_slot(series, claimed) else { break };
                    let slice = &series.plan.slices[index];
                    match decode_slice(&slice.path, slice.frame) {
                        Ok(image) => {
                            let _ = series.slots[index].set(Arc::new(image));
                            series.decoded.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            if let Ok(mut errors) = series.errors.lock() {
                                errors.push(format!("slice {}: {e}", index + 1));
                            }
                        }
                    }
                    repaint();
                }
            };
            if std::thread::Builder::new().name(format!("lucent-slices-{t}")).spawn_scoped(scope, worker).is_err() {
                break;
            }
        }
    });
}

fn next_slot(series: &SeriesData, claimed: &[AtomicBool]) -> Option<usize> {
    let n = claimed.len();
    let centre = series.wanted.load(Ordering::Relaxed).min(n.saturating_sub(1));
    for distance in 0..n {
        for index in [centre.checked_add(distance), centre.checked_sub(distance)].into_iter().flatten() {
            if index < n && !claimed[index].swap(true, Ordering::Relaxed) {
                return Some(index);
            }
        }
    }
    None
}

/// A small display thumbnail of a series.
pub struct Thumbnail {
    pub series_uid: String,
    pub image: Option<egui::ColorImage>,
}

/// Thumbnail worker: decodes one image per series and scales it down.
pub struct Thumbnailer {
    requests: Sender<(String, PathBuf)>,
    pub done: Receiver<Thumbnail>,
}

impl Thumbnailer {
    pub fn start(repaint: Arc<dyn Fn() + Send + Sync>) -> std::io::Result<Self> {
        let (requests, rx) = crossbeam_channel::bounded::<(String, PathBuf)>(256);
        let (tx, done) = crossbeam_channel::bounded::<Thumbnail>(256);
        std::thread::Builder::new().name("lucent-thumbs".into()).spawn(move || {
            for (series_uid, path) in rx.iter() {
                let image = thumbnail(&path, 96).ok();
                if tx.send(Thumbnail { series_uid, image }).is_err() {
                    break;
                }
                repaint();
            }
        })?;
        Ok(Self { requests, done })
    }

    pub fn request(&self, series_uid: String, path: PathBuf) -> bool {
        self.requests.try_send((series_uid, path)).is_ok()
    }
}

/// Decodes the first frame of `path` and renders it to at most `size` pixels per side.
pub fn thumbnail(path: &std::path::Path, size: u32) -> pacs::Result<egui::ColorImage> {
    let image = pacs::file::load_image(path, 0)?;
    let voi = image.transform.default_voi(&image.frame);
    let display = image.transform.render_u8(&image.frame, &voi, false);
    let (w, h) = (image.frame.columns as usize, image.frame.rows as usize);
    let channels = display.len() / (w * h).max(1);
    let scale = (w.max(h) as f32 / size as f32).max(1.0);
    let (tw, th) = (((w as f32 / scale) as usize).max(1), ((h as f32 / scale) as usize).max(1));
    let mut pixels = Vec::with_capacity(tw * th);
    for ty in 0..th {
        for tx in 0..tw {
            let (sx, sy) = (((tx as f32 + 0.5) * scale) as usize, ((ty as f32 + 0.5) * scale) as usize);
            let i = (sy.min(h - 1) * w + sx.min(w - 1)) * channels;
            pixels.push(if channels >= 3 {
                egui::Color32::from_rgb(display[i], display[i + 1], display[i + 2])
            } else {
                egui::Color32::from_gray(display[i])
            });
        }
    }
    Ok(egui::ColorImage::new([tw, th], pixels))
}
