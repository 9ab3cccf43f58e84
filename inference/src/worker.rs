//! A model's worker thread: it owns the [`ModelSession`] (whose `run` needs `&mut self`) and runs
//! jobs from a bounded queue, one at a time.
//!
//! A job is a closure that gets the session and a [`JobContext`]; pipelines such as
//! [`crate::cxr::analyze`] or [`crate::ct::denoise`] call `ctx.check_cancelled()` between batches
//! and `ctx.report(..)` after each, so the caller sees progress and can stop a long job through
//! its `AtomicBool`. A panicking job is reported as [`Error::WorkerPanicked`] and the worker goes on.
//!
//! ```no_run
//! # use std::sync::{Arc, atomic::AtomicBool};
//! # fn demo(session: inference::ModelSession, image: inference::cxr::GreyImage) -> inference::Result<()> {
//! let worker = inference::ModelWorker::spawn(session, 4)?;
//! let cancel = Arc::new(AtomicBool::new(false));
//! let job = worker.submit(cancel, None, move |s, ctx| inference::cxr::analyze(s, &image, ctx))?;
//! let result = job.wait()?;
//! # Ok(()) }
//! ```

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};

use crate::error::{Error, Result};
use crate::session::ModelSession;

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// What is being done ("preprocessing", "inference", ...).
    pub stage: &'static str,
    pub done: usize,
    pub total: usize,
}

/// A progress callback; called on the worker thread.
pub type ProgressFn = Arc<dyn Fn(Progress) + Send + Sync>;

/// What a job sees besides the session: its cancel flag and progress callback.
pub struct JobContext {
    cancel: Arc<AtomicBool>,
    progress: Option<ProgressFn>,
}

impl JobContext {
    pub fn new(cancel: Arc<AtomicBool>, progress: Option<ProgressFn>) -> Self {
        Self { cancel, progress }
    }

    /// A context that is never cancelled and reports nowhere (direct, synchronous use).
    pub fn detached() -> Self {
        Self::new(Arc::new(AtomicBool::new(false)), None)
    }

    /// `Err(Error::Cancelled)` once the flag is set; pipelines call this between batches.
    pub fn check_cancelled(&self) -> Result<()> {
        if self.cancel.load(Ordering::Relaxed) { Err(Error::Cancelled) } else { Ok(()) }
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    pub fn report(&self, stage: &'static str, done: usize, total: usize) {
        if let Some(p) = &self.progress {
            p(Progress { stage, done, total });
        }
    }
}

type Job = Box<dyn FnOnce(&mut ModelSession) + Send>;

/// A running model worker. Dropping it lets queued jobs finish, then joins the thread.
pub struct ModelWorker {
    model_id: String,
    capacity: usize,
    jobs: Option<Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for ModelWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelWorker").field("model_id", &self.model_id).field("capacity", &self.capacity).finish()
    }
}

/// The result of a submitted job.
#[derive(Debug)]
pub struct JobHandle<T> {
    model_id: String,
    cancel: Arc<AtomicBool>,
    result: Receiver<Result<T>>,
}

impl<T> JobHandle<T> {
    /// Block until the job ends.
    pub fn wait(self) -> Result<T> {
        self.result.recv().unwrap_or_else(|_| Err(Error::WorkerGone { model: self.model_id.clone() }))
    }

    /// The result if the job has ended.
    pub fn try_result(&self) -> Option<Result<T>> {
        match self.result.try_recv() {
            Ok(r) => Some(r),
            Err(crossbeam_channel::TryRecvError::Empty) => None,
            Err(crossbeam_channel::TryRecvError::Disconnected) => {
                Some(Err(Error::WorkerGone { model: self.model_id.clone() }))
            }
        }
    }

    /// Ask the job to stop at its next batch boundary.
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }

    /// The receiver, for `select!` with other channels.
    pub fn receiver(&self) -> &Receiver<Result<T>> {
        &self.result
    }
}

impl ModelWorker {
    /// Start the thread `lucent-model-<id>` owning `session`, with a queue of `capacity` jobs.
    pub fn spawn(session: ModelSession, capacity: usize) -> Result<Self> {
        let model_id = session.manifest().id.clone();
        let capacity = capacity.max(1);
        let (tx, rx) = bounded::<Job>(capacity);
        let name = format!("lucent-model-{model_id}");
        let thread = std::thread::Builder::new()
            .name(name.clone())
            .spawn(move || {
                let mut session = session;
                for job in rx {
                    job(&mut session);
                }
            })
            .map_err(|e| Error::io(name, e))?;
        Ok(Self { model_id, capacity, jobs: Some(tx), thread: Some(thread) })
    }

    pub fn model_id(&self) -> &str {
        &self.model_id
    }

    /// Queue a job, blocking while the queue is full.
    pub fn submit<T, F>(&self, cancel: Arc<AtomicBool>, progress: Option<ProgressFn>, job: F) -> Result<JobHandle<T>>
    where
        T: Send + 'static,
        F: FnOnce(&mut ModelSession, &JobContext) -> Result<T> + Send + 'static,
    {
        let (boxed, handle) = self.package(cancel, progress, job);
        let jobs = self.jobs.as_ref().ok_or_else(|| Error::WorkerGone { model: self.model_id.clone() })?;
        jobs.send(boxed).map_err(|_| Error::WorkerGone { model: self.model_id.clone() })?;
        Ok(handle)
    }

    /// Queue a job, or fail with [`Error::QueueFull`] at once.
    pub fn try_submit<T, F>(
        &self,
        cancel: Arc<AtomicBool>,
        progress: Option<ProgressFn>,
        job: F,
    ) -> Result<JobHandle<T>>
    where
        T: Send + 'static,
        F: FnOnce(&mut ModelSession, &JobContext) -> Result<T> + Send + 'static,
    {
        let (boxed, handle) = self.package(cancel, progress, job);
        let jobs = self.jobs.as_ref().ok_or_else(|| Error::WorkerGone { model: self.model_id.clone() })?;
        match jobs.try_send(boxed) {
            Ok(()) => Ok(handle),
            Err(TrySendError::Full(_)) => {
                Err(Error::QueueFull { model: self.model_id.clone(), capacity: self.capacity })
            }
            Err(TrySendError::Disconnected(_)) => Err(Error::WorkerGone { model: self.model_id.clone() }),
        }
    }

    fn package<T, F>(&self, cancel: Arc<AtomicBool>, progress: Option<ProgressFn>, job: F) -> (Job, JobHandle<T>)
    where
        T: Send + 'static,
        F: FnOnce(&mut ModelSession, &JobContext) -> Result<T> + Send + 'static,
    {
        let (tx, rx) = bounded::<Result<T>>(1);
        let ctx = JobContext::new(Arc::clone(&cancel), progress);
        let model = self.model_id.clone();
        let boxed: Job = Box::new(move |session: &mut ModelSession| {
            let result = if ctx.is_cancelled() {
                Err(Error::Cancelled)
            } else {
                std::panic::catch_unwind(AssertUnwindSafe(|| job(session, &ctx))).unwrap_or_else(|panic| {
                    let message = panic
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_owned())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "unknown panic".to_owned());
                    Err(Error::WorkerPanicked { model: model.clone(), message })
                })
            };
            // The caller may have dropped its handle; that is fine.
            let _ = tx.send(result);
        });
        (boxed, JobHandle { model_id: self.model_id.clone(), cancel, result: rx })
    }

    /// Let queued jobs finish and join the thread.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.jobs.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for ModelWorker {
    fn drop(&mut self) {
        self.stop();
    }
}
