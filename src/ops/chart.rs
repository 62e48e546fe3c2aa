//! The weekly report's chart: four weeks of an environment's backups (size and duration, verified and failed runs, the daily retention window) drawn with plotters and an embedded font into a PNG.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

/// One backup on the chart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Point {
    pub at_ms: i64,
    pub bytes: u64,
    pub secs: Option<u64>,
    /// `Some(true)` proven by a test-restore, `Some(false)` a test-restore failed.
    pub verified: Option<bool>,
}

/// Everything the chart shows.
#[derive(Debug, Clone, Copy)]
pub struct Chart<'a> {
    pub env: &'a str,
    pub now_ms: i64,
    /// How many days the x axis spans, ending with today (UTC).
    pub days: i64,
    pub points: &'a [Point],
    /// When backups failed.
    pub failures: &'a [i64],
    /// The daily retention: how many days with backups are kept whole.
    pub daily: usize,
}

/// What can go wrong drawing the chart (the report then goes out as text).
#[derive(Debug, thiserror::Error)]
pub enum ChartError {
    #[error("cannot draw the chart: {0}")]
    Draw(String),
    #[error("cannot encode the chart: {0}")]
    Encode(#[from] png::EncodingError),
}

pub const WIDTH: u32 = 960;
pub const HEIGHT: u32 = 540;
const DAY_MS: i64 = 86_400_000;
const FONT: &str = "rocketops-sans";

pub const SIZE_BAR: RGBColor = RGBColor(31, 119, 180);
pub const DURATION_BAR: RGBColor = RGBColor(255, 127, 14);
pub const VERIFIED: RGBColor = RGBColor(44, 160, 44);
pub const FAILED: RGBColor = RGBColor(214, 39, 40);
pub const RETENTION: RGBColor = RGBColor(225, 236, 248);
const INK: RGBColor = RGBColor(40, 44, 52);
const GRID: RGBColor = RGBColor(222, 226, 232);

/// Registers the embedded DejaVu Sans once (the bitmap backend has no system fonts).
fn font() -> Result<(), ChartError> {
    static REGISTERED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let ok = *REGISTERED
        .get_or_init(|| register_font(FONT, FontStyle::Normal, dejavu::sans::regular()).is_ok());
    if ok {
        Ok(())
    } else {
        Err(ChartError::Draw("the embedded font cannot be read".into()))
    }
}

fn draw_err(e: impl std::fmt::Display) -> ChartError {
    ChartError::Draw(e.to_string())
}

/// Day number (days since the epoch, UTC) of a time, as the x axis counts.
fn day(ms: i64) -> f64 {
    ms as f64 / DAY_MS as f64
}

fn date(day: f64) -> String {
    chrono::DateTime::from_timestamp_millis((day * DAY_MS as f64).round() as i64)
        .unwrap_or_default()
        .format("%b %d")
        .to_string()
}

/// Pure: the start (UTC midnight) of the oldest of the newest `daily` days that have backups,
/// where the daily retention keeps a backup of every day; `None` without backups.
pub fn daily_window_start(points: &[Point], daily: usize) -> Option<i64> {
    let mut days: Vec<i64> = points.iter().map(|p| p.at_ms.div_euclid(DAY_MS)).collect();
    days.sort_unstable_by(|a, b| b.cmp(a));
    days.dedup();
    let last = days.get(daily.max(1) - 1).or(days.last())?;
    Some(last * DAY_MS)
}

/// Where things landed in pixels, for tests that look at the image.
#[derive(Debug, Default, Clone)]
struct Geometry {
    /// Per panel (size, duration): the plotting area's rows.
    rows: [(i32, i32); 2],
    /// The centre column of each point's bar, oldest first.
    bars: Vec<i32>,
    failures: Vec<i32>,
    /// The shaded retention window's columns.
    shade: Option<(i32, i32)>,
}

/// One of the two panels.
struct Panel<'a> {
    desc: &'a str,
    colour: RGBColor,
    value: fn(&Point) -> Option<f64>,
    format: fn(f64) -> String,
    markers: bool,
}

/// Pure: the chart as PNG bytes.
pub fn render(c: &Chart) -> Result<Vec<u8>, ChartError> {
    let (rgb, _) = draw(c)?;
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, WIDTH, HEIGHT);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    enc.write_header()?.write_image_data(&rgb)?;
    Ok(out)
}

fn sorted(points: &[Point]) -> Vec<Point> {
    let mut pts = points.to_vec();
    pts.sort_by_key(|p| p.at_ms);
    pts
}

fn draw(c: &Chart) -> Result<(Vec<u8>, Geometry), ChartError> {
    font()?;
    let pts = sorted(c.points);
    let end = (c.now_ms.div_euclid(DAY_MS) + 1) as f64;
    let start = end - c.days.max(1) as f64;
    let mut geo = Geometry::default();
    let mut rgb = vec![255u8; (WIDTH * HEIGHT * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        let (head, body) = root.split_vertically(64);
        head.draw(&Text::new(
            format!(
                "Backups of {} · {} – {} (UTC)",
                c.env,
                date(start),
                date(end - 1.0)
            ),
            (16, 10),
            (FONT, 22).into_font().color(&INK),
        ))
        .map_err(draw_err)?;
        legend(&head, c.daily)?;
        let (top, bottom) = body.split_vertically(body.dim_in_pixel().1 / 2 - 10);
        let panels = [
            (
                &top,
                Panel {
                    desc: "Size (MB)",
                    colour: SIZE_BAR,
                    value: |p| Some(p.bytes as f64 / 1e6),
                    format: |v| format!("{v:.0}"),
                    markers: true,
                },
            ),
            (
                &bottom,
                Panel {
                    desc: "Duration (s)",
                    colour: DURATION_BAR,
                    value: |p| p.secs.map(|s| s as f64),
                    format: |v| format!("{v:.0}"),
                    markers: false,
                },
            ),
        ];
        let shade_from = daily_window_start(&pts, c.daily).map(|ms| day(ms).max(start));
        let half = bar_half_width(&pts);
        for (i, (area, panel)) in panels.into_iter().enumerate() {
            let max = pts
                .iter()
                .filter_map(panel.value)
                .fold(0.0_f64, f64::max)
                .max(1.0);
            let top_y = max * 1.2;
            let mut chart = ChartBuilder::on(area)
                .margin_left(16)
                .margin_right(24)
                .margin_top(6)
                .margin_bottom(4)
                .x_label_area_size(28)
                .y_label_area_size(64)
                .build_cartesian_2d(start..end, 0.0..top_y)
                .map_err(draw_err)?;
            if let Some(from) = shade_from {
                chart
                    .draw_series(std::iter::once(Rectangle::new(
                        [(from, 0.0), (end, top_y)],
                        RETENTION.filled(),
                    )))
                    .map_err(draw_err)?;
                geo.shade = Some((
                    chart.backend_coord(&(from, 0.0)).0,
                    chart.backend_coord(&(end, 0.0)).0,
                ));
            }
            chart
                .configure_mesh()
                .light_line_style(TRANSPARENT)
                .bold_line_style(GRID)
                .axis_style(INK)
                .x_labels(15)
                .y_labels(5)
                .x_label_formatter(&|d| date(*d))
                .y_label_formatter(&|v| (panel.format)(*v))
                .y_desc(panel.desc)
                .label_style((FONT, 13).into_font().color(&INK))
                .axis_desc_style((FONT, 14).into_font().color(&INK))
                .draw()
                .map_err(draw_err)?;
            chart
                .draw_series(c.failures.iter().map(|at| {
                    let x = day(*at);
                    Rectangle::new(
                        [(x - half, 0.0), (x + half, top_y)],
                        FAILED.mix(0.35).filled(),
                    )
                }))
                .map_err(draw_err)?;
            chart
                .draw_series(pts.iter().filter_map(|p| {
                    let v = (panel.value)(p)?;
                    let x = day(p.at_ms);
                    Some(Rectangle::new(
                        [(x - half, 0.0), (x + half, v)],
                        panel.colour.filled(),
                    ))
                }))
                .map_err(draw_err)?;
            if panel.markers {
                let above = |p: &Point| (panel.value)(p).unwrap_or(0.0) + max * 0.08;
                chart
                    .draw_series(
                        pts.iter()
                            .filter(|p| p.verified == Some(true))
                            .map(|p| Circle::new((day(p.at_ms), above(p)), 5, VERIFIED.filled())),
                    )
                    .map_err(draw_err)?;
                chart
                    .draw_series(
                        pts.iter().filter(|p| p.verified == Some(false)).map(|p| {
                            Cross::new((day(p.at_ms), above(p)), 5, FAILED.stroke_width(2))
                        }),
                    )
                    .map_err(draw_err)?;
            }
            let (_, rows) = chart.plotting_area().get_pixel_range();
            geo.rows[i] = (rows.start, rows.end);
            geo.bars = pts
                .iter()
                .map(|p| chart.backend_coord(&(day(p.at_ms), 0.0)).0)
                .collect();
            geo.failures = c
                .failures
                .iter()
                .map(|at| chart.backend_coord(&(day(*at), 0.0)).0)
                .collect();
        }
        root.present().map_err(draw_err)?;
    }
    Ok((rgb, geo))
}

/// Half a bar's width in days: narrow enough that neighbours never touch.
fn bar_half_width(pts: &[Point]) -> f64 {
    let gap = pts
        .windows(2)
        .map(|w| day(w[1].at_ms) - day(w[0].at_ms))
        .filter(|g| *g > 0.0)
        .fold(f64::INFINITY, f64::min);
    (gap * 0.35).clamp(0.04, 0.3)
}

/// How a key entry is drawn.
enum Mark {
    Swatch(ShapeStyle),
    Dot,
    Cross,
}

/// The key, in one row under the title.
fn legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    daily: usize,
) -> Result<(), ChartError> {
    let style = (FONT, 14).into_font().color(&INK);
    let kept = format!("daily retention ({daily} days)");
    let entries = [
        ("size", Mark::Swatch(SIZE_BAR.filled())),
        ("duration", Mark::Swatch(DURATION_BAR.filled())),
        ("verified by a test-restore", Mark::Dot),
        ("test-restore failed", Mark::Cross),
        ("failed backup", Mark::Swatch(FAILED.mix(0.35).filled())),
        (kept.as_str(), Mark::Swatch(RETENTION.filled())),
    ];
    let (mut x, y) = (16, 46);
    for (label, mark) in entries {
        match mark {
            Mark::Swatch(s) => area.draw(&Rectangle::new([(x, y - 6), (x + 12, y + 6)], s)),
            Mark::Dot => area.draw(&Circle::new((x + 6, y), 5, VERIFIED.filled())),
            Mark::Cross => area.draw(&Cross::new((x + 6, y), 5, FAILED.stroke_width(2))),
        }
        .map_err(draw_err)?;
        area.draw(&Text::new(label, (x + 18, y - 8), style.clone()))
            .map_err(draw_err)?;
        let (w, _) = area.estimate_text_size(label, &style).map_err(draw_err)?;
        x += 18 + w as i32 + 22;
    }
    Ok(())
}

/// The caption: the chart's figures as text, for readers who do not load images.
pub fn caption(c: &Chart) -> String {
    let pts = sorted(c.points);
    let (Some(first), Some(last)) = (pts.first(), pts.last()) else {
        return format!("No backups of {} to chart yet.", c.env);
    };
    let mb = |b: u64| format!("{:.1} MB", b as f64 / 1e6);
    let dur = |s: Option<u64>| {
        s.map(|s| crate::clock::human(std::time::Duration::from_secs(s)))
            .unwrap_or_else(|| "?".into())
    };
    let verified = pts.iter().filter(|p| p.verified == Some(true)).count();
    let failed = match c.failures.len() {
        0 => String::new(),
        n => format!(", {n} failed"),
    };
    format!(
        "📈 *{}*: {} backups from {} to {}, {verified} verified{failed}. Size {} → {} (peak {}); duration {} → {}.",
        c.env,
        pts.len(),
        date(day(first.at_ms)),
        date(day(last.at_ms)),
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

    const DAY: i64 = DAY_MS;
    /// Nov 30 2026, 06:00 UTC.
    const NOW: i64 = 1_796_018_400_000;

    fn decode(bytes: &[u8]) -> (u32, u32, Vec<u8>) {
        let dec = png::Decoder::new(std::io::Cursor::new(bytes));
        let mut r = dec.read_info().unwrap();
        let mut buf = vec![0; r.output_buffer_size().unwrap()];
        let info = r.next_frame(&mut buf).unwrap();
        buf.truncate(info.buffer_size());
        (info.width, info.height, buf)
    }

    fn pixel(buf: &[u8], x: i32, y: i32) -> RGBColor {
        let i = ((y as u32 * WIDTH + x as u32) * 3) as usize;
        RGBColor(buf[i], buf[i + 1], buf[i + 2])
    }

    fn point(at_ms: i64, mb: u64, secs: Option<u64>, verified: Option<bool>) -> Point {
        Point {
            at_ms,
            bytes: mb * 1_000_000,
            secs,
            verified,
        }
    }

    /// Four weeks of nightly backups growing slowly, two verified, one test-restore failed,
    /// two nights failed: the picture in the README.
    fn sample() -> (Vec<Point>, Vec<i64>) {
        let mut points = Vec::new();
        for d in 0..28 {
            let at = NOW - (27 - d) * DAY - 4 * 3_600_000;
            if d == 9 || d == 20 {
                continue;
            }
            let verified = match d {
                6 | 27 => Some(true),
                13 => Some(false),
                _ => None,
            };
            points.push(point(
                at,
                410 + d as u64 * 6,
                Some(150 + d as u64 * 3),
                verified,
            ));
        }
        let failures = vec![
            NOW - 18 * DAY - 4 * 3_600_000,
            NOW - 7 * DAY - 4 * 3_600_000,
        ];
        (points, failures)
    }

    fn chart<'a>(points: &'a [Point], failures: &'a [i64]) -> Chart<'a> {
        Chart {
            env: "prod",
            now_ms: NOW,
            days: 28,
            points,
            failures,
            daily: 7,
        }
    }

    #[test]
    fn bars_are_as_tall_as_their_share_of_the_largest_and_drawn_oldest_left() {
        // Given newest first: the chart still puts the oldest on the left.
        let points = [
            point(NOW - DAY, 50, Some(100), None),
            point(NOW - 2 * DAY, 100, Some(200), None),
            point(NOW - 3 * DAY, 25, None, None),
        ];
        let c = chart(&points, &[]);
        let (_, geo) = draw(&c).unwrap();
        let (w, h, buf) = decode(&render(&c).unwrap());
        assert_eq!((w, h), (WIDTH, HEIGHT));
        assert!(geo.bars[0] < geo.bars[1] && geo.bars[1] < geo.bars[2]);
        let height = |x: i32, (top, bottom): (i32, i32), colour: RGBColor| {
            (top..bottom)
                .filter(|y| pixel(&buf, x, *y) == colour)
                .count() as f64
        };
        let size = |i: usize| height(geo.bars[i], geo.rows[0], SIZE_BAR);
        let secs = |i: usize| height(geo.bars[i], geo.rows[1], DURATION_BAR);
        let close = |a: f64, b: f64| (a - b).abs() <= 2.0;
        assert!(size(1) > 100.0, "{}", size(1));
        assert!(close(size(0), size(1) / 4.0), "{} {}", size(0), size(1));
        assert!(close(size(2), size(1) / 2.0), "{} {}", size(2), size(1));
        assert_eq!(secs(0), 0.0); // duration unknown
        assert!(close(secs(2), secs(1) / 2.0), "{} {}", secs(2), secs(1));
        // Between bars: no bar colour.
        let between = (geo.bars[0] + geo.bars[1]) / 2;
        assert!((geo.rows[0].0..geo.rows[0].1).all(|y| pixel(&buf, between, y) != SIZE_BAR));
    }

    #[test]
    fn the_chart_has_a_title_dates_verified_marks_failures_in_red_and_the_retention_window_shaded()
    {
        let (points, failures) = sample();
        let c = chart(&points, &failures);
        let (rgb, geo) = draw(&c).unwrap();
        let dark = |x0: i32, x1: i32, y0: i32, y1: i32| {
            (y0..y1)
                .flat_map(|y| (x0..x1).map(move |x| (x, y)))
                .filter(|(x, y)| {
                    let RGBColor(r, g, b) = pixel(&rgb, *x, *y);
                    (r as u32 + g as u32 + b as u32) < 300
                })
                .count()
        };
        // A title across the top, dates under the bottom panel, axis names on the left.
        assert!(dark(0, 480, 0, 36) > 400, "no title");
        let below = geo.rows[1].1;
        assert!(
            dark(80, WIDTH as i32, below + 4, below + 24) > 400,
            "no dates"
        );
        assert!(
            dark(0, 30, geo.rows[0].0, geo.rows[0].1) > 60,
            "no y axis name"
        );
        // Failed nights are red columns in both panels.
        for x in &geo.failures {
            for (top, bottom) in geo.rows {
                let RGBColor(r, g, b) = pixel(&rgb, *x, (top + bottom) / 2);
                assert!(r > 200 && g < 200 && b < 200, "({r},{g},{b}) at {x}");
            }
        }
        // Verified backups carry a green mark above their bar; the failed test-restore a red one.
        let marks = |colour: RGBColor| {
            geo.bars
                .iter()
                .filter(|x| (geo.rows[0].0..geo.rows[0].1).any(|y| pixel(&rgb, **x, y) == colour))
                .count()
        };
        assert_eq!(marks(VERIFIED), 2, "the newest verified one and one before");
        assert!(marks(FAILED) >= 1);
        // The newest 7 days with backups are shaded; an older gap between bars is not.
        let (from, to) = geo.shade.expect("a retention window");
        assert!(from > geo.bars[geo.bars.len() - 8] && from < geo.bars[geo.bars.len() - 7]);
        assert!(to > geo.bars[geo.bars.len() - 1]);
        let y = geo.rows[0].0 + 4;
        let gap = |i: usize| (geo.bars[i] + geo.bars[i + 1]) / 2;
        assert_eq!(pixel(&rgb, gap(geo.bars.len() - 2), y), RETENTION);
        assert_eq!(pixel(&rgb, gap(2), y), WHITE);
    }

    #[test]
    fn the_readme_picture_is_the_chart_of_the_sample_month() {
        let (points, failures) = sample();
        let png = render(&chart(&points, &failures)).unwrap();
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/weekly-chart.png");
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(path, &png).unwrap();
        }
        let golden =
            std::fs::read(path).expect("docs/weekly-chart.png (UPDATE_GOLDEN=1 writes it)");
        let (w, h, want) = decode(&golden);
        let (_, _, got) = decode(&png);
        assert_eq!((w, h), (WIDTH, HEIGHT));
        let differ = want
            .chunks(3)
            .zip(got.chunks(3))
            .filter(|(a, b)| a != b)
            .count();
        assert!(
            differ * 200 < (WIDTH * HEIGHT) as usize,
            "{differ} pixels differ from docs/weekly-chart.png (UPDATE_GOLDEN=1 rewrites it)"
        );
    }

    #[test]
    fn the_daily_window_starts_at_midnight_of_the_oldest_kept_day() {
        let (points, _) = sample();
        // Newest 7 days with backups: Nov 30 … Nov 24 (no gap among them).
        assert_eq!(daily_window_start(&points, 7), Some((NOW / DAY - 6) * DAY));
        // Fewer days than the retention: the oldest day.
        let two = [point(NOW, 1, None, None), point(NOW - DAY, 1, None, None)];
        assert_eq!(daily_window_start(&two, 7), Some((NOW / DAY - 1) * DAY));
        assert_eq!(daily_window_start(&[], 7), None);
    }

    #[test]
    fn the_caption_says_what_the_chart_shows() {
        let points = [
            point(1_795_000_000_000, 44, Some(160), Some(true)),
            point(1_795_000_000_000 + 6 * DAY, 50, Some(190), None),
        ];
        let failures = [1_795_000_000_000 + 3 * DAY];
        assert_eq!(
            caption(&chart(&points, &failures)),
            "📈 *prod*: 2 backups from Nov 18 to Nov 24, 1 verified, 1 failed. Size 44.0 MB → 50.0 MB (peak 50.0 MB); duration 2 min 40 s → 3 min 10 s."
        );
        assert_eq!(
            caption(&chart(&[], &[])),
            "No backups of prod to chart yet."
        );
        // An empty chart is still a valid image.
        assert_eq!(decode(&render(&chart(&[], &[])).unwrap()).0, WIDTH);
    }
}
