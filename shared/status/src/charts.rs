//! Charts drawn on the server as inline SVG: bars over a time window and horizontal
//! bars per label. No script, no external file: the page reads the same on a phone, in
//! a browser without JavaScript and in a screenshot. Each bar carries a `<title>` with
//! its value, which browsers show on hover or long press.

use maud::{Markup, html};

/// One bar: its tooltip, its height (in the chart's unit) and a CSS class for colour.
#[derive(Clone, Debug, PartialEq)]
pub struct Bar {
    pub label: String,
    pub value: f64,
    pub class: &'static str,
}

/// A chart's identity and how to print its values.
pub struct Chart<'a> {
    /// `data-chart` of the `<svg>`: `rows`, `durations`, `errors`, `lag`.
    pub kind: &'a str,
    pub title: &'a str,
    pub format: fn(f64) -> String,
}

const WIDTH: f64 = 320.0;
const HEIGHT: f64 = 140.0;
const LEFT: f64 = 40.0;
const RIGHT: f64 = 6.0;
const TOP: f64 = 10.0;
const BOTTOM: f64 = 18.0;

/// Vertical bars side by side over a window, oldest left; `start` and `end` label the
/// window's edges. Bars whose value is 0 still take their slot, so time stays linear.
pub fn column_chart(chart: &Chart, bars: &[Bar], start: &str, end: &str) -> Markup {
    let max = nice_max(bars.iter().map(|b| b.value));
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let slot = plot_w / bars.len().max(1) as f64;
    let gap = (slot * 0.15).min(1.0);
    html! {
        svg.chart data-chart=(chart.kind) viewBox={"0 0 " (WIDTH) " " (HEIGHT)} role="img"
            xmlns="http://www.w3.org/2000/svg" {
            title { (chart.title) }
            (axes(max, chart.format))
            @for (i, bar) in bars.iter().enumerate() {
                @let h = if max > 0.0 { bar.value / max * plot_h } else { 0.0 };
                rect class={"bar " (bar.class)} x=(fmt(LEFT + i as f64 * slot + gap / 2.0))
                    y=(fmt(TOP + plot_h - h)) width=(fmt((slot - gap).max(0.5))) height=(fmt(h)) {
                    title { (bar.label) ": " ((chart.format)(bar.value)) }
                }
            }
            text.axis x=(LEFT) y=(HEIGHT - 4.0) { (start) }
            text.axis x=(WIDTH - RIGHT) y=(HEIGHT - 4.0) text-anchor="end" { (end) }
        }
    }
}

/// One horizontal bar per label, its value printed beside it.
pub fn bar_chart(chart: &Chart, bars: &[Bar]) -> Markup {
    let max = nice_max(bars.iter().map(|b| b.value));
    let row = ((HEIGHT - TOP - 4.0) / bars.len().max(1) as f64).min(24.0);
    // As tall as its rows: a few entities do not leave the chart mostly empty.
    let height = TOP + row * bars.len().max(1) as f64 + 4.0;
    let label_w = 62.0;
    let plot_w = WIDTH - label_w - 70.0;
    html! {
        svg.chart data-chart=(chart.kind) viewBox={"0 0 " (WIDTH) " " (height)} role="img"
            xmlns="http://www.w3.org/2000/svg" {
            title { (chart.title) }
            @for (i, bar) in bars.iter().enumerate() {
                @let y = TOP + i as f64 * row;
                @let w = if max > 0.0 { bar.value / max * plot_w } else { 0.0 };
                text.label x="4" y=(fmt(y + row * 0.62)) { (bar.label) }
                rect class={"bar " (bar.class)} x=(label_w) y=(fmt(y + row * 0.15))
                    width=(fmt(w.max(1.0))) height=(fmt(row * 0.7)) {
                    title { (bar.label) ": " ((chart.format)(bar.value)) }
                }
                text.value x=(fmt(label_w + w.max(1.0) + 4.0)) y=(fmt(y + row * 0.62)) {
                    ((chart.format)(bar.value))
                }
            }
        }
    }
}

fn axes(max: f64, format: fn(f64) -> String) -> Markup {
    let bottom = HEIGHT - BOTTOM;
    html! {
        line.axis x1=(LEFT) y1=(bottom) x2=(WIDTH - RIGHT) y2=(bottom) {}
        line.grid x1=(LEFT) y1=(TOP) x2=(WIDTH - RIGHT) y2=(TOP) {}
        text.axis x=(LEFT - 3.0) y=(TOP + 4.0) text-anchor="end" { (format(max)) }
        text.axis x=(LEFT - 3.0) y=(bottom) text-anchor="end" { "0" }
    }
}

/// The axis maximum: the largest value rounded up to 1, 2 or 5 times a power of ten.
fn nice_max(values: impl Iterator<Item = f64>) -> f64 {
    let max = values.fold(0.0_f64, f64::max);
    if max <= 0.0 || !max.is_finite() {
        return 0.0;
    }
    let magnitude = 10f64.powf(max.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|step| step * magnitude)
        .find(|candidate| *candidate >= max)
        .unwrap_or(max)
}

/// Coordinates with one decimal: enough for a 320-unit view box, and short markup.
fn fmt(value: f64) -> String {
    format!("{:.1}", value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(value: f64) -> String {
        format!("{value}")
    }

    const CHART: Chart = Chart {
        kind: "rows",
        title: "Rows written",
        format: count,
    };

    #[test]
    fn axis_maxima_are_round() {
        assert_eq!(nice_max([0.0, 3.0, 7.0].into_iter()), 10.0);
        assert_eq!(nice_max([1234.0].into_iter()), 2000.0);
        assert_eq!(nice_max([0.3].into_iter()), 0.5);
        assert_eq!(nice_max(std::iter::empty()), 0.0);
    }

    #[test]
    fn a_column_chart_has_one_bar_per_slot_scaled_to_the_axis() {
        let bars: Vec<Bar> = [0.0, 5.0, 10.0]
            .iter()
            .map(|&value| Bar {
                label: "slot".into(),
                value,
                class: "ok",
            })
            .collect();
        let svg = column_chart(&CHART, &bars, "24h ago", "now").into_string();
        assert!(
            svg.starts_with("<svg class=\"chart\" data-chart=\"rows\""),
            "{svg}"
        );
        assert_eq!(svg.matches("<rect").count(), 3);
        // The tallest bar fills the plot (112 units), the empty one has no height.
        assert!(svg.contains("height=\"112.0\""), "{svg}");
        assert!(svg.contains("height=\"0.0\""), "{svg}");
        assert!(svg.contains("<title>slot: 10</title>"), "{svg}");
        assert!(!svg.contains("<script"));
    }

    #[test]
    fn labels_are_escaped() {
        let bars = [Bar {
            label: "<b>&".into(),
            value: 1.0,
            class: "ok",
        }];
        let svg = bar_chart(&CHART, &bars).into_string();
        assert!(svg.contains("&lt;b&gt;&amp;"), "{svg}");
        assert!(!svg.contains("<b>"));
    }
}
