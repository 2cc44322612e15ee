//! Plots of benchmark results: throughput (left) and latency percentiles
//! (right, log scale) against the number of concurrent clients (log scale).
//!
//! Output is SVG: plotters writes text as SVG `<text>` elements that the
//! viewer renders with its own fonts, so plotting needs no font file and
//! works offline. One series draws every requested percentile in its own
//! colour; several series are told apart by colour, and percentiles by line
//! style (solid, dashed, dotted).

use std::path::Path;

use plotters::element::DashedPathElement;
use plotters::prelude::*;

use super::report::{BenchReport, Percentile};

/// One line of a plot: a result file, optionally narrowed to one operation.
#[derive(Debug, Clone)]
pub struct Series<'a> {
    /// Legend text.
    pub label: String,
    /// The results.
    pub report: &'a BenchReport,
    /// One operation of a mixed run (e.g. `lookup_after_buy`); all when `None`.
    pub op: Option<String>,
}

/// A point of a series: clients, requests per second, latency in ms per percentile.
struct Point {
    clients: f64,
    throughput: f64,
    latency_ms: Vec<f64>,
}

/// Approximate height of one plot's drawing area, pixels.
const PLOT_HEIGHT: f64 = 390.0;

const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

fn points(series: &Series<'_>, percentiles: &[Percentile]) -> Vec<Point> {
    series
        .report
        .levels
        .iter()
        .filter_map(|level| {
            let r = level.op_or_total(series.op.as_deref())?;
            (r.ok > 0).then(|| Point {
                clients: level.clients as f64,
                throughput: r.throughput,
                latency_ms: percentiles.iter().map(|&p| (r.latency.get(p) as f64 / 1000.0).max(0.001)).collect(),
            })
        })
        .collect()
}

/// Draws a chart's legend in its upper left corner, where `draw` leaves
/// headroom for it.
fn draw_legend<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .label_font(("sans-serif", 13))
        .draw()
}

/// Draws `series` to the SVG file `path`.
pub fn draw(path: &Path, title: &str, series: &[Series<'_>], percentiles: &[Percentile]) -> Result<(), String> {
    let percentiles = if percentiles.is_empty() { &[Percentile::P50, Percentile::P99][..] } else { percentiles };
    let data: Vec<Vec<Point>> = series.iter().map(|s| points(s, percentiles)).collect();
    let all = || data.iter().flatten();
    if all().next().is_none() {
        return Err("nothing to plot: no level has a successful request".into());
    }
    let fail = |e: &dyn std::fmt::Display| format!("cannot draw {}: {e}", path.display());

    let min_clients = all().map(|p| p.clients).fold(f64::INFINITY, f64::min);
    let max_clients = all().map(|p| p.clients).fold(0.0, f64::max);
    let x_range = (min_clients / 1.5)..(max_clients * 1.5);
    let mut ticks: Vec<f64> = all().map(|p| p.clients).collect();
    ticks.sort_by(f64::total_cmp);
    ticks.dedup();
    let one = series.len() == 1;
    // Headroom above the data for the legends (upper left), so that they
    // never hide a line: the fraction of the plot height a legend takes.
    let legend_share = |rows: usize| if rows == 0 { 0.0 } else { (rows as f64 * 18.0 + 24.0) / PLOT_HEIGHT };
    let tp_share = legend_share(if one { 0 } else { series.len() });
    let lat_share = legend_share(percentiles.len());
    let max_tp = all().map(|p| p.throughput).fold(1.0, f64::max) * 1.05 / (1.0 - tp_share);
    let lat = || all().flat_map(|p| p.latency_ms.iter().copied());
    let min_lat = lat().fold(f64::INFINITY, f64::min) / 1.5;
    let max_lat = lat().fold(0.0, f64::max) * 1.3;
    // On a log axis, the top `lat_share` of the height spans this much more.
    let max_lat = (min_lat.ln() + (max_lat.ln() - min_lat.ln()) / (1.0 - lat_share)).exp();

    let root = SVGBackend::new(path, (1280, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let root = root.titled(title, ("sans-serif", 22)).map_err(|e| fail(&e))?;
    let (left, right) = root.split_horizontally(640);

    // Throughput.
    let mut chart = ChartBuilder::on(&left)
        .caption("throughput (successful requests/s)", ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(x_range.clone().log_scale().with_key_points(ticks.clone()), 0.0..max_tp)
        .map_err(|e| fail(&e))?;
    chart
        .configure_mesh()
        .x_desc("concurrent clients")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()
        .map_err(|e| fail(&e))?;
    for (i, (s, pts)) in series.iter().zip(&data).enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let line: Vec<(f64, f64)> = pts.iter().map(|p| (p.clients, p.throughput)).collect();
        chart
            .draw_series(LineSeries::new(line.clone(), color.stroke_width(2)))
            .map_err(|e| fail(&e))?
            .label(s.label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(2)));
        chart.draw_series(line.iter().map(|&p| Circle::new(p, 3, color.filled()))).map_err(|e| fail(&e))?;
    }
    if !one {
        draw_legend(&mut chart).map_err(|e| fail(&e))?;
    }

    // Latency.
    let mut chart = ChartBuilder::on(&right)
        .caption("latency of successful requests (ms, log scale)", ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(x_range.log_scale().with_key_points(ticks), (min_lat..max_lat).log_scale())
        .map_err(|e| fail(&e))?;
    chart
        .configure_mesh()
        .x_desc("concurrent clients")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format_ms(*v))
        .draw()
        .map_err(|e| fail(&e))?;
    // One series: a colour per percentile. Several: the series' colour (as
    // in the throughput legend) and a dash pattern per percentile.
    const DASHES: [Option<(u32, u32)>; 4] = [None, Some((8, 4)), Some((2, 4)), Some((12, 3))];
    for (i, pts) in data.iter().enumerate() {
        for j in 0..percentiles.len() {
            let color = PALETTE[if one { j } else { i } % PALETTE.len()];
            let style = color.stroke_width(2);
            let line: Vec<(f64, f64)> = pts.iter().map(|pt| (pt.clients, pt.latency_ms[j])).collect();
            match if one { None } else { DASHES[j % DASHES.len()] } {
                None => chart.draw_series(LineSeries::new(line.clone(), style)).map(|_| ()),
                Some((size, gap)) => {
                    chart.draw_series(DashedLineSeries::new(line.clone(), size, gap, style)).map(|_| ())
                }
            }
            .map_err(|e| fail(&e))?;
            chart.draw_series(line.iter().map(|&pt| Circle::new(pt, 3, color.filled()))).map_err(|e| fail(&e))?;
        }
    }
    // The legend explains colours (one series) or dash patterns (several).
    for (j, p) in percentiles.iter().enumerate() {
        let (color, dashes) =
            if one { (PALETTE[j % PALETTE.len()], None) } else { (RGBColor(80, 80, 80), DASHES[j % DASHES.len()]) };
        let style = color.stroke_width(2);
        let entry = chart.draw_series(LineSeries::new(Vec::<(f64, f64)>::new(), style)).map_err(|e| fail(&e))?;
        entry.label(p.label());
        match dashes {
            None => {
                entry.legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], style));
            }
            Some((size, gap)) => {
                entry.legend(move |(x, y)| DashedPathElement::new(vec![(x, y), (x + 24, y)], size / 2 + 1, gap, style));
            }
        }
    }
    draw_legend(&mut chart).map_err(|e| fail(&e))?;
    root.present().map_err(|e| fail(&e))?;
    Ok(())
}

fn format_ms(v: f64) -> String {
    if v >= 10.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else if v >= 0.1 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::*;
    use crate::bench::report::{REPORT_VERSION, Recorder};

    fn report(levels: &[(usize, u64)]) -> BenchReport {
        BenchReport {
            version: REPORT_VERSION,
            label: Some("lookups".into()),
            target: "bazar".into(),
            endpoints: vec![],
            consistency: Some("linearizable".into()),
            mix: BTreeMap::new(),
            books: "1..7".into(),
            rate_per_s: None,
            duration_s: Some(1.0),
            requests: None,
            warmup_s: 0.0,
            repeat: 1,
            started_unix: 0,
            levels: levels
                .iter()
                .map(|&(clients, ms)| {
                    let mut rec = Recorder::new();
                    for k in 1..=100 {
                        rec.success("lookup", Duration::from_micros(ms * 10 * k), None);
                    }
                    rec.level_report(clients, Duration::from_secs(1))
                })
                .collect(),
        }
    }

    #[test]
    fn plots_are_svg_with_text_and_one_line_per_series_and_percentile() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.svg");
        let a = report(&[(1, 1), (8, 2), (64, 9), (256, 40)]);
        let b = report(&[(1, 2), (64, 20)]);
        let series = [
            Series { label: "bazar".into(), report: &a, op: None },
            Series { label: "etcd".into(), report: &b, op: Some("lookup".into()) },
        ];
        draw(&path, "Lookups", &series, &[Percentile::P50, Percentile::P99]).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..100]);
        for text in ["Lookups", "bazar", "etcd", "p99", "p50", "concurrent clients", "\n256\n"] {
            assert!(svg.contains(text), "missing {text:?}");
        }
    }

    #[test]
    fn a_single_level_still_plots_and_empty_results_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let one = report(&[(8, 3)]);
        let path = dir.path().join("one.svg");
        draw(&path, "one", &[Series { label: String::new(), report: &one, op: None }], &Percentile::ALL).unwrap();
        let none = report(&[]);
        let err = draw(&path, "none", &[Series { label: "x".into(), report: &none, op: None }], &[]).unwrap_err();
        assert!(err.contains("nothing to plot"));
    }
}
