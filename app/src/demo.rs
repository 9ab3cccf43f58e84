//! The bundled demo, imported into a demo store of its own:
//! * **real anatomy first**: five real chest radiographs from NIH ChestX-ray14 (a normal, an
//!   effusion, a nodule, a consolidation, a pneumothorax by the NIH labels) and 61 slices of a real
//!   low-dose chest CT with a right hilar mass (TCIA ACRIN-NSCLC-FDG-PET), bundled in
//!   `assets/demo/` with their attribution in `assets/README.md`; the radiographs are written as
//!   CR objects under invented patient names, the CT is imported as TCIA de-identified it;
//! * synthetic studies Lucent generates itself, with invented Korean and English patients (priors,
//!   MONOCHROME1, two LDCTs with inserted nodules), for what the real cases do not show;
//! * when `cargo xtask setup` has fetched them, two real, openly licensed, de-identified test
//!   images (see [`real_demo_files`]).

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use anyhow::{Context, Result};
use pacs::store::Store;
use pacs::synth::{self, CtSeriesSpec, CxrLesion, Nodule, NoduleKind, PatientSpec, RadiographSpec, Side};

/// Bumped whenever the generated demo changes, so old demo stores are rebuilt.
pub const DEMO_VERSION: &str = "4";

fn patient(
    name: &str,
    id: &str,
    sex: &str,
    birth: &str,
    study_seed: &str,
    date: &str,
    description: &str,
) -> PatientSpec {
    PatientSpec {
        sex: sex.into(),
        birth_date: birth.into(),
        study_date: date.into(),
        study_description: description.into(),
        ..PatientSpec::new(name, id, study_seed)
    }
}

fn cxr(seed: &str, p: PatientSpec, lesions: Vec<CxrLesion>, monochrome1: bool) -> RadiographSpec {
    RadiographSpec {
        patient: p,
        lesions,
        monochrome1,
        description: "Chest PA".into(),
        ..RadiographSpec::chest_detector(seed)
    }
}

/// Real images added to the demo when present: pydicom-data's chest radiograph RG1 (CR,
/// MONOCHROME1, MIT licence) and pydicom's real CT slice `CT_small.dcm` (MIT), both de-identified
/// test files. They live in `$LUCENT_DEMO_REAL_DATA`, else where `cargo xtask setup` puts them
/// (`target/lucent-data/` in the repository); missing ones are left out.
pub fn real_demo_files() -> Vec<PathBuf> {
    let base = std::env::var_os("LUCENT_DEMO_REAL_DATA")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/lucent-data"));
    ["pydicom-data/RG1_UNCI.dcm", "pydicom-test-files/CT_small.dcm"]
        .iter()
        .map(|rel| base.join(rel))
        .filter(|p| p.is_file())
        .collect()
}

/// The real demo cases bundled in the repository (`assets/demo/`, or `$LUCENT_DEMO_ASSETS`).
fn demo_assets_dir() -> PathBuf {
    std::env::var_os("LUCENT_DEMO_ASSETS")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/demo"))
}

/// One bundled NIH radiograph: file, what the NIH labels say, and the invented patient it is
/// shown under (age and sex are the NIH's).
struct RealRadiograph {
    image: &'static str,
    finding: &'static str,
    name: &'static str,
    id: &'static str,
    sex: &'static str,
    birth: &'static str,
    date: &'static str,
}

/// The patients the workstation's `--demo` opens first: the real effusion radiograph (its AI
/// contour is what a demo shows) and the real ACRIN CT.
pub const DEMO_OPENS_RADIOGRAPH: &str = "REAL-102";
pub const DEMO_OPENS_CT: &str = "ACRIN-NSCLC-FDG-PET-042";

const REAL_RADIOGRAPHS: [RealRadiograph; 5] = [
    RealRadiograph {
        image: "00007684_000",
        finding: "no finding",
        name: "HAN^JIWOO=한^지우",
        id: "REAL-101",
        sex: "M",
        birth: "19540402",
        date: "20260320",
    },
    RealRadiograph {
        image: "00017926_000",
        finding: "effusion",
        name: "BROWN^DAVID",
        id: "REAL-102",
        sex: "M",
        birth: "19650911",
        date: "20260320",
    },
    RealRadiograph {
        image: "00008386_000",
        finding: "nodule",
        name: "YOON^SUJIN=윤^수진",
        id: "REAL-103",
        sex: "M",
        birth: "19770123",
        date: "20260321",
    },
    RealRadiograph {
        image: "00015501_000",
        finding: "consolidation",
        name: "GARCIA^ANA",
        id: "REAL-104",
        sex: "M",
        birth: "19490705",
        date: "20260321",
    },
    RealRadiograph {
        image: "00005067_000",
        finding: "pneumothorax",
        name: "KANG^MIRAE=강^미래",
        id: "REAL-105",
        sex: "F",
        birth: "19680214",
        date: "20260322",
    },
];

/// Writes the bundled NIH radiographs as CR objects under `dir` (8-bit PNG values scaled to
/// 12 bits; the NIH gives no pixel spacing: 0.42 mm, a 43 cm field over 1024 pixels, is assumed,
/// as `assets/README.md` says).
fn write_real_radiographs(dir: &Path) -> Result<Vec<PathBuf>> {
    let source = demo_assets_dir().join("cxr-nih");
    let mut files = Vec::new();
    for r in &REAL_RADIOGRAPHS {
        let png = source.join(format!("{}.png", r.image));
        let grey = image::open(&png).with_context(|| format!("reading {}", png.display()))?.into_luma8();
        let (columns, rows) = (u16::try_from(grey.width())?, u16::try_from(grey.height())?);
        let values: Vec<u16> = grey.as_raw().iter().map(|&v| (u32::from(v) * 4095 / 255) as u16).collect();
        let rendered = pacs::synth::RenderedChest {
            columns: usize::from(columns),
            rows: usize::from(rows),
            values,
            lung_field: Vec::new(),
            masks: Vec::new(),
        };
        let spec = RadiographSpec {
            seed: format!("demo-nih-{}", r.image),
            patient: patient(r.name, r.id, r.sex, r.birth, &format!("demo-nih-{}", r.image), r.date, "CXR PA"),
            rows,
            columns,
            imager_pixel_spacing_mm: 0.42,
            monochrome1: false,
            lesions: Vec::new(),
            series_number: 1,
            description: format!("Chest PA (real: NIH {}, {})", r.image, r.finding),
            view_position: "PA".into(),
            acquisition: 0,
        };
        let path = dir.join(&spec.seed).join("CR0001.dcm");
        synth::write_rendered_radiograph(&path, &spec, &rendered)
            .with_context(|| format!("writing demo radiograph {}", r.image))?;
        files.push(path);
    }
    Ok(files)
}

/// The bundled slices of the real ACRIN chest CT (imported as they are).
fn real_ct_files() -> Result<Vec<PathBuf>> {
    let dir = demo_assets_dir().join("ct-acrin-chest");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "dcm"))
        .collect();
    files.sort();
    Ok(files)
}

/// Writes the demo DICOM files under `dir` and returns them (the real cases first).
pub fn write_demo_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = write_real_radiographs(dir)?;
    files.extend(real_ct_files()?);
    let radiographs = [
        cxr(
            "demo-cxr-normal",
            patient(
                "KIM^MINJUN=김^민준",
                "DEMO-001",
                "M",
                "19580312",
                "demo-cxr-normal",
                "20260310",
                "CXR PA (normal)",
            ),
            vec![],
            false,
        ),
        cxr(
            "demo-cxr-nodule",
            patient("LEE^SEOYEON=이^서연", "DEMO-002", "F", "19640721", "demo-cxr-nodule", "20260311", "CXR PA"),
            vec![CxrLesion::nodule(Side::Right, [0.55, 0.35], 22.0, 0.95)],
            true,
        ),
        // The same patient a year earlier: same anatomy, another acquisition, a smaller nodule.
        RadiographSpec {
            acquisition: 1,
            ..cxr(
                "demo-cxr-nodule",
                patient(
                    "LEE^SEOYEON=이^서연",
                    "DEMO-002",
                    "F",
                    "19640721",
                    "demo-cxr-nodule-prior",
                    "20250305",
                    "CXR PA (prior)",
                ),
                vec![CxrLesion::nodule(Side::Right, [0.55, 0.35], 15.0, 0.85)],
                true,
            )
        },
        cxr(
            "demo-cxr-effusion",
            patient("SMITH^JOHN", "DEMO-003", "M", "19511102", "demo-cxr-effusion", "20260312", "CXR PA"),
            vec![
                CxrLesion::effusion(Side::Left, 90.0),
                CxrLesion::consolidation(Side::Right, [0.55, 0.72], 85.0, 0.85),
            ],
            false,
        ),
        cxr(
            "demo-cxr-ptx-e",
            patient("PARK^JIHO=박^지호", "DEMO-004", "M", "19890430", "demo-cxr-pneumothorax", "20260313", "CXR PA"),
            vec![CxrLesion::pneumothorax(Side::Right, 35.0, 0.8)],
            false,
        ),
    ];
    for spec in &radiographs {
        let folder =
            if spec.acquisition == 0 { spec.seed.clone() } else { format!("{}-{}", spec.seed, spec.acquisition) };
        let path = dir.join(folder).join("CR0001.dcm");
        synth::write_radiograph(&path, spec).with_context(|| format!("writing demo radiograph {}", spec.seed))?;
        files.push(path);
    }

    let mut ct1 = CtSeriesSpec::chest("demo-ldct-1", 120, 512);
    ct1.patient =
        patient("CHOI^YUNA=최^유나", "DEMO-005", "F", "19620915", "demo-ldct-1", "20260314", "LDCT lung screening");
    ct1.description = "LDCT 2.5mm".into();
    ct1.noise_hu = 25.0;
    ct1.nodules = vec![
        Nodule { center_mm: [70.0, -20.0, -140.0], diameter_mm: 9.0, kind: NoduleKind::Solid },
        Nodule { center_mm: [-80.0, 10.0, -90.0], diameter_mm: 14.0, kind: NoduleKind::GroundGlass },
    ];
    let mut ct2 = CtSeriesSpec::chest("demo-ldct-2", 120, 512);
    ct2.patient = patient("JONES^MARY", "DEMO-006", "F", "19550128", "demo-ldct-2", "20260315", "LDCT lung screening");
    ct2.description = "LDCT 2.5mm".into();
    ct2.noise_hu = 25.0;
    ct2.nodules = vec![Nodule { center_mm: [-65.0, -30.0, -160.0], diameter_mm: 12.0, kind: NoduleKind::PartSolid }];
    for spec in [&ct1, &ct2] {
        files.extend(
            synth::write_ct_series(&dir.join(&spec.seed), spec)
                .with_context(|| format!("writing demo CT {}", spec.seed))?,
        );
    }
    Ok(files)
}

/// Makes sure the demo store exists and is current; returns its directory.
pub fn ensure_demo_store(store_dir: &Path, progress: &(dyn Fn(&str) + Sync)) -> Result<PathBuf> {
    let marker = store_dir.join("demo-version");
    let real = real_demo_files();
    // The real files count in the version: a later setup that fetched them rebuilds the store.
    let version = format!("{DEMO_VERSION}+{}", real.len());
    if std::fs::read_to_string(&marker).is_ok_and(|v| v.trim() == version) {
        return Ok(store_dir.to_path_buf());
    }
    if store_dir.exists() {
        std::fs::remove_dir_all(store_dir)
            .with_context(|| format!("removing old demo store {}", store_dir.display()))?;
    }
    progress("generating demo studies");
    let source = store_dir.with_extension("source");
    if source.exists() {
        std::fs::remove_dir_all(&source).ok();
    }
    let mut files = write_demo_files(&source)?;
    files.extend(real);
    progress("importing demo studies");
    let mut store = Store::open(store_dir)?;
    let cancel = AtomicBool::new(false);
    let summary = pacs::import::import_paths(&mut store, &files, &Default::default(), &|_| {}, &cancel)?;
    anyhow::ensure!(summary.skipped.is_empty(), "demo import skipped {} file(s)", summary.skipped.len());
    std::fs::remove_dir_all(&source).ok();
    std::fs::write(&marker, &version).with_context(|| format!("writing {}", marker.display()))?;
    Ok(store_dir.to_path_buf())
}
