//! 2-D and 3-D resampling on `f32` grids, with exactly defined interpolations.
//!
//! Coordinates: the centre of pixel (column `c`, row `r`) is at (`c`, `r`); a grid of `n` pixels
//! covers `[-0.5, n - 0.5]`. Resizing `n_in` to `n_out` pixels maps output pixel `o` to input
//! coordinate `(o + 0.5) * n_in / n_out - 0.5` (half-pixel centres, like `scipy.ndimage.zoom` with
//! `grid_mode=True`, OpenCV and PyTorch's `align_corners=False`).
//!
//! * [`Interpolation::Bilinear`] reproduces `skimage.transform.resize(image, shape, order=1,
//!   mode="constant", cval=0, clip=True, preserve_range=True, anti_aliasing=antialias)` (what
//!   torchxrayvision's `XRayResizer` calls): when shrinking along an axis and `antialias` is set, a
//!   Gaussian pre-filter with `sigma = max(0, (n_in / n_out - 1) / 2)` (truncated at
//!   `int(4 * sigma + 0.5)` pixels, zeros outside the image) as `scipy.ndimage.gaussian_filter`;
//!   then bilinear sampling at the half-pixel coordinates above, with zeros outside the image
//!   (scipy's `grid-constant`); then clipping to the input's `[min, max]`.
//! * [`Interpolation::Area`]: each output pixel is the exact area-weighted mean of the input pixels
//!   its footprint `[o * n_in / n_out, (o + 1) * n_in / n_out]` covers (OpenCV's `INTER_AREA` when
//!   shrinking; when enlarging it is a box average too, which OpenCV replaces by bilinear).
//! * [`Interpolation::Nearest`]: input pixel `floor((o + 0.5) * n_in / n_out)`.

use crate::manifest::Interpolation;

/// A single-channel image, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Plane {
    pub width: usize,
    pub height: usize,
    pub data: Vec<f32>,
}

impl Plane {
    pub fn new(width: usize, height: usize, data: Vec<f32>) -> Self {
        debug_assert_eq!(data.len(), width * height);
        Self { width, height, data }
    }

    #[inline]
    pub fn get(&self, x: usize, y: usize) -> f32 {
        self.data[y * self.width + x]
    }

    /// The `width` x `height` rectangle at (`x0`, `y0`); the caller keeps it inside the image.
    pub fn crop(&self, x0: usize, y0: usize, width: usize, height: usize) -> Plane {
        let mut data = Vec::with_capacity(width * height);
        for y in y0..y0 + height {
            let row = y * self.width;
            data.extend_from_slice(&self.data[row + x0..row + x0 + width]);
        }
        Plane { width, height, data }
    }
}

/// torchxrayvision's `XRayCenterCrop`: `(x0, y0, side)` of the centred square of side
/// `min(width, height)`, with `x0 = width / 2 - side / 2` in integer arithmetic.
pub fn center_square(width: usize, height: usize) -> (usize, usize, usize) {
    let side = width.min(height);
    (width / 2 - side / 2, height / 2 - side / 2, side)
}

/// Resize `src` to `width` x `height` with `interpolation` (see the module docs).
pub fn resize(src: &Plane, width: usize, height: usize, interpolation: Interpolation, antialias: bool) -> Plane {
    if src.width == width && src.height == height {
        return src.clone();
    }
    match interpolation {
        Interpolation::Bilinear => resize_bilinear_skimage(src, width, height, antialias),
        Interpolation::Area => resize_area(src, width, height),
        Interpolation::Nearest => resize_nearest(src, width, height),
    }
}

/// `scipy.ndimage`'s 1-D Gaussian kernel: radius `int(4 * sigma + 0.5)`, normalised weights.
pub fn gaussian_kernel(sigma: f64) -> Vec<f64> {
    let radius = (4.0 * sigma + 0.5) as i64;
    let mut k: Vec<f64> = (-radius..=radius).map(|x| (-0.5 * (x * x) as f64 / (sigma * sigma)).exp()).collect();
    let sum: f64 = k.iter().sum();
    for w in &mut k {
        *w /= sum;
    }
    k
}

/// Separable Gaussian filter, zeros outside (`mode="constant", cval=0`); `sigma <= 1e-15` skips an
/// axis as scipy does. `sigma = [along x, along y]`. Rows are filtered (y) first, like scipy's axis order.
pub fn gaussian_filter_zero_pad(src: &Plane, sigma: [f64; 2]) -> Vec<f64> {
    let rows: Vec<usize> = (0..src.height).collect();
    let cols: Vec<usize> = (0..src.width).collect();
    gaussian_filter_sampled(src, sigma, &rows, &cols)
}

/// [`gaussian_filter_zero_pad`] evaluated only at the grid `rows` x `cols` (row-major, `rows.len()`
/// by `cols.len()`), with the same arithmetic in the same order, so the values are identical. A
/// resize reads the filtered image at a few rows and columns only: for 2048 x 2500 -> 224 x 224
/// this is ~2% of the work of filtering everything.
pub fn gaussian_filter_sampled(src: &Plane, sigma: [f64; 2], rows: &[usize], cols: &[usize]) -> Vec<f64> {
    let (w, h) = (src.width, src.height);
    let ky = (sigma[1] > 1e-15).then(|| gaussian_kernel(sigma[1]));
    let kx = (sigma[0] > 1e-15).then(|| gaussian_kernel(sigma[0]));
    let mut out = Vec::with_capacity(rows.len() * cols.len());
    // One filtered (along y) row at a time, reused.
    let mut row_buf = vec![0.0f64; w];
    for &y in rows {
        match &ky {
            Some(k) => {
                row_buf.fill(0.0);
                let r = k.len() / 2;
                // Taps whose source row lies inside the image: sy = y + i - r in [0, h).
                let i_first = r.saturating_sub(y);
                let i_end = k.len().min(h + r - y);
                for (i, &kw) in k.iter().enumerate().take(i_end).skip(i_first) {
                    let src_row = &src.data[(y + i - r) * w..(y + i - r + 1) * w];
                    for (acc, &v) in row_buf.iter_mut().zip(src_row) {
                        *acc += kw * f64::from(v);
                    }
                }
                // scipy stores each pass in the array's dtype (float32 here).
                for v in &mut row_buf {
                    *v = f64::from(*v as f32);
                }
            }
            None => {
                for (acc, &v) in row_buf.iter_mut().zip(&src.data[y * w..(y + 1) * w]) {
                    *acc = f64::from(v);
                }
            }
        }
        match &kx {
            Some(k) => {
                let r = k.len() / 2;
                for &x in cols {
                    let i_first = r.saturating_sub(x);
                    let i_end = k.len().min(w + r - x);
                    let mut acc = 0.0;
                    for (i, &kw) in k.iter().enumerate().take(i_end).skip(i_first) {
                        acc += kw * row_buf[x + i - r];
                    }
                    out.push(f64::from(acc as f32));
                }
            }
            None => out.extend(cols.iter().map(|&x| row_buf[x])),
        }
    }
    out
}

/// Bilinear taps for one axis: for each output index, `(i0, w0, i1, w1)` where an index of
/// `usize::MAX` stands for "outside the image" (value 0).
fn linear_taps(n_in: usize, n_out: usize) -> Vec<(usize, f64, usize, f64)> {
    let scale = n_in as f64 / n_out as f64;
    (0..n_out)
        .map(|o| {
            let c = (o as f64 + 0.5) * scale - 0.5;
            let f = c.floor();
            let t = c - f;
            let i0 = f as i64;
            let idx = |i: i64| if i >= 0 && i < n_in as i64 { i as usize } else { usize::MAX };
            (idx(i0), 1.0 - t, idx(i0 + 1), t)
        })
        .collect()
}

/// The sorted distinct in-image indices `taps` read; rewrites each tap to its position in that list.
fn compact_taps(taps: &mut [(usize, f64, usize, f64)]) -> Vec<usize> {
    let mut used: Vec<usize> = taps.iter().flat_map(|&(i0, _, i1, _)| [i0, i1]).filter(|&i| i != usize::MAX).collect();
    used.sort_unstable();
    used.dedup();
    let position = |i: usize| if i == usize::MAX { i } else { used.binary_search(&i).unwrap_or(usize::MAX) };
    for tap in taps.iter_mut() {
        tap.0 = position(tap.0);
        tap.2 = position(tap.2);
    }
    used
}

fn resize_bilinear_skimage(src: &Plane, width: usize, height: usize, antialias: bool) -> Plane {
    let shrinking = width < src.width || height < src.height;
    let mut tx = linear_taps(src.width, width);
    let mut ty = linear_taps(src.height, height);
    // Only the rows and columns the taps read are filtered; the taps are renumbered to index them.
    let rows = compact_taps(&mut ty);
    let cols = compact_taps(&mut tx);
    let sigma = if antialias && shrinking {
        let sx = ((src.width as f64 / width as f64) - 1.0).max(0.0) / 2.0;
        let sy = ((src.height as f64 / height as f64) - 1.0).max(0.0) / 2.0;
        [sx, sy]
    } else {
        [0.0, 0.0]
    };
    let filtered = gaussian_filter_sampled(src, sigma, &rows, &cols);
    let n_cols = cols.len();
    let at = |x: usize, y: usize| if x == usize::MAX || y == usize::MAX { 0.0 } else { filtered[y * n_cols + x] };
    let (lo, hi) = min_max(&src.data);
    let mut data = Vec::with_capacity(width * height);
    for &(y0, wy0, y1, wy1) in &ty {
        for &(x0, wx0, x1, wx1) in &tx {
            let v = wy0 * (wx0 * at(x0, y0) + wx1 * at(x1, y0)) + wy1 * (wx0 * at(x0, y1) + wx1 * at(x1, y1));
            data.push(v as f32);
        }
    }
    // skimage `clip=True`: clip to the input range, but keep exact cval (0) pixels when 0 is outside
    // that range and inside the output's (its `preserve_cval`).
    let (olo, ohi) = min_max(&data);
    let preserve_zero = !(lo <= 0.0 && 0.0 <= hi) && olo <= 0.0 && 0.0 <= ohi;
    for v in &mut data {
        if !(preserve_zero && *v == 0.0) {
            *v = v.clamp(lo, hi);
        }
    }
    Plane { width, height, data }
}

fn min_max(v: &[f32]) -> (f32, f32) {
    v.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &x| (lo.min(x), hi.max(x)))
}

/// Area weights for one axis: for each output index, the `(input index, weight)` pairs, weights summing to 1.
fn area_taps(n_in: usize, n_out: usize) -> Vec<Vec<(usize, f64)>> {
    let scale = n_in as f64 / n_out as f64;
    (0..n_out)
        .map(|o| {
            let (a, b) = (o as f64 * scale, (o as f64 + 1.0) * scale);
            let first = a.floor() as usize;
            let last = (b.ceil() as usize).min(n_in);
            (first..last)
                .filter_map(|i| {
                    let overlap = (b.min(i as f64 + 1.0) - a.max(i as f64)) / scale;
                    (overlap > 1e-12).then_some((i, overlap))
                })
                .collect()
        })
        .collect()
}

fn resize_area(src: &Plane, width: usize, height: usize) -> Plane {
    let tx = area_taps(src.width, width);
    let ty = area_taps(src.height, height);
    let mut data = Vec::with_capacity(width * height);
    for wy in &ty {
        for wx in &tx {
            let mut acc = 0.0f64;
            for &(y, a) in wy {
                for &(x, b) in wx {
                    acc += a * b * f64::from(src.get(x, y));
                }
            }
            data.push(acc as f32);
        }
    }
    Plane { width, height, data }
}

fn resize_nearest(src: &Plane, width: usize, height: usize) -> Plane {
    let pick = |n_in: usize, n_out: usize| -> Vec<usize> {
        let scale = n_in as f64 / n_out as f64;
        (0..n_out).map(|o| (((o as f64 + 0.5) * scale).floor() as usize).min(n_in - 1)).collect()
    };
    let (px, py) = (pick(src.width, width), pick(src.height, height));
    let mut data = Vec::with_capacity(width * height);
    for &y in &py {
        for &x in &px {
            data.push(src.get(x, y));
        }
    }
    Plane { width, height, data }
}

/// Plain bilinear sampling with edge clamping (no anti-aliasing), for maps and CT slices.
pub fn resize_bilinear_clamped(src: &Plane, width: usize, height: usize) -> Plane {
    if src.width == width && src.height == height {
        return src.clone();
    }
    let taps = |n_in: usize, n_out: usize| -> Vec<(usize, usize, f32)> {
        let scale = n_in as f64 / n_out as f64;
        (0..n_out)
            .map(|o| {
                let c = ((o as f64 + 0.5) * scale - 0.5).clamp(0.0, (n_in - 1) as f64);
                let i0 = c.floor() as usize;
                (i0, (i0 + 1).min(n_in - 1), (c - i0 as f64) as f32)
            })
            .collect()
    };
    let (tx, ty) = (taps(src.width, width), taps(src.height, height));
    let mut data = Vec::with_capacity(width * height);
    for &(y0, y1, fy) in &ty {
        for &(x0, x1, fx) in &tx {
            let top = src.get(x0, y0) * (1.0 - fx) + src.get(x1, y0) * fx;
            let bottom = src.get(x0, y1) * (1.0 - fx) + src.get(x1, y1) * fx;
            data.push(top * (1.0 - fy) + bottom * fy);
        }
    }
    Plane { width, height, data }
}

/// Trilinear resampling of a volume (`dims = [x, y, z]`, index `(z * y_n + y) * x_n + x`) to a new
/// grid where output voxel `o` along an axis sits at input coordinate `o * step` (voxel centres
/// aligned at index 0, so patient geometry maps simply); coordinates past the last voxel clamp.
pub fn resample_trilinear(src: &[f32], dims: [usize; 3], out_dims: [usize; 3], step: [f64; 3]) -> Vec<f32> {
    let taps = |axis: usize| -> Vec<(usize, usize, f32)> {
        let n_in = dims[axis];
        (0..out_dims[axis])
            .map(|o| {
                let c = (o as f64 * step[axis]).clamp(0.0, (n_in - 1) as f64);
                let i0 = c.floor() as usize;
                (i0, (i0 + 1).min(n_in - 1), (c - i0 as f64) as f32)
            })
            .collect()
    };
    let (tx, ty, tz) = (taps(0), taps(1), taps(2));
    let (nx, ny) = (dims[0], dims[1]);
    let at = |x: usize, y: usize, z: usize| src[(z * ny + y) * nx + x];
    let mut out = Vec::with_capacity(out_dims.iter().product());
    for &(z0, z1, fz) in &tz {
        for &(y0, y1, fy) in &ty {
            for &(x0, x1, fx) in &tx {
                let lerp = |a: f32, b: f32, t: f32| a + (b - a) * t;
                let c00 = lerp(at(x0, y0, z0), at(x1, y0, z0), fx);
                let c10 = lerp(at(x0, y1, z0), at(x1, y1, z0), fx);
                let c01 = lerp(at(x0, y0, z1), at(x1, y0, z1), fx);
                let c11 = lerp(at(x0, y1, z1), at(x1, y1, z1), fx);
                out.push(lerp(lerp(c00, c10, fy), lerp(c01, c11, fy), fz));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn center_square_matches_xrv() {
        // xrv: startx = x // 2 - crop // 2
        assert_eq!(center_square(1024, 1024), (0, 0, 1024));
        assert_eq!(center_square(7, 4), (1, 0, 4));
        assert_eq!(center_square(4, 9), (0, 2, 4));
    }

    #[test]
    fn gaussian_kernel_matches_scipy() {
        // scipy.ndimage._gaussian_kernel1d(1.0, 0, 4)
        let k = gaussian_kernel(1.0);
        assert_eq!(k.len(), 9);
        assert!((k[4] - 0.398_943_469_356_097_76).abs() < 1e-12, "{k:?}");
        assert!((k.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn area_of_an_integer_factor_is_the_block_mean() {
        let p = Plane::new(4, 2, vec![1.0, 3.0, 5.0, 7.0, 1.0, 3.0, 5.0, 7.0]);
        let r = resize(&p, 2, 1, Interpolation::Area, false);
        assert_eq!(r.data, vec![2.0, 6.0]);
    }

    #[test]
    fn nearest_picks_half_pixel_centres() {
        let p = Plane::new(4, 1, vec![0.0, 1.0, 2.0, 3.0]);
        assert_eq!(resize(&p, 2, 1, Interpolation::Nearest, false).data, vec![1.0, 3.0]);
        assert_eq!(resize(&p, 8, 1, Interpolation::Nearest, false).data, vec![0.0, 0.0, 1.0, 1.0, 2.0, 2.0, 3.0, 3.0]);
    }

    #[test]
    fn bilinear_of_a_constant_is_constant_inside_and_clipped() {
        let p = Plane::new(40, 40, vec![5.0; 1600]);
        let r = resize(&p, 10, 10, Interpolation::Bilinear, true);
        // Centre pixels are far from the zero padding; every pixel is clipped to [5, 5].
        assert!(r.data.iter().all(|&v| (v - 5.0).abs() < 1e-6), "{:?}", r.data);
    }

    #[test]
    fn sampled_filter_equals_the_full_filter_at_its_points() {
        let (w, h) = (37, 23);
        let data: Vec<f32> = (0..w * h).map(|i| ((i * 7919) % 251) as f32 - 100.0).collect();
        let p = Plane::new(w, h, data);
        for sigma in [[1.3, 2.1], [0.0, 1.7], [2.4, 0.0], [0.0, 0.0], [9.0, 9.0]] {
            let full = gaussian_filter_zero_pad(&p, sigma);
            let (rows, cols) = (vec![0, 3, 11, 22], vec![0, 1, 18, 36]);
            let sampled = gaussian_filter_sampled(&p, sigma, &rows, &cols);
            let expected: Vec<f64> =
                rows.iter().flat_map(|&y| cols.iter().map(move |&x| (y, x))).map(|(y, x)| full[y * w + x]).collect();
            assert_eq!(sampled, expected, "sigma {sigma:?}");
        }
    }

    #[test]
    fn filter_matches_a_direct_two_dimensional_sum() {
        // Independent reference: the 2-D sum with zero padding (f64 throughout; the filter rounds
        // each pass to f32, hence the tolerance).
        let (w, h) = (15, 11);
        let data: Vec<f32> = (0..w * h).map(|i| ((i * 31) % 17) as f32).collect();
        let p = Plane::new(w, h, data.clone());
        let sigma = [1.1, 0.8];
        let (kx, ky) = (gaussian_kernel(sigma[0]), gaussian_kernel(sigma[1]));
        let (rx, ry) = ((kx.len() / 2) as isize, (ky.len() / 2) as isize);
        let full = gaussian_filter_zero_pad(&p, sigma);
        for y in 0..h as isize {
            for x in 0..w as isize {
                let mut acc = 0.0;
                for (j, wy) in ky.iter().enumerate() {
                    for (i, wx) in kx.iter().enumerate() {
                        let (sx, sy) = (x + i as isize - rx, y + j as isize - ry);
                        if (0..w as isize).contains(&sx) && (0..h as isize).contains(&sy) {
                            acc += wx * wy * f64::from(data[sy as usize * w + sx as usize]);
                        }
                    }
                }
                assert!((full[y as usize * w + x as usize] - acc).abs() < 1e-4, "({x}, {y})");
            }
        }
    }

    #[test]
    fn trilinear_identity_and_halving() {
        let src: Vec<f32> = (0..27).map(|v| v as f32).collect();
        assert_eq!(resample_trilinear(&src, [3, 3, 3], [3, 3, 3], [1.0; 3]), src);
        let out = resample_trilinear(&src, [3, 3, 3], [5, 1, 1], [0.5, 1.0, 1.0]);
        assert_eq!(out, vec![0.0, 0.5, 1.0, 1.5, 2.0]);
    }
}
