//! Reports: JUnit XML for CI, and a Markdown or HTML summary with each step's time.

use std::fmt::Write;
use std::time::Duration;

use crate::suites::{Outcome, SuiteResult};

fn secs(duration: Duration) -> String {
    format!("{:.3}", duration.as_secs_f64())
}

fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 allows no other control characters.
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\r' | '\t') => out.push('?'),
            c => out.push(c),
        }
    }
    out
}

/// JUnit XML: one `testsuite` per run, one `testcase` per case, steps in `system-out`.
pub fn junit(result: &SuiteResult) -> String {
    let count = |f: fn(&Outcome) -> bool| result.cases.iter().filter(|c| f(&c.outcome)).count();
    let failures = count(|o| matches!(o, Outcome::Failed(_)));
    let skipped = count(|o| matches!(o, Outcome::Skipped(_)));
    let total: Duration = result.cases.iter().map(|c| c.duration).sum();
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        xml,
        "<testsuites><testsuite name=\"hil.{}\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" skipped=\"{skipped}\" time=\"{}\">",
        xml_escape(&result.board),
        result.cases.len(),
        secs(total)
    );
    for case in &result.cases {
        let _ = write!(
            xml,
            "  <testcase classname=\"hil.{}\" name=\"{}\" time=\"{}\">",
            xml_escape(&result.board),
            xml_escape(&case.name),
            secs(case.duration)
        );
        match &case.outcome {
            Outcome::Passed => {}
            Outcome::Failed(reason) => {
                let first = reason.lines().next().unwrap_or_default();
                let _ = write!(
                    xml,
                    "<failure message=\"{}\">{}</failure>",
                    xml_escape(first),
                    xml_escape(reason)
                );
            }
            Outcome::Skipped(reason) => {
                let _ = write!(xml, "<skipped message=\"{}\"/>", xml_escape(reason));
            }
        }
        let mut out = String::new();
        for step in &case.steps {
            let _ = writeln!(
                out,
                "{} {:>9}s {}",
                if step.ok { "ok  " } else { "FAIL" },
                secs(step.duration),
                step.name
            );
        }
        for artifact in &case.artifacts {
            let _ = writeln!(out, "artifact {}", artifact.display());
        }
        let _ = writeln!(
            xml,
            "<system-out>{}</system-out></testcase>",
            xml_escape(&out)
        );
    }
    xml.push_str("</testsuite></testsuites>\n");
    xml
}

fn outcome_word(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Passed => "passed",
        Outcome::Failed(_) => "FAILED",
        Outcome::Skipped(_) => "skipped",
    }
}

/// A Markdown summary: per case, its outcome and a table of steps with their times.
pub fn markdown(result: &SuiteResult) -> String {
    let mut md = format!("# HIL: {} on {}\n\n", result.suite, result.board);
    for case in &result.cases {
        let _ = writeln!(
            md,
            "## {}: {} in {}s\n",
            case.name,
            outcome_word(&case.outcome),
            secs(case.duration)
        );
        if let Outcome::Failed(reason) | Outcome::Skipped(reason) = &case.outcome {
            let _ = writeln!(md, "```\n{reason}\n```\n");
        }
        if !case.steps.is_empty() {
            md.push_str("| step | result | time (s) | evidence |\n|---|---|---:|---|\n");
            for step in &case.steps {
                let evidence: Vec<String> = step
                    .evidence
                    .iter()
                    .map(|e| e.to_string().replace('|', "\\|").replace('\n', " "))
                    .collect();
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} |",
                    step.name,
                    if step.ok { "ok" } else { "FAILED" },
                    secs(step.duration),
                    evidence.join("<br>")
                );
            }
            md.push('\n');
        }
        for artifact in &case.artifacts {
            let _ = writeln!(md, "- artifact: `{}`", artifact.display());
        }
    }
    md
}

/// The same summary as HTML.
pub fn html(result: &SuiteResult) -> String {
    let e = xml_escape;
    let mut page = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>HIL: {} on {}</title></head><body>\n<h1>HIL: {} on {}</h1>\n",
        e(&result.suite),
        e(&result.board),
        e(&result.suite),
        e(&result.board)
    );
    for case in &result.cases {
        let _ = writeln!(
            page,
            "<h2>{}: {} in {}s</h2>",
            e(&case.name),
            outcome_word(&case.outcome),
            secs(case.duration)
        );
        if let Outcome::Failed(reason) | Outcome::Skipped(reason) = &case.outcome {
            let _ = writeln!(page, "<pre>{}</pre>", e(reason));
        }
        page.push_str("<table border=\"1\"><tr><th>step</th><th>result</th><th>time (s)</th><th>evidence</th></tr>\n");
        for step in &case.steps {
            let evidence: Vec<String> = step.evidence.iter().map(|x| e(&x.to_string())).collect();
            let _ = writeln!(
                page,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                e(&step.name),
                if step.ok { "ok" } else { "FAILED" },
                secs(step.duration),
                evidence.join("<br>")
            );
        }
        page.push_str("</table>\n<ul>\n");
        for artifact in &case.artifacts {
            let _ = writeln!(
                page,
                "<li><code>{}</code></li>",
                e(&artifact.display().to_string())
            );
        }
        page.push_str("</ul>\n");
    }
    page.push_str("</body></html>\n");
    page
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::{Evidence, StepRecord};
    use crate::suites::CaseResult;

    fn result(outcome: Outcome) -> SuiteResult {
        SuiteResult {
            suite: "smoke".into(),
            board: "qemu<1>".into(),
            cases: vec![CaseResult {
                name: "smoke".into(),
                outcome,
                duration: Duration::from_millis(12_345),
                steps: vec![StepRecord {
                    name: "powered".into(),
                    started: Duration::ZERO,
                    duration: Duration::from_millis(1500),
                    ok: true,
                    evidence: vec![Evidence::Note("power on | relay".into())],
                }],
                artifacts: vec!["/a/serial.log".into()],
            }],
        }
    }

    #[test]
    fn junit_counts_and_escapes() {
        let xml = junit(&result(Outcome::Failed("Board <x> & \"y\"\nmore".into())));
        assert!(
            xml.contains("tests=\"1\" failures=\"1\" errors=\"0\" skipped=\"0\" time=\"12.345\""),
            "{xml}"
        );
        assert!(xml.contains("classname=\"hil.qemu&lt;1&gt;\""));
        assert!(xml.contains("<failure message=\"Board &lt;x&gt; &amp; &quot;y&quot;\">"));
        assert!(
            xml.contains("<system-out>ok  ") && xml.contains("1.500s powered"),
            "{xml}"
        );
        let skipped = junit(&result(Outcome::Skipped("needs A/B".into())));
        assert!(
            skipped.contains("skipped=\"1\"")
                && skipped.contains("<skipped message=\"needs A/B\"/>")
        );
        let passed = junit(&result(Outcome::Passed));
        assert!(!passed.contains("<failure") && !passed.contains("<skipped"));
    }

    #[test]
    fn markdown_and_html_show_step_times() {
        let md = markdown(&result(Outcome::Passed));
        assert!(md.contains("## smoke: passed in 12.345s"), "{md}");
        assert!(
            md.contains("| powered | ok | 1.500 | power on \\| relay |"),
            "{md}"
        );
        assert!(md.contains("- artifact: `/a/serial.log`"));
        let page = html(&result(Outcome::Passed));
        assert!(
            page.contains("<td>powered</td><td>ok</td><td>1.500</td>"),
            "{page}"
        );
        assert!(page.contains("HIL: smoke on qemu&lt;1&gt;"));
    }
}
