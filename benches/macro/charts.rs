//! The macro benchmark's charts, drawn with `plotters`' SVG backend (no
//! system fonts needed): spread against connections for the server and the
//! floor, memory per connection on an axis from zero with the 128 B target,
//! and chat latency. Connections are on a log axis (1,000 to 100,000);
//! every series keeps its colour across the charts.

use std::error::Error;
use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::Row;

/// Memory per connection the project aims under, drawn on its chart.
const RSS_TARGET: f64 = 128.0;

const COLOURS: [RGBColor; 5] = [
    RGBColor(31, 119, 180),
    RGBColor(230, 120, 20),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

const ALARM: RGBColor = RGBColor(214, 39, 40);

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;
type Result<T = ()> = std::result::Result<T, Box<dyn Error>>;

/// Writes `spread.svg`, `memory.svg`, `chat.svg` and `plot.svg` (the first
/// two side by side) into `out`; `subtitle` (date, machine) goes under each.
pub fn write_all(rows: &[Row], out: &Path, subtitle: &str) -> Result {
    type Draw = fn(&Area<'_>, &[Row]) -> Result;
    let charts: [(&str, Draw); 3] = [
        ("spread.svg", spread),
        ("memory.svg", memory),
        ("chat.svg", chat),
    ];
    for (name, draw) in charts {
        let path = out.join(name);
        let root = SVGBackend::new(&path, (860, 520)).into_drawing_area();
        framed(&root, rows, subtitle, draw)?;
        root.present()?;
    }
    let path = out.join("plot.svg");
    let root = SVGBackend::new(&path, (1720, 520)).into_drawing_area();
    let (left, right) = root.split_horizontally(860);
    framed(&left, rows, subtitle, spread)?;
    framed(&right, rows, subtitle, memory)?;
    root.present()?;
    Ok(())
}

/// A white page with the subtitle at the foot, and the chart above it.
fn framed(
    area: &Area<'_>,
    rows: &[Row],
    subtitle: &str,
    draw: fn(&Area<'_>, &[Row]) -> Result,
) -> Result {
    area.fill(&WHITE)?;
    let (chart, foot) = area.split_vertically(area.dim_in_pixel().1 - 24);
    foot.draw_text(
        subtitle,
        &("sans-serif", 12).into_font().color(&RGBColor(90, 90, 90)),
        (12, 4),
    )?;
    draw(&chart, rows)
}

/// The series in order of first appearance, each with its colour.
fn series(rows: &[Row]) -> Vec<(String, RGBColor, Vec<&Row>)> {
    let mut out: Vec<(String, RGBColor, Vec<&Row>)> = Vec::new();
    for row in rows {
        match out.iter_mut().find(|(name, _, _)| *name == row.series) {
            Some((_, _, members)) => members.push(row),
            None => {
                let colour = COLOURS[out.len() % COLOURS.len()];
                out.push((row.series.clone(), colour, vec![row]));
            }
        }
    }
    for (_, _, members) in &mut out {
        members.sort_by_key(|r| r.connections);
    }
    out
}

/// The connections axis: log scale around the counts that ran.
fn x_range(rows: &[Row]) -> std::ops::Range<f64> {
    let min = rows.iter().map(|r| r.connections).min().unwrap_or(1000) as f64;
    let max = rows.iter().map(|r| r.connections).max().unwrap_or(1000) as f64;
    // Room on the right for the labels beside the last points.
    (min * 0.7)..(max * 2.2)
}

fn count_label(n: &f64) -> String {
    if *n >= 1000.0 {
        format!("{}k", (*n / 1000.0).round())
    } else {
        format!("{}", n.round())
    }
}

/// Where a point's label goes: above it if no other series is higher at
/// the same count, below it otherwise, so that labels of series that run
/// close keep apart.
fn label_offset(rows: &[Row], row: &Row, f: impl Fn(&Row) -> f64) -> (i32, i32) {
    let highest = rows
        .iter()
        .filter(|r| r.connections == row.connections && r.series != row.series)
        .all(|r| f(r).partial_cmp(&f(row)) != Some(std::cmp::Ordering::Greater));
    if highest { (8, -18) } else { (8, 6) }
}

/// The smallest positive finite value of `f` over `rows` (1 if none).
fn bottom(rows: &[Row], f: impl Fn(&Row) -> f64) -> f64 {
    let low = rows
        .iter()
        .map(f)
        .filter(|v| v.is_finite() && *v > 0.0)
        .fold(f64::INFINITY, f64::min);
    if low.is_finite() { low } else { 1.0 }
}

/// A label on a linear axis: whole numbers, unless the axis is short.
fn axis_number(y: f64, axis_max: f64) -> String {
    if axis_max < 5.0 {
        format!("{y:.1}")
    } else {
        format!("{y:.0}")
    }
}

/// A label on a log axis: as many decimals as the value needs.
fn log_axis_number(y: f64) -> String {
    if y >= 10.0 {
        format!("{y:.0}")
    } else if y >= 1.0 {
        format!("{y:.1}")
    } else {
        format!("{y:.2}")
    }
}

/// The largest finite value of `f` over `rows`, or `floor` if larger.
fn top(rows: &[Row], floor: f64, f: impl Fn(&Row) -> f64) -> f64 {
    rows.iter()
        .map(f)
        .filter(|v| v.is_finite())
        .fold(floor, f64::max)
}

fn legend<'a, DB: DrawingBackend + 'a, Y: Ranged<ValueType = f64>>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<LogCoord<f64>, Y>>,
    position: SeriesLabelPosition,
) -> Result {
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .label_font(("sans-serif", 13))
        .draw()
        .map_err(|e| e.to_string().into())
}

type LogLog<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<LogCoord<f64>, LogCoord<f64>>>;

/// A chart with connections and `y` both on log axes, its mesh drawn.
fn log_log<'a, 'b>(
    area: &'a Area<'b>,
    rows: &[Row],
    caption: &str,
    y_desc: &str,
    y: std::ops::Range<f64>,
) -> Result<LogLog<'a, 'b>> {
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(x_range(rows).log_scale(), y.log_scale())?;
    chart
        .configure_mesh()
        .x_desc("connections (log scale)")
        .y_desc(y_desc)
        .x_label_formatter(&count_label)
        .y_label_formatter(&|y| log_axis_number(*y))
        .label_style(("sans-serif", 13))
        .light_line_style(BLACK.mix(0.05))
        .draw()?;
    Ok(chart)
}

/// Spread p50 (whisker to p99) against connections: the server solid, its
/// floor dashed, in the series' colour; coverage below 1 ringed in red.
fn spread(area: &Area<'_>, rows: &[Row]) -> Result {
    // Log-log: spread grows with connections, and the gap between a
    // server point and its floor point reads as their ratio.
    let y_max = top(rows, 1.0, |r| r.spread_p99_ms.max(r.floor_p99_ms)) * 2.5;
    let y_min = bottom(rows, |r| r.spread_p50_ms.min(r.floor_p50_ms)) * 0.5;
    let mut chart = log_log(
        area,
        rows,
        "Fan-out spread: one event, first connection to last",
        "spread, ms, log scale (dot: p50, bar: to p99)",
        y_min..y_max,
    )?;
    for (name, colour, members) in series(rows) {
        let server: Vec<(f64, f64)> = members
            .iter()
            .map(|r| (r.connections as f64, r.spread_p50_ms))
            .filter(|p| p.1.is_finite())
            .collect();
        let floor: Vec<(f64, f64)> = members
            .iter()
            .map(|r| (r.connections as f64, r.floor_p50_ms))
            .filter(|p| p.1.is_finite())
            .collect();
        chart
            .draw_series(LineSeries::new(server.clone(), colour.stroke_width(2)))?
            .label(format!("{name}: server"))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], colour.stroke_width(2)));
        chart.draw_series(server.iter().map(|&p| Circle::new(p, 4, colour.filled())))?;
        chart
            .draw_series(DashedLineSeries::new(
                floor.clone(),
                6,
                4,
                colour.stroke_width(2),
            ))?
            .label(format!("{name}: floor (bare writes)"))
            .legend(move |(x, y)| {
                EmptyElement::at((x, y))
                    + PathElement::new([(0, 0), (6, 0)], colour.stroke_width(2))
                    + PathElement::new([(10, 0), (16, 0)], colour.stroke_width(2))
            });
        chart.draw_series(
            floor
                .iter()
                .map(|&p| Circle::new(p, 4, colour.stroke_width(2))),
        )?;
        for r in &members {
            let x = r.connections as f64;
            for (p50, p99) in [
                (r.spread_p50_ms, r.spread_p99_ms),
                (r.floor_p50_ms, r.floor_p99_ms),
            ] {
                if p50.is_finite() && p99.is_finite() {
                    chart.draw_series(std::iter::once(PathElement::new(
                        [(x, p50), (x, p99)],
                        colour.mix(0.6).stroke_width(1),
                    )))?;
                }
            }
            if r.ratio_p50().is_finite() {
                chart.draw_series(std::iter::once(
                    EmptyElement::at((x, r.spread_p50_ms))
                        + Text::new(
                            format!("{:.2}× floor", r.ratio_p50()),
                            label_offset(rows, r, |r| r.spread_p50_ms),
                            ("sans-serif", 12).into_font().color(&colour),
                        ),
                ))?;
            }
        }
    }
    ring_low_coverage(&mut chart, rows, |r| r.spread_p50_ms)?;
    legend(&mut chart, SeriesLabelPosition::UpperLeft)
}

/// Red rings, and the figure, where some connection missed an event (or a
/// floor round).
fn ring_low_coverage<'a, DB: DrawingBackend + 'a, Y: Ranged<ValueType = f64>>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<LogCoord<f64>, Y>>,
    rows: &[Row],
    y: impl Fn(&Row) -> f64,
) -> Result {
    let mut first = true;
    for r in rows {
        let coverage = r.coverage_min.min(r.floor_coverage_min);
        if coverage >= 1.0 || coverage.is_nan() || !y(r).is_finite() {
            continue;
        }
        let at = (r.connections as f64, y(r));
        let drawn = chart
            .draw_series(std::iter::once(
                EmptyElement::at(at)
                    + Circle::new((0, 0), 10, ALARM.stroke_width(2))
                    + Text::new(
                        format!("coverage {coverage:.3}"),
                        (-40, 14),
                        ("sans-serif", 12).into_font().color(&ALARM),
                    ),
            ))
            .map_err(|e| e.to_string())?;
        if first {
            drawn
                .label("coverage below 1: some connection missed an event")
                .legend(|(x, y)| Circle::new((x + 10, y), 5, ALARM.stroke_width(2)));
            first = false;
        }
    }
    Ok(())
}

/// RSS per connection against connections, from zero, with the target.
fn memory(area: &Area<'_>, rows: &[Row]) -> Result {
    let y_max = top(rows, RSS_TARGET * 1.25, |r| r.rss_per_connection) * 1.15;
    let x = x_range(rows);
    let mut chart = ChartBuilder::on(area)
        .caption("Server memory per connection", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(x.clone().log_scale(), 0.0..y_max)?;
    chart
        .configure_mesh()
        .x_desc("connections (log scale)")
        .y_desc("bytes of RSS per connection")
        .x_label_formatter(&count_label)
        .y_label_formatter(&|y| axis_number(*y, y_max))
        .label_style(("sans-serif", 13))
        .light_line_style(BLACK.mix(0.05))
        .draw()?;
    chart
        .draw_series(DashedLineSeries::new(
            [(x.start, RSS_TARGET), (x.end, RSS_TARGET)],
            8,
            5,
            ALARM.stroke_width(2),
        ))?
        .label(format!("target: under {RSS_TARGET:.0} B"))
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], ALARM.stroke_width(2)));
    for (name, colour, members) in series(rows) {
        let points: Vec<(f64, f64)> = members
            .iter()
            .map(|r| (r.connections as f64, r.rss_per_connection))
            .filter(|p| p.1.is_finite())
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], colour.stroke_width(2)));
        chart.draw_series(
            members
                .iter()
                .filter(|r| r.rss_per_connection.is_finite())
                .map(|r| {
                    EmptyElement::at((r.connections as f64, r.rss_per_connection))
                        + Circle::new((0, 0), 4, colour.filled())
                        + Text::new(
                            format!("{:.0} B", r.rss_per_connection),
                            label_offset(rows, r, |r| r.rss_per_connection),
                            ("sans-serif", 12).into_font().color(&colour),
                        )
                }),
        )?;
    }
    ring_low_coverage(&mut chart, rows, |r| r.rss_per_connection)?;
    // Small counts, where a few pages weigh most per connection, sit on
    // the left and high.
    legend(&mut chart, SeriesLabelPosition::UpperRight)
}

/// Chat: POST to the last receiver (dot: p50 of three, bar: to the max).
fn chat(area: &Area<'_>, rows: &[Row]) -> Result {
    let y_max = top(rows, 1.0, |r| r.chat_max_ms) * 2.5;
    let y_min = bottom(rows, |r| r.chat_p50_ms) * 0.5;
    let mut chart = log_log(
        area,
        rows,
        "Chat: from the POST to the last connection receiving it",
        "ms, log scale (dot: p50, bar: to the slowest)",
        y_min..y_max,
    )?;
    for (name, colour, members) in series(rows) {
        let points: Vec<(f64, f64, f64)> = members
            .iter()
            .map(|r| (r.connections as f64, r.chat_p50_ms, r.chat_max_ms))
            .filter(|p| p.1.is_finite() && p.2.is_finite())
            .collect();
        chart
            .draw_series(LineSeries::new(
                points.iter().map(|p| (p.0, p.1)),
                colour.stroke_width(2),
            ))?
            .label(name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], colour.stroke_width(2)));
        for &(x, p50, max) in &points {
            chart.draw_series(std::iter::once(PathElement::new(
                [(x, p50), (x, max)],
                colour.mix(0.6).stroke_width(1),
            )))?;
            chart.draw_series(std::iter::once(Circle::new((x, p50), 4, colour.filled())))?;
        }
    }
    legend(&mut chart, SeriesLabelPosition::UpperLeft)
}
