//! `veil report FILE --out DIR`: turns a sweep file (one `veil bench` JSON object per line) into
//! `DIR/index.html`, a page of SVG charts and a table of every run:
//! - latency per workload and network, by party count and protocol;
//! - online bytes per party per workload, by party count and protocol;
//! - per-step breakdown (time and bytes) of each protocol and party count as stacked bars;
//! - for shaped runs with latency (WAN), the measured time next to the estimate from measured compute,
//!   rounds and bytes (`rounds x latency + bytes / bandwidth`, see `bench::estimate_ms`).
//!
//! The charts are inlined, so the page is one self-contained file. A small script checks, in the browser,
//! that every chart has a drawn size and records the count on `<body data-charts-rendered>`; it writes
//! nothing to the console unless a chart failed to render.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;

use super::bench::{LayerReport, ModelReport};
use crate::lab::charts::{BarChart, Series};

/// Arguments of `veil report`.
#[derive(Args, Debug)]
pub struct ReportArgs {
    /// Sweep file written by `veil bench --sweep --out FILE`.
    pub file: PathBuf,
    /// Directory for index.html (created if missing).
    #[arg(long, default_value = "veil-report")]
    pub out: PathBuf,
}

/// Runs `veil report`.
pub fn run(args: ReportArgs) -> Result<()> {
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("reading {}", args.file.display()))?;
    let runs = parse_sweep(&text).with_context(|| format!("in {}", args.file.display()))?;
    let html = render(&runs)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let index = args.out.join("index.html");
    std::fs::write(&index, html).with_context(|| format!("writing {}", index.display()))?;
    println!("report: {} runs -> {}", runs.len(), index.display());
    Ok(())
}

/// The runs of a sweep file; blank lines are skipped, anything else must be a model run.
pub fn parse_sweep(text: &str) -> Result<Vec<ModelReport>> {
    let mut runs = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let run: ModelReport = serde_json::from_str(line)
            .with_context(|| format!("line {}: not a veil bench run", i + 1))?;
        runs.push(run);
    }
    if runs.is_empty() {
        bail!("no runs");
    }
    Ok(runs)
}

/// Text for HTML, escaped.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn network_name(r: &ModelReport) -> String {
    r.network
        .as_ref()
        .map_or("unshaped".into(), |n| n.name.clone())
}

fn sorted<T: Ord + Clone>(items: impl Iterator<Item = T>) -> Vec<T> {
    items.collect::<BTreeSet<_>>().into_iter().collect()
}

/// A party-count/batch category label.
fn config_label(r: &ModelReport, batches: usize) -> String {
    if batches > 1 {
        format!("{}p b{}", r.parties, r.batch)
    } else {
        format!("{}p", r.parties)
    }
}

/// The charts of one workload.
fn workload_charts(runs: &[&ModelReport]) -> Result<Vec<(String, String)>> {
    let Some(first) = runs.first() else {
        return Ok(Vec::new());
    };
    let workload = &first.workload;
    let protocols = sorted(runs.iter().map(|r| r.protocol.clone()));
    let networks = sorted(runs.iter().map(|r| network_name(r)));
    let configs = sorted(runs.iter().map(|r| (r.parties, r.batch)));
    let batches = sorted(runs.iter().map(|r| r.batch)).len();
    let categories: Vec<String> = configs
        .iter()
        .map(|&(p, b)| {
            if batches > 1 {
                format!("{p}p b{b}")
            } else {
                format!("{p}p")
            }
        })
        .collect();
    let find = |protocol: &str, network: Option<&str>, (p, b): (usize, usize)| {
        runs.iter().copied().find(|r| {
            r.protocol == protocol
                && r.parties == p
                && r.batch == b
                && network.is_none_or(|n| network_name(r) == n)
        })
    };
    let mut charts = Vec::new();
    for network in &networks {
        let chart = BarChart {
            title: format!("{workload}: latency, network {network}"),
            y_label: "ms per inference (median)".into(),
            categories: categories.clone(),
            series: protocols
                .iter()
                .map(|p| Series {
                    name: p.clone(),
                    values: configs
                        .iter()
                        .map(|&c| find(p, Some(network), c).map(|r| r.latency_ms))
                        .collect(),
                })
                .collect(),
        };
        charts.push((chart.title.clone(), chart.grouped_svg()?));
    }
    let bytes = BarChart {
        title: format!("{workload}: online data sent per party"),
        y_label: "KB per inference".into(),
        categories: categories.clone(),
        series: protocols
            .iter()
            .map(|p| Series {
                name: p.clone(),
                values: configs
                    .iter()
                    .map(|&c| find(p, None, c).map(|r| r.bytes_per_party as f64 / 1e3))
                    .collect(),
            })
            .collect(),
    };
    charts.push((bytes.title.clone(), bytes.grouped_svg()?));

    // Per-step breakdown: the least shaped run of each protocol and configuration.
    let mut picked: Vec<&ModelReport> = Vec::new();
    for p in &protocols {
        for &c in &configs {
            let candidates = runs
                .iter()
                .copied()
                .filter(|r| r.protocol == *p && (r.parties, r.batch) == c);
            if let Some(r) = candidates.min_by(|a, b| {
                let lat = |r: &ModelReport| r.network.as_ref().map_or(0.0, |n| n.latency_ms);
                lat(a).total_cmp(&lat(b))
            }) {
                picked.push(r);
            }
        }
    }
    let step_labels: Vec<String> = {
        let mut seen = Vec::new();
        for r in &picked {
            for l in &r.layers {
                if !seen.contains(&l.label) {
                    seen.push(l.label.clone());
                }
            }
        }
        seen
    };
    let run_labels: Vec<String> = picked
        .iter()
        .map(|r| {
            format!(
                "{} {} ({})",
                r.protocol,
                config_label(r, batches),
                network_name(r)
            )
        })
        .collect();
    let stacked = |title: String, unit: &str, f: &dyn Fn(&LayerReport) -> f64| BarChart {
        title,
        y_label: unit.into(),
        categories: run_labels.clone(),
        series: step_labels
            .iter()
            .map(|label| Series {
                name: label.clone(),
                values: picked
                    .iter()
                    .map(|r| {
                        let v: f64 = r.layers.iter().filter(|l| l.label == *label).map(f).sum();
                        Some(v)
                    })
                    .collect(),
            })
            .collect(),
    };
    let time = stacked(
        format!("{workload}: time per step (profiled party)"),
        "ms",
        &|l| l.ms,
    );
    charts.push((time.title.clone(), time.stacked_svg()?));
    let sent = stacked(
        format!("{workload}: data sent per step (profiled party)"),
        "KB",
        &|l| l.bytes_sent as f64 / 1e3,
    );
    charts.push((sent.title.clone(), sent.stacked_svg()?));
    Ok(charts)
}

/// Measured against estimated time of every shaped run with a latency of at least 1 ms.
fn wan_chart(runs: &[ModelReport]) -> Result<Option<(String, String)>> {
    let wan: Vec<&ModelReport> = runs
        .iter()
        .filter(|r| r.network.as_ref().is_some_and(|n| n.latency_ms >= 1.0))
        .filter(|r| r.estimated_ms.is_some())
        .collect();
    if wan.is_empty() {
        return Ok(None);
    }
    let chart = BarChart {
        title: "shaped WAN runs: measured vs estimated (compute + rounds x latency + bytes / bandwidth)"
            .into(),
        y_label: "ms per inference".into(),
        categories: wan
            .iter()
            .map(|r| format!("{} {} {}p", r.workload, r.protocol, r.parties))
            .collect(),
        series: vec![
            Series {
                name: "measured".into(),
                values: wan.iter().map(|r| Some(r.latency_ms)).collect(),
            },
            Series {
                name: "estimated".into(),
                values: wan.iter().map(|r| r.estimated_ms).collect(),
            },
        ],
    };
    Ok(Some((chart.title.clone(), chart.grouped_svg()?)))
}

fn table(runs: &[ModelReport]) -> String {
    let mut t = String::from(
        "<table><thead><tr><th>workload</th><th>protocol</th><th>parties</th><th>batch</th>\
         <th>transport</th><th>network</th><th>reps</th><th>time ms</th><th>offline</th>\
         <th>online ms</th><th>offline ms</th><th>estimated ms</th><th>data sent KB (one party)</th>\
         <th>rounds</th><th>global data KB</th><th>dealer KB</th><th>max |err|</th><th>note</th>\
         </tr></thead><tbody>\n",
    );
    for r in runs {
        let _ = writeln!(
            t,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:?}</td><td>{}</td><td>{}</td>\
             <td>{:.2}</td><td>{:?}</td><td>{:.2}</td><td>{:.2}</td><td>{}</td><td>{:.1}</td><td>{}</td>\
             <td>{:.1}</td><td>{:.1}</td><td>{:.2e}</td><td>{}</td></tr>",
            esc(&r.workload),
            esc(&r.protocol),
            r.parties,
            r.batch,
            r.transport,
            esc(&network_name(r)),
            r.reps,
            r.time_ms,
            r.offline,
            r.online_ms,
            r.offline_ms,
            r.estimated_ms.map_or("-".into(), |e| format!("{e:.2}")),
            r.data_sent_bytes as f64 / 1e3,
            r.rounds,
            r.global_data_sent_bytes as f64 / 1e3,
            r.dealer_bytes as f64 / 1e3,
            r.max_abs_err,
            esc(r.note.as_deref().unwrap_or("")),
        );
    }
    t.push_str("</tbody></table>\n");
    t
}

const STYLE: &str = "body{font-family:sans-serif;margin:24px;color:#222}\
figure{margin:16px 0}table{border-collapse:collapse;font-size:13px}\
td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}th{background:#f3f3f3}";

/// In the browser: count the charts that have a drawn size; complain on the console about any that do not.
const CHECK_SCRIPT: &str = "document.addEventListener('DOMContentLoaded',function(){\
var n=0;document.querySelectorAll('figure svg').forEach(function(s){\
var b=s.getBBox();if(b.width>0&&b.height>0){n++;}else{console.error('chart without a drawn size');}});\
document.body.setAttribute('data-charts-rendered',String(n));});";

/// The report page for `runs`.
pub fn render(runs: &[ModelReport]) -> Result<String> {
    let workloads: Vec<String> = {
        let mut seen = Vec::new();
        for r in runs {
            if !seen.contains(&r.workload) {
                seen.push(r.workload.clone());
            }
        }
        seen
    };
    let mut charts = Vec::new();
    for w in &workloads {
        let of_workload: Vec<&ModelReport> = runs.iter().filter(|r| r.workload == *w).collect();
        charts.extend(workload_charts(&of_workload)?);
    }
    charts.extend(wan_chart(runs)?);
    let protocols = sorted(runs.iter().map(|r| r.protocol.clone()));
    let mut html = String::new();
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>veil protocol lab</title><style>{STYLE}</style>\
         <script>{CHECK_SCRIPT}</script></head>\n<body data-charts=\"{}\">\n\
         <h1>veil protocol lab</h1>\n<p>{} runs; protocols: {}. Latency is the median online time per \
         inference (slowest party); data sent counts protocol payload. Per-step charts show the profiled \
         party (the one sending the most) of the least shaped run of each configuration.</p>\n",
        charts.len(),
        runs.len(),
        esc(&protocols.join(", "))
    );
    for (title, svg) in &charts {
        let _ = writeln!(
            html,
            "<figure><figcaption>{}</figcaption>\n{svg}\n</figure>",
            esc(title)
        );
    }
    html.push_str("<h2>Runs</h2>\n");
    html.push_str(&table(runs));
    html.push_str("</body></html>\n");
    Ok(html)
}
