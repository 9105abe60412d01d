//! SVG bar charts for the protocol lab's report, drawn with plotters' SVG backend (no fonts, no bitmaps: the
//! browser renders the text).
//!
//! Two shapes: grouped bars (one group per category, one bar per series) and stacked bars (one bar per
//! category, one segment per series). Categories sit at integer x positions; a missing value draws no bar.

use plotters::prelude::*;
use thiserror::Error;

/// Chart drawing failures.
#[derive(Debug, Error)]
pub enum ChartError {
    /// Plotters failed to draw.
    #[error("drawing chart {title:?}: {reason}")]
    Draw {
        /// The chart's title.
        title: String,
        /// What plotters said.
        reason: String,
    },
    /// Nothing to draw.
    #[error("chart {0:?} has no categories")]
    Empty(String),
}

/// One series: its name and one value per category (`None`: no bar).
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend text.
    pub name: String,
    /// Values, one per category.
    pub values: Vec<Option<f64>>,
}

/// A chart's data and labels.
#[derive(Debug, Clone)]
pub struct BarChart {
    /// Title above the chart.
    pub title: String,
    /// Label of the y axis (with its unit).
    pub y_label: String,
    /// Category labels along x.
    pub categories: Vec<String>,
    /// Series, drawn in order.
    pub series: Vec<Series>,
}

const WIDTH: u32 = 960;
const HEIGHT: u32 = 420;

fn draw_err(title: &str, e: impl std::fmt::Display) -> ChartError {
    ChartError::Draw {
        title: title.to_string(),
        reason: e.to_string(),
    }
}

/// The category whose integer position `x` is, or nothing between categories.
fn category_at(categories: &[String], x: f64) -> String {
    let i = x.round();
    if (x - i).abs() > 1e-6 || i < 0.0 {
        return String::new();
    }
    categories.get(i as usize).cloned().unwrap_or_default()
}

impl BarChart {
    fn check(&self) -> Result<(), ChartError> {
        if self.categories.is_empty() {
            return Err(ChartError::Empty(self.title.clone()));
        }
        Ok(())
    }

    fn value(&self, series: usize, category: usize) -> Option<f64> {
        self.series
            .get(series)
            .and_then(|s| s.values.get(category).copied().flatten())
            .filter(|v| v.is_finite() && *v >= 0.0)
    }

    /// Grouped bars as an SVG document.
    pub fn grouped_svg(&self) -> Result<String, ChartError> {
        self.check()?;
        let n = self.categories.len();
        let k = self.series.len().max(1);
        let top = (0..self.series.len())
            .flat_map(|s| (0..n).filter_map(move |c| self.value(s, c)))
            .fold(0.0f64, f64::max);
        self.draw(top, |chart| {
            let width = 0.8 / k as f64;
            for (s, series) in self.series.iter().enumerate() {
                let color = Palette99::pick(s).to_rgba();
                let bars = (0..n).filter_map(|c| {
                    self.value(s, c).map(|v| {
                        let x0 = c as f64 - 0.4 + s as f64 * width;
                        Rectangle::new([(x0, 0.0), (x0 + width * 0.95, v)], color.filled())
                    })
                });
                chart
                    .draw_series(bars)
                    .map_err(|e| draw_err(&self.title, e))?
                    .label(series.name.clone())
                    .legend(move |(x, y)| {
                        Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled())
                    });
            }
            Ok(())
        })
    }

    /// Stacked bars as an SVG document.
    pub fn stacked_svg(&self) -> Result<String, ChartError> {
        self.check()?;
        let n = self.categories.len();
        let top = (0..n)
            .map(|c| {
                (0..self.series.len())
                    .filter_map(|s| self.value(s, c))
                    .sum::<f64>()
            })
            .fold(0.0f64, f64::max);
        self.draw(top, |chart| {
            let mut base = vec![0.0f64; n];
            for (s, series) in self.series.iter().enumerate() {
                let color = Palette99::pick(s).to_rgba();
                let mut bars = Vec::new();
                for (c, b) in base.iter_mut().enumerate() {
                    if let Some(v) = self.value(s, c) {
                        bars.push(Rectangle::new(
                            [(c as f64 - 0.3, *b), (c as f64 + 0.3, *b + v)],
                            color.filled(),
                        ));
                        *b += v;
                    }
                }
                chart
                    .draw_series(bars)
                    .map_err(|e| draw_err(&self.title, e))?
                    .label(series.name.clone())
                    .legend(move |(x, y)| {
                        Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled())
                    });
            }
            Ok(())
        })
    }

    fn draw(
        &self,
        top: f64,
        bars: impl FnOnce(
            &mut ChartContext<
                '_,
                SVGBackend<'_>,
                Cartesian2d<
                    plotters::coord::types::RangedCoordf64,
                    plotters::coord::types::RangedCoordf64,
                >,
            >,
        ) -> Result<(), ChartError>,
    ) -> Result<String, ChartError> {
        let title = &self.title;
        let n = self.categories.len();
        let y_max = if top > 0.0 { top * 1.35 } else { 1.0 };
        let mut svg = String::new();
        {
            // Wide enough for about 110 pixels per category label.
            let width = WIDTH.max(110 * n as u32 + 100);
            let root = SVGBackend::with_string(&mut svg, (width, HEIGHT)).into_drawing_area();
            root.fill(&WHITE).map_err(|e| draw_err(title, e))?;
            let mut chart = ChartBuilder::on(&root)
                .caption(title, ("sans-serif", 18))
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(70)
                .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), 0.0f64..y_max)
                .map_err(|e| draw_err(title, e))?;
            let categories = self.categories.clone();
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_labels(n)
                .x_label_formatter(&move |x| category_at(&categories, *x))
                .y_desc(self.y_label.as_str())
                .draw()
                .map_err(|e| draw_err(title, e))?;
            bars(&mut chart)?;
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()
                .map_err(|e| draw_err(title, e))?;
            root.present().map_err(|e| draw_err(title, e))?;
        }
        Ok(svg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart() -> BarChart {
        BarChart {
            title: "latency <network-a>".into(),
            y_label: "ms".into(),
            categories: vec!["2p".into(), "3p".into()],
            series: vec![
                Series {
                    name: "semi2k".into(),
                    values: vec![Some(1.0), Some(2.0)],
                },
                Series {
                    name: "spdz2k".into(),
                    values: vec![None, Some(4.0)],
                },
            ],
        }
    }

    #[test]
    fn grouped_and_stacked_charts_draw_one_rectangle_per_value() {
        for svg in [
            chart().grouped_svg().unwrap(),
            chart().stacked_svg().unwrap(),
        ] {
            assert!(svg.starts_with("<svg"), "{svg:.80}");
            assert!(svg.contains("2p") && svg.contains("3p"));
            assert!(svg.contains("spdz2k"));
            // Titles are escaped for XML.
            assert!(svg.contains("&lt;network-a&gt;"));
        }
    }

    #[test]
    fn no_categories_is_an_error() {
        let mut c = chart();
        c.categories.clear();
        assert!(matches!(c.grouped_svg(), Err(ChartError::Empty(_))));
    }
}
