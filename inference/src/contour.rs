//! Iso-contours (marching squares) and connected regions of a 2-D map at a threshold.
//!
//! Coordinates are in map pixels with the centre of pixel (column `c`, row `r`) at (`c`, `r`).
//! The map is treated as surrounded by values below the level, so every contour is closed; where a
//! region touches the border its contour runs along the map's outer edge (half a pixel out).

use std::collections::HashMap;

use crate::resample::Plane;

/// A closed polygon, `[x, y]` points; the last point connects back to the first.
pub type Polygon = Vec<[f64; 2]>;

/// Marching squares at `level`: pixels with `value >= level` are inside. Saddles are resolved by
/// the mean of the four corners. Contours with fewer than 3 points are dropped.
pub fn marching_squares(map: &Plane, level: f32) -> Vec<Polygon> {
    let (w, h) = (map.width as isize, map.height as isize);
    // Padded grid: index (r, c) in -1..=h, -1..=w; None outside the map.
    let value = |r: isize, c: isize| -> Option<f32> {
        (r >= 0 && r < h && c >= 0 && c < w).then(|| map.data[(r * w + c) as usize])
    };
    let inside = |v: Option<f32>| v.is_some_and(|v| v >= level);
    // Edge ids: horizontal edge (r, c)-(r, c+1) and vertical edge (r, c)-(r+1, c), padded coordinates.
    #[derive(Clone, Copy, PartialEq, Eq, Hash)]
    enum Edge {
        H(isize, isize),
        V(isize, isize),
    }
    let point = |e: Edge| -> [f64; 2] {
        let (r0, c0, r1, c1) = match e {
            Edge::H(r, c) => (r, c, r, c + 1),
            Edge::V(r, c) => (r, c, r + 1, c),
        };
        let (a, b) = (value(r0, c0), value(r1, c1));
        let t = match (a, b) {
            (Some(a), Some(b)) if a != b => f64::from((level - a) / (b - a)).clamp(0.0, 1.0),
            _ => 0.5,
        };
        [c0 as f64 + t * (c1 - c0) as f64, r0 as f64 + t * (r1 - r0) as f64]
    };
    let mut segments: Vec<(Edge, Edge)> = Vec::new();
    for r in -1..h {
        for c in -1..w {
            let (tl, tr, br, bl) = (value(r, c), value(r, c + 1), value(r + 1, c + 1), value(r + 1, c));
            let case = (usize::from(inside(tl)) << 3)
                | (usize::from(inside(tr)) << 2)
                | (usize::from(inside(br)) << 1)
                | usize::from(inside(bl));
            let (top, right, bottom, left) = (Edge::H(r, c), Edge::V(r, c + 1), Edge::H(r + 1, c), Edge::V(r, c));
            let centre_inside = || {
                let s: f32 = [tl, tr, br, bl].iter().map(|v| v.unwrap_or(f32::NEG_INFINITY)).sum();
                s / 4.0 >= level
            };
            match case {
                0 | 15 => {}
                1 | 14 => segments.push((left, bottom)),
                2 | 13 => segments.push((bottom, right)),
                3 | 12 => segments.push((left, right)),
                4 | 11 => segments.push((top, right)),
                6 | 9 => segments.push((top, bottom)),
                7 | 8 => segments.push((left, top)),
                5 => {
                    if centre_inside() {
                        segments.push((left, top));
                        segments.push((bottom, right));
                    } else {
                        segments.push((top, right));
                        segments.push((left, bottom));
                    }
                }
                10 => {
                    if centre_inside() {
                        segments.push((top, right));
                        segments.push((left, bottom));
                    } else {
                        segments.push((left, top));
                        segments.push((bottom, right));
                    }
                }
                _ => {}
            }
        }
    }
    // Link segments sharing an edge crossing into closed loops.
    let mut by_edge: HashMap<Edge, Vec<usize>> = HashMap::new();
    for (i, (a, b)) in segments.iter().enumerate() {
        by_edge.entry(*a).or_default().push(i);
        by_edge.entry(*b).or_default().push(i);
    }
    let mut used = vec![false; segments.len()];
    let mut polygons = Vec::new();
    for start in 0..segments.len() {
        if used[start] {
            continue;
        }
        used[start] = true;
        let (first, mut cur) = segments[start];
        let mut poly = vec![point(first)];
        while cur != first {
            poly.push(point(cur));
            let next = by_edge.get(&cur).and_then(|v| v.iter().copied().find(|&s| !used[s]));
            let Some(s) = next else { break };
            used[s] = true;
            let (a, b) = segments[s];
            cur = if a == cur { b } else { a };
        }
        if poly.len() >= 3 {
            polygons.push(poly);
        }
    }
    polygons
}

/// A connected region (8-connectivity) of pixels `>= level`.
#[derive(Debug, Clone, PartialEq)]
pub struct Region {
    /// Inclusive pixel bounds: `[column_min, row_min, column_max, row_max]`.
    pub bounds: [usize; 4],
    pub pixel_count: usize,
    pub peak: f32,
    /// Position of the peak, `[column, row]`.
    pub peak_at: [usize; 2],
}

/// Connected regions of `map >= level`, largest peak first.
pub fn regions(map: &Plane, level: f32) -> Vec<Region> {
    let (w, h) = (map.width, map.height);
    let mut label = vec![false; w * h];
    let mut out = Vec::new();
    let mut stack = Vec::new();
    for start in 0..w * h {
        if label[start] || map.data[start] < level {
            continue;
        }
        label[start] = true;
        stack.push(start);
        let mut region = Region {
            bounds: [start % w, start / w, start % w, start / w],
            pixel_count: 0,
            peak: f32::NEG_INFINITY,
            peak_at: [start % w, start / w],
        };
        while let Some(i) = stack.pop() {
            let (x, y) = (i % w, i / w);
            region.pixel_count += 1;
            region.bounds =
                [region.bounds[0].min(x), region.bounds[1].min(y), region.bounds[2].max(x), region.bounds[3].max(y)];
            if map.data[i] > region.peak {
                region.peak = map.data[i];
                region.peak_at = [x, y];
            }
            for dy in -1isize..=1 {
                for dx in -1isize..=1 {
                    let (nx, ny) = (x as isize + dx, y as isize + dy);
                    if nx < 0 || ny < 0 || nx >= w as isize || ny >= h as isize {
                        continue;
                    }
                    let j = ny as usize * w + nx as usize;
                    if !label[j] && map.data[j] >= level {
                        label[j] = true;
                        stack.push(j);
                    }
                }
            }
        }
        out.push(region);
    }
    out.sort_by(|a, b| b.peak.total_cmp(&a.peak));
    out
}

/// Signed area of a polygon (shoelace), positive when counter-clockwise in a y-up frame.
pub fn polygon_area(p: &[[f64; 2]]) -> f64 {
    let n = p.len();
    (0..n).map(|i| p[i][0] * p[(i + 1) % n][1] - p[(i + 1) % n][0] * p[i][1]).sum::<f64>() / 2.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(n: usize, cx: f64, cy: f64, r: f64) -> Plane {
        let mut data = vec![0.0; n * n];
        for y in 0..n {
            for x in 0..n {
                let d = ((x as f64 - cx).powi(2) + (y as f64 - cy).powi(2)).sqrt();
                data[y * n + x] = (1.0 - d / (2.0 * r)).max(0.0) as f32; // 0.5 at radius r
            }
        }
        Plane::new(n, n, data)
    }

    #[test]
    fn a_cone_gives_one_circle_at_its_radius() {
        let map = disk(40, 20.0, 18.0, 6.0);
        let polys = marching_squares(&map, 0.5);
        assert_eq!(polys.len(), 1);
        for p in &polys[0] {
            let d = ((p[0] - 20.0).powi(2) + (p[1] - 18.0).powi(2)).sqrt();
            assert!((d - 6.0).abs() < 0.1, "point {p:?} at {d}");
        }
        let area = polygon_area(&polys[0]).abs();
        assert!((area - std::f64::consts::PI * 36.0).abs() < 2.0, "{area}");
    }

    #[test]
    fn two_blobs_two_contours_and_regions() {
        let mut map = disk(30, 7.0, 7.0, 3.0);
        let other = disk(30, 22.0, 20.0, 4.0);
        for (a, b) in map.data.iter_mut().zip(&other.data) {
            *a = a.max(*b * 0.9);
        }
        assert_eq!(marching_squares(&map, 0.5).len(), 2);
        let r = regions(&map, 0.5);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].peak_at, [7, 7]);
        assert!(r[1].bounds[0] >= 17 && r[1].bounds[2] <= 26, "{:?}", r[1]);
    }

    #[test]
    fn regions_touching_the_border_close_along_it() {
        let map = Plane::new(3, 3, vec![1.0; 9]);
        let polys = marching_squares(&map, 0.5);
        assert_eq!(polys.len(), 1);
        let area = polygon_area(&polys[0]).abs();
        // The square [-0.5, 2.5]^2 with its corners cut: 9 - 4 * 0.125.
        assert!((area - 8.5).abs() < 1e-9, "{area}");
    }

    #[test]
    fn nothing_above_level_nothing_found() {
        let map = Plane::new(4, 4, vec![0.1; 16]);
        assert!(marching_squares(&map, 0.5).is_empty());
        assert!(regions(&map, 0.5).is_empty());
    }
}
