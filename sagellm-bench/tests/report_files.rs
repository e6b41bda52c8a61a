//! The charts and the HTML report of a mock run: every SVG is well-formed XML with a title and
//! labelled axes, a workload with failed requests still draws, hostile names are escaped, and
//! `index.html` comes back from the saved JSON files alone.

use std::collections::BTreeSet;
use std::path::Path;

use sagellm_bench::backend::mock::MockConfig;
use sagellm_bench::backend::spec::BackendSpec;
use sagellm_bench::report::files::SavedRun;
use sagellm_bench::report::svg::{overlay_cdf, Distribution};
use sagellm_bench::report::{html, Reports};
use sagellm_bench::results::summary::Provenance;
use sagellm_bench::Workload;

const HOSTILE_MODEL: &str = "<script>alert(\"model\")</script>&<img src=x onerror=alert(1)>";

/// Runs the Year-1 workloads on the mock, every third request failing, into `dir`.
fn mock_run(dir: &Path) -> sagellm_bench::Summary {
    let config = MockConfig {
        fail_every: 3,
        ..MockConfig::default()
    };
    let model = Some(HOSTILE_MODEL.to_string());
    let backend = BackendSpec::Mock { config, model }.build().unwrap();
    let provenance = Provenance::now(backend.name(), backend.model(), backend.settings());
    let mut reports = Reports::files(dir);
    sagellm_bench::run(backend, &Workload::year1(), provenance, &mut reports).unwrap()
}

fn files_with_extension(dir: &Path, ext: &str) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(ext))
        .collect()
}

/// The texts of an SVG's `<text>` elements, and its `<title>`.
fn svg_texts(svg: &str, name: &str) -> (String, Vec<String>) {
    let doc = roxmltree::Document::parse(svg)
        .unwrap_or_else(|e| panic!("{name} is not well-formed XML: {e}"));
    let title = doc
        .descendants()
        .find(|n| n.has_tag_name("title"))
        .and_then(|n| n.text())
        .unwrap_or_else(|| panic!("{name} has no <title>"))
        .to_string();
    let texts = doc
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| n.text())
        .map(|t| t.trim().to_string())
        .collect();
    (title, texts)
}

/// Axis labels each chart must carry, by file-name suffix.
const AXES: &[(&str, &[&str])] = &[
    (
        "_ttft_cdf.svg",
        &["time to first token (ms)", "requests at or below x (%)"],
    ),
    (
        "_tpot_cdf.svg",
        &[
            "time per output token, first token included (ms)",
            "requests at or below x (%)",
        ],
    ),
    (
        "_itl_histogram.svg",
        &[
            "gap between consecutive tokens (ms)",
            "gaps (count, log scale)",
        ],
    ),
    (
        "_timeline.svg",
        &[
            "time since the workload's first send (ms)",
            "request (index)",
        ],
    ),
    (
        "_tokens_per_s.svg",
        &[
            "time since the workload's first send (ms)",
            "streamed output tokens/s",
        ],
    ),
    (
        "run_key_metrics.svg",
        &[
            "TTFT (ms)",
            "Output throughput (tokens/s)",
            "Error rate (%)",
            "ms",
        ],
    ),
    (
        "run_memory_kv.svg",
        &["MB", "tokens", "time since each workload's first send (ms)"],
    ),
];

#[test]
fn a_mock_run_writes_charts_that_parse_with_titles_and_labelled_axes() {
    let dir = tempfile::tempdir().unwrap();
    let summary = mock_run(dir.path());
    assert!(
        summary.overall.failed_requests > 0,
        "the run should hold failed requests"
    );
    let svgs = files_with_extension(dir.path(), ".svg");
    // Five per workload, two for the run.
    assert_eq!(svgs.len(), 3 * 5 + 2, "{svgs:?}");
    for name in &svgs {
        let svg = std::fs::read_to_string(dir.path().join(name)).unwrap();
        let (title, texts) = svg_texts(&svg, name);
        assert!(!title.trim().is_empty(), "{name}: empty title");
        let (_, axes) = AXES
            .iter()
            .find(|(suffix, _)| name.ends_with(suffix))
            .unwrap_or_else(|| panic!("unexpected chart {name}"));
        for axis in *axes {
            assert!(
                texts.iter().any(|t| t == axis),
                "{name}: no axis label `{axis}` among {texts:?}"
            );
        }
        // The subtitle names the run, and the hostile model name arrives as text, not markup.
        assert!(
            texts.iter().any(|t| t.contains(HOSTILE_MODEL)),
            "{name}: the run is not named"
        );
    }
    // Failed requests are drawn on the timeline of the workloads that had them.
    for (workload, m) in &summary.workloads {
        let svg =
            std::fs::read_to_string(dir.path().join(format!("{workload}_timeline.svg"))).unwrap();
        let (_, texts) = svg_texts(&svg, workload);
        let shows_failed = texts.iter().any(|t| t.starts_with("failed ("));
        assert_eq!(shows_failed, m.failed_requests > 0, "{workload}");
    }
}

#[test]
fn the_html_report_escapes_the_model_name_and_embeds_every_chart() {
    let dir = tempfile::tempdir().unwrap();
    mock_run(dir.path());
    let page = std::fs::read_to_string(dir.path().join("index.html")).unwrap();
    assert!(!page.contains(HOSTILE_MODEL));
    assert!(!page.contains("<script"), "the page must carry no script");
    assert!(
        !page.contains("<img"),
        "the model name must not become an element"
    );
    assert!(page.contains("&lt;script&gt;alert(&quot;model&quot;)&lt;/script&gt;"));
    // 17 inline charts, each once.
    assert_eq!(page.matches("<svg ").count(), 17);
    assert!(page.contains("<table class=\"summary\">"));
    assert!(page.contains("Failed requests"));
}

#[test]
fn report_html_regenerates_from_the_saved_json_alone() {
    let dir = tempfile::tempdir().unwrap();
    mock_run(dir.path());
    let first = std::fs::read_to_string(dir.path().join("index.html")).unwrap();
    let charts = files_with_extension(dir.path(), ".svg");
    for name in charts
        .iter()
        .chain(std::iter::once(&"index.html".to_string()))
    {
        std::fs::remove_file(dir.path().join(name)).unwrap();
    }

    let saved = SavedRun::load(&dir.path().join("benchmark_summary.json")).unwrap();
    let out = tempfile::tempdir().unwrap();
    let index = html::write_report(out.path(), &saved.summary, &saved.samples).unwrap();
    assert_eq!(index, out.path().join("index.html"));
    assert_eq!(files_with_extension(out.path(), ".svg"), charts);
    // Drawn from the samples of the same records (kept as they arrived, or read back from the
    // file), the page is the same, byte for byte.
    assert_eq!(std::fs::read_to_string(index).unwrap(), first);
}

#[test]
fn a_hostile_workload_name_in_a_saved_summary_is_escaped_and_kept_in_its_folder() {
    let dir = tempfile::tempdir().unwrap();
    mock_run(dir.path());
    let mut saved = SavedRun::load(&dir.path().join("benchmark_summary.json")).unwrap();
    let hostile = "../<b onmouseover=alert(1)>x</b>";
    let (_, metrics) = saved.summary.workloads.shift_remove_index(0).unwrap();
    let (_, samples) = saved.samples.shift_remove_index(0).unwrap();
    saved.summary.workloads.insert(hostile.to_string(), metrics);
    saved.samples.insert(hostile.to_string(), samples);

    let out = tempfile::tempdir().unwrap();
    let index = html::write_report(out.path(), &saved.summary, &saved.samples).unwrap();
    let page = std::fs::read_to_string(index).unwrap();
    assert!(!page.contains("<b onmouseover"));
    assert!(page.contains("&lt;b onmouseover=alert(1)&gt;x&lt;"));
    // Every chart stayed inside the output folder.
    assert!(files_with_extension(out.path().parent().unwrap(), ".svg").is_empty());
    for name in files_with_extension(out.path(), ".svg") {
        let svg = std::fs::read_to_string(out.path().join(&name)).unwrap();
        svg_texts(&svg, &name);
    }
}

#[test]
fn distributions_of_two_runs_overlay_on_one_chart() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    mock_run(a.path());
    mock_run(b.path());
    let load = |d: &Path| SavedRun::load(&d.join("benchmark_summary.json")).unwrap();
    let (ra, rb) = (load(a.path()), load(b.path()));
    let chart = overlay_cdf(
        Distribution::Ttft,
        &[
            ("baseline", ra.samples["stress_test"].as_ref()),
            ("new", rb.samples["stress_test"].as_ref()),
        ],
        "stress_test: baseline against new",
    )
    .unwrap();
    let (title, texts) = svg_texts(&chart.svg, &chart.file_name);
    assert_eq!(title, "TTFT distribution compared");
    assert!(texts.iter().any(|t| t.starts_with("baseline (n = ")));
    assert!(texts.iter().any(|t| t.starts_with("new (n = ")));
    assert!(texts.iter().any(|t| t == "time to first token (ms)"));
}
