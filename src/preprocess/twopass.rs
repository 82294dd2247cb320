//! Both views of a region in one Pillow-exact two-pass resize, read straight from the
//! caller's image in its own pixel layout (no RGB copy), image and mask together:
//!
//! 1. horizontal pass, source rows split over the threads: each source row becomes
//!    value words once (R, G, B from the image's layout, the mask as 0 / 255; see
//!    `sys::resample`), then each view's SIMD row pass writes its 4-channel u8 row;
//!    a focal window as wide as the image reuses the full view's rows (same columns,
//!    same coefficients, so the same bytes);
//! 2. vertical pass, output rows split over the threads, with the normalisation
//!    (one table per channel) fused into its output.
//!
//! Each output value comes from the same integer sums as `resize_threads` (Pillow's
//! order: horizontal into u8, then vertical), so the result is bit-identical to
//! resizing the RGB copy and the 0 / 255 mask separately, on any thread count.

use super::focal::Window;
use super::resize::{precompute, Coeffs, Filter, HALF, MIN_PARALLEL_WORK};
use super::views::{normalize, VIEW_CHANNELS};
use crate::image::{ImageView, Mask};
use crate::sys::resample::{hrow4, vrow, word, words_row, Layout, Taps};
use std::sync::Mutex;

/// One view: its window and both passes' coefficients.
struct Plan {
    win: Window,
    h: Taps,
    /// Coefficient slots per output pixel of the horizontal pass.
    hk: usize,
    v: Coeffs,
    /// Source rows `first..last` (absolute) that the vertical pass reads.
    first: usize,
    last: usize,
    /// Whether its horizontal rows are the full view's (plan 0).
    shares_h: bool,
}

impl Plan {
    fn new(win: Window, size: u32) -> Plan {
        let hc = precompute(win.width(), size, Filter::Bicubic);
        let h = Taps::new(&hc.bounds, &hc.k, hc.ksize, HALF);
        // `precompute` gives consistent tables, so `Taps::new` cannot fail.
        let h = h.unwrap_or_else(|| unreachable!("inconsistent coefficient table"));
        let v = precompute(win.height(), size, Filter::Bicubic);
        let y0 = win.y0 as usize;
        let first = y0 + v.bounds.iter().map(|b| b.0).min().unwrap_or(0);
        let last = y0 + v.bounds.iter().map(|b| b.0 + b.1).max().unwrap_or(0);
        Plan {
            win,
            h,
            hk: hc.ksize,
            v,
            first,
            last: last.max(first),
            shares_h: false,
        }
    }

    /// Multiply-adds of its horizontal pass per source row (0 when shared).
    fn h_cost(&self) -> usize {
        if self.shares_h {
            0
        } else {
            self.h.outputs() * self.hk
        }
    }
}

/// The value words of row `y`: R, G, B as the layout has them (gray replicated, BGRA
/// swapped, alpha dropped: `ImageView::to_rgb`), the mask as 0 / 255.
fn fill_words(src: &Source, y: usize, out: &mut [[u32; 4]]) {
    let (image, mask, bbox) = (src.image, src.mask, src.bbox);
    let zero = word(0);
    let Some(row) = image.row(y as u32) else {
        return;
    };
    let rgb = image.format().rgb_offsets();
    let bpp = image.format().bytes_per_pixel();
    words_row(row, Layout { bpp, rgb }, out);
    // Outside the box the mask is 0: only the box's columns of its rows are read.
    let (bx0, by0, bx1, by1) = (
        bbox.0 as usize,
        bbox.1 as usize,
        bbox.2 as usize,
        bbox.3 as usize,
    );
    if y < by0 || y >= by1 {
        return;
    }
    let w = mask.width as usize;
    let Some(mrow) = mask.data.get(y * w + bx0..y * w + bx1) else {
        return;
    };
    let one = word(255);
    let from = bx0.min(out.len());
    for (o, &m) in out[from..].iter_mut().zip(mrow) {
        o[3] = if m != 0 { one } else { zero };
    }
}

/// Horizontal rows of one band: source rows `ya..yb`, into `outs[p]` (plan `p`'s
/// rows from `max(ya, first)` on; empty for a plan that shares rows).
fn horizontal_band(
    src: &Source,
    plans: &[Plan],
    ya: usize,
    yb: usize,
    size: usize,
    outs: &mut [&mut [[u8; 4]]],
) {
    let mut words = vec![[0u32; 4]; src.image.width() as usize];
    for y in ya..yb {
        let mut filled = false;
        for (p, out) in plans.iter().zip(outs.iter_mut()) {
            if p.shares_h || y < p.first || y >= p.last {
                continue;
            }
            if !filled {
                fill_words(src, y, &mut words);
                filled = true;
            }
            let r = y - p.first.max(ya);
            let row = &mut out[r * size..(r + 1) * size];
            // Window inside the image and consistent tables: cannot fail.
            let ok = hrow4(&words[p.win.x0 as usize..], &p.h, row);
            debug_assert!(ok);
        }
    }
}

/// Output rows `yy0..` of one view (as many as the band holds): the vertical pass
/// over the horizontal rows `tmp.0` (source rows from `tmp.1` on), normalised into
/// the band's four planes, and the mask channel's bytes into `mask`.
fn vertical_band(
    (tmp, tmp_first): (&[[u8; 4]], usize),
    plan: &Plan,
    size: usize,
    yy0: usize,
    tables: &Tables,
    planes: [&mut [f32]; VIEW_CHANNELS],
    mut mask: Option<&mut [u8]>,
) {
    let [p0, p1, p2, p3] = planes;
    let rows_n = p0.len() / size.max(1);
    let y0 = plan.win.y0 as usize;
    let mut px = vec![[0u8; 4]; size];
    let mut rows: Vec<&[u8]> = Vec::with_capacity(plan.v.ksize);
    for r in 0..rows_n {
        let (ymin, k) = plan.v.taps(yy0 + r);
        rows.clear();
        for t in 0..k.len() {
            let start = (y0 + ymin + t - tmp_first) * size;
            rows.push(tmp[start..start + size].as_flattened());
        }
        // Rows of the plan's own tmp and tables from `precompute`: cannot fail.
        let ok = vrow(&rows, k, HALF, px.as_flattened_mut());
        debug_assert!(ok);
        let o = r * size;
        for (xx, p) in px.iter().enumerate() {
            p0[o + xx] = tables[0][p[0] as usize];
            p1[o + xx] = tables[1][p[1] as usize];
            p2[o + xx] = tables[2][p[2] as usize];
            p3[o + xx] = tables[3][p[3] as usize];
        }
        if let Some(m) = mask.as_deref_mut() {
            for (d, p) in m[o..o + size].iter_mut().zip(&px) {
                *d = p[3];
            }
        }
    }
}

/// Runs `f` on every item on up to `items.len()` threads: scoped threads take
/// items as they start, the calling thread takes what is left (all of them when
/// no thread can be spawned). Which thread runs an item never changes its result.
fn run_all<T: Send>(items: Vec<T>, f: impl Fn(T) + Sync) {
    let cells: Vec<Mutex<Option<T>>> = items.into_iter().map(|t| Mutex::new(Some(t))).collect();
    let take = |c: &Mutex<Option<T>>| c.lock().unwrap_or_else(|e| e.into_inner()).take();
    std::thread::scope(|s| {
        for c in cells.iter().skip(1) {
            let (f, take) = (&f, &take);
            // A thread that cannot be spawned leaves its item to the loop below.
            let _ = std::thread::Builder::new()
                .name("dam-preprocess".into())
                .spawn_scoped(s, move || {
                    if let Some(t) = take(c) {
                        f(t);
                    }
                });
        }
        for c in &cells {
            if let Some(t) = take(c) {
                f(t);
            }
        }
    });
}

/// Splits `buf` (rows of `row` elements for source rows `first..last`) into the
/// parts that the bands `bands` (consecutive, ascending source rows) cover.
fn split_rows<'a, T>(
    mut buf: &'a mut [T],
    row: usize,
    first: usize,
    last: usize,
    bands: &[(usize, usize)],
) -> Vec<&'a mut [T]> {
    let mut at = first;
    let mut out = Vec::with_capacity(bands.len());
    for &(ya, yb) in bands {
        let (a, b) = (ya.clamp(first, last), yb.clamp(first, last));
        let skip = (a - at.min(a)) * row;
        let take = (b - a.min(b)) * row;
        let rest = std::mem::take(&mut buf);
        let (_, rest) = rest.split_at_mut(skip.min(rest.len()));
        let (mine, rest) = rest.split_at_mut(take.min(rest.len()));
        out.push(mine);
        buf = rest;
        at = b.max(at);
    }
    out
}

/// `n` bands of `lo..hi` with about equal sums of `cost(y)`.
fn balanced_bands(
    lo: usize,
    hi: usize,
    n: usize,
    cost: impl Fn(usize) -> usize,
) -> Vec<(usize, usize)> {
    let total: usize = (lo..hi).map(&cost).sum();
    let mut bands = Vec::with_capacity(n);
    let (mut start, mut acc, mut k) = (lo, 0usize, 1usize);
    for y in lo..hi {
        acc += cost(y);
        if k < n && acc * n >= total * k {
            bands.push((start, y + 1));
            start = y + 1;
            k += 1;
        }
    }
    bands.push((start, hi));
    bands
}

/// What the views are made of: the caller's image, the mask and its box.
pub(super) struct Source<'a> {
    pub image: &'a ImageView<'a>,
    pub mask: &'a Mask,
    pub bbox: (u32, u32, u32, u32),
}

/// Per channel (R, G, B, mask): normalised value of each byte.
pub(super) type Tables = [[f32; 256]; VIEW_CHANNELS];

/// The tables of `mean` / `std` (the mask channel takes channel 0's).
pub(super) fn tables(mean: [f32; 3], std: [f32; 3]) -> Tables {
    let table =
        |m: f32, d: f32| -> [f32; 256] { std::array::from_fn(|x| normalize(x as u8, m, d)) };
    [
        table(mean[0], std[0]),
        table(mean[1], std[1]),
        table(mean[2], std[2]),
        table(mean[0], std[0]),
    ]
}

/// The planar `[4, size, size]` views of the windows `wins` (the first is the whole
/// image) and the first view's mask channel, on up to `threads` threads. The
/// arguments are checked by the caller (`views::make_views_of`).
pub(super) fn resize_views(
    src: &Source,
    wins: &[Window],
    size: u32,
    tables: &Tables,
    threads: usize,
) -> (Vec<Vec<f32>>, Vec<u8>) {
    let s = size as usize;
    let mut plans: Vec<Plan> = wins.iter().map(|&w| Plan::new(w, size)).collect();
    for i in 1..plans.len() {
        let (a, b) = (&plans[0], &plans[i]);
        let same_cols = a.win.x0 == b.win.x0 && a.win.x1 == b.win.x1;
        plans[i].shares_h = same_cols && a.first <= b.first && b.last <= a.last;
    }
    let lo = plans.iter().map(|p| p.first).min().unwrap_or(0);
    let hi = plans.iter().map(|p| p.last).max().unwrap_or(0);
    let width = src.image.width() as usize;
    let row_cost = |y: usize| -> usize {
        let h: usize = plans
            .iter()
            .filter(|p| y >= p.first && y < p.last)
            .map(Plan::h_cost)
            .sum();
        if h == 0 {
            0
        } else {
            h + width
        }
    };
    let v_work: usize = plans.iter().map(|p| s * s * 4 * p.v.ksize).sum();
    let h_work: usize = (lo..hi).map(row_cost).sum();
    let threads = threads
        .max(1)
        .min((h_work + v_work) / MIN_PARALLEL_WORK + 1)
        .min(s);
    let bands = balanced_bands(lo, hi, threads, row_cost);
    let tmps = horizontal_pass(src, &plans, &bands, s);
    vertical_pass(&plans, &tmps, s, tables, threads)
}

/// Pass 1: the horizontal rows of every plan that owns them, source rows split
/// into `bands`, one per thread.
fn horizontal_pass(
    src: &Source,
    plans: &[Plan],
    bands: &[(usize, usize)],
    s: usize,
) -> Vec<Vec<[u8; 4]>> {
    let mut tmps: Vec<Vec<[u8; 4]>> = plans
        .iter()
        .map(|p| {
            let rows = if p.shares_h { 0 } else { p.last - p.first };
            vec![[0u8; 4]; rows * s]
        })
        .collect();
    let mut per_band: Vec<Vec<&mut [[u8; 4]]>> = bands.iter().map(|_| Vec::new()).collect();
    for (p, tmp) in plans.iter().zip(tmps.iter_mut()) {
        let (first, last) = if p.shares_h {
            (0, 0)
        } else {
            (p.first, p.last)
        };
        for (b, part) in split_rows(tmp, s, first, last, bands)
            .into_iter()
            .enumerate()
        {
            per_band[b].push(part);
        }
    }
    let items: Vec<_> = bands.iter().copied().zip(per_band).collect();
    run_all(items, |((ya, yb), mut outs)| {
        horizontal_band(src, plans, ya, yb, s, &mut outs)
    });
    tmps
}

/// Pass 2: the vertical pass of every plan, normalised, output rows split evenly
/// over `threads`; gives the views and the first one's mask channel.
fn vertical_pass(
    plans: &[Plan],
    tmps: &[Vec<[u8; 4]>],
    s: usize,
    tables: &Tables,
    threads: usize,
) -> (Vec<Vec<f32>>, Vec<u8>) {
    let plane = s * s;
    let mut outs: Vec<Vec<f32>> = plans
        .iter()
        .map(|_| vec![0f32; VIEW_CHANNELS * plane])
        .collect();
    let mut full_mask = vec![0u8; plane];
    let per = s.div_ceil(threads);
    let vbands: Vec<(usize, usize)> = (0..threads)
        .map(|t| ((t * per).min(s), ((t + 1) * per).min(s)))
        .collect();
    let mut work: Vec<Vec<_>> = vbands.iter().map(|_| Vec::new()).collect();
    let mut mask_parts = split_rows(&mut full_mask, s, 0, s, &vbands).into_iter();
    for (i, out) in outs.iter_mut().enumerate() {
        let mut planes: Vec<std::vec::IntoIter<&mut [f32]>> = out
            .chunks_exact_mut(plane)
            .map(|pl| split_rows(pl, s, 0, s, &vbands).into_iter())
            .collect();
        for (b, w) in work.iter_mut().enumerate() {
            let four: [&mut [f32]; VIEW_CHANNELS] =
                std::array::from_fn(|c| planes[c].next().unwrap_or_default());
            let m = if i == 0 { mask_parts.next() } else { None };
            w.push((i, vbands[b].0, four, m));
        }
    }
    run_all(work, |jobs| {
        for (i, yy0, four, m) in jobs {
            let from = if plans[i].shares_h { 0 } else { i };
            let tmp = (&tmps[from][..], plans[from].first);
            vertical_band(tmp, &plans[i], s, yy0, tables, four, m);
        }
    });
    (outs, full_mask)
}
