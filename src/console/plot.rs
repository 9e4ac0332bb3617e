//! The console's plots, drawn on the server as SVG: a group's desired and active capacity
//! between its bounds over a range of time, with the points where policies executed, and an
//! alarm's recent datapoints against its threshold. Lines differ by dash as well as colour, and
//! each plot carries a text description, so neither is read by colour alone. Only SVG
//! attributes (no `style`), so the console's Content-Security-Policy holds.

use maud::{html, Markup};

use super::history::History;

/// The plot's size in SVG units (it scales to its container).
const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 240.0;
/// Room for the axes' labels.
const LEFT: f64 = 40.0;
const BOTTOM: f64 = 24.0;
const TOP: f64 = 10.0;
const RIGHT: f64 = 10.0;

/// Maps instants and capacities to the plot's area.
struct Frame {
    from_ms: i64,
    to_ms: i64,
    top: f64,
}

impl Frame {
    fn x(&self, at_ms: i64) -> f64 {
        let span = (self.to_ms - self.from_ms).max(1) as f64;
        let at = at_ms.clamp(self.from_ms, self.to_ms);
        LEFT + (at - self.from_ms) as f64 / span * (WIDTH - LEFT - RIGHT)
    }

    fn y(&self, value: f64) -> f64 {
        HEIGHT - BOTTOM - value / self.top.max(1.0) * (HEIGHT - BOTTOM - TOP)
    }
}

/// A step line through `(at_ms, value)` pairs (each value holds until the next), ending at the
/// range's end. Changes that fall in one column of the plot are drawn as that column's range
/// of values (at most three vertical moves), and the line leaves the column at the last of
/// them: 10,000 changes cost a few commands per column, and no spike is lost.
fn step_path(frame: &Frame, values: &[(i64, u32)]) -> String {
    use std::fmt::Write;
    let mut path = String::new();
    let Some(&(first_at, first)) = values.first() else {
        return path;
    };
    let (x0, y0) = (frame.x(first_at).round(), frame.y(f64::from(first)));
    let _ = write!(path, "M{x0:.1} {y0:.1}");
    // The column being drawn: the range of its values, and the last, which holds after it.
    let (mut column, mut low, mut high, mut last) = (x0, y0, y0, y0);
    // Where the pen is, vertically.
    let mut pen = y0;
    // Draws a column's range from where the pen entered it, then leaves the pen at its last.
    let flush = |path: &mut String, pen: &mut f64, low: f64, high: f64, last: f64| {
        if low < high {
            if *pen == low {
                let _ = write!(path, "V{high:.1}");
                *pen = high;
            } else if *pen == high {
                let _ = write!(path, "V{low:.1}");
                *pen = low;
            } else {
                let _ = write!(path, "V{low:.1}V{high:.1}");
                *pen = high;
            }
        }
        if *pen != last {
            let _ = write!(path, "V{last:.1}");
            *pen = last;
        }
    };
    for &(at, value) in &values[1..] {
        let (x, y) = (frame.x(at).round(), frame.y(f64::from(value)));
        if x == column {
            low = low.min(y);
            high = high.max(y);
            last = y;
            continue;
        }
        flush(&mut path, &mut pen, low, high, last);
        // The last value holds until this change's column.
        let _ = write!(path, "H{x:.1}");
        (column, low, high, last) = (x, last.min(y), last.max(y), y);
    }
    flush(&mut path, &mut pen, low, high, last);
    let _ = write!(path, "H{:.1}", frame.x(frame.to_ms));
    path
}

/// The label of instant `at_ms` on the time axis: the time of day for a day or less, the date
/// for longer ranges (UTC, as drawn; the page's script shows the viewer's zone).
fn label(at_ms: i64, span_ms: i64) -> String {
    let text = crate::audit::format_millis(at_ms);
    // 2026-11-30T05:51:17.000Z
    if span_ms <= 86_400_000 {
        text.get(11..16).unwrap_or(&text).to_owned()
    } else {
        text.get(5..10).unwrap_or(&text).to_owned()
    }
}

/// The capacity plot of `history`.
pub fn capacity(history: &History) -> Markup {
    let points = &history.points;
    // Scaled to what the group ran at, not to its upper bound (a group of 3 under a max of
    // 1,000 would be a flat line): a bound above the plot is named instead of drawn.
    let highest = points
        .iter()
        .map(|p| p.min.max(p.desired).max(p.active))
        .max()
        .unwrap_or(0);
    let top = (highest + highest.div_ceil(4)).max(4);
    let max_above = points.iter().map(|p| p.max).max().filter(|max| *max > top);
    let frame = Frame {
        from_ms: history.from_ms,
        to_ms: history.to_ms,
        top: f64::from(top),
    };
    let series = |value: fn(&super::history::Point) -> u32| -> String {
        let values: Vec<(i64, u32)> = points.iter().map(|p| (p.at_ms, value(p))).collect();
        step_path(&frame, &values)
    };
    let span = history.to_ms - history.from_ms;
    let ticks: Vec<i64> = (0..=4).map(|i| history.from_ms + span * i / 4).collect();
    // One marker per column: a burst of executions is one mark with its count.
    let mut markers: Vec<(f64, f64, usize, bool)> = Vec::new();
    for marker in &history.markers {
        let x = frame.x(marker.at_ms).round();
        match markers.last_mut() {
            Some(last) if last.0 == x => {
                last.2 += 1;
                last.3 &= marker.shadow;
            }
            _ => markers.push((x, frame.y(f64::from(marker.to)), 1, marker.shadow)),
        }
    }
    let last = points.last();
    let description = match last {
        Some(last) => format!(
            "Desired capacity {} and {} active, between {} and {}, at the end of the range; \
             {} policy executions in it.",
            last.desired,
            last.active,
            last.min,
            last.max,
            history.markers.len()
        ),
        None => "The group did not exist in this range.".to_owned(),
    };
    html! {
        figure.plot {
            svg viewBox={ "0 0 " (WIDTH) " " (HEIGHT) } role="img"
                aria-labelledby="plot-title plot-desc" preserveAspectRatio="none" {
                title #plot-title { "Capacity over time" }
                desc #plot-desc { (description) }
                // Axes and ticks.
                line.axis x1=(LEFT) y1=(HEIGHT - BOTTOM) x2=(WIDTH - RIGHT) y2=(HEIGHT - BOTTOM) {}
                line.axis x1=(LEFT) y1=(TOP) x2=(LEFT) y2=(HEIGHT - BOTTOM) {}
                @for value in [0, top / 2, top] {
                    text.tick x=(LEFT - 6.0) y=(frame.y(f64::from(value)) + 4.0) text-anchor="end" {
                        (value)
                    }
                }
                @for (i, at) in ticks.iter().enumerate() {
                    text.tick x=(frame.x(*at)) y=(HEIGHT - 6.0)
                        text-anchor=(match i { 0 => "start", 4 => "end", _ => "middle" })
                        data-ms=(at) data-span=(span) { (label(*at, span)) }
                }
                @if let Some(max) = max_above {
                    text.tick x=(WIDTH - RIGHT) y=(TOP + 10.0) text-anchor="end" { "max " (max) " (above)" }
                } @else {
                    path.bound d=(series(|p| p.max)) {}
                }
                path.bound d=(series(|p| p.min)) {}
                // Active over desired: dashed, it shows where the two agree.
                path.desired d=(series(|p| p.desired)) {}
                path.active d=(series(|p| p.active)) {}
                @for (x, y, count, shadow) in &markers {
                    circle class=(if *shadow { "marker shadow" } else { "marker" })
                        cx=(x) cy=(y) r="4" {
                        title {
                            (count) " policy execution" @if *count > 1 { "s" }
                            @if *shadow { " (shadow: nothing changed)" }
                        }
                    }
                }
            }
            figcaption.legend {
                span.key.desired { "desired (solid)" }
                span.key.active { "active (dashed)" }
                span.key.bound { "min and max (dotted)" }
                span.key.marker { "policy executed (dot; hollow: shadow)" }
            }
        }
    }
}

/// An alarm's recent datapoints (oldest first, `None` for a period without one) against its
/// threshold.
pub fn datapoints(points: &[Option<f64>], threshold: f64, label: &str) -> Markup {
    const W: f64 = 160.0;
    const H: f64 = 40.0;
    let high = points
        .iter()
        .flatten()
        .copied()
        .fold(threshold, f64::max)
        .max(f64::MIN_POSITIVE);
    let low = points
        .iter()
        .flatten()
        .copied()
        .fold(threshold, f64::min)
        .min(0.0);
    let y = |v: f64| H - 4.0 - (v - low) / (high - low).max(f64::MIN_POSITIVE) * (H - 8.0);
    let step = W / (points.len().max(2) - 1) as f64;
    let dots: Vec<(f64, f64, f64)> = points
        .iter()
        .enumerate()
        .filter_map(|(i, p)| p.map(|v| (i as f64 * step, y(v), v)))
        .collect();
    let line: String = dots
        .iter()
        .enumerate()
        .map(|(i, (x, y, _))| format!("{}{x:.1} {y:.1}", if i == 0 { "M" } else { "L" }))
        .collect();
    let shown: Vec<String> = points
        .iter()
        .map(|p| p.map_or("none".to_owned(), |v| format!("{v}")))
        .collect();
    html! {
        svg.spark viewBox={ "0 0 " (W) " " (H) } role="img" aria-label={
            (label) ": recent datapoints " (shown.join(", ")) " against threshold " (threshold)
        } {
            line.threshold x1="0" y1=(y(threshold)) x2=(W) y2=(y(threshold)) {}
            path.datapoints d=(line) {}
            @for (x, y, _) in &dots { circle.datapoint cx=(x) cy=(y) r="2" {} }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::history::{Marker, Point};
    use super::*;

    fn point(at_ms: i64, desired: u32) -> Point {
        Point {
            at_ms,
            desired,
            active: desired,
            min: 0,
            max: 10,
        }
    }

    /// The pen's moves after its first, as (`H` or `V`, to).
    fn moves(path: &str) -> Vec<(char, f64)> {
        let mut moves = Vec::new();
        let mut kind = ' ';
        let mut number = String::new();
        for c in path.chars().skip_while(|c| *c != 'H' && *c != 'V') {
            if c == 'H' || c == 'V' {
                if !number.is_empty() {
                    moves.push((kind, number.parse().unwrap()));
                    number.clear();
                }
                kind = c;
            } else {
                number.push(c);
            }
        }
        moves.push((kind, number.parse().unwrap()));
        moves
    }

    #[test]
    fn a_step_line_holds_each_value_until_the_next_and_ends_at_the_ranges_end() {
        let frame = Frame {
            from_ms: 0,
            to_ms: 1_000,
            top: 10.0,
        };
        let path = step_path(&frame, &[(0, 1), (500, 3)]);
        let (x0, x_mid, x_end) = (frame.x(0), frame.x(500).round(), frame.x(1_000));
        let (y1, y3) = (frame.y(1.0), frame.y(3.0));
        assert_eq!(
            path,
            format!("M{x0:.1} {y1:.1}H{x_mid:.1}V{y3:.1}H{x_end:.1}")
        );
    }

    #[test]
    fn changes_in_one_column_show_their_range_and_the_last_holds_after_it() {
        let frame = Frame {
            from_ms: 0,
            to_ms: 1_000_000,
            top: 10.0,
        };
        // 2, then 5 and 3 within a millisecond of each other (one column), then 1 much later.
        let path = step_path(&frame, &[(0, 2), (500_000, 5), (500_001, 3), (900_000, 1)]);
        let y = |v: f64| (frame.y(v) * 10.0).round() / 10.0;
        assert_eq!(
            moves(&path),
            [
                ('H', frame.x(500_000).round()),
                // The column's range, from its entry at 2 up to 5, then down to the last, 3.
                ('V', y(5.0)),
                ('V', y(3.0)),
                // 3 holds until the next change, at its level.
                ('H', frame.x(900_000).round()),
                ('V', y(1.0)),
                ('H', frame.x(1_000_000)),
            ]
        );
    }

    #[test]
    fn ten_thousand_changes_are_drawn_within_the_plots_columns() {
        let values: Vec<(i64, u32)> = (0..10_000).map(|i| (i, (i % 7) as u32)).collect();
        let frame = Frame {
            from_ms: 0,
            to_ms: 10_000,
            top: 8.0,
        };
        let path = step_path(&frame, &values);
        // One horizontal and at most three vertical moves per column.
        assert!(
            path.matches('H').count() <= WIDTH as usize + 1,
            "{}",
            path.len()
        );
        assert!(
            path.matches('V').count() <= 3 * WIDTH as usize,
            "{}",
            path.len()
        );
        // Every value reached in a column shows as its range.
        assert!(path.contains(&format!("{:.1}", frame.y(6.0))));
    }

    #[test]
    fn the_plot_describes_itself_and_marks_shadow_executions_apart() {
        let history = History {
            from_ms: 0,
            to_ms: 3_600_000,
            points: vec![point(0, 1), point(1_800_000, 2)],
            markers: vec![
                Marker {
                    at_ms: 1_800_000,
                    to: 2,
                    shadow: false,
                    policy_id: "pol_1".into(),
                },
                Marker {
                    at_ms: 3_000_000,
                    to: 5,
                    shadow: true,
                    policy_id: "pol_2".into(),
                },
            ],
            entries: Vec::new(),
        };
        let svg = capacity(&history).into_string();
        assert!(svg.contains("Desired capacity 2 and 2 active, between 0 and 10"));
        assert!(svg.contains("2 policy executions"));
        assert_eq!(svg.matches("class=\"marker\"").count(), 1);
        assert_eq!(svg.matches("class=\"marker shadow\"").count(), 1);
        assert!(!svg.contains("style="), "no inline style under the CSP");
    }
}
