//! Overlay planes (60xx) of real files decode to bitmaps placed on the image.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use lucent_tests::test_data;

#[test]
fn overlay_planes_of_real_files() {
    let Some(data) = test_data("pydicom-data") else { return };
    let Some(tests) = test_data("pydicom-test-files") else { return };
    for path in [data.join("MR-SIEMENS-DICOM-WithOverlays.dcm"), tests.join("examples_overlay.dcm")] {
        let image = pacs::file::load_image(&path, 0).unwrap();
        assert!(!image.overlays.is_empty(), "{} has an overlay plane", path.display());
        for o in &image.overlays {
            assert!((0x6000..=0x601E).contains(&o.group));
            assert_eq!(o.bits.len(), (o.rows * o.columns) as usize);
            let set = o.bits.iter().filter(|&&b| b == 1).count();
            assert!(set > 0 && set < o.bits.len(), "{}: {set} bits set", path.display());
        }
    }
    // A file without overlays has none.
    assert!(pacs::file::load_image(&data.join("RG1_UNCR.dcm"), 0).unwrap().overlays.is_empty());
}
