//! Grouped bar charts and line charts rendered to PNG with plotters (bitmap backend, embedded DejaVu Sans font).

use std::sync::Once;

use anyhow::Context;
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

/// One series of a chart: a name and one value per category (or per x value).
pub struct Series {
    pub name: String,
    pub values: Vec<Option<f64>>,
}

const PALETTE: [RGBColor; 6] = [
    RGBColor(76, 114, 176),
    RGBColor(221, 132, 82),
    RGBColor(85, 168, 104),
    RGBColor(196, 78, 82),
    RGBColor(129, 114, 179),
    RGBColor(147, 120, 96),
];

fn register_fonts() {
    static FONTS: Once = Once::new();
    FONTS.call_once(|| {
        // The font is compiled in, so charts render the same on every machine, with no system font lookup.
        let _ = register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular());
    });
}

/// The PNG file of an RGB buffer.
fn encode_png(buffer: Vec<u8>, (width, height): (u32, u32)) -> anyhow::Result<Vec<u8>> {
    let image = image::RgbImage::from_raw(width, height, buffer).context("chart buffer size")?;
    let mut bytes = Vec::new();
    image
        .write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png)
        .context("encoding PNG")?;
    Ok(bytes)
}

fn drawing_error<E: std::fmt::Debug>(error: E) -> anyhow::Error {
    anyhow::anyhow!("drawing chart: {error:?}")
}

/// Bars per category (e.g. classes, head to tail), one bar per series, values in percent; a PNG file's bytes.
pub fn grouped_bars(title: &str, categories: &[String], series: &[Series]) -> anyhow::Result<Vec<u8>> {
    register_fonts();
    let width = (160 + 70 * categories.len() as u32).clamp(640, 2400);
    let size = (width, 480);
    let mut buffer = vec![0u8; (size.0 * size.1 * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buffer, size).into_drawing_area();
        root.fill(&WHITE).map_err(drawing_error)?;
        let n = categories.len().max(1) as f64;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(70)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..n, 0f64..100f64)
            .map_err(drawing_error)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .disable_x_axis()
            .y_desc("accuracy (%)")
            .y_labels(11)
            .max_light_lines(1)
            .y_label_formatter(&|v| format!("{v:.0}"))
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(drawing_error)?;
        let bar = 0.8 / series.len().max(1) as f64;
        for (k, s) in series.iter().enumerate() {
            let color = PALETTE[k % PALETTE.len()];
            let bars = s.values.iter().enumerate().filter_map(|(i, v)| {
                let left = i as f64 + 0.1 + k as f64 * bar;
                v.map(|v| Rectangle::new([(left, 0.0), (left + bar * 0.95, 100.0 * v)], color.filled()))
            });
            chart
                .draw_series(bars)
                .map_err(drawing_error)?
                .label(s.name.clone())
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .draw()
            .map_err(drawing_error)?;
        // Category names under their group of bars, turned when they would collide.
        let style = TextStyle::from(("sans-serif", 13).into_font()).color(&BLACK);
        let turned = categories.iter().any(|c| c.len() > 8) && categories.len() > 6;
        for (i, name) in categories.iter().enumerate() {
            let (x, y) = chart.backend_coord(&(i as f64 + 0.5, 0.0));
            let style = if turned {
                style
                    .transform(FontTransform::Rotate90)
                    .pos(plotters::style::text_anchor::Pos::new(
                        plotters::style::text_anchor::HPos::Left,
                        plotters::style::text_anchor::VPos::Center,
                    ))
            } else {
                style.pos(plotters::style::text_anchor::Pos::new(
                    plotters::style::text_anchor::HPos::Center,
                    plotters::style::text_anchor::VPos::Top,
                ))
            };
            root.draw(&Text::new(name.clone(), (x, y + 6), style))
                .map_err(drawing_error)?;
        }
        root.present().map_err(drawing_error)?;
    }
    encode_png(buffer, size)
}

/// Lines over x = 1..=len (epochs), in the y range given; missing values leave gaps; a PNG file's bytes.
pub fn lines_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    y_range: std::ops::Range<f64>,
    series: &[Series],
) -> anyhow::Result<Vec<u8>> {
    register_fonts();
    let size = (720u32, 420u32);
    let mut buffer = vec![0u8; (size.0 * size.1 * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buffer, size).into_drawing_area();
        root.fill(&WHITE).map_err(drawing_error)?;
        let len = series.iter().map(|s| s.values.len()).max().unwrap_or(1).max(2) as f64;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(1f64..len, y_range)
            .map_err(drawing_error)?;
        // Whole epochs on the x axis: at most one label per epoch, none between epochs.
        let whole = |x: &f64| {
            if (x - x.round()).abs() < 1e-9 {
                format!("{}", x.round() as i64)
            } else {
                String::new()
            }
        };
        chart
            .configure_mesh()
            .x_desc(x_label)
            .x_labels((len as usize).min(10))
            .x_label_formatter(&whole)
            .y_desc(y_label)
            .max_light_lines(1)
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(drawing_error)?;
        let mut drawn = 0;
        for (k, s) in series.iter().enumerate() {
            let points: Vec<(f64, f64)> = s
                .values
                .iter()
                .enumerate()
                .filter_map(|(i, v)| v.map(|v| (i as f64 + 1.0, v)))
                .collect();
            if points.is_empty() {
                continue;
            }
            let color = PALETTE[k % PALETTE.len()];
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))
                .map_err(drawing_error)?
                .label(s.name.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2)));
            drawn += 1;
        }
        if drawn > 0 {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .label_font(("sans-serif", 13))
                .draw()
                .map_err(drawing_error)?;
        }
        root.present().map_err(drawing_error)?;
    }
    encode_png(buffer, size)
}
