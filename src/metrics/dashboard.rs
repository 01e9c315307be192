//! The dashboard stream's frame (`/stats`): the figures the demo page
//! draws, over one process or all of a supervisor's, as one line of JSON.

use std::collections::BTreeMap;

use super::{Figures, Part};

/// The data of one `event: stats` frame of the dashboard stream, for the
/// processes in `parts`: a single line of JSON.
pub(crate) fn dashboard_frame(parts: &[Part<'_>], events_per_second: f64, uptime_s: f64) -> String {
    let sum = |value: fn(&Figures) -> u64| parts.iter().map(|p| value(p.figures)).sum::<u64>();
    let fanout = parts
        .iter()
        .map(|p| p.figures.counters.last_fanout.as_secs_f64())
        .fold(0.0, f64::max);
    let workers = parts
        .iter()
        .filter(|p| p.worker.as_deref().is_some_and(|w| w != "supervisor"));
    let mut rooms: BTreeMap<&str, u64> = BTreeMap::new();
    for (room, n) in parts.iter().flat_map(|p| &p.figures.rooms) {
        *rooms.entry(room).or_default() += n;
    }
    serde_json::json!({
        "connections": sum(|f| f.gauges.open() as u64),
        "streams": sum(|f| f.gauges.streaming as u64),
        "eventsPerSecond": (events_per_second * 100.0).round() / 100.0,
        "fanoutMs": (fanout * 1e5).round() / 100.0,
        "rssBytes": sum(|f| f.rss),
        "messages": parts.iter().map(|p| p.figures.counters.messages).max().unwrap_or(0),
        "uptime": (uptime_s * 10.0).round() / 10.0,
        "workers": workers.count(),
        "backplane": parts.iter().rev().find_map(|p| p.figures.gauges.backplane),
        "rooms": rooms,
    })
    .to_string()
}
