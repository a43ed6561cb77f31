//! PNG line charts for benchmark reports, drawn with plotters.
//!
//! Text needs a TrueType font; the DejaVu fonts `cargo xtask setup` installs
//! (Debian's fonts-dejavu-core) are read at run time rather than vendored.

use std::{path::Path, sync::OnceLock};

use anyhow::{Context as _, anyhow, bail};
use plotters::{coord::ranged1d::ValueFormatter, prelude::*};

/// Where Debian's fonts-dejavu-core puts its sans-serif face.
const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// Line colours in series order: distinguishable on white and for the
/// common colour-vision deficiencies (blue/orange pairs, then grey).
const COLORS: [RGBColor; 5] = [
    RGBColor(31, 119, 180),
    RGBColor(8, 48, 107),
    RGBColor(255, 127, 14),
    RGBColor(166, 54, 3),
    RGBColor(120, 120, 120),
];

/// One line of a chart.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    /// Drawn dashed-looking (thinner, hollow markers) to set a reference
    /// apart from measurements.
    pub reference: bool,
}

/// One panel of a chart: both axes logarithmic (benchmarks span decades),
/// or both linear for a time series (`linear`).
#[derive(Debug, Clone)]
pub struct Panel {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    pub linear: bool,
}

fn register_font() -> anyhow::Result<()> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            let bytes = std::fs::read(FONT).map_err(|e| {
                format!("{FONT}: {e} (cargo xtask setup installs fonts-dejavu-core)")
            })?;
            // The font registry keeps a 'static reference for the process.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
                .map_err(|_| format!("{FONT} is not a usable TrueType font"))
        })
        .clone()
        .map_err(|e| anyhow!(e))
}

/// Draws `panels` side by side into a PNG at `path`.
pub fn write_png(path: &Path, panels: &[Panel]) -> anyhow::Result<()> {
    if panels.is_empty() {
        bail!("nothing to plot");
    }
    register_font()?;
    let width = 640 * u32::try_from(panels.len()).context("panel count")?;
    let root = BitMapBackend::new(path, (width, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let areas = root.split_evenly((1, panels.len()));
    for (area, panel) in areas.iter().zip(panels) {
        draw_panel(area, panel)?;
    }
    root.present()
        .map_err(|e| anyhow!("writing {}: {e}", path.display()))?;
    Ok(())
}

fn bounds(values: impl Iterator<Item = f64>) -> anyhow::Result<(f64, f64)> {
    let (lo, hi) = values
        .filter(|v| v.is_finite() && *v > 0.0)
        .fold((f64::INFINITY, 0.0f64), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if !lo.is_finite() || hi <= 0.0 {
        bail!("no positive values to plot on a log axis");
    }
    // A decade-aligned frame around the data, with room so points on a
    // decade are not drawn on the axis.
    let (lo, hi) = (lo.log10() - 0.15, hi.log10() + 0.15);
    Ok((
        10f64.powf(lo.floor()),
        10f64.powf(hi.ceil().max(lo.floor() + 1.0)),
    ))
}

/// A linear frame around the data, from 0 (or the lowest value, if
/// negative) to 10% above the highest.
fn linear_bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((0.0f64, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    (lo, if hi > lo { hi * 1.1 } else { lo + 1.0 })
}

fn draw_panel(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    panel: &Panel,
) -> anyhow::Result<()> {
    let points = || panel.series.iter().flat_map(|s| s.points.iter());
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(&panel.title, ("sans-serif", 18))
        .margin(12)
        .margin_right(28)
        .x_label_area_size(40)
        .y_label_area_size(64);
    if panel.linear {
        let x = linear_bounds(points().map(|p| p.0));
        let y = linear_bounds(points().map(|p| p.1));
        let chart = builder
            .build_cartesian_2d(x.0..x.1, y.0..y.1)
            .map_err(|e| anyhow!("{e}"))?;
        draw_lines(chart, panel, |_| true)
    } else {
        let x = bounds(points().map(|p| p.0))?;
        let y = bounds(points().map(|p| p.1))?;
        let chart = builder
            .build_cartesian_2d((x.0..x.1).log_scale(), (y.0..y.1).log_scale())
            .map_err(|e| anyhow!("{e}"))?;
        // A log axis has no place for zero or less.
        draw_lines(chart, panel, |(a, b)| a > 0.0 && b > 0.0)
    }
}

fn draw_lines<'a, X, Y>(
    mut chart: ChartContext<'a, BitMapBackend<'a>, Cartesian2d<X, Y>>,
    panel: &Panel,
    keep: impl Fn((f64, f64)) -> bool,
) -> anyhow::Result<()>
where
    X: Ranged<ValueType = f64> + ValueFormatter<f64>,
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    chart
        .configure_mesh()
        .x_desc(&panel.x_label)
        .y_desc(&panel.y_label)
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    for (i, s) in panel.series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()].to_rgba();
        let width = if s.reference { 1 } else { 2 };
        let pts: Vec<(f64, f64)> = s.points.iter().copied().filter(|p| keep(*p)).collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(width)))
            .map_err(|e| anyhow!("{e}"))?
            .label(&s.name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        let marker = if s.reference {
            color.stroke_width(1)
        } else {
            color.filled()
        };
        // Long time series: lines only.
        if pts.len() <= 100 {
            chart
                .draw_series(pts.into_iter().map(|p| Circle::new(p, 4, marker)))
                .map_err(|e| anyhow!("{e}"))?;
        }
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_bounds_frame_the_data_in_whole_decades() {
        let b = bounds([0.3, 42.0, -1.0, f64::NAN].into_iter()).expect("bounds");
        assert_eq!(b, (0.1, 100.0));
        let b = bounds([5.0].into_iter()).expect("one value");
        assert_eq!(b, (1.0, 10.0));
        // A point on a decade gets the decade below as room.
        let b = bounds([0.1, 10.0].into_iter()).expect("decades");
        assert_eq!(b, (0.01, 100.0));
        assert!(bounds([0.0, -3.0].into_iter()).is_err());
    }

    #[test]
    fn writes_a_png() {
        if !Path::new(FONT).exists() {
            eprintln!("SKIP: {FONT} missing (cargo xtask setup installs it)");
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("chart.png");
        let panel = Panel {
            title: "t".into(),
            x_label: "x".into(),
            y_label: "y".into(),
            series: vec![
                Series {
                    name: "a".into(),
                    points: vec![(1.0, 2.0), (10.0, 30.0)],
                    reference: false,
                },
                Series {
                    name: "b".into(),
                    points: vec![(1.0, 1.0), (10.0, 10.0)],
                    reference: true,
                },
            ],
            linear: false,
        };
        let timeline = Panel {
            linear: true,
            ..panel.clone()
        };
        write_png(&path, &[panel, timeline]).expect("png");
        let bytes = std::fs::read(&path).expect("read");
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        assert!(bytes.len() > 2_000, "a chart, not an empty image");
    }
}
