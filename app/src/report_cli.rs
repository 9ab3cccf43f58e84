//! The report verbs of the `lucent` command line: the export flags of `lucent read`
//! (`--report`, `--sr`, `--fhir`, `--lang`), `lucent audit verify`, and `lucent report ...`
//! (list, show, edit, sign, export, addendum, init-admin, add-user, rekey, passwd, users, stats,
//! qa-export). The report store is `reports.sqlite` in the study store folder (`--store`). Nothing
//! printed or logged here names a patient.
//!
//! Signing, addenda, QA exports and user management unlock the acting user's signing key with
//! their passphrase: from the file named by `LUCENT_PASSPHRASE_FILE`, else `LUCENT_PASSPHRASE`,
//! else a prompt on the terminal. A new key's passphrase comes from `LUCENT_NEW_PASSPHRASE_FILE` /
//! `LUCENT_NEW_PASSPHRASE` / a prompt (twice). Never from an argument, which every local user
//! can read in the process list.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use report::model::{Decisions, Lang};
use report::store::{VersionBody, VersionKind};
use report::{Passphrase, Role, SectionId};

use crate::reporting::{self, ExportPaths};

/// Export flags of `lucent read`. Headless output is never signed: the PDF says PRELIMINARY, the
/// SR is PARTIAL / UNVERIFIED and the FHIR status is `preliminary`.
#[derive(Debug, Clone, Args, Default)]
pub struct ReadExportArgs {
    /// Write a preliminary PDF report (one per study; `-2`, `-3`... for further studies).
    #[arg(long, value_name = "OUT.pdf")]
    pub report: Option<PathBuf>,
    /// Write a preliminary DICOM Comprehensive SR (TID 1500 measurement report).
    #[arg(long, value_name = "OUT.dcm")]
    pub sr: Option<PathBuf>,
    /// Write a preliminary FHIR R4 DiagnosticReport (JSON).
    #[arg(long, value_name = "OUT.json")]
    pub fhir: Option<PathBuf>,
    /// Report language.
    #[arg(long, value_name = "ko|en", default_value = "en")]
    pub lang: String,
    /// User recorded in the audit log (default: $LUCENT_USER, else "cli").
    #[arg(long)]
    pub user: Option<String>,
}

/// `lucent audit ...`
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the audit log's hash chain (exit 1 and the first broken row when it is broken).
    Verify {
        #[arg(long)]
        json: bool,
    },
}

/// `lucent report ...`
#[derive(Debug, Subcommand)]
pub enum ReportCommand {
    /// List the reports in the store with their status.
    List,
    /// Print every version of a study's report.
    Show { study_uid: String },
    /// Sign the current draft of a study's report with --user's key (a reader's; passphrase from
    /// LUCENT_PASSPHRASE_FILE, LUCENT_PASSPHRASE or the terminal).
    Sign {
        study_uid: String,
        #[arg(long)]
        user: String,
    },
    /// Replace the text of one section of a study's draft (e.g. the impression).
    Edit {
        study_uid: String,
        /// Section: lungs, pleura, heart_mediastinum, bones, technique, nodules, other_findings,
        /// lung_rads, impression.
        #[arg(long)]
        section: String,
        #[arg(long)]
        text: String,
        #[arg(long)]
        user: String,
    },
    /// Export a study's signed report (with its addenda) as PDF, DICOM SR and FHIR. Before
    /// signing, only with --preliminary (and marked so). --from names the study's DICOM files
    /// (for the header, the SR's references and the key images).
    Export {
        study_uid: String,
        #[arg(long, value_name = "DIR")]
        from: PathBuf,
        #[arg(long, value_name = "OUT.pdf")]
        pdf: Option<PathBuf>,
        #[arg(long, value_name = "OUT.dcm")]
        sr: Option<PathBuf>,
        #[arg(long, value_name = "OUT.json")]
        fhir: Option<PathBuf>,
        /// The PDF as a DICOM Encapsulated PDF in the study, for a PACS.
        #[arg(long, value_name = "OUT.dcm")]
        pdf_dicom: Option<PathBuf>,
        #[arg(long)]
        preliminary: bool,
        #[arg(long)]
        user: Option<String>,
    },
    /// Add a signed addendum to a signed report.
    Addendum {
        study_uid: String,
        #[arg(long)]
        user: String,
        #[arg(long)]
        text: String,
    },
    /// Create the first administrator of this store (its key becomes the trust root). The new
    /// passphrase comes from LUCENT_NEW_PASSPHRASE_FILE, LUCENT_NEW_PASSPHRASE or the terminal.
    InitAdmin {
        name: String,
        /// reader or qa-lead: what the administrator also does.
        #[arg(long)]
        role: String,
    },
    /// An administrator (--as) adds a user with a first passphrase (LUCENT_NEW_PASSPHRASE...),
    /// which the user changes with `passwd`.
    AddUser {
        name: String,
        /// reader or qa-lead
        #[arg(long)]
        role: String,
        /// The new user may add users and issue keys too.
        #[arg(long)]
        admin: bool,
        /// The administrator doing it (passphrase from LUCENT_PASSPHRASE...).
        #[arg(long = "as", value_name = "ADMIN")]
        as_admin: String,
    },
    /// An administrator (--as) issues a new key for a user who forgot their passphrase (or
    /// changes their role). What the old key signed still verifies; only the new key signs.
    Rekey {
        name: String,
        /// The role of the new key (default: the user's current role).
        #[arg(long)]
        role: Option<String>,
        #[arg(long)]
        admin: bool,
        #[arg(long = "as", value_name = "ADMIN")]
        as_admin: String,
    },
    /// Change your own passphrase (old from LUCENT_PASSPHRASE..., new from LUCENT_NEW_PASSPHRASE...).
    Passwd { name: String },
    /// The users and every key they held (fingerprint, role, endorsed by, current or replaced).
    Users,
    /// QA statistics per model version and label, as CSV (stdout, or --csv / --histogram files).
    Stats {
        #[arg(long, value_name = "OUT.csv")]
        csv: Option<PathBuf>,
        #[arg(long, value_name = "OUT.csv")]
        histogram: Option<PathBuf>,
    },
    /// Export the QA reviewers' marks for retraining into DIR: one DICOM Comprehensive SR per
    /// reviewed study (TID 1500; boxes as image regions; decision, reason, reviewer) and
    /// `marks.jsonl` (the same without patient data or free text). Needs a QA lead's key.
    QaExport {
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        #[arg(long)]
        user: String,
    },
    /// Test helper: sign a report for --signed-study, then autosave drafts of --study in a loop,
    /// printing "saved N" after each commit (the crash test SIGKILLs it).
    #[command(hide = true)]
    AutosaveStress {
        #[arg(long)]
        study: String,
        #[arg(long)]
        signed_study: String,
        #[arg(long, default_value = "stress.reader")]
        user: String,
    },
}

/// A passphrase from `<var>_FILE` (the file's first line), `<var>`, or a prompt on the terminal
/// (typed twice when `confirm`).
fn passphrase(var: &str, prompt: &str, confirm: bool) -> Result<Passphrase> {
    if let Some(file) = std::env::var_os(format!("{var}_FILE")).filter(|f| !f.is_empty()) {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading the passphrase file {}", Path::new(&file).display()))?;
        return Ok(Passphrase::new(text.lines().next().unwrap_or_default().to_owned()));
    }
    if let Ok(text) = std::env::var(var)
        && !text.is_empty()
    {
        return Ok(Passphrase::new(text));
    }
    use std::io::IsTerminal as _;
    anyhow::ensure!(
        std::io::stdin().is_terminal(),
        "no passphrase: set {var}_FILE (a file holding it) or {var}, or run this on a terminal"
    );
    let first = Passphrase::new(rpassword::prompt_password(prompt).context("reading the passphrase")?);
    if confirm {
        let again = rpassword::prompt_password("Again: ").context("reading the passphrase")?;
        anyhow::ensure!(Passphrase::new(again).matches(&first), "the two passphrases differ");
    }
    Ok(first)
}

/// Unlocks `name`'s key with their passphrase.
fn unlock(store: &report::ReportStore, name: &str) -> Result<report::Credential> {
    let pass = passphrase("LUCENT_PASSPHRASE", &format!("Passphrase for {name}: "), false)?;
    Ok(store.unlock(name, &pass)?)
}

fn new_passphrase(name: &str) -> Result<Passphrase> {
    passphrase("LUCENT_NEW_PASSPHRASE", &format!("New passphrase for {name}: "), true)
}

fn user_name(explicit: Option<&str>) -> String {
    explicit
        .map(str::to_owned)
        .or_else(|| std::env::var("LUCENT_USER").ok().filter(|u| !u.trim().is_empty()))
        .unwrap_or_else(|| "cli".to_owned())
}

/// After `lucent read`: draft each study's report, keep the draft in the report store (unless the
/// study's report is already signed), write the preliminary exports and audit everything.
pub fn after_read(path: &Path, reading: &crate::ai::ReadReport, args: &ReadExportArgs, store_dir: &Path) -> Result<()> {
    let paths = ExportPaths { pdf: args.report.clone(), sr: args.sr.clone(), fhir: args.fhir.clone(), pdf_dicom: None };
    if !paths.any() {
        return Ok(());
    }
    let lang = reporting::parse_lang(&args.lang)?;
    let user = user_name(args.user.as_deref());
    let mut store = crate::reporting::open_report_store(store_dir)?;
    let bundles = reporting::bundles(path, reading)?;
    anyhow::ensure!(!bundles.is_empty(), "no study to report on under {}", path.display());
    for (i, bundle) in bundles.iter().enumerate() {
        let study = &bundle.inputs.context.study_uid;
        store.record_open(&user, study)?;
        store.record_ai_run(&user, study, &bundle.inputs.findings)?;
        let report = report::draft(&bundle.inputs, &Decisions::new(), lang);
        match store.save_draft(&user, study, &report) {
            Ok(_) | Err(report::Error::Signed) => {}
            Err(e) => return Err(e.into()),
        }
        let now = report::time::now_rfc3339();
        for (format, sha) in reporting::write_preliminary_exports(bundle, &report, &paths, i, &now)? {
            store.record_export(&user, study, format, report::ReportStatus::Draft, &sha, false)?;
        }
        let warnings = report::checks::check(&report, &bundle.inputs.findings, &Decisions::new(), None);
        println!(
            "Preliminary report ({}, {}) for study {}: {} finding(s), {} check warning(s)",
            report.kind.code(),
            lang.code(),
            study,
            bundle.inputs.findings.len(),
            warnings.len()
        );
    }
    Ok(())
}

pub fn audit(command: &AuditCommand, store_dir: &Path) -> Result<()> {
    match command {
        AuditCommand::Verify { json } => {
            let store = crate::reporting::open_report_store(store_dir)?;
            let verdict = store.verify_audit()?;
            let tampered = store.verify_signed_versions(None)?;
            if *json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &serde_json::json!({ "audit": verdict, "tampered_versions": tampered })
                    )?
                );
            } else {
                match &verdict.first_broken {
                    None => println!("audit log intact: {} row(s), head {}", verdict.rows, verdict.head_hash),
                    Some(b) => println!("audit log BROKEN at row {}: {}", b.id, b.reason),
                }
                for t in &tampered {
                    println!("signed version {} of study {} CHANGED: {}", t.version, t.study_uid, t.reason);
                }
            }
            if let Some(b) = verdict.first_broken {
                // main turns the error into exit status 1.
                anyhow::bail!("the audit log is broken at row {}", b.id);
            }
            anyhow::ensure!(
                tampered.is_empty(),
                "{} signed version(s) no longer match what was signed",
                tampered.len()
            );
            Ok(())
        }
    }
}

pub fn run(command: &ReportCommand, store_dir: &Path) -> Result<()> {
    let mut store = crate::reporting::open_report_store(store_dir)?;
    match command {
        ReportCommand::List => {
            for (uid, status) in store.reports()? {
                println!("{:<10} {uid}", status.fhir());
            }
        }
        ReportCommand::Show { study_uid } => {
            let versions = store.versions(study_uid)?;
            anyhow::ensure!(!versions.is_empty(), "no report for study {study_uid}");
            let tampered = store.verify_signed_versions(Some(study_uid))?;
            for t in &tampered {
                println!(
                    "!!! signed version {} was CHANGED after signing: {} (not the signed report)",
                    t.version, t.reason
                );
            }
            for v in versions {
                let who = match v.kind {
                    VersionKind::Draft => format!("draft by {} (saved {})", v.author, v.saved_at),
                    _ => format!(
                        "{} by {} at {}, {}",
                        v.kind.code(),
                        v.signed_by.unwrap_or_default(),
                        v.signed_at.unwrap_or_default(),
                        v.signer_key.map_or("by name only (before signing keys)".to_owned(), |k| format!("key {k}"))
                    ),
                };
                println!("--- version {}: {who}; sha256 {}", v.id, v.content_sha256);
                match v.body {
                    VersionBody::Report(r) => print!("{}", r.to_text()),
                    VersionBody::Addendum { text } => println!("{text}"),
                }
            }
            anyhow::ensure!(tampered.is_empty(), "the signed report of study {study_uid} was changed after signing");
        }
        ReportCommand::Sign { study_uid, user } => {
            let reader = unlock(&store, user)?;
            let v = store.sign(&reader, study_uid)?;
            println!(
                "signed version {} (sha256 {}) with key {}",
                v.id,
                v.content_sha256,
                v.signer_key.unwrap_or_default()
            );
        }
        ReportCommand::Edit { study_uid, section, text, user } => {
            let id: SectionId = serde_json::from_value(serde_json::Value::String(section.clone()))
                .with_context(|| format!("unknown section {section:?}"))?;
            let draft = store.draft(study_uid)?.context("no draft for this study (run `lucent read` first)")?;
            let VersionBody::Report(mut report) = draft.body else { anyhow::bail!("the draft holds no report") };
            anyhow::ensure!(report.set_section_text(id, text), "the report has no section {section:?}");
            let findings = store.findings(study_uid)?;
            let decisions = store.decisions(study_uid)?;
            store.save_draft(user, study_uid, &report)?;
            for w in report::checks::check(&report, &findings, &decisions, None) {
                println!("warning {}: {}", w.code.code(), w.message(Lang::En));
            }
            println!("draft saved");
        }
        ReportCommand::Export { study_uid, from, pdf, sr, fhir, pdf_dicom, preliminary, user } => {
            let user = user_name(user.as_deref());
            let paths =
                ExportPaths { pdf: pdf.clone(), sr: sr.clone(), fhir: fhir.clone(), pdf_dicom: pdf_dicom.clone() };
            anyhow::ensure!(paths.any(), "nothing to export: give --pdf, --sr, --fhir and/or --pdf-dicom");
            let source = store.export_source(study_uid, *preliminary)?;
            let empty = crate::ai::ReadReport { disclaimer: crate::ai::DISCLAIMER, series: Vec::new() };
            let mut bundle = reporting::bundles(from, &empty)?
                .into_iter()
                .find(|b| &b.inputs.context.study_uid == study_uid)
                .with_context(|| format!("{} holds no image of study {study_uid}", from.display()))?;
            // The findings as recorded when the AI ran (key images are drawn only by `lucent read`).
            bundle.inputs.findings = store.findings(study_uid)?;
            let decisions = store.decisions(study_uid)?;
            let now = report::time::now_rfc3339();
            for (format, sha) in reporting::write_exports(&bundle, &source, &decisions, &paths, 0, &now)? {
                store.record_export(&user, study_uid, format, source.status, &sha, false)?;
            }
            println!("exported the {} report", source.status.fhir());
        }
        ReportCommand::Addendum { study_uid, user, text } => {
            let reader = unlock(&store, user)?;
            let v = store.add_addendum(&reader, study_uid, text)?;
            println!("addendum version {}", v.id);
        }
        ReportCommand::InitAdmin { name, role } => {
            let role: Role = role.parse()?;
            let admin = store.init_admin(name, role, &new_passphrase(name)?)?;
            println!(
                "administrator {} ({}), key {}: the trust root of this store",
                admin.name(),
                role.code(),
                admin.fingerprint()
            );
        }
        ReportCommand::AddUser { name, role, admin, as_admin } => {
            let role: Role = role.parse()?;
            let by = unlock(&store, as_admin)?;
            let record = store.add_user(&by, name, role, *admin, &new_passphrase(name)?)?;
            println!(
                "user {} ({}{}), key {}",
                record.name,
                role.code(),
                if record.admin { ", administrator" } else { "" },
                record.fingerprint
            );
        }
        ReportCommand::Rekey { name, role, admin, as_admin } => {
            let current = store.current_key(name)?.with_context(|| format!("no user named {name:?}"))?;
            let role: Role = match role {
                Some(r) => r.parse()?,
                None => current.role,
            };
            let by = unlock(&store, as_admin)?;
            let record = store.rekey(&by, name, role, *admin || current.admin, &new_passphrase(name)?)?;
            println!("user {}: new key {} (replaces {})", record.name, record.fingerprint, current.fingerprint);
        }
        ReportCommand::Passwd { name } => {
            let old = passphrase("LUCENT_PASSPHRASE", &format!("Current passphrase for {name}: "), false)?;
            store.change_passphrase(name, &old, &new_passphrase(name)?)?;
            println!("passphrase of {name} changed");
        }
        ReportCommand::Users => {
            let records = store.key_records()?;
            for r in &records {
                let current =
                    records.iter().rev().find(|c| c.name == r.name).is_some_and(|c| c.fingerprint == r.fingerprint);
                println!(
                    "{:<16} {:<8} {:<6} key {} endorsed by {} at {}{}",
                    r.name,
                    r.role.code(),
                    if r.admin { "admin" } else { "" },
                    r.fingerprint,
                    if r.endorsed_by == r.fingerprint {
                        "itself (trust root)".to_owned()
                    } else {
                        r.endorsed_by.clone()
                    },
                    r.created_at,
                    if current { "" } else { " (replaced)" }
                );
            }
        }
        ReportCommand::Stats { csv, histogram } => {
            let stats = report::stats::compute(&store.decided_findings()?);
            let table = report::stats::to_csv(&stats);
            match csv {
                Some(out) => std::fs::write(out, &table).with_context(|| format!("writing {}", out.display()))?,
                None => print!("{table}"),
            }
            if let Some(out) = histogram {
                std::fs::write(out, report::stats::histogram_csv(&stats))
                    .with_context(|| format!("writing {}", out.display()))?;
            }
        }
        ReportCommand::QaExport { out, user } => {
            let now = report::time::now_rfc3339();
            let qa_lead = unlock(&store, user)?;
            let s = crate::qa_export::export_qa_marks(&mut store, store_dir, out, &qa_lead, &now)?;
            println!(
                "{} mark(s) from {} study(ies): {} accepted, {} rejected, {} corrected; {} SR file(s); {}",
                s.marks,
                s.studies,
                s.accepted,
                s.rejected,
                s.corrected,
                s.sr_files.len(),
                s.jsonl.display()
            );
            if s.studies_without_images > 0 {
                println!(
                    "{} study(ies) have no images in the local store: their marks are in the JSONL only",
                    s.studies_without_images
                );
            }
        }
        ReportCommand::AutosaveStress { study, signed_study, user } => {
            // The helper's reader is the store's first administrator; passphrase from the env.
            let reader =
                store.init_admin(user, Role::Reader, &passphrase("LUCENT_PASSPHRASE", "Passphrase: ", false)?)?;
            let inputs = report::model::StudyInputs {
                context: report::model::StudyContext { modality: "DX".into(), ..Default::default() },
                ..Default::default()
            };
            let mut signed = report::draft(&inputs, &Decisions::new(), Lang::En);
            signed.set_section_text(SectionId::Impression, "SIGNED CONTENT");
            store.save_draft(user, signed_study, &signed)?;
            store.sign(&reader, signed_study)?;
            let mut stdout = std::io::stdout();
            writeln!(stdout, "signed")?;
            stdout.flush()?;
            let mut draft = report::draft(&inputs, &Decisions::new(), Lang::En);
            for i in 0u64.. {
                draft.set_section_text(SectionId::Impression, &format!("autosave {i} {}", "x".repeat(200)));
                store.save_draft(user, study, &draft)?;
                writeln!(stdout, "saved {i}")?;
                stdout.flush()?;
            }
        }
    }
    Ok(())
}
