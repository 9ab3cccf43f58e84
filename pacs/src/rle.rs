//! DICOM RLE Lossless (PS3.5 Annex G), for every sample size (8, 16 and 32 bit, 1 or 3 samples).
//!
//! The dicom-rs RLE decoder rejects 32-bit data; this one follows the standard exactly: a
//! 64-byte header of segment offsets, one PackBits segment per byte plane, most significant
//! byte plane first, one set of planes per sample.

use crate::error::{Error, Result};

/// Decodes one RLE frame into little-endian, pixel-interleaved bytes.
pub(crate) fn decode(
    data: &[u8],
    columns: usize,
    rows: usize,
    samples_per_pixel: usize,
    bits_allocated: usize,
) -> Result<Vec<u8>> {
    let err = |detail: String| Error::decode("RLE Lossless", detail);
    if data.len() < 64 {
        return Err(err(format!("frame is {} bytes, shorter than the 64-byte header", data.len())));
    }
    let word = |i: usize| u32::from_le_bytes([data[i * 4], data[i * 4 + 1], data[i * 4 + 2], data[i * 4 + 3]]) as usize;
    let segments = word(0);
    let bytes_per_sample = bits_allocated.div_ceil(8);
    let expected = samples_per_pixel * bytes_per_sample;
    if segments != expected {
        return Err(err(format!(
            "{segments} segments, expected {expected} for {samples_per_pixel} sample(s) of {bits_allocated} bits"
        )));
    }
    let pixels = columns * rows;
    let mut out = vec![0u8; pixels * expected];
    let mut plane = Vec::with_capacity(pixels);
    for segment in 0..segments {
        let start = word(segment + 1);
        let end = if segment + 1 < segments { word(segment + 2) } else { data.len() };
        if start < 64 || start > end || end > data.len() {
            return Err(err(format!("segment {segment} offsets {start}..{end} are outside the frame")));
        }
        packbits(&data[start..end], pixels, &mut plane);
        if plane.len() < pixels {
            return Err(err(format!("segment {segment} decodes to {} bytes, expected {pixels}", plane.len())));
        }
        let sample = segment / bytes_per_sample;
        // Segments go from the most significant byte down; output is little-endian.
        let byte = bytes_per_sample - 1 - segment % bytes_per_sample;
        for (p, &value) in plane.iter().take(pixels).enumerate() {
            out[(p * samples_per_pixel + sample) * bytes_per_sample + byte] = value;
        }
    }
    Ok(out)
}

/// PackBits: a header byte n; 0..=127 copies n+1 literal bytes, -127..=-1 repeats the next byte 1-n times.
fn packbits(input: &[u8], limit: usize, out: &mut Vec<u8>) {
    out.clear();
    let mut i = 0;
    while i < input.len() && out.len() < limit {
        let n = input[i] as i8;
        i += 1;
        if n >= 0 {
            let count = n as usize + 1;
            let end = (i + count).min(input.len());
            out.extend_from_slice(&input[i..end]);
            i = end;
        } else if n != -128 {
            let Some(&value) = input.get(i) else { break };
            out.extend(std::iter::repeat_n(value, 1 + (-(n as i16)) as usize));
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packbits_literal_and_run() {
        let mut out = Vec::new();
        packbits(&[2, 1, 2, 3, 0xFE, 9], 10, &mut out);
        assert_eq!(out, vec![1, 2, 3, 9, 9, 9]);
    }

    #[test]
    fn sixteen_bit_planes_become_little_endian() {
        // One 2x1 frame of 16-bit samples 0x0102 and 0x0304: high-byte plane then low-byte plane.
        let mut frame = vec![0u8; 64];
        frame[0] = 2;
        frame[4] = 64;
        frame[8] = 67;
        frame.extend_from_slice(&[1, 0x01, 0x03, 1, 0x02, 0x04]);
        assert_eq!(decode(&frame, 2, 1, 1, 16).unwrap(), vec![0x02, 0x01, 0x04, 0x03]);
    }
}
