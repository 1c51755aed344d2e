//! SVG charts of a run, drawn with plotters' SVG backend (no font stack: text is emitted
//! as SVG `<text>` and the viewer renders it).
//!
//! * `throughput.svg`: per workload, one bar per system, log scale;
//! * `latency.svg`: latency against percentile (`latency` workload), log scale;
//! * `scaling.svg`: throughput against shard count (`scaling` workload).
//!
//! A chart whose data is missing from the run is not written.

use std::error::Error;
use std::path::{Path, PathBuf};

use plotters::prelude::*;

use crate::error::{BenchError, Result};
use crate::report::{si, Record};
use crate::workloads::scaling;

type Drawn = std::result::Result<(), Box<dyn Error>>;
/// A chart: draws into the path, or `None` when the run has no data for it.
type Chart = fn(&Path, &[Record]) -> Option<Drawn>;

const FONT: &str = "sans-serif";

/// The colour of a system, stable across charts.
fn colour(system: &str, index: usize) -> RGBColor {
    match system {
        "percore" => RGBColor(214, 39, 40),
        "actix" => RGBColor(31, 119, 180),
        "ractor" => RGBColor(44, 160, 44),
        "kameo" => RGBColor(255, 127, 14),
        "stakker" => RGBColor(148, 103, 189),
        "caf" => RGBColor(140, 86, 75),
        "erlang" => RGBColor(227, 119, 194),
        "raw-spsc" | "raw-disk" => RGBColor(110, 110, 110),
        _ => {
            let c = Palette99::pick(index).to_rgba();
            RGBColor(c.0, c.1, c.2)
        }
    }
}

/// Distinct values of `key` over `items`, in first-seen order.
fn distinct<'a, T>(items: &'a [T], key: impl Fn(&'a T) -> String) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for item in items {
        let k = key(item);
        if !out.contains(&k) {
            out.push(k);
        }
    }
    out
}

/// Writes every chart the records have data for into `dir`.
pub fn write_all(dir: &Path, records: &[Record]) -> Result<()> {
    let charts: [(&str, Chart); 3] =
        [("throughput.svg", throughput), ("latency.svg", latency), ("scaling.svg", scaling)];
    for (name, draw) in charts {
        let path: PathBuf = dir.join(name);
        if let Some(Err(e)) = draw(&path, records) {
            return Err(BenchError::Chart { path, detail: e.to_string() });
        }
    }
    Ok(())
}

/// Log-scale bounds covering `values` (all positive), with some headroom.
fn log_bounds(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    let (lo, hi) = values
        .filter(|v| v.is_finite() && *v > 0.0)
        .fold((f64::INFINITY, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    (hi > 0.0).then(|| (lo / 2.0, hi * 2.0))
}

/// Grouped bars: one group per workload (and unit), one bar per system.
fn throughput(path: &Path, records: &[Record]) -> Option<Drawn> {
    let bars: Vec<&Record> =
        records.iter().filter(|r| r.latency_curve.is_empty() && !r.workload.starts_with(scaling::PREFIX)).collect();
    let (lo, hi) = log_bounds(bars.iter().map(|r| r.per_sec))?;
    let groups = distinct(&bars, |r| format!("{} ({})", r.workload, r.unit));
    let systems = distinct(&bars, |r| r.system.clone());
    Some((|| -> Drawn {
        let width = (160 * groups.len() as u32).max(900);
        let root = SVGBackend::new(path, (width, 560)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption("Throughput per workload (higher is better)", (FONT, 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(80)
            .build_cartesian_2d(-0.5f64..(groups.len() as f64 - 0.5), (lo..hi).log_scale())?;
        let label = |x: &f64| {
            let i = x.round();
            if (x - i).abs() < 1e-6 && i >= 0.0 {
                groups.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        };
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(groups.len() + 1)
            .x_label_formatter(&label)
            .y_desc("units per second")
            .y_label_formatter(&|y| si(*y))
            .label_style((FONT, 13))
            .draw()?;
        let slot = 0.8 / systems.len() as f64;
        for (s, system) in systems.iter().enumerate() {
            let fill = colour(system, s);
            let rects = bars.iter().filter(|r| &r.system == system).filter_map(|r| {
                let g = groups.iter().position(|g| *g == format!("{} ({})", r.workload, r.unit))?;
                let x0 = g as f64 - 0.4 + s as f64 * slot;
                Some(Rectangle::new([(x0, lo), (x0 + slot * 0.9, r.per_sec)], fill.filled()))
            });
            chart
                .draw_series(rects)?
                .label(system.as_str())
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], fill.filled()));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font((FONT, 13))
            .draw()?;
        root.present()?;
        Ok(())
    })())
}

/// Percentile `p` (0..100) on an axis where 90, 99, 99.9, 99.99 are evenly spaced.
fn nines(p: f64) -> f64 {
    -(1.0 - p / 100.0).max(1e-6).log10()
}

/// Latency percentile curves of the `latency` workload, one line per system.
fn latency(path: &Path, records: &[Record]) -> Option<Drawn> {
    let curves: Vec<&Record> = records.iter().filter(|r| !r.latency_curve.is_empty()).collect();
    let (lo, hi) = log_bounds(curves.iter().flat_map(|r| r.latency_curve.iter().map(|&(_, ns)| ns as f64 / 1e3)))?;
    let max_x =
        curves.iter().flat_map(|r| r.latency_curve.iter().map(|&(p, _)| nines(p))).fold(3.0f64, f64::max).ceil();
    Some((|| -> Drawn {
        let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption("Request latency by percentile, open loop at half of max rate (lower is better)", (FONT, 20))
            .margin(12)
            .margin_right(40)
            .x_label_area_size(40)
            .y_label_area_size(80)
            .build_cartesian_2d(0f64..max_x, (lo..hi).log_scale())?;
        chart
            .configure_mesh()
            .x_labels(max_x as usize + 1)
            .x_label_formatter(&|x| {
                if *x < 0.5 {
                    "0%".into()
                } else {
                    format!("{}%", 100.0 - 100.0 * 10f64.powf(-x.round()))
                }
            })
            .x_desc("percentile")
            .y_desc("latency, microseconds")
            .y_label_formatter(&|y| si(*y))
            .label_style((FONT, 13))
            .draw()?;
        for (i, record) in curves.iter().enumerate() {
            let stroke = colour(&record.system, i);
            let points = record.latency_curve.iter().map(|&(p, ns)| (nines(p), ns as f64 / 1e3));
            chart
                .draw_series(LineSeries::new(points, stroke.stroke_width(2)))?
                .label(record.system.as_str())
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], stroke.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font((FONT, 13))
            .draw()?;
        root.present()?;
        Ok(())
    })())
}

/// Throughput against shard count, one line per scaling workload.
fn scaling(path: &Path, records: &[Record]) -> Option<Drawn> {
    let points: Vec<&Record> = records.iter().filter(|r| r.workload.starts_with(scaling::PREFIX)).collect();
    let (lo, hi) = log_bounds(points.iter().map(|r| r.per_sec))?;
    let max_shards = points.iter().map(|r| r.shards).max().unwrap_or(1);
    let series = distinct(&points, |r| format!("{} ({}/s)", &r.workload[scaling::PREFIX.len()..], r.unit));
    Some((|| -> Drawn {
        let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption("percore throughput against shard count", (FONT, 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(80)
            .build_cartesian_2d(0.5f64..(max_shards as f64 + 0.5), (lo..hi).log_scale())?;
        chart
            .configure_mesh()
            .x_labels(max_shards + 1)
            .x_label_formatter(&|x| format!("{x:.0}"))
            .x_desc("shards")
            .y_desc("units per second")
            .y_label_formatter(&|y| si(*y))
            .label_style((FONT, 13))
            .draw()?;
        for (i, name) in series.iter().enumerate() {
            let stroke = colour("", i);
            let line: Vec<(f64, f64)> = points
                .iter()
                .filter(|r| format!("{} ({}/s)", &r.workload[scaling::PREFIX.len()..], r.unit) == *name)
                .map(|r| (r.shards as f64, r.per_sec))
                .collect();
            chart.draw_series(line.iter().map(|&p| Circle::new(p, 4, stroke.filled())))?;
            chart
                .draw_series(LineSeries::new(line, stroke.stroke_width(2)))?
                .label(name.as_str())
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], stroke.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font((FONT, 13))
            .draw()?;
        root.present()?;
        Ok(())
    })())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Record> {
        let mut latency = Record::throughput("percore", "latency", 1, 100, 100, 1.0, "requests");
        latency.p99_ns = Some(5_000);
        latency.latency_curve = vec![(0.0, 1_000), (50.0, 2_000), (99.0, 5_000), (99.9, 9_000)];
        vec![
            Record::throughput("percore", "pingpong", 1, 10, 10, 0.001, "round_trips"),
            Record::throughput("actix", "pingpong", 1, 10, 10, 0.01, "round_trips"),
            Record::throughput("raw-spsc", "raw-spsc", 2, 10, 10, 0.0001, "items"),
            Record::throughput("percore", "scaling:fanin", 1, 10, 10, 0.01, "msgs"),
            Record::throughput("percore", "scaling:fanin", 2, 10, 10, 0.006, "msgs"),
            latency,
        ]
    }

    #[test]
    fn writes_three_svgs_with_text() {
        let dir = std::env::temp_dir().join(format!("percore-perf-charts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        write_all(&dir, &sample()).expect("charts drawn");
        for name in ["throughput.svg", "latency.svg", "scaling.svg"] {
            let svg = std::fs::read_to_string(dir.join(name)).expect("chart written");
            assert!(svg.starts_with("<svg") && svg.contains("<text"), "{name}");
        }
        let throughput = std::fs::read_to_string(dir.join("throughput.svg")).expect("chart");
        assert!(throughput.contains("pingpong (round_trips)") && throughput.contains("actix"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn empty_run_writes_nothing() {
        let dir = std::env::temp_dir().join(format!("percore-perf-empty-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        write_all(&dir, &[]).expect("nothing to draw is fine");
        assert!(!dir.join("throughput.svg").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn nines_axis() {
        assert!(nines(0.0).abs() < 1e-9);
        assert!((nines(99.0) - 2.0).abs() < 1e-9);
        assert!((nines(99.9) - 3.0).abs() < 1e-6);
    }
}
