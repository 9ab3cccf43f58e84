//! `lucent pacs echo|find|get|move|store|node` and `lucent scp`: DIMSE exchange with PACS nodes
//! from the command line, over the same `pacs::net` calls the GUI's PACS window uses.
//!
//! A peer is either a saved node (`--node NAME`, from the node book, see
//! [`crate::config::node_book_path`]) or given inline (`--host H --port P --aet CALLED
//! [--our-aet CALLING]`), either with `--tls [--tls-ca FILE] [--tls-cert FILE --tls-key FILE]`
//! for DICOM TLS.
//!
//! `lucent pacs node add NAME --url URL` saves a DICOMweb node instead. Its password or token is
//! read from an environment variable or a file (`--password-env VAR`, `--token-file FILE`, ...),
//! never from the command line (where other users' `ps` would see it), and kept in the secret
//! store ([`pacs::secrets`]), not in the node book.

use std::io::IsTerminal;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use pacs::dicomweb::{WebAuth, WebNode};
use pacs::net::{
    self, FindQuery, NodeBook, PacsNode, QueryModel, RetrieveOptions, RetrieveProgress, RetrieveReport,
    RetrieveRequest, ScpConfig, ScpEvent,
};
use pacs::secrets::Secret;
use pacs::store::Store;

use crate::config;

/// Our AE title when none is given.
pub const DEFAULT_OUR_AET: &str = "LUCENT";

/// Arguments of `lucent pacs`.
#[derive(Debug, clap::Args)]
pub struct PacsArgs {
    /// Boxed: the peer and TLS arguments make the commands large beside the CLI's other verbs.
    #[command(subcommand)]
    pub command: Box<PacsCommand>,
}

#[derive(Debug, clap::Subcommand)]
pub enum PacsCommand {
    /// Test the connection to a node (C-ECHO): OK, refused, timeout or AE rejected.
    Echo {
        #[command(flatten)]
        peer: PeerArgs,
        #[arg(long)]
        json: bool,
    },
    /// Query a node (C-FIND) for studies, or with --series for the series of the matching studies.
    Find {
        #[command(flatten)]
        peer: PeerArgs,
        #[command(flatten)]
        keys: KeyArgs,
        /// List series (of --study-uid, or of every matching study).
        #[arg(long)]
        series: bool,
        /// Stop after this many matches.
        #[arg(long)]
        limit: Option<usize>,
        #[arg(long)]
        json: bool,
    },
    /// Retrieve studies or series with C-GET into the store (only what the store lacks).
    Get {
        #[command(flatten)]
        peer: PeerArgs,
        #[command(flatten)]
        keys: KeyArgs,
        #[arg(long)]
        json: bool,
    },
    /// Retrieve with C-MOVE to Lucent's own Store SCP, started here for the duration.
    Move {
        #[command(flatten)]
        peer: PeerArgs,
        #[command(flatten)]
        keys: KeyArgs,
        /// The move destination (default: our AE title); the node must know it with our address
        /// and --scp-port.
        #[arg(long)]
        dest_aet: Option<String>,
        /// Port of the Store SCP started for the move.
        #[arg(long, default_value_t = 11112)]
        scp_port: u16,
        /// The Store SCP speaks DICOM TLS with this certificate chain (PEM; needs --scp-tls-key).
        #[arg(long, value_name = "FILE", requires = "scp_tls_key")]
        scp_tls_cert: Option<PathBuf>,
        /// The private key (PEM) of --scp-tls-cert.
        #[arg(long, value_name = "FILE", requires = "scp_tls_cert")]
        scp_tls_key: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Send files or folders (recursively, DICOM Part 10 files only) with C-STORE.
    Store {
        #[command(flatten)]
        peer: PeerArgs,
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Manage the saved nodes.
    Node {
        #[command(subcommand)]
        command: NodeCommand,
    },
}

// `Add` carries the DIMSE, TLS and DICOMweb arguments; the enum is parsed once per run.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, clap::Subcommand)]
pub enum NodeCommand {
    /// Add a node (or replace the one with the same name): a DIMSE node (--host --port --aet) or
    /// a DICOMweb node (--url).
    Add {
        name: String,
        #[arg(long, required_unless_present = "url")]
        host: Option<String>,
        #[arg(long, required_unless_present = "url")]
        port: Option<u16>,
        /// The node's AE title.
        #[arg(long, required_unless_present = "url")]
        aet: Option<String>,
        /// Our AE title towards it.
        #[arg(long, default_value = DEFAULT_OUR_AET)]
        our_aet: String,
        /// Seconds to open the connection.
        #[arg(long, default_value_t = net::node::DEFAULT_CONNECT_TIMEOUT_S)]
        connect_timeout: f64,
        /// Seconds the node may stay silent during an exchange.
        #[arg(long, default_value_t = net::node::DEFAULT_DIMSE_TIMEOUT_S)]
        timeout: f64,
        #[command(flatten)]
        tls: TlsArgs,
        #[command(flatten)]
        web: WebArgs,
    },
    /// List the saved nodes.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove a node.
    Remove { name: String },
}

/// Which peer to talk to.
#[derive(Debug, Clone, clap::Args)]
pub struct PeerArgs {
    /// A saved node (`lucent pacs node list`).
    #[arg(long, conflicts_with_all = ["host", "port", "aet"])]
    pub node: Option<String>,
    #[arg(long, requires_all = ["port", "aet"])]
    pub host: Option<String>,
    #[arg(long)]
    pub port: Option<u16>,
    /// The peer's AE title (called AE).
    #[arg(long)]
    pub aet: Option<String>,
    /// Our AE title (calling AE; default: the node's, else LUCENT).
    #[arg(long)]
    pub our_aet: Option<String>,
    /// Seconds the peer may stay silent (default: the node's, else 30).
    #[arg(long)]
    pub timeout: Option<f64>,
    #[command(flatten)]
    pub tls: TlsArgs,
}

/// DICOM TLS towards a peer (for a saved node: added to what it has).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TlsArgs {
    /// DICOM over TLS; the peer's certificate is always verified (Mozilla's roots and --tls-ca),
    /// for the host name given.
    #[arg(long)]
    pub tls: bool,
    /// Extra trusted CA certificates (PEM), e.g. the hospital's CA. Implies --tls.
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// Our client certificate chain (PEM) for peers that require mutual TLS. Implies --tls;
    /// needs --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

impl TlsArgs {
    /// Turns TLS on in `node` when asked, with the files made absolute (a saved node must not
    /// depend on the directory it was added from).
    fn apply(&self, node: &mut PacsNode) -> Result<()> {
        let absolute = |p: &PathBuf| std::path::absolute(p).with_context(|| format!("cannot resolve {}", p.display()));
        if let Some(ca) = &self.tls_ca {
            node.tls_ca_file = Some(absolute(ca)?);
        }
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            node.tls_cert_file = Some(absolute(cert)?);
            node.tls_key_file = Some(absolute(key)?);
        }
        node.tls |= self.tls || self.tls_ca.is_some() || self.tls_cert.is_some();
        Ok(())
    }
}

/// A DICOMweb node for `lucent pacs node add` (its CA file is --tls-ca). Secrets come from the
/// environment or a file, never from an argument value.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct WebArgs {
    /// Save a DICOMweb node with this service root (e.g. https://pacs.example.org/dicom-web)
    /// instead of a DIMSE node.
    #[arg(long, value_name = "URL", conflicts_with_all = ["host", "port", "aet", "tls_cert"])]
    pub url: Option<String>,
    /// Basic authentication as this user; the password comes from --password-env or
    /// --password-file.
    #[arg(long, requires = "url")]
    pub user: Option<String>,
    /// Read the basic-auth password from this environment variable.
    #[arg(long, value_name = "VAR", requires = "user", conflicts_with = "password_file")]
    pub password_env: Option<String>,
    /// Read the basic-auth password from this file (its first line).
    #[arg(long, value_name = "FILE", requires = "user")]
    pub password_file: Option<PathBuf>,
    /// Bearer-token authentication, the token read from this environment variable.
    #[arg(long, value_name = "VAR", requires = "url", conflicts_with_all = ["user", "token_file"])]
    pub token_env: Option<String>,
    /// Bearer-token authentication, the token read from this file (its first line).
    #[arg(long, value_name = "FILE", requires = "url", conflicts_with = "user")]
    pub token_file: Option<PathBuf>,
    /// Send the password or token even over plain http:// to a host other than this machine
    /// (anyone on the network path can read it). Without it such a node is refused.
    #[arg(long, requires = "url")]
    pub allow_plain_http_credentials: bool,
}

impl WebArgs {
    /// The DICOMweb node these arguments describe, validated (the plain-HTTP rule included).
    fn node(&self, name: &str, url: &str, timeout_s: f64, ca: Option<&Path>) -> Result<WebNode> {
        let mut node = WebNode::new(name, url.trim());
        node.timeout_s = timeout_s;
        node.allow_plain_http_credentials = self.allow_plain_http_credentials;
        if let Some(ca) = ca {
            node.ca_file = Some(std::path::absolute(ca).with_context(|| format!("cannot resolve {}", ca.display()))?);
        }
        node.auth = match (&self.user, &self.token_env, &self.token_file) {
            (Some(user), _, _) => {
                let password = read_secret("password", self.password_env.as_deref(), self.password_file.as_deref())?
                    .context("--user needs --password-env VAR or --password-file FILE")?;
                WebAuth::Basic { user: user.clone(), password }
            }
            (None, env, file) => match read_secret("token", env.as_deref(), file.as_deref())? {
                Some(token) => WebAuth::Bearer { token },
                None => WebAuth::None,
            },
        };
        node.validate()?;
        Ok(node)
    }
}

/// A password or token from an environment variable or a file's first line (never echoed).
fn read_secret(what: &str, env: Option<&str>, file: Option<&Path>) -> Result<Option<Secret>> {
    let value = if let Some(var) = env {
        let value = std::env::var(var).map_err(|e| match e {
            std::env::VarError::NotPresent => anyhow::anyhow!("the environment variable {var} (the {what}) is not set"),
            std::env::VarError::NotUnicode(_) => {
                anyhow::anyhow!("the environment variable {var} (the {what}) is not UTF-8")
            }
        })?;
        Secret::new(value)
    } else if let Some(path) = file {
        let text = Secret::new(
            std::fs::read_to_string(path).with_context(|| format!("reading the {what} file {}", path.display()))?,
        );
        Secret::new(text.expose().unwrap_or_default().lines().next().unwrap_or_default())
    } else {
        return Ok(None);
    };
    anyhow::ensure!(!value.expose().unwrap_or_default().is_empty(), "the {what} is empty");
    Ok(Some(value))
}

/// Query keys shared by find, get and move.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct KeyArgs {
    /// Patient name; `*` and `?` are wildcards.
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long)]
    pub patient_id: Option<String>,
    #[arg(long)]
    pub accession: Option<String>,
    #[arg(long)]
    pub study_uid: Option<String>,
    #[arg(long)]
    pub series_uid: Option<String>,
    /// A modality (CT, MR, CR ...).
    #[arg(long)]
    pub modality: Option<String>,
    /// Study date range YYYYMMDD-YYYYMMDD (either side may be empty).
    #[arg(long)]
    pub date: Option<String>,
    /// Use the Patient Root information model (default: Study Root).
    #[arg(long)]
    pub patient_root: bool,
}

impl KeyArgs {
    fn query(&self) -> Result<FindQuery> {
        let (study_date_from, study_date_to) =
            self.date.as_deref().map(crate::cli::parse_date_range).transpose()?.unwrap_or_default();
        Ok(FindQuery {
            model: if self.patient_root { QueryModel::PatientRoot } else { QueryModel::StudyRoot },
            patient_name: self.name.clone().unwrap_or_default(),
            patient_id: self.patient_id.clone().unwrap_or_default(),
            accession_number: self.accession.clone().unwrap_or_default(),
            study_date_from,
            study_date_to,
            modality: self.modality.clone().unwrap_or_default(),
            study_uid: self.study_uid.clone().unwrap_or_default(),
            series_uid: self.series_uid.clone().unwrap_or_default(),
            limit: None,
        })
    }
}

/// Resolves the peer: a saved node, or one made of the inline arguments.
pub fn resolve_peer(peer: &PeerArgs) -> Result<PacsNode> {
    let mut node = match (&peer.node, &peer.host) {
        (Some(name), _) => {
            let path = config::node_book_path();
            let book = NodeBook::load(&path)?;
            book.get(name)
                .cloned()
                .with_context(|| format!("no node {name:?} in {} (see `lucent pacs node list`)", path.display()))?
        }
        (None, Some(host)) => {
            let (Some(port), Some(aet)) = (peer.port, peer.aet.as_deref()) else {
                bail!("--host needs --port and --aet");
            };
            PacsNode::new("command line", aet, host, port, DEFAULT_OUR_AET)
        }
        (None, None) => bail!("name a peer: --node NAME, or --host H --port P --aet AE"),
    };
    if let Some(our) = &peer.our_aet {
        node.our_ae_title = our.clone();
    }
    if let Some(timeout) = peer.timeout {
        node.dimse_timeout_s = timeout;
    }
    peer.tls.apply(&mut node)?;
    node.validate()?;
    Ok(node)
}

pub fn run_pacs(args: &PacsArgs, store_dir: &Path) -> Result<()> {
    match args.command.as_ref() {
        PacsCommand::Echo { peer, json } => {
            let node = resolve_peer(peer)?;
            let verdict = net::echo(&node);
            if *json {
                println!("{}", serde_json::to_string_pretty(&verdict)?);
            } else {
                println!("C-ECHO {}: {verdict}", node.label());
            }
            anyhow::ensure!(verdict.is_ok(), "C-ECHO failed");
            Ok(())
        }
        PacsCommand::Find { peer, keys, series, limit, json } => {
            let node = resolve_peer(peer)?;
            let cancel = AtomicBool::new(false);
            let query = FindQuery { limit: *limit, ..keys.query()? };
            if *series {
                let study_uids: Vec<String> = if query.study_uid.is_empty() {
                    net::find_studies(&node, &FindQuery { modality: String::new(), ..query.clone() }, &cancel)?
                        .into_iter()
                        .map(|s| s.study_uid)
                        .collect()
                } else {
                    vec![query.study_uid.clone()]
                };
                let mut rows = Vec::new();
                for study_uid in study_uids {
                    let q = FindQuery {
                        study_uid,
                        patient_name: String::new(),
                        accession_number: String::new(),
                        study_date_from: String::new(),
                        study_date_to: String::new(),
                        ..query.clone()
                    };
                    rows.extend(net::find_series(&node, &q, &cancel)?);
                }
                if *json {
                    println!("{}", serde_json::to_string_pretty(&rows)?);
                } else {
                    for s in &rows {
                        println!(
                            "{:>4} {:<4} {:<32} {:>5} images  {}  (study {})",
                            s.series_number.map(|n| n.to_string()).unwrap_or_default(),
                            s.modality,
                            s.series_description,
                            s.instance_count.map(|n| n.to_string()).unwrap_or_else(|| "?".into()),
                            s.series_uid,
                            s.study_uid
                        );
                    }
                    println!("{} series", rows.len());
                }
            } else {
                let rows = net::find_studies(&node, &query, &cancel)?;
                if *json {
                    println!("{}", serde_json::to_string_pretty(&rows)?);
                } else {
                    for s in &rows {
                        println!(
                            "{:<8} {:<24} {:<12} {:<10} {:<28} {:>5} images  {}",
                            s.study_date,
                            s.patient_name,
                            s.patient_id,
                            s.modalities.join("\\"),
                            s.study_description,
                            s.instance_count.map(|n| n.to_string()).unwrap_or_else(|| "?".into()),
                            s.study_uid
                        );
                    }
                    println!("{} stud(ies)", rows.len());
                }
            }
            Ok(())
        }
        PacsCommand::Get { peer, keys, json } => {
            let node = resolve_peer(peer)?;
            let mut store = open_store(store_dir)?;
            let requests = targets(&node, keys)?;
            let reports = retrieve_all(&requests, *json, |request, progress, cancel| {
                net::retrieve_get(&node, request, &mut store, &RetrieveOptions::default(), progress, cancel)
            })?;
            finish(&reports, *json)
        }
        PacsCommand::Move { peer, keys, dest_aet, scp_port, scp_tls_cert, scp_tls_key, json } => {
            let node = resolve_peer(peer)?;
            let destination = dest_aet.clone().unwrap_or_else(|| node.our_ae_title.clone());
            let mut store = open_store(store_dir)?;
            let requests = targets(&node, keys)?;
            // The SCP takes deliveries from the PACS being asked, on every interface (the PACS
            // connects back to this machine), for the duration of the retrieve.
            let config = ScpConfig {
                tls_cert_file: scp_tls_cert.clone(),
                tls_key_file: scp_tls_key.clone(),
                allowed_calling_aes: vec![node.ae_title.trim().to_owned()],
                bind_address: std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
                ..ScpConfig::new(&destination, *scp_port)
            };
            let (scp, _events) = net::start_scp(&config, store_dir)
                .with_context(|| format!("starting the Store SCP on port {scp_port}"))?;
            let reports = retrieve_all(&requests, *json, |request, progress, cancel| {
                net::retrieve_move(
                    &node,
                    request,
                    &destination,
                    &mut store,
                    &RetrieveOptions::default(),
                    progress,
                    cancel,
                )
            });
            scp.shutdown();
            finish(&reports?, *json)
        }
        PacsCommand::Store { peer, paths, json } => {
            let node = resolve_peer(peer)?;
            let files = dicom_files(paths)?;
            anyhow::ensure!(!files.is_empty(), "no DICOM Part 10 file found");
            let cancel = AtomicBool::new(false);
            let mut printer = ProgressPrinter::new(*json);
            let report = net::store_files(&node, &files, &mut |p| printer.show("sent", p), &cancel)?;
            printer.done();
            if *json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!(
                    "Sent {} of {} file(s) ({:.1} MB) in {:.2} s ({:.0} MB/s); {} converted, {} warning(s), {} failed.",
                    report.sent,
                    files.len(),
                    report.bytes as f64 / 1e6,
                    report.elapsed_s,
                    report.bytes_per_s / 1e6,
                    report.converted,
                    report.warnings,
                    report.failed.len()
                );
                for f in &report.failed {
                    println!("  failed {}: {}", f.path.display(), f.reason);
                }
            }
            anyhow::ensure!(report.failed.is_empty(), "{} file(s) not stored", report.failed.len());
            Ok(())
        }
        PacsCommand::Node { command } => run_node(command),
    }
}

fn open_store(store_dir: &Path) -> Result<Store> {
    Store::open(store_dir).with_context(|| format!("opening store {}", store_dir.display()))
}

/// The studies or series to retrieve: the UIDs given, else the studies the keys match; with a
/// modality, only that modality's series.
fn targets(node: &PacsNode, keys: &KeyArgs) -> Result<Vec<RetrieveRequest>> {
    let cancel = AtomicBool::new(false);
    let query = keys.query()?;
    let model = query.model;
    if !query.series_uid.is_empty() {
        anyhow::ensure!(!query.study_uid.is_empty(), "--series-uid needs --study-uid");
        return Ok(vec![RetrieveRequest {
            model,
            patient_id: query.patient_id.clone(),
            study_uid: query.study_uid.clone(),
            series_uid: query.series_uid.clone(),
        }]);
    }
    let studies: Vec<(String, String)> = if query.study_uid.is_empty() {
        anyhow::ensure!(
            !(query.patient_name.is_empty()
                && query.patient_id.is_empty()
                && query.accession_number.is_empty()
                && query.study_date_from.is_empty()
                && query.study_date_to.is_empty()),
            "say what to retrieve: --study-uid, or keys (--name, --patient-id, --accession, --date)"
        );
        net::find_studies(node, &query, &cancel)?.into_iter().map(|s| (s.study_uid, s.patient_id)).collect()
    } else {
        vec![(query.study_uid.clone(), query.patient_id.clone())]
    };
    anyhow::ensure!(!studies.is_empty(), "no study matches");
    let mut out = Vec::new();
    for (study_uid, patient_id) in studies {
        let patient_id = if query.patient_id.is_empty() { patient_id } else { query.patient_id.clone() };
        if query.modality.is_empty() {
            out.push(RetrieveRequest { model, patient_id, study_uid, series_uid: String::new() });
        } else {
            let q = FindQuery {
                study_uid: study_uid.clone(),
                modality: query.modality.clone(),
                model,
                ..FindQuery::default()
            };
            for s in net::find_series(node, &q, &cancel)? {
                out.push(RetrieveRequest {
                    model,
                    patient_id: patient_id.clone(),
                    study_uid: study_uid.clone(),
                    series_uid: s.series_uid,
                });
            }
        }
    }
    anyhow::ensure!(!out.is_empty(), "no series of modality {} in the matching studies", query.modality);
    Ok(out)
}

fn retrieve_all(
    requests: &[RetrieveRequest],
    json: bool,
    mut retrieve: impl FnMut(
        &RetrieveRequest,
        &mut dyn FnMut(&RetrieveProgress),
        &AtomicBool,
    ) -> pacs::Result<RetrieveReport>,
) -> Result<Vec<RetrieveReport>> {
    let cancel = AtomicBool::new(false);
    let mut reports = Vec::new();
    for (i, request) in requests.iter().enumerate() {
        if !json {
            let what = if request.series_uid.is_empty() { "study" } else { "series" };
            let uid = if request.series_uid.is_empty() { &request.study_uid } else { &request.series_uid };
            eprintln!("[{}/{}] {what} {uid}", i + 1, requests.len());
        }
        let mut printer = ProgressPrinter::new(json);
        let report = retrieve(request, &mut |p| printer.show("received", p), &cancel)?;
        printer.done();
        reports.push(report);
    }
    Ok(reports)
}

fn finish(reports: &[RetrieveReport], json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(reports)?);
    } else {
        for r in reports {
            println!(
                "Received {} instance(s) ({:.1} MB) in {:.2} s ({:.0} MB/s); {} already in store; {} failed; {} missing.",
                r.received,
                r.bytes as f64 / 1e6,
                r.elapsed_s,
                r.bytes_per_s / 1e6,
                r.already_present,
                r.failed.len(),
                r.missing.len()
            );
            for w in &r.warnings {
                println!("  note: {w}");
            }
            for f in &r.failed {
                println!("  failed {}: {}", f.sop_instance_uid, f.reason);
            }
        }
    }
    let missing: usize = reports.iter().map(|r| r.missing.len()).sum();
    anyhow::ensure!(missing == 0, "{missing} instance(s) still missing (run again to fetch only those)");
    Ok(())
}

/// Progress on stderr: one updating line on a terminal, a line every 2 s otherwise.
struct ProgressPrinter {
    quiet: bool,
    tty: bool,
    last: Instant,
    shown: bool,
}

impl ProgressPrinter {
    fn new(quiet: bool) -> Self {
        Self { quiet, tty: std::io::stderr().is_terminal(), last: Instant::now(), shown: false }
    }

    fn show(&mut self, verb: &str, p: &RetrieveProgress) {
        if self.quiet || self.last.elapsed() < Duration::from_millis(if self.tty { 100 } else { 2000 }) {
            return;
        }
        self.last = Instant::now();
        let remaining = p.remaining.map(|r| format!(", {r} to go")).unwrap_or_default();
        let line = format!(
            "{} {verb}{remaining}, {} failed, {:.1} MB at {:.0} MB/s",
            p.done,
            p.failed,
            p.bytes as f64 / 1e6,
            p.megabytes_per_s()
        );
        if self.tty {
            eprint!("\r{line}   ");
        } else {
            eprintln!("{line}");
        }
        self.shown = true;
    }

    fn done(&self) {
        if self.shown && self.tty {
            eprintln!();
        }
    }
}

/// Part 10 files under `paths` (files as given; folders recursively, in name order).
fn dicom_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut stack = vec![path.clone()];
            let mut found = Vec::new();
            while let Some(dir) = stack.pop() {
                for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?.flatten() {
                    let p = entry.path();
                    if p.is_dir() {
                        stack.push(p);
                    } else if pacs::file::has_part10_prefix(&p).unwrap_or(false) {
                        found.push(p);
                    }
                }
            }
            found.sort();
            out.extend(found);
        } else {
            anyhow::ensure!(path.is_file(), "{} does not exist", path.display());
            out.push(path.clone());
        }
    }
    Ok(out)
}

fn run_node(command: &NodeCommand) -> Result<()> {
    let path = config::node_book_path();
    let mut book = NodeBook::load(&path)?;
    match command {
        NodeCommand::Add { name, host, port, aet, our_aet, connect_timeout, timeout, tls, web } => {
            if let Some(url) = &web.url {
                let node = web.node(name, url, *timeout, tls.tls_ca.as_deref())?;
                let secret = node.auth.secret().is_some();
                book.nodes.retain(|n| n.name != *name);
                match book.web.iter_mut().find(|n| n.name == *name) {
                    Some(slot) => *slot = node,
                    None => book.web.push(node),
                }
                book.web.sort_by(|a, b| a.name.cmp(&b.name));
                let store = pacs::secrets::SecretStore::beside(&path);
                book.save_with(&path, &store)?;
                println!(
                    "Saved DICOMweb node {name:?} in {}{}",
                    path.display(),
                    if secret { format!(" (its secret in {})", store.kind()) } else { String::new() }
                );
                return Ok(());
            }
            let (Some(host), Some(port), Some(aet)) = (host, port, aet) else {
                bail!("a DIMSE node needs --host, --port and --aet (or give --url for a DICOMweb node)");
            };
            let mut node = PacsNode {
                connect_timeout_s: *connect_timeout,
                dimse_timeout_s: *timeout,
                ..PacsNode::new(name, aet, host, *port, our_aet)
            };
            tls.apply(&mut node)?;
            book.upsert(node)?;
            book.web.retain(|n| n.name != *name);
            book.save(&path)?;
            println!("Saved node {name:?} in {}", path.display());
        }
        NodeCommand::List { json } => {
            if *json {
                // DIMSE nodes, then DICOMweb nodes (secrets as references only).
                let mut all: Vec<serde_json::Value> =
                    book.nodes.iter().map(serde_json::to_value).collect::<Result<_, _>>()?;
                all.extend(book.web.iter().map(serde_json::to_value).collect::<Result<Vec<_>, _>>()?);
                println!("{}", serde_json::to_string_pretty(&all)?);
            } else {
                if book.nodes.is_empty() && book.web.is_empty() {
                    println!("No nodes in {} (add one with `lucent pacs node add`)", path.display());
                }
                for n in &book.nodes {
                    println!(
                        "{:<16} {:<16} {}:{}  as {}{}",
                        n.name,
                        n.ae_title,
                        n.host,
                        n.port,
                        n.our_ae_title,
                        if n.tls { "  (TLS)" } else { "" }
                    );
                }
                for n in &book.web {
                    let auth = match &n.auth {
                        WebAuth::None => String::new(),
                        WebAuth::Basic { user, .. } => format!("  (basic auth as {user})"),
                        WebAuth::Bearer { .. } => "  (bearer token)".to_owned(),
                    };
                    println!("{:<16} DICOMweb {}{auth}", n.name, n.base_url);
                }
            }
        }
        NodeCommand::Remove { name } => {
            let web_before = book.web.len();
            book.web.retain(|n| n.name != *name);
            let removed_web = book.web.len() != web_before;
            anyhow::ensure!(book.remove(name) || removed_web, "no node {name:?} in {}", path.display());
            book.save(&path)?;
            println!("Removed node {name:?}");
        }
    }
    Ok(())
}

/// Arguments of `lucent scp`.
#[derive(Debug, clap::Args)]
pub struct ScpArgs {
    /// TCP port to listen on.
    #[arg(long, default_value_t = 11112)]
    pub port: u16,
    /// Our AE title (senders must call it).
    #[arg(long, default_value = DEFAULT_OUR_AET)]
    pub aet: String,
    /// Calling AE titles allowed, comma-separated. Without it nobody may send.
    #[arg(long, value_delimiter = ',')]
    pub allow: Vec<String>,
    /// Address to listen on: this machine only by default; 0.0.0.0 (or ::) for every interface.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: IpAddr,
    /// Speak DICOM TLS (only) with this certificate chain (PEM); needs --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// With TLS: require client certificates issued by these CA certificates (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// Answer each C-STORE once received, write in parallel and make everything durable before
    /// answering the release (for retrieves from an archive that keeps its copy); default: each
    /// instance is fsynced and indexed before its answer.
    #[arg(long)]
    pub commit_at_release: bool,
    /// Print events as JSON lines.
    #[arg(long)]
    pub json: bool,
}

/// Runs the Store SCP until the process is interrupted or killed.
pub fn run_scp(args: &ScpArgs, store_dir: &Path) -> Result<()> {
    let mut config = ScpConfig::new(&args.aet, args.port);
    config.bind_address = args.bind;
    config.allowed_calling_aes = args.allow.iter().map(|a| a.trim().to_owned()).filter(|a| !a.is_empty()).collect();
    config.tls_cert_file = args.tls_cert.clone();
    config.tls_key_file = args.tls_key.clone();
    config.tls_client_ca_file = args.tls_client_ca.clone();
    if args.commit_at_release {
        config.commit = net::ScpCommit::AtRelease;
    }
    let (scp, events) = net::start_scp(&config, store_dir)
        .with_context(|| format!("starting the Store SCP on {}:{}", args.bind, args.port))?;
    eprintln!(
        "Store SCP {} listening on {}{} into {} (calling AEs: {}); Ctrl-C to stop",
        args.aet,
        scp.local_addr(),
        if config.tls() { " (DICOM TLS)" } else { "" },
        store_dir.display(),
        if config.allowed_calling_aes.is_empty() {
            "none: every association is refused; name senders with --allow".to_owned()
        } else {
            config.allowed_calling_aes.join(",")
        }
    );
    for event in events.iter() {
        if args.json {
            println!("{}", serde_json::to_string(&event)?);
            continue;
        }
        match &event {
            ScpEvent::Stored { calling_ae, sop_instance_uid, bytes, new, .. } => println!(
                "{calling_ae}: stored {sop_instance_uid} ({:.1} kB){}",
                *bytes as f64 / 1e3,
                if *new { "" } else { ", already in store" }
            ),
            ScpEvent::Failed { calling_ae, sop_instance_uid, status, reason } => {
                println!("{calling_ae}: REFUSED {sop_instance_uid} (status {status:#06x}): {reason}")
            }
            ScpEvent::Echo { calling_ae } => println!("{calling_ae}: echo"),
            ScpEvent::Rejected { calling_ae, reason } => println!("{calling_ae}: association rejected: {reason}"),
            ScpEvent::Ended { calling_ae, stored, failed, error } => println!(
                "{calling_ae}: association ended, {stored} stored, {failed} refused{}",
                error.as_ref().map(|e| format!(" ({e})")).unwrap_or_default()
            ),
        }
    }
    scp.shutdown();
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[derive(Debug, clap::Parser)]
    struct TestCli {
        #[command(flatten)]
        pacs: PacsArgs,
    }

    /// The DICOMweb node `node add` would save (the book is not touched).
    fn web_node(args: &[&str]) -> Result<WebNode> {
        let cli = TestCli::try_parse_from([&["lucent", "node", "add"], args].concat())?;
        let PacsCommand::Node { command: NodeCommand::Add { name, timeout, tls, web, .. } } = *cli.pacs.command else {
            bail!("not node add");
        };
        let url = web.url.clone().context("no --url")?;
        web.node(&name, &url, timeout, tls.tls_ca.as_deref())
    }

    #[test]
    fn node_add_takes_secrets_from_a_file_never_from_an_argument() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "s3cret-pw\nignored\n").unwrap();
        let file = file.to_str().unwrap();
        let url = "https://pacs.example.org/dicom-web";
        let node = web_node(&["w", "--url", url, "--user", "reader", "--password-file", file]).unwrap();
        let WebAuth::Basic { user, password } = &node.auth else { panic!("{node:?}") };
        assert_eq!((user.as_str(), password.expose()), ("reader", Some("s3cret-pw")));
        let node = web_node(&["w", "--url", url, "--token-file", file]).unwrap();
        assert!(matches!(&node.auth, WebAuth::Bearer { token } if token.expose() == Some("s3cret-pw")));
        // No flag takes the secret itself.
        assert!(web_node(&["w", "--url", url, "--user", "reader", "--password", "pw"]).is_err());
        assert!(web_node(&["w", "--url", url, "--token", "tok"]).is_err());
        // A user needs a password source; an unset variable is named, its value never shown.
        let err = web_node(&["w", "--url", url, "--user", "reader"]).unwrap_err().to_string();
        assert!(err.contains("--password-env"), "{err}");
        let err = web_node(&["w", "--url", url, "--user", "r", "--password-env", "LUCENT_TEST_UNSET_VAR_1"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("LUCENT_TEST_UNSET_VAR_1"), "{err}");
    }

    #[test]
    fn node_add_refuses_credentials_over_plain_http_unless_allowed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "s3cret-pw").unwrap();
        let file = file.to_str().unwrap();
        let plain = ["w", "--url", "http://pacs.example.org/dicom-web", "--user", "r", "--password-file", file];
        let err = format!("{:#}", web_node(&plain).unwrap_err());
        assert!(err.contains("`w`") && err.contains("--allow-plain-http-credentials"), "{err}");
        assert!(!err.contains("s3cret-pw"), "{err}");
        assert!(web_node(&[&plain[..], &["--allow-plain-http-credentials"]].concat()).is_ok());
        let local = ["w", "--url", "http://127.0.0.1:8042/dicom-web", "--user", "r", "--password-file", file];
        assert!(web_node(&local).is_ok());
    }
}
