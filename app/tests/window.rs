//! The real application in a real window: `lucent --demo` under Xvfb, screenshot with
//! ImageMagick's `import`, and a check that the viewports show images (not a blank window).
//! The last screenshot is kept at `target/lucent-window-test.png` for a person to look at.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn have(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Mean and standard deviation of the grey values in a region (fractions of the image).
fn region_stats(img: &image::RgbImage, x0: f32, x1: f32, y0: f32, y1: f32) -> (f64, f64) {
    let (w, h) = img.dimensions();
    let mut values = Vec::new();
    for y in (h as f32 * y0) as u32..(h as f32 * y1) as u32 {
        for x in (w as f32 * x0) as u32..(w as f32 * x1) as u32 {
            let p = img.get_pixel(x, y);
            values.push((f64::from(p[0]) + f64::from(p[1]) + f64::from(p[2])) / 3.0);
        }
    }
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / values.len() as f64;
    (mean, var.sqrt())
}

#[test]
fn the_demo_opens_in_a_real_window_and_shows_images() {
    if !have("xvfb-run") || !have("import") {
        assert!(
            std::env::var("LUCENT_REQUIRE_TEST_DATA").is_err(),
            "xvfb-run and imagemagick are required (cargo xtask setup)"
        );
        eprintln!("SKIP: xvfb-run or imagemagick missing");
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let shot = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/lucent-window-test.png");
    let script = r#"
        "$0" --demo & app=$!
        i=0
        while [ $i -lt 60 ]; do
            sleep 2; i=$((i+1))
            import -window root "$1.tmp.png" 2>/dev/null && mv "$1.tmp.png" "$1"
            [ -f "$1.done" ] && break
        done
        kill $app; wait $app 2>/dev/null; true
    "#;
    let mut child = Command::new("xvfb-run")
        .args(["-a", "-s", "-screen 0 1400x900x24", "sh", "-c", script])
        .arg(env!("CARGO_BIN_EXE_lucent"))
        .arg(&shot)
        .env("HOME", home.path())
        .env_remove("XDG_DATA_HOME")
        .env_remove("LUCENT_STORE")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Poll the screenshots until both viewports show an image.
    let started = Instant::now();
    let mut last = (0.0, 0.0, 0.0, 0.0);
    let mut shown = false;
    while started.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_secs(2));
        let Ok(img) = image::open(&shot) else { continue };
        let img = img.to_rgb8();
        // Viewport 1 (left of the central area) and viewport 2 (right).
        let (m1, s1) = region_stats(&img, 0.30, 0.55, 0.25, 0.75);
        let (m2, s2) = region_stats(&img, 0.70, 0.95, 0.25, 0.75);
        last = (m1, s1, m2, s2);
        if s1 > 20.0 && s2 > 20.0 && (10.0..245.0).contains(&m1) && (10.0..245.0).contains(&m2) {
            shown = true;
            break;
        }
    }
    std::fs::write(shot.with_extension("png.done"), b"").ok();
    let _ = child.wait();
    std::fs::remove_file(shot.with_extension("png.done")).ok();
    assert!(shown, "the window stayed blank: viewport stats (mean, sd) {last:?}; see {}", shot.display());
}
