//! The weekly report's chart: backup size and duration over time as a PNG (two bar panels, oldest left), drawn into a pixel buffer and encoded with the `png` crate.

/// One backup on the chart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Point {
    pub at_ms: i64,
    pub bytes: u64,
    pub secs: Option<u64>,
}

pub const WIDTH: u32 = 720;
pub const HEIGHT: u32 = 360;
const MARGIN: u32 = 20;
const GAP: u32 = 24;

pub const BACKGROUND: [u8; 3] = [255, 255, 255];
pub const SIZE_BAR: [u8; 3] = [17, 93, 179];
pub const DURATION_BAR: [u8; 3] = [236, 120, 0];
const GRID: [u8; 3] = [226, 229, 234];
const AXIS: [u8; 3] = [110, 116, 125];

struct Canvas {
    px: Vec<u8>,
}

impl Canvas {
    fn new() -> Canvas {
        let mut px = Vec::with_capacity((WIDTH * HEIGHT * 3) as usize);
        for _ in 0..WIDTH * HEIGHT {
            px.extend_from_slice(&BACKGROUND);
        }
        Canvas { px }
    }

    fn rect(&mut self, x0: u32, y0: u32, x1: u32, y1: u32, c: [u8; 3]) {
        for y in y0.min(HEIGHT)..y1.min(HEIGHT) {
            for x in x0.min(WIDTH)..x1.min(WIDTH) {
                let i = ((y * WIDTH + x) * 3) as usize;
                self.px[i..i + 3].copy_from_slice(&c);
            }
        }
    }
}

/// The panels' pixel rows: (top, bottom) of the size panel and of the duration panel.
pub fn panels() -> ((u32, u32), (u32, u32)) {
    let h = (HEIGHT - 2 * MARGIN - GAP) / 2;
    (
        (MARGIN, MARGIN + h),
        (MARGIN + h + GAP, MARGIN + 2 * h + GAP),
    )
}

/// The x range of bar `i` of `n`.
pub fn bar_x(i: usize, n: usize) -> (u32, u32) {
    let inner = WIDTH - 2 * MARGIN;
    let slot = inner / n.max(1) as u32;
    let pad = (slot / 5).max(1);
    let x0 = MARGIN + i as u32 * slot + pad;
    (x0, x0 + slot.saturating_sub(2 * pad).max(1))
}

/// Pure: the chart of `points` (any order; drawn oldest left, at most the newest 60) as PNG bytes.
pub fn render(points: &[Point]) -> Vec<u8> {
    let mut pts: Vec<Point> = points.to_vec();
    pts.sort_by_key(|p| p.at_ms);
    if pts.len() > 60 {
        pts.drain(..pts.len() - 60);
    }
    let mut c = Canvas::new();
    let ((st, sb), (dt, db)) = panels();
    for (top, bottom) in [(st, sb), (dt, db)] {
        for q in 0..4 {
            let y = top + (bottom - top) * q / 4;
            c.rect(MARGIN, y, WIDTH - MARGIN, y + 1, GRID);
        }
        c.rect(MARGIN, bottom, WIDTH - MARGIN, bottom + 1, AXIS);
    }
    let max_bytes = pts.iter().map(|p| p.bytes).max().unwrap_or(0).max(1);
    let max_secs = pts.iter().filter_map(|p| p.secs).max().unwrap_or(0).max(1);
    let n = pts.len();
    for (i, p) in pts.iter().enumerate() {
        let (x0, x1) = bar_x(i, n);
        let h = ((sb - st) as u64 * p.bytes / max_bytes) as u32;
        c.rect(x0, sb - h, x1, sb, SIZE_BAR);
        if let Some(s) = p.secs {
            let h = ((db - dt) as u64 * s / max_secs) as u32;
            c.rect(x0, db - h, x1, db, DURATION_BAR);
        }
    }
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, WIDTH, HEIGHT);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        match enc.write_header() {
            Ok(mut w) => {
                if let Err(e) = w.write_image_data(&c.px) {
                    tracing::error!(error = %e, "cannot encode the chart");
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot encode the chart"),
        }
    }
    out
}

/// The caption that says what the bars show (the chart has no text of its own).
pub fn caption(env: &str, points: &[Point]) -> String {
    let mut pts: Vec<&Point> = points.iter().collect();
    pts.sort_by_key(|p| p.at_ms);
    let (Some(first), Some(last)) = (pts.first(), pts.last()) else {
        return format!("No backups of {env} to chart yet.");
    };
    let mb = |b: u64| format!("{:.1} MB", b as f64 / 1e6);
    let dur = |s: Option<u64>| {
        s.map(|s| crate::clock::human(std::time::Duration::from_secs(s)))
            .unwrap_or_else(|| "?".into())
    };
    let day = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .unwrap_or_default()
            .format("%b %d")
            .to_string()
    };
    format!(
        "📈 *{env}*: {} backups from {} to {} (oldest left). Blue, top: size, {} → {} (peak {}). Orange, bottom: duration, {} → {}.",
        pts.len(),
        day(first.at_ms),
        day(last.at_ms),
        mb(first.bytes),
        mb(last.bytes),
        mb(pts.iter().map(|p| p.bytes).max().unwrap_or(0)),
        dur(first.secs),
        dur(last.secs),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(bytes: &[u8]) -> (u32, u32, Vec<u8>) {
        let dec = png::Decoder::new(std::io::Cursor::new(bytes));
        let mut r = dec.read_info().unwrap();
        let mut buf = vec![0; r.output_buffer_size().unwrap()];
        let info = r.next_frame(&mut buf).unwrap();
        buf.truncate(info.buffer_size());
        (info.width, info.height, buf)
    }

    fn pixel(buf: &[u8], x: u32, y: u32) -> [u8; 3] {
        let i = ((y * WIDTH + x) * 3) as usize;
        [buf[i], buf[i + 1], buf[i + 2]]
    }

    #[test]
    fn bars_are_as_tall_as_their_share_of_the_largest_and_drawn_oldest_left() {
        let day = 86_400_000;
        // Given newest first: the chart still puts the oldest on the left.
        let points = [
            Point {
                at_ms: 3 * day,
                bytes: 50_000_000,
                secs: Some(100),
            },
            Point {
                at_ms: 2 * day,
                bytes: 100_000_000,
                secs: Some(200),
            },
            Point {
                at_ms: day,
                bytes: 25_000_000,
                secs: None,
            },
        ];
        let (w, h, buf) = decode(&render(&points));
        assert_eq!((w, h), (WIDTH, HEIGHT));
        let ((st, sb), (dt, db)) = panels();
        let mid = |i| {
            let (a, b) = bar_x(i, 3);
            (a + b) / 2
        };
        let height = |x: u32, top: u32, bottom: u32, colour: [u8; 3]| {
            (top..bottom)
                .filter(|y| pixel(&buf, x, *y) == colour)
                .count() as u32
        };
        let full = sb - st;
        assert_eq!(height(mid(0), st, sb, SIZE_BAR), full / 4); // 25 MB, oldest, left
        assert_eq!(height(mid(1), st, sb, SIZE_BAR), full); // 100 MB, the largest
        assert_eq!(height(mid(2), st, sb, SIZE_BAR), full / 2); // 50 MB, newest, right
        assert_eq!(height(mid(0), dt, db, DURATION_BAR), 0); // duration unknown
        assert_eq!(height(mid(1), dt, db, DURATION_BAR), db - dt);
        assert_eq!(height(mid(2), dt, db, DURATION_BAR), (db - dt) / 2);
        // Between bars: background or grid only.
        let (_, end0) = bar_x(0, 3);
        let (start1, _) = bar_x(1, 3);
        let between = (end0 + start1) / 2;
        assert!((st..sb).all(|y| pixel(&buf, between, y) != SIZE_BAR));
    }

    #[test]
    fn the_caption_says_what_the_bars_show() {
        let day = 86_400_000;
        let points = [
            Point {
                at_ms: 1_795_000_000_000,
                bytes: 44_100_000,
                secs: Some(160),
            },
            Point {
                at_ms: 1_795_000_000_000 + 6 * day,
                bytes: 50_000_000,
                secs: Some(190),
            },
        ];
        assert_eq!(
            caption("prod", &points),
            "📈 *prod*: 2 backups from Nov 18 to Nov 24 (oldest left). Blue, top: size, 44.1 MB → 50.0 MB (peak 50.0 MB). Orange, bottom: duration, 2 min 40 s → 3 min 10 s."
        );
        assert_eq!(caption("prod", &[]), "No backups of prod to chart yet.");
        // An empty chart is still a valid image.
        assert_eq!(decode(&render(&[])).0, WIDTH);
    }
}
