//! Opens per day as an inline SVG bar chart, drawn on the server: no script, no external assets, and
//! only presentation attributes (the CSP forbids inline styles).

use maud::{Markup, html};

use mailserver::day::Day;

const WIDTH: f64 = 1000.0;
const HEIGHT: f64 = 260.0;
const LEFT: f64 = 52.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 24.0;
const BOTTOM: f64 = 40.0;
const BAR: &str = "#2457c5";
const GRID: &str = "#d9dee7";
const MUTED: &str = "#5b6475";
const FG: &str = "#1d2430";
/// Roughly how wide a day label ("Sep 30") is, in chart units.
const LABEL_WIDTH: f64 = 50.0;

fn n(x: f64) -> String {
    let s = format!("{x:.1}");
    s.strip_suffix(".0").map(str::to_string).unwrap_or(s)
}

/// A round step for about four grid lines up to `max`: 1, 2 or 5 times a power of ten.
fn grid_step(max: i64) -> i64 {
    let mut magnitude = 1i64;
    loop {
        for m in [1, 2, 5] {
            let step = m * magnitude;
            if step * 4 >= max {
                return step;
            }
        }
        magnitude = magnitude.saturating_mul(10);
    }
}

/// The chart for `counts[i]` opens on day `start + i`.
pub(crate) fn svg(start: Day, counts: &[i64]) -> Markup {
    let days = counts.len().max(1) as f64;
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let max = counts.iter().copied().max().unwrap_or(0);
    let step = grid_step(max.max(1));
    let top = ((max.max(1) + step - 1) / step) * step;
    let slot = plot_w / days;
    let bar_w = (slot * 0.72).max(1.0);
    let label_every = ((LABEL_WIDTH / slot).ceil() as usize).max(1);
    let show_values = slot >= 24.0;
    let total: i64 = counts.iter().sum();
    let last = start.plus(counts.len() as i64 - 1);
    let summary = format!("Opens per day from {start} to {last}: {total} in all");
    let baseline = TOP + plot_h;
    html! {
        svg xmlns="http://www.w3.org/2000/svg" viewBox={ "0 0 " (n(WIDTH)) " " (n(HEIGHT)) }
            width="100%" role="img" aria-label=(summary) font-family="system-ui, sans-serif" {
            title { (summary) }
            rect x="0.5" y="0.5" width=(n(WIDTH - 1.0)) height=(n(HEIGHT - 1.0)) rx="8"
                fill="#fff" stroke=(GRID) {}
            @for tick in (0..=top).step_by(step as usize) {
                @let y = baseline - tick as f64 / top as f64 * plot_h;
                line x1=(n(LEFT)) x2=(n(WIDTH - RIGHT)) y1=(n(y)) y2=(n(y)) stroke=(GRID) stroke-width="1" {}
                text x=(n(LEFT - 8.0)) y=(n(y + 4.0)) text-anchor="end" font-size="12" fill=(MUTED) { (tick) }
            }
            @for (i, &count) in counts.iter().enumerate() {
                @let day = start.plus(i as i64);
                @let h = count as f64 / top as f64 * plot_h;
                @let x = LEFT + i as f64 * slot + (slot - bar_w) / 2.0;
                @let center = LEFT + (i as f64 + 0.5) * slot;
                rect class="bar" x=(n(x)) y=(n(baseline - h)) width=(n(bar_w)) height=(n(h)) fill=(BAR)
                    data-day=(day) data-count=(count) {
                    title { (day) ": " (count) @if count == 1 { " open" } @else { " opens" } }
                }
                @if show_values && count > 0 {
                    text x=(n(center)) y=(n(baseline - h - 5.0)) text-anchor="middle" font-size="11" fill=(FG) { (count) }
                }
                @if (counts.len() - 1 - i).is_multiple_of(label_every) {
                    line x1=(n(center)) x2=(n(center)) y1=(n(baseline)) y2=(n(baseline + 4.0)) stroke=(MUTED) {}
                    text x=(n(center)) y=(n(baseline + 18.0)) text-anchor="middle" font-size="12" fill=(MUTED) { (day.short()) }
                }
            }
            line x1=(n(LEFT)) x2=(n(WIDTH - RIGHT)) y1=(n(baseline)) y2=(n(baseline)) stroke=(MUTED) stroke-width="1" {}
            @if total == 0 {
                text x=(n(LEFT + plot_w / 2.0)) y=(n(TOP + plot_h / 2.0)) text-anchor="middle" font-size="14" fill=(MUTED) {
                    "No opens in this range"
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps() {
        for (max, step) in [
            (1, 1),
            (4, 1),
            (5, 2),
            (8, 2),
            (9, 5),
            (20, 5),
            (21, 10),
            (130, 50),
        ] {
            assert_eq!(grid_step(max), step, "{max}");
        }
    }

    #[test]
    fn one_bar_per_day() {
        let start = Day::parse("2024-05-01").unwrap();
        let svg = svg(start, &[0, 3, 1, 0, 7]).into_string();
        assert_eq!(svg.matches("class=\"bar\"").count(), 5);
        assert!(svg.contains("data-day=\"2024-05-05\" data-count=\"7\""));
        assert!(svg.contains("2024-05-02: 3 opens"));
        assert!(svg.contains("2024-05-03: 1 open<"));
        assert!(!svg.contains("style="));
    }
}
