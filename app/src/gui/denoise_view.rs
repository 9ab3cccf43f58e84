//! The denoised view of a CT, the slice on screen first. When the reader turns *Denoised (AI)* on,
//! the viewport asks the `lucent-denoise-view` worker for the slice it shows; the worker runs the
//! default CT denoiser (the manifest's `run_by_default` `ct_slice` model) on that one slice, about
//! a third of a second on a CPU, and the viewport draws the result labelled with the model's name and
//! version. Only the newest request counts: scrolling through a stack never queues a backlog.
//! Results are cached per (series, slice). The whole series is denoised in the background by the
//! AI worker as a derived series, which the browser lists beside the original when it is done.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};

use super::loader::{SliceImage, SliceSamples};

/// Slices kept (about 1 MB each at 512 x 512).
const CACHE_SLICES: usize = 96;

/// Texture keys of denoised slices: the series id with this bit set.
pub const DENOISED_KEY_BIT: u64 = 1 << 62;

/// A slice to denoise.
pub struct DenoiseRequest {
    pub series_id: u64,
    pub index: usize,
    pub slice: Arc<SliceImage>,
}

/// What the worker answers.
pub enum DenoiseEvent {
    Done {
        series_id: u64,
        index: usize,
        image: Arc<SliceImage>,
        model: String,
    },
    /// No usable model or runtime, or the slice could not be denoised: the message says why.
    Failed(String),
}

/// The worker and its cache of denoised slices.
pub struct DenoiseView {
    requests: Sender<DenoiseRequest>,
    pub events: Receiver<DenoiseEvent>,
    cache: HashMap<(u64, usize), Arc<SliceImage>>,
    order: VecDeque<(u64, usize)>,
    /// The model's id and version, once one slice was denoised.
    pub model: Option<String>,
    pub error: Option<String>,
    /// The last slice asked for and not yet answered (a viewport asks every frame until it is drawn).
    asked: std::cell::Cell<Option<(u64, usize)>>,
}

impl DenoiseView {
    pub fn start(repaint: Arc<dyn Fn() + Send + Sync>) -> std::io::Result<Self> {
        let (requests, rx) = crossbeam_channel::bounded::<DenoiseRequest>(8);
        let (tx, events) = crossbeam_channel::bounded::<DenoiseEvent>(8);
        std::thread::Builder::new().name("lucent-denoise-view".into()).spawn(move || {
            let mut session: Option<inference::ModelSession> = None;
            while let Ok(mut request) = rx.recv() {
                // The newest request wins.
                while let Ok(newer) = rx.try_recv() {
                    request = newer;
                }
                let event = match denoise_slice(&mut session, &request.slice) {
                    Ok((image, model)) => DenoiseEvent::Done {
                        series_id: request.series_id,
                        index: request.index,
                        image: Arc::new(image),
                        model,
                    },
                    Err(e) => DenoiseEvent::Failed(format!("{e:#}")),
                };
                if tx.send(event).is_err() {
                    break;
                }
                repaint();
            }
        })?;
        Ok(Self {
            requests,
            events,
            cache: HashMap::new(),
            order: VecDeque::new(),
            model: None,
            error: None,
            asked: std::cell::Cell::new(None),
        })
    }

    /// The denoised slice, if done.
    pub fn get(&self, series_id: u64, index: usize) -> Option<Arc<SliceImage>> {
        self.cache.get(&(series_id, index)).cloned()
    }

    /// Asks for a slice (once while it is on its way); false when the queue is full (the next frame
    /// asks again).
    pub fn request(&self, series_id: u64, index: usize, slice: Arc<SliceImage>) -> bool {
        if self.asked.get() == Some((series_id, index)) {
            return true;
        }
        let sent = self.requests.try_send(DenoiseRequest { series_id, index, slice }).is_ok();
        if sent {
            self.asked.set(Some((series_id, index)));
        }
        sent
    }

    /// Takes the worker's answers into the cache.
    pub fn poll(&mut self) {
        while let Ok(event) = self.events.try_recv() {
            match event {
                DenoiseEvent::Done { series_id, index, image, model } => {
                    if self.asked.get() == Some((series_id, index)) {
                        self.asked.set(None);
                    }
                    self.model = Some(model);
                    self.error = None;
                    if self.cache.insert((series_id, index), image).is_none() {
                        self.order.push_back((series_id, index));
                    }
                    while self.order.len() > CACHE_SLICES {
                        if let Some(old) = self.order.pop_front() {
                            self.cache.remove(&old);
                        }
                    }
                }
                DenoiseEvent::Failed(message) => {
                    self.asked.set(None);
                    self.error = Some(message);
                }
            }
        }
    }
}

/// Denoises one slice with the default CT denoiser; returns the slice in HU and "id version".
fn denoise_slice(
    session: &mut Option<inference::ModelSession>,
    slice: &SliceImage,
) -> anyhow::Result<(SliceImage, String)> {
    inference::runtime::runtime().map_err(|e| anyhow::anyhow!("{e}"))?;
    if session.is_none() {
        let registry = crate::ai::scan_registry();
        let manifest = registry
            .ready()
            .filter_map(|e| e.manifest.clone())
            .find(|m| {
                m.preprocessing.kind == inference::manifest::PreprocessingKind::CtSlice
                    && m.run_by_default
                    && !m.test_only
            })
            .ok_or_else(|| anyhow::anyhow!("no ready CT denoising model (see `lucent models`)"))?;
        *session = Some(registry.open(&manifest.id).map_err(|e| anyhow::anyhow!("{e}"))?);
    }
    let session = session.as_mut().ok_or_else(|| anyhow::anyhow!("no denoising session"))?;
    anyhow::ensure!(!slice.is_colour(), "a colour image cannot be denoised");
    let (width, height) = (slice.width as usize, slice.height as usize);
    let hu: Vec<f32> = (0..width * height)
        .map(|i| slice.samples.value(i).map_or(-1024.0, |v| slice.transform.modality.apply(v) as f32))
        .collect();
    let identity = [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]];
    let volume =
        inference::ct::HuVolume::new(inference::ct::HuSamples::F32(&hu), [width, height, 1], [1.0, 1.0, 1.0], identity)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    let denoised = inference::ct::denoise(session, &volume, 1, &inference::JobContext::detached())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let manifest = session.manifest_arc();
    let transform = pacs::PixelTransform {
        modality: pacs::pixels::ModalityLut::Identity,
        padding: None,
        ..slice.transform.clone()
    };
    let image = SliceImage {
        width: slice.width,
        height: slice.height,
        samples: SliceSamples::F32(denoised),
        transform,
        info: slice.info.clone(),
        frame_index: slice.frame_index,
        overlays: Vec::new(),
    };
    Ok((image, format!("{} {}", manifest.id, manifest.version)))
}
