//! A run drawn: its timeline as CSV and as an SVG plot.

use super::{Outcome, Sample};

/// The timeline as CSV.
pub fn timeline_csv(outcome: &Outcome) -> String {
    let mut out =
        String::from("t_secs,desired_replicas,pods,ready_pods,placeholders,nodes,backlog_rows,projected_finish_secs\n");
    for s in &outcome.timeline {
        out.push_str(&format!(
            "{},{},{},{},{},{},{:.0},{}\n",
            s.t_secs,
            s.desired_replicas,
            s.pods,
            s.ready_pods,
            s.placeholders,
            s.nodes,
            s.backlog_rows,
            s.projected_finish_secs.map(|f| format!("{f:.0}")).unwrap_or_default()
        ));
    }
    out
}

/// A plot of the run for an operator to look at: desired replicas, worker
/// pods, placeholders and nodes (left axis, counts), the backlog (share of
/// rows, on the same height) and the projected finish (right axis, seconds
/// from the start, against the dashed deadline).
pub fn timeline_svg(outcome: &Outcome, title: &str) -> String {
    let (w, h) = (960.0, 460.0);
    let (left, right, top, bottom) = (55.0, 70.0, 60.0, 45.0);
    let t_max = outcome.timeline.last().map(|s| s.t_secs).unwrap_or(1).max(outcome.deadline.as_secs()) as f64;
    let count_max = outcome
        .timeline
        .iter()
        .map(|s| s.pods.max(s.nodes).max(s.desired_replicas).max(s.placeholders))
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let backlog_max = outcome.timeline.first().map(|s| s.backlog_rows).unwrap_or(1.0).max(1.0);
    let finish_max = outcome.timeline.iter().filter_map(|s| s.projected_finish_secs).fold(t_max, f64::max);
    let x = |t: f64| left + (w - left - right) * t / t_max;
    let y = |v: f64, max: f64| h - bottom - (h - top - bottom) * (v / max).clamp(0.0, 1.0);
    let polyline = |points: Vec<(f64, f64)>, color: &str, dash: &str| {
        let pts: Vec<String> = points.iter().map(|(px, py)| format!("{px:.1},{py:.1}")).collect();
        format!("<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\"{dash} points=\"{}\"/>\n", pts.join(" "))
    };
    let series = |f: &dyn Fn(&Sample) -> f64, max: f64, color: &str, dash: &str| {
        polyline(outcome.timeline.iter().map(|s| (x(s.t_secs as f64), y(f(s), max))).collect(), color, dash)
    };
    let (x0, x1, y0, y1) = (left, w - right, top, h - bottom);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{left}\" y=\"22\" font-size=\"15\">{title}</text>\n\
         <line x1=\"{x0}\" y1=\"{y1}\" x2=\"{x1}\" y2=\"{y1}\" stroke=\"black\"/>\n\
         <line x1=\"{x0}\" y1=\"{y0}\" x2=\"{x0}\" y2=\"{y1}\" stroke=\"black\"/>\n\
         <line x1=\"{x1}\" y1=\"{y0}\" x2=\"{x1}\" y2=\"{y1}\" stroke=\"#9467bd\"/>\n"
    );
    // Axes: counts on the left, projected finish on the right, time below.
    svg.push_str(&format!(
        "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">0</text>\n<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{count_max:.0}</text>\n\
         <text x=\"12\" y=\"{}\" transform=\"rotate(-90 12 {})\" text-anchor=\"middle\">pods, nodes</text>\n\
         <text x=\"{}\" y=\"{}\" fill=\"#9467bd\">0 s</text>\n<text x=\"{}\" y=\"{}\" fill=\"#9467bd\">{finish_max:.0} s</text>\n\
         <text x=\"{}\" y=\"{}\" text-anchor=\"middle\">time since the run started (s), 0 to {t_max:.0}</text>\n",
        x0 - 6.0,
        y1 + 4.0,
        x0 - 6.0,
        y0 + 4.0,
        (y0 + y1) / 2.0,
        (y0 + y1) / 2.0,
        x1 + 6.0,
        y1 + 4.0,
        x1 + 6.0,
        y0 + 4.0,
        (x0 + x1) / 2.0,
        h - 12.0
    ));
    let dl = x(outcome.deadline.as_secs_f64());
    let dl_y = y(outcome.deadline.as_secs_f64(), finish_max);
    svg.push_str(&format!(
        "<line x1=\"{dl:.1}\" y1=\"{y0}\" x2=\"{dl:.1}\" y2=\"{y1}\" stroke=\"red\" stroke-dasharray=\"6 4\"/>\n\
         <line x1=\"{x0}\" y1=\"{dl_y:.1}\" x2=\"{x1}\" y2=\"{dl_y:.1}\" stroke=\"#9467bd\" stroke-opacity=\"0.4\" stroke-dasharray=\"2 4\"/>\n\
         <text x=\"{:.1}\" y=\"{:.1}\" fill=\"red\" text-anchor=\"end\">deadline</text>\n",
        dl - 4.0,
        y0 + 12.0
    ));
    if let Some(finish) = outcome.finish {
        let fx = x(finish.as_secs_f64());
        svg.push_str(&format!(
            "<line x1=\"{fx:.1}\" y1=\"{y0}\" x2=\"{fx:.1}\" y2=\"{y1}\" stroke=\"black\" stroke-opacity=\"0.5\" stroke-dasharray=\"2 3\"/>\n\
             <text x=\"{:.1}\" y=\"{:.1}\">done {:.0} s</text>\n",
            fx + 4.0,
            y0 + 26.0,
            finish.as_secs_f64()
        ));
    }
    let lines: [(&str, &str, &str); 6] = [
        ("desired replicas", "#17becf", " stroke-dasharray=\"5 3\""),
        ("worker pods", "#1f77b4", ""),
        ("placeholder pods", "#8c564b", ""),
        ("nodes", "#2ca02c", ""),
        ("backlog (share of rows)", "#ff7f0e", ""),
        ("projected finish (right axis)", "#9467bd", ""),
    ];
    svg.push_str(&series(&|s| s.desired_replicas as f64, count_max, lines[0].1, lines[0].2));
    svg.push_str(&series(&|s| s.pods as f64, count_max, lines[1].1, lines[1].2));
    svg.push_str(&series(&|s| s.placeholders as f64, count_max, lines[2].1, lines[2].2));
    svg.push_str(&series(&|s| s.nodes as f64, count_max, lines[3].1, lines[3].2));
    svg.push_str(&series(&|s| s.backlog_rows, backlog_max, lines[4].1, lines[4].2));
    let finish_points: Vec<(f64, f64)> = outcome
        .timeline
        .iter()
        .filter_map(|s| s.projected_finish_secs.map(|f| (x(s.t_secs as f64), y(f, finish_max))))
        .collect();
    if !finish_points.is_empty() {
        svg.push_str(&polyline(finish_points, lines[5].1, ""));
    }
    // Legend in two rows under the title.
    for (i, (label, color, dash)) in lines.iter().enumerate() {
        let lx = left + 300.0 * (i % 3) as f64;
        let ly = 38.0 + 14.0 * (i / 3) as f64;
        svg.push_str(&format!(
            "<line x1=\"{lx}\" y1=\"{ly}\" x2=\"{}\" y2=\"{ly}\" stroke=\"{color}\" stroke-width=\"2\"{dash}/>\
             <text x=\"{}\" y=\"{}\">{label}</text>\n",
            lx + 20.0,
            lx + 26.0,
            ly + 4.0
        ));
    }
    svg.push_str("</svg>\n");
    svg
}
