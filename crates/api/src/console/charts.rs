//! Charts drawn on the server as SVG: stacked bars, one column per label (a day, an app), one
//! colour per series. The geometry is computed here and the template writes it out, escaping
//! every label; each chart also carries its numbers as a table for people who do not read
//! charts (and for screen readers).

/// Colours distinguishable with common colour blindness, each at least 3:1 against white.
pub(crate) const PALETTE: [&str; 9] =
    ["#0072b2", "#d55e00", "#009e73", "#cc79a7", "#8a6d00", "#5e3c99", "#882255", "#444444", "#117733"];

/// One rectangle of a bar.
pub(crate) struct Segment {
    pub x: String,
    pub y: String,
    pub width: String,
    pub height: String,
    pub colour: &'static str,
    /// Shown on hover and read by screen readers: `2019-11-05 member.name: 120`.
    pub title: String,
}

/// A label under the x axis.
pub(crate) struct Tick {
    pub x: String,
    pub text: String,
}

/// A series' colour and name.
pub(crate) struct LegendItem {
    pub colour: &'static str,
    pub name: String,
}

/// A stacked bar chart ready for the template.
pub(crate) struct BarChart {
    /// What the chart shows, as its accessible name.
    pub title: String,
    pub width: u32,
    pub height: u32,
    pub axis_y: String,
    pub axis_left: String,
    /// Where the labels under the axis sit.
    pub tick_y: String,
    pub max_label: String,
    pub segments: Vec<Segment>,
    pub ticks: Vec<Tick>,
    pub legend: Vec<LegendItem>,
    /// The numbers: series names, then one row per column (label, values, total).
    pub series: Vec<String>,
    pub rows: Vec<(String, Vec<u64>, u64)>,
}

const LEFT: f64 = 56.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 36.0;

impl BarChart {
    /// `columns` are (label, one value per series), drawn left to right.
    pub(crate) fn stacked(title: &str, series: Vec<String>, columns: Vec<(String, Vec<u64>)>) -> BarChart {
        let (width, height) = (880u32, 260u32);
        let plot_width = f64::from(width) - LEFT - 48.0;
        let plot_height = f64::from(height) - TOP - BOTTOM;
        let max = columns.iter().map(|(_, values)| values.iter().sum::<u64>()).max().unwrap_or(0).max(1);
        let step = plot_width / columns.len().max(1) as f64;
        let bar = (step * 0.8).max(1.0);
        let mut segments = Vec::new();
        let mut ticks = Vec::new();
        let label_every = columns.len().div_ceil(8).max(1);
        for (i, (label, values)) in columns.iter().enumerate() {
            let x = LEFT + i as f64 * step + (step - bar) / 2.0;
            let mut y = TOP + plot_height;
            for (s, value) in values.iter().enumerate() {
                if *value == 0 {
                    continue;
                }
                let h = *value as f64 / max as f64 * plot_height;
                y -= h;
                let name = series.get(s).map(String::as_str).unwrap_or("other");
                segments.push(Segment {
                    x: format!("{x:.1}"),
                    y: format!("{y:.1}"),
                    width: format!("{bar:.1}"),
                    height: format!("{:.1}", h.max(0.5)),
                    colour: PALETTE.get(s % PALETTE.len()).copied().unwrap_or("#444444"),
                    title: format!("{label} {name}: {value}"),
                });
            }
            if i % label_every == 0 {
                ticks.push(Tick { x: format!("{x:.1}"), text: label.clone() });
            }
        }
        let legend = series
            .iter()
            .enumerate()
            .map(|(s, name)| LegendItem {
                colour: PALETTE.get(s % PALETTE.len()).copied().unwrap_or("#444444"),
                name: name.clone(),
            })
            .collect();
        let rows = columns
            .into_iter()
            .map(|(label, values)| {
                let total = values.iter().sum();
                (label, values, total)
            })
            .collect();
        BarChart {
            title: title.to_string(),
            width,
            height,
            axis_y: format!("{:.1}", TOP + plot_height),
            axis_left: format!("{LEFT:.1}"),
            tick_y: format!("{:.1}", TOP + plot_height + 16.0),
            max_label: super::view::count(max),
            segments,
            ticks,
            legend,
            series,
            rows,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tallest_column_fills_the_plot_and_zero_draws_nothing() {
        let chart = BarChart::stacked(
            "t",
            vec!["a".into(), "b".into()],
            vec![("d1".into(), vec![3, 1]), ("d2".into(), vec![0, 0]), ("d3".into(), vec![2, 0])],
        );
        assert_eq!(chart.segments.len(), 3);
        let heights: Vec<f64> = chart.segments.iter().map(|s| s.height.parse().unwrap_or(0.0)).collect();
        let plot = 260.0 - TOP - BOTTOM;
        assert!((heights.iter().take(2).sum::<f64>() - plot).abs() < 0.2, "{heights:?}");
        assert!((heights.get(2).copied().unwrap_or(0.0) - plot / 2.0).abs() < 0.2);
        assert_eq!(chart.max_label, "4");
        assert_eq!(chart.rows.iter().map(|r| r.2).collect::<Vec<_>>(), [4, 0, 2]);
        assert!(chart.segments.first().is_some_and(|s| s.title == "d1 a: 3"));
    }
}
