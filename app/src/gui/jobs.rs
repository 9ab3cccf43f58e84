//! Long user jobs started from the GUI: native file dialogs (`lucent-dialog`, rfd, never on the
//! UI thread; on a headless session they return nothing quickly) and imports into the store
//! (`lucent-import-job`, with progress and cancel).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crossbeam_channel::{Receiver, Sender};
use pacs::import::{ImportOptions, ImportProgress, ImportSummary};

/// Which dialog to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialog {
    Files,
    Folder,
    /// A labelled folder to evaluate models on (the *Model evaluation* window).
    DataFolder,
}

/// Shows a native dialog on its own thread; the chosen paths arrive on the returned channel
/// (an empty list when cancelled or when no dialog can be shown).
pub fn pick(dialog: Dialog, repaint: Arc<dyn Fn() + Send + Sync>) -> std::io::Result<Receiver<Vec<PathBuf>>> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    std::thread::Builder::new().name("lucent-dialog".into()).spawn(move || {
        let picked = match dialog {
            Dialog::Files => rfd::FileDialog::new().set_title("Import DICOM files").pick_files().unwrap_or_default(),
            Dialog::Folder => {
                rfd::FileDialog::new().set_title("Import a DICOM folder").pick_folder().into_iter().collect()
            }
            Dialog::DataFolder => {
                rfd::FileDialog::new().set_title("Choose a labelled folder").pick_folder().into_iter().collect()
            }
        };
        let _ = tx.send(picked);
        repaint();
    })?;
    Ok(rx)
}

/// A running import.
pub struct ImportJob {
    pub progress: Arc<Mutex<ImportProgress>>,
    pub cancel: Arc<AtomicBool>,
    pub done: Receiver<Result<ImportSummary, String>>,
}

impl ImportJob {
    pub fn start(
        store_dir: PathBuf,
        paths: Vec<PathBuf>,
        repaint: Arc<dyn Fn() + Send + Sync>,
    ) -> std::io::Result<Self> {
        let progress = Arc::new(Mutex::new(ImportProgress::default()));
        let cancel = Arc::new(AtomicBool::new(false));
        let (tx, done): (Sender<Result<ImportSummary, String>>, _) = crossbeam_channel::bounded(1);
        let (p, c) = (progress.clone(), cancel.clone());
        std::thread::Builder::new().name("lucent-import-job".into()).spawn(move || {
            let result = pacs::store::Store::open(&store_dir).and_then(|mut store| {
                pacs::import::import_paths(
                    &mut store,
                    &paths,
                    &ImportOptions::default(),
                    &|state| {
                        if let Ok(mut slot) = p.lock() {
                            *slot = state;
                        }
                        repaint();
                    },
                    &c,
                )
            });
            let _ = tx.send(result.map_err(|e| e.to_string()));
            repaint();
        })?;
        Ok(Self { progress, cancel, done })
    }

    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }

    pub fn progress(&self) -> ImportProgress {
        self.progress.lock().map(|p| *p).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_headless_session_gets_no_dialog_and_no_wait() {
        let headless =
            ["DISPLAY", "WAYLAND_DISPLAY", "DBUS_SESSION_BUS_ADDRESS"].iter().all(|v| std::env::var_os(v).is_none());
        if !headless {
            eprintln!("SKIP: a desktop session is present; a real dialog would open");
            return;
        }
        let started = std::time::Instant::now();
        let rx = pick(Dialog::Folder, Arc::new(|| {})).unwrap();
        let paths = rx.recv_timeout(std::time::Duration::from_secs(30)).unwrap();
        assert!(paths.is_empty());
        assert!(started.elapsed() < std::time::Duration::from_secs(30));
    }

    #[test]
    fn an_import_job_reports_progress_and_finishes() {
        let src = tempfile::tempdir().unwrap();
        let spec = pacs::synth::CtSeriesSpec { noise_hu: 0.0, ..pacs::synth::CtSeriesSpec::chest("job", 5, 16) };
        pacs::synth::write_ct_series(src.path(), &spec).unwrap();
        let store = tempfile::tempdir().unwrap();
        let job =
            ImportJob::start(store.path().to_path_buf(), vec![src.path().to_path_buf()], Arc::new(|| {})).unwrap();
        let summary = job.done.recv_timeout(std::time::Duration::from_secs(60)).unwrap().unwrap();
        assert_eq!(summary.imported, 5);
        assert_eq!(job.progress().done, 5);
    }
}
