//! The report's charts, as SVG (`plotters`' SVG backend: no system fonts
//! needed): streams open and events received over the run, with the hold
//! marked, and the latency distributions as percentile curves (the tail
//! spread out: 90, 99, 99.9 % are equally far apart).

use std::error::Error;
use std::ops::Range;
use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::Report;
use crate::series::{Curve, SLOT_NS, Slot};

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;
type Result<T = ()> = std::result::Result<T, Box<dyn Error>>;

const COLOURS: [RGBColor; 3] = [
    RGBColor(31, 119, 180),
    RGBColor(230, 120, 20),
    RGBColor(44, 160, 44),
];

/// The hold's span on the time charts.
const HOLD: RGBAColor = RGBAColor(31, 119, 180, 0.08);

/// The charts' files, in the order the summary shows them.
pub(crate) const FILES: [&str; 3] = ["connections.svg", "events.svg", "latency.svg"];

/// Writes [`FILES`] into `dir`; `subtitle` (the URL, the time) under each.
pub(crate) fn write_all(r: &Report, dir: &Path, subtitle: &str) -> Result {
    type Draw = fn(&Area<'_>, &Report) -> Result;
    let draws: [Draw; 3] = [connections, events, latency];
    for (name, draw) in FILES.into_iter().zip(draws) {
        let path = dir.join(name);
        let root = SVGBackend::new(&path, (860, 480)).into_drawing_area();
        root.fill(&WHITE)?;
        let (chart, foot) = root.split_vertically(480 - 24);
        let grey = ("sans-serif", 12).into_font().color(&RGBColor(90, 90, 90));
        foot.draw_text(subtitle, &grey, (12, 4))?;
        draw(&chart, r)?;
        root.present()?;
    }
    Ok(())
}

/// Streams open, a tenth of a second at a time.
fn connections(area: &Area<'_>, r: &Report) -> Result {
    let points: Vec<(f64, f64)> = r.timeline.iter().map(|s| (s.t_s, s.open as f64)).collect();
    over_time(area, r, "Streams open", "streams", &points)
}

/// Events received over every connection: at each slot, the events of
/// the second that ends there (a server that ticks once a second would
/// otherwise draw spikes).
fn events(area: &Area<'_>, r: &Report) -> Result {
    let points = per_second(&r.timeline);
    over_time(
        area,
        r,
        "Events received",
        "events in the last second",
        &points,
    )
}

/// The events of the trailing second at each slot.
fn per_second(timeline: &[Slot]) -> Vec<(f64, f64)> {
    let slots = (1_000_000_000 / SLOT_NS) as usize;
    let mut sum = 0;
    timeline
        .iter()
        .enumerate()
        .map(|(i, s)| {
            sum += s.events;
            if i >= slots {
                sum -= timeline[i - slots].events;
            }
            (s.t_s, sum as f64)
        })
        .collect()
}

/// A count against seconds from the hold's start, the hold shaded.
fn over_time(
    area: &Area<'_>,
    r: &Report,
    caption: &str,
    y_desc: &str,
    points: &[(f64, f64)],
) -> Result {
    let x = time_range(points, r.hold_s);
    let y_max = points.iter().map(|p| p.1).fold(1.0, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(72)
        .build_cartesian_2d(x.clone(), 0.0..y_max)?;
    chart
        .configure_mesh()
        .x_desc("seconds from the hold's start (shaded: the hold)")
        .y_desc(y_desc)
        .y_label_formatter(&|y| count_label(*y))
        .label_style(("sans-serif", 13))
        .light_line_style(BLACK.mix(0.05))
        .draw()?;
    chart.draw_series(std::iter::once(Rectangle::new(
        [(0.0, 0.0), (r.hold_s, y_max)],
        HOLD.filled(),
    )))?;
    chart.draw_series(LineSeries::new(
        points.iter().copied(),
        COLOURS[0].stroke_width(2),
    ))?;
    Ok(())
}

/// The seconds the run covered, and the hold at least.
fn time_range(points: &[(f64, f64)], hold_s: f64) -> Range<f64> {
    let first = points.first().map_or(0.0, |p| p.0).min(0.0);
    let last = points.last().map_or(hold_s, |p| p.0).max(hold_s);
    (first - 0.5)..(last + 0.5)
}

/// Each distribution as a curve: latency (log scale) against the share of
/// updates at or under it.
fn latency(area: &Area<'_>, r: &Report) -> Result {
    let curves: Vec<&Curve> = r.distributions.iter().collect();
    let values = || curves.iter().flat_map(|c| c.points.iter().map(|p| p.1));
    let low = values().filter(|v| *v > 0.0).fold(f64::INFINITY, f64::min);
    let low = if low.is_finite() { low * 0.7 } else { 0.01 };
    let high = values().fold(low * 10.0, f64::max) * 1.5;
    let mut chart = ChartBuilder::on(area)
        .caption("Latency distribution", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(72)
        .build_cartesian_2d(0.0..nines(0.9999) + 0.2, (low..high).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("percentile (the tail spread out)")
        .y_desc("ms, log scale")
        .x_labels(5)
        .x_label_formatter(&|x| percentile_label(*x))
        .y_label_formatter(&|y| ms_label(*y))
        .label_style(("sans-serif", 13))
        .light_line_style(BLACK.mix(0.05))
        .draw()?;
    if curves.is_empty() {
        let style = ("sans-serif", 16).into_font().color(&RGBColor(90, 90, 90));
        area.draw_text("no latency measured in this run", &style, (300, 220))?;
        return Ok(());
    }
    for (i, curve) in curves.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let points: Vec<(f64, f64)> = curve
            .points
            .iter()
            .filter(|(q, _)| *q < 1.0)
            .map(|&(q, ms)| (nines(q), ms.max(low)))
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))?
            .label(curve.name.clone())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], colour.stroke_width(2)));
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, colour.filled())))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .label_font(("sans-serif", 13))
        .draw()?;
    Ok(())
}

/// How many nines a quantile has: 0.9 → 1, 0.99 → 2, 0.999 → 3.
fn nines(q: f64) -> f64 {
    -(1.0 - q).max(1e-6).log10()
}

/// The percentile at `x` nines, as a label: 0, 90, 99, 99.9 ...
fn percentile_label(x: f64) -> String {
    let p = (1.0 - 10f64.powf(-x)) * 100.0;
    let text = format!("{p:.4}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("p{text}")
}

fn ms_label(ms: f64) -> String {
    if ms >= 10.0 {
        format!("{ms:.0}")
    } else if ms >= 1.0 {
        format!("{ms:.1}")
    } else {
        format!("{ms:.2}")
    }
}

fn count_label(n: f64) -> String {
    if n >= 10_000.0 {
        format!("{:.0}k", n / 1000.0)
    } else {
        format!("{n:.0}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_is_spread_out_and_labelled_as_percentiles() {
        assert!((nines(0.9) - 1.0).abs() < 1e-9);
        assert!((nines(0.999) - 3.0).abs() < 1e-9);
        assert_eq!(nines(0.0), 0.0);
        assert_eq!(percentile_label(0.0), "p0");
        assert_eq!(percentile_label(1.0), "p90");
        assert_eq!(percentile_label(2.0), "p99");
        assert_eq!(percentile_label(3.0), "p99.9");
    }

    #[test]
    fn events_are_counted_over_the_trailing_second() {
        let timeline: Vec<Slot> = (0..15)
            .map(|i| Slot {
                t_s: i as f64 / 10.0,
                open: 1,
                events: u64::from(i % 10 == 0),
            })
            .collect();
        let rates: Vec<f64> = per_second(&timeline).iter().map(|p| p.1).collect();
        // One event a second: a second that holds one of them counts 1.
        assert!(rates[..10].iter().all(|&r| r == 1.0), "{rates:?}");
        assert!(rates[10..].iter().all(|&r| r == 1.0), "{rates:?}");
    }

    #[test]
    fn the_time_axis_covers_the_hold_and_every_second() {
        assert_eq!(time_range(&[], 10.0), -0.5..10.5);
        assert_eq!(time_range(&[(-3.0, 1.0), (12.0, 1.0)], 10.0), -3.5..12.5);
    }
}
