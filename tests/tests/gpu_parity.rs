//! The shader's window/level matches the CPU reference (`pacs::pixels`) within one grey level,
//! for signed and unsigned 16-bit data, every VOI function, inversion and MONOCHROME1.
//! Runs on whatever adapter wgpu finds (Mesa lavapipe in CI).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use pacs::pixels::{ModalityLut, PixelTransform, Voi, VoiFunction, Window};
use pacs::{Frame, Photometric, Samples};
use render::offscreen::{headless_device, render_to_rgba};
use render::{ImageParams, ImageRenderer, ViewTransform};

fn to_render_voi(f: VoiFunction) -> render::VoiFunction {
    match f {
        VoiFunction::Linear => render::VoiFunction::Linear,
        VoiFunction::LinearExact => render::VoiFunction::LinearExact,
        VoiFunction::Sigmoid => render::VoiFunction::Sigmoid,
    }
}

#[test]
fn shader_window_level_matches_the_cpu_reference() {
    let (device, queue, adapter) = match pollster::block_on(headless_device()) {
        Ok(d) => d,
        Err(e) => {
            assert!(
                std::env::var("LUCENT_REQUIRE_TEST_DATA").is_err(),
                "no GPU adapter (install mesa-vulkan-drivers): {e}"
            );
            eprintln!("SKIP: no GPU adapter: {e}");
            return;
        }
    };
    println!("adapter: {adapter}");
    let renderer = ImageRenderer::new(&device, render::offscreen::OFFSCREEN_FORMAT);
    let (w, h) = (64u32, 48u32);
    // A ramp over the whole 12-bit range plus noise-like values.
    let unsigned: Vec<u16> = (0..w * h).map(|i| ((i * 4093) % 4096) as u16).collect();
    let signed: Vec<i16> = unsigned.iter().map(|&v| v as i16 - 1024).collect();

    let cases = [
        (
            Samples::U16(unsigned.clone()),
            ModalityLut::Rescale { slope: 1.0, intercept: -1024.0 },
            Photometric::Monochrome2,
        ),
        (Samples::I16(signed.clone()), ModalityLut::Identity, Photometric::Monochrome2),
        (Samples::U16(unsigned.clone()), ModalityLut::Identity, Photometric::Monochrome1),
    ];
    let windows = [
        Window { center: 40.0, width: 400.0, function: VoiFunction::Linear },
        Window { center: -600.0, width: 1500.0, function: VoiFunction::Linear },
        Window { center: 300.0, width: 1000.0, function: VoiFunction::LinearExact },
        Window { center: 0.0, width: 800.0, function: VoiFunction::Sigmoid },
    ];
    let mut checked = 0;
    for (samples, modality, photometric) in &cases {
        let frame = Frame {
            columns: w,
            rows: h,
            samples_per_pixel: 1,
            photometric: *photometric,
            bits_stored: 12,
            samples: samples.clone(),
        };
        let transform = PixelTransform::simple(modality.clone(), "", *photometric);
        let image = match samples {
            Samples::U16(v) => renderer.upload(&device, &queue, w, h, render::Samples::U16(v)).unwrap(),
            Samples::I16(v) => renderer.upload(&device, &queue, w, h, render::Samples::I16(v)).unwrap(),
            _ => unreachable!(),
        };
        let (slope, intercept) = modality.linear().unwrap();
        for window in &windows {
            for user_invert in [false, true] {
                let cpu = transform.render_u8(&frame, &Voi::Window(*window), user_invert);
                let view = ViewTransform {
                    viewport_px: [w as f32, h as f32],
                    image_size: [w as f32, h as f32],
                    zoom: 1.0,
                    aspect: 1.0,
                    pan_px: [0.0, 0.0],
                    rotation_quarters: 0,
                    flip_horizontal: false,
                    flip_vertical: false,
                };
                let params = ImageParams {
                    ndc_to_pixel: view.ndc_to_pixel(),
                    rescale_slope: slope as f32,
                    rescale_intercept: intercept as f32,
                    window_center: window.center as f32,
                    window_width: window.width as f32,
                    voi_function: to_render_voi(window.function),
                    invert: transform.inverts_for_display() != user_invert,
                    smooth: false,
                    padding_range: None,
                };
                let gpu = render_to_rgba(&device, &queue, &renderer, &image, &params, w, h).unwrap();
                let mut worst = 0i32;
                for (i, &expected) in cpu.iter().enumerate() {
                    let got = gpu[i * 4];
                    worst = worst.max((i32::from(got) - i32::from(expected)).abs());
                }
                assert!(
                    worst <= 1,
                    "{photometric:?} {window:?} invert {user_invert}: worst difference {worst} grey levels"
                );
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 24);
}
