//! The PNG plot of `lucent eval`: one ROC panel per model with a curve per label (its AUROC in the
//! legend), and a FROC panel for CT detectors (sensitivity against false positives per scan, log
//! scale 1/16 to 16), and a PSNR panel for CT denoisers (each slice's PSNR, low-dose input and
//! denoised, against the reference). Drawn with `plotters` into an RGB buffer (text through ab_glyph and Lucent's
//! bundled font, so nothing is looked up on the system) and written with `image`.

use std::path::Path;
use std::sync::OnceLock;

use anyhow::{Context, Result};
use plotters::prelude::*;

use crate::eval_cli::{EvalReport, ModelEval};

/// Panel size, pixels.
const PANEL: (u32, u32) = (720, 620);
const FONT: &str = "sans-serif";

/// Curve colours (Okabe–Ito, distinguishable with common colour-vision deficiencies).
const COLOURS: [RGBColor; 8] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(0, 0, 0),
    RGBColor(240, 228, 66),
];

/// The curve colour of the `k`-th label (also used by the GUI).
pub fn colour(k: usize) -> [u8; 3] {
    let c = COLOURS[k % COLOURS.len()];
    [c.0, c.1, c.2]
}

fn register_font() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED
        .get_or_init(|| plotters::style::register_font(FONT, FontStyle::Normal, crate::gui::i18n::HANGUL_FONT).is_ok());
    anyhow::ensure!(ok, "the bundled font could not be loaded for the plot");
    Ok(())
}

fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("drawing the plot: {e}")
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;

/// What a panel shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Panel {
    Roc,
    Froc,
    Denoise,
}

fn denoise_panel(area: &Area<'_>, model: &ModelEval) -> Result<()> {
    let Some(d) = &model.denoise else { return Ok(()) };
    let values = d.per_slice.iter().flat_map(|s| [s.input.psnr_db, s.output.psnr_db]).filter(|v| v.is_finite());
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (lo, hi) = if lo.is_finite() { ((lo - 1.0).floor(), (hi + 1.0).ceil()) } else { (0.0, 1.0) };
    let n = d.per_slice.len();
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!(
                "PSNR: {} {} ({} slices; mean {:.2} -> {:.2} dB)",
                model.model_id, model.model_version, n, d.input.psnr_db, d.output.psnr_db
            ),
            (FONT, 22),
        )
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(56)
        .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), lo..hi)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("slice (pairs in order)")
        .x_labels(n.clamp(2, 12))
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_desc(format!("PSNR dB, HU window [{}, {}]", d.window.min_hu, d.window.max_hu))
        .label_style((FONT, 15))
        .axis_desc_style((FONT, 16))
        .max_light_lines(1)
        .light_line_style(RGBColor(240, 240, 240))
        .draw()
        .map_err(err)?;
    for (name, colour, pick) in [
        ("low-dose input", RGBColor(120, 120, 120), (|s| s.input.psnr_db) as fn(&crate::eval_cli::SliceQuality) -> f64),
        ("denoised", COLOURS[0], |s| s.output.psnr_db),
    ] {
        let points: Vec<(f64, f64)> = d.per_slice.iter().enumerate().map(|(k, s)| (k as f64, pick(s))).collect();
        chart
            .draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))
            .map_err(err)?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(3)));
        chart.draw_series(points.into_iter().map(|p| Circle::new(p, 4, colour.filled()))).map_err(err)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .label_font((FONT, 16))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    Ok(())
}

fn roc_panel(area: &Area<'_>, model: &ModelEval) -> Result<()> {
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!(
                "ROC: {} {} ({} {})",
                model.model_id,
                model.model_version,
                model.cases,
                if model.task == "cxr" { "images" } else { "scans" }
            ),
            (FONT, 22),
        )
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..1f64, 0f64..1f64)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("1 - specificity (false positive rate)")
        .y_desc("sensitivity")
        .label_style((FONT, 15))
        .axis_desc_style((FONT, 16))
        .max_light_lines(1)
        .light_line_style(RGBColor(240, 240, 240))
        .draw()
        .map_err(err)?;
    chart
        .draw_series(LineSeries::new([(0.0, 0.0), (1.0, 1.0)], RGBColor(170, 170, 170).stroke_width(1)))
        .map_err(err)?;
    for label in &model.labels {
        let Some(roc) = &label.metrics.roc else { continue };
        let colour = COLOURS[label.index % COLOURS.len()];
        let name = format!(
            "{}  {}  (n={}/{})",
            label.label,
            crate::eval_cli::auroc_text(&label.metrics),
            label.metrics.positives,
            label.metrics.negatives
        );
        chart
            .draw_series(LineSeries::new(roc.iter().map(|p| (p.fpr, p.tpr)), colour.stroke_width(3)))
            .map_err(err)?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], colour.stroke_width(3)));
        // The manifest's operating point.
        if let (Some(sens), Some(spec)) = (label.metrics.sensitivity, label.metrics.specificity) {
            chart.draw_series([Circle::new((1.0 - spec, sens), 5, colour.filled())]).map_err(err)?;
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .label_font((FONT, 15))
        .background_style(WHITE.mix(0.9))
        .border_style(RGBColor(120, 120, 120))
        .draw()
        .map_err(err)?;
    Ok(())
}

fn froc_panel(area: &Area<'_>, model: &ModelEval) -> Result<()> {
    let Some(froc) = &model.froc else { return Ok(()) };
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!(
                "FROC: {} ({} scan(s), {} lesion(s), CPM {})",
                model.model_id,
                froc.scans,
                froc.lesions,
                froc.cpm.map_or_else(|| "n/a".to_owned(), |c| format!("{c:.3}"))
            ),
            (FONT, 22),
        )
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(56)
        .build_cartesian_2d(-4f64..4f64, 0f64..1f64)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("false positives per scan")
        .y_desc("lesion sensitivity")
        .x_labels(9)
        .x_label_formatter(&|v| {
            let r = 2f64.powf(*v);
            if r >= 1.0 { format!("{r:.0}") } else { format!("1/{:.0}", 1.0 / r) }
        })
        .label_style((FONT, 15))
        .axis_desc_style((FONT, 16))
        .max_light_lines(1)
        .light_line_style(RGBColor(240, 240, 240))
        .draw()
        .map_err(err)?;
    let log = |fps: f64| fps.max(1.0 / 16.0).log2().clamp(-4.0, 4.0);
    let mut steps = vec![(-4.0, 0.0)];
    for p in &froc.curve {
        let x = log(p.fps_per_scan);
        if let Some(&(_, y)) = steps.last() {
            steps.push((x, y));
        }
        steps.push((x, p.sensitivity));
    }
    if let Some(&(_, y)) = steps.last() {
        steps.push((4.0, y));
    }
    let colour = COLOURS[0];
    chart.draw_series(LineSeries::new(steps, colour.stroke_width(3))).map_err(err)?;
    chart
        .draw_series(froc.at_fp_rates.iter().map(|&(r, s)| Circle::new((log(r), s), 5, colour.filled())))
        .map_err(err)?;
    Ok(())
}

/// Renders the report's plot as an RGB image (`None` when there is nothing to draw).
pub fn render(report: &EvalReport) -> Result<Option<image::RgbImage>> {
    register_font()?;
    let mut panels: Vec<(&ModelEval, Panel)> = Vec::new();
    for m in &report.models {
        if m.denoise.is_some() {
            panels.push((m, Panel::Denoise));
        }
        if m.froc.is_some() {
            panels.push((m, Panel::Froc));
        }
        if m.labels.iter().any(|l| l.metrics.roc.is_some()) {
            panels.push((m, Panel::Roc));
        }
    }
    if panels.is_empty() {
        return Ok(None);
    }
    let cols = panels.len().min(2) as u32;
    let rows = (panels.len() as u32).div_ceil(cols);
    let (w, h) = (PANEL.0 * cols, PANEL.1 * rows);
    let mut buffer = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buffer, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let areas = root.split_evenly((rows as usize, cols as usize));
        for ((model, panel), area) in panels.iter().zip(areas.iter()) {
            match panel {
                Panel::Roc => roc_panel(area, model)?,
                Panel::Froc => froc_panel(area, model)?,
                Panel::Denoise => denoise_panel(area, model)?,
            }
        }
        root.present().map_err(err)?;
    }
    Ok(Some(image::RgbImage::from_raw(w, h, buffer).context("plot buffer size")?))
}

/// Writes the plot as PNG.
pub fn write_png(report: &EvalReport, path: &Path) -> Result<()> {
    let Some(img) = render(report)? else {
        anyhow::bail!("nothing to plot: no label has both positive and negative cases");
    };
    img.save(path).with_context(|| format!("writing {}", path.display()))
}
