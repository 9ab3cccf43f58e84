//! The writer pool shared by the network receivers (C-GET in `net::retrieve`, WADO-RS in
//! `dicomweb`): the thread that reads the connection hands each whole object to
//! `lucent-net-write-N` threads, which parse its header and write and fsync it to a temp file
//! while the reader goes on; the reader's thread commits finished writes in batches (the renames
//! into place, one fsync per directory: [`StoreFiles::commit`]) and only then indexes them. A
//! byte budget bounds what is in flight, and buffers are recycled (no fresh pages per object).

use crossbeam_channel::{Receiver, Sender, bounded, select};

use crate::error::{Error, Result};
use crate::net::retrieve::FailedInstance;
use crate::store::{StagedFile, Store, StoreFiles};

/// Instances committed (synced, put in place) and indexed together.
const INDEX_BATCH: usize = 64;

/// A received file for a writer thread.
pub(crate) struct WriteJob {
    /// From the C-STORE command (the writer reads the file's own header).
    pub(crate) sop_instance: String,
    pub(crate) bytes: Vec<u8>,
}

/// What a writer thread did with a job of `bytes` bytes.
struct WriteOutcome {
    bytes: usize,
    result: std::result::Result<StagedFile, FailedInstance>,
}

/// Received bytes waiting for (or in) a write before the socket reader waits for the writers.
const IN_FLIGHT_BUDGET_BYTES: usize = 256 * 1024 * 1024;
/// Most jobs queued for the writers (the byte budget usually binds first).
const MAX_QUEUED_JOBS: usize = 1024;

/// Buffers larger than this are not kept for reuse.
const RECYCLE_MAX_BYTES: usize = 64 * 1024 * 1024;
/// Buffers kept for reuse.
const RECYCLED_BUFFERS: usize = 64;

/// Parses the header of each received file, writes it atomically, hands the buffer back for reuse.
fn writer_loop(
    files: &StoreFiles,
    jobs: &Receiver<WriteJob>,
    outcomes: &Sender<WriteOutcome>,
    recycle: &Sender<Vec<u8>>,
) {
    for mut job in jobs.iter() {
        let result = crate::file::read_info_bytes(&job.bytes)
            .and_then(|info| files.stage(&info, &[&job.bytes]))
            .map_err(|e| FailedInstance { sop_instance_uid: job.sop_instance.clone(), reason: e.to_string() });
        let outcome = WriteOutcome { bytes: job.bytes.len(), result };
        if job.bytes.capacity() <= RECYCLE_MAX_BYTES {
            job.bytes.clear();
            let _ = recycle.try_send(job.bytes);
        }
        if outcomes.send(outcome).is_err() {
            return;
        }
    }
}

/// The calling thread's side of the writer pool: hands out jobs, indexes what was written.
pub(crate) struct Writing<'s> {
    pub(crate) store: &'s mut Store,
    files: StoreFiles,
    jobs: Option<Sender<WriteJob>>,
    outcomes: Receiver<WriteOutcome>,
    /// Buffers handed back by the writers.
    recycled: Receiver<Vec<u8>>,
    /// Bytes handed to the writers and not written yet.
    in_flight_bytes: usize,
    to_index: Vec<StagedFile>,
    stored: usize,
    pub(crate) failed: Vec<FailedInstance>,
}

impl Writing<'_> {
    /// A buffer for the next instance (reused when one is free: no fresh pages to fault in).
    pub(crate) fn buffer(&self) -> Vec<u8> {
        self.recycled.try_recv().unwrap_or_default()
    }

    fn take(&mut self, outcome: WriteOutcome) -> Result<()> {
        self.in_flight_bytes = self.in_flight_bytes.saturating_sub(outcome.bytes);
        match outcome.result {
            Ok(stored) => self.to_index.push(stored),
            Err(failed) => self.failed.push(failed),
        }
        if self.to_index.len() >= INDEX_BATCH {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if !self.to_index.is_empty() {
            let (placed, failed) = self.files.commit(std::mem::take(&mut self.to_index));
            self.failed.extend(
                failed
                    .into_iter()
                    .map(|(stored, reason)| FailedInstance { sop_instance_uid: stored.info.sop_instance_uid, reason }),
            );
            let indexed = self.store.index(&placed)?;
            self.stored += indexed.added + indexed.duplicates;
            // Kept aside (recorded in the store's conflicts), not filed: the retrieve lacks them.
            self.failed.extend(indexed.conflicts.into_iter().map(|c| FailedInstance {
                sop_instance_uid: c.sop_instance_uid,
                reason: format!("kept aside as a conflict: {}", c.kind),
            }));
        }
        Ok(())
    }

    /// Queues a job, indexing finished writes while the byte budget or the queue is full.
    pub(crate) fn submit(&mut self, job: WriteJob) -> Result<()> {
        let Some(jobs) = self.jobs.clone() else {
            return Err(Error::Write { detail: "the writer pool is closed".to_owned() });
        };
        let stopped = || Error::Write { detail: "the writer threads stopped".to_owned() };
        while self.in_flight_bytes > 0 && self.in_flight_bytes + job.bytes.len() > IN_FLIGHT_BUDGET_BYTES {
            let outcome = self.outcomes.recv().map_err(|_| stopped())?;
            self.take(outcome)?;
        }
        self.in_flight_bytes += job.bytes.len();
        loop {
            select! {
                send(jobs, job) -> sent => {
                    return sent.map_err(|_| Error::Write { detail: "the writer threads stopped".to_owned() });
                }
                recv(self.outcomes) -> outcome => match outcome {
                    Ok(outcome) => self.take(outcome)?,
                    Err(_) => return Err(Error::Write { detail: "the writer threads stopped".to_owned() }),
                },
            }
        }
    }

    /// Takes finished writes without waiting.
    pub(crate) fn poll(&mut self) -> Result<()> {
        while let Ok(outcome) = self.outcomes.try_recv() {
            self.take(outcome)?;
        }
        Ok(())
    }

    /// Closes the queue, waits for every write, indexes the rest.
    fn finish(&mut self) -> Result<()> {
        self.jobs = None;
        while let Ok(outcome) = self.outcomes.recv() {
            self.take(outcome)?;
        }
        self.flush()
    }
}

/// What a writer pool did.
pub(crate) struct PoolOutcome<R> {
    /// The body's result, or the first indexing error after it.
    pub(crate) outcome: Result<R>,
    pub(crate) stored: usize,
    pub(crate) failed: Vec<FailedInstance>,
}

/// Runs `body` (which reads objects and submits them) with `threads` writer threads; afterwards,
/// whatever happened, every submitted object is written and indexed before this returns.
pub(crate) fn with_writer_pool<R>(
    store: &mut Store,
    threads: usize,
    body: impl FnOnce(&mut Writing<'_>) -> Result<R>,
) -> PoolOutcome<R> {
    let files = store.files();
    let threads = threads.clamp(1, 16);
    let (job_tx, job_rx) = bounded::<WriteJob>(MAX_QUEUED_JOBS);
    let (out_tx, out_rx) = bounded::<WriteOutcome>(threads * 4);
    let (recycle_tx, recycle_rx) = bounded::<Vec<u8>>(RECYCLED_BUFFERS);
    let mut writing = Writing {
        files: files.clone(),
        store,
        jobs: Some(job_tx),
        outcomes: out_rx,
        recycled: recycle_rx,
        in_flight_bytes: 0,
        to_index: Vec::new(),
        stored: 0,
        failed: Vec::new(),
    };
    let outcome = std::thread::scope(|scope| {
        let mut spawned = 0;
        for t in 0..threads {
            let (files, job_rx, out_tx, recycle_tx) =
                (files.clone(), job_rx.clone(), out_tx.clone(), recycle_tx.clone());
            let worker = move || writer_loop(&files, &job_rx, &out_tx, &recycle_tx);
            if std::thread::Builder::new().name(format!("lucent-net-write-{t}")).spawn_scoped(scope, worker).is_ok() {
                spawned += 1;
            }
        }
        drop((job_rx, out_tx, recycle_tx));
        let mut outcome = if spawned == 0 {
            Err(Error::Write { detail: "no writer thread could be started".to_owned() })
        } else {
            body(&mut writing)
        };
        // Whatever happened on the wire, what arrived whole is written and indexed.
        let finished = writing.finish();
        if let (Ok(_), Err(e)) = (&outcome, finished) {
            outcome = Err(e);
        }
        outcome
    });
    PoolOutcome { outcome, stored: writing.stored, failed: writing.failed }
}
