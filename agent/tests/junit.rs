//! The `test-junit` plugin (Test/junit/1) against real JUnit XML reports from Surefire,
//! pytest, Jest, cargo2junit and cargo-nextest (`tests/fixtures/junit/`), run through the
//! real plugin host.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use sluice_agent::plugin_host::{LoadedPlugin, PluginHost, RunOutcome, RunRequest};
use sluice_proto::{TestCase, TestStatus};
use tempfile::TempDir;
use tokio::sync::mpsc;

fn host() -> &'static PluginHost {
    static HOST: OnceLock<PluginHost> = OnceLock::new();
    HOST.get_or_init(common::builtin_host)
}

fn plugin() -> Arc<LoadedPlugin> {
    host()
        .find("Test", "junit", "1")
        .expect("no plugin for Test/junit/1")
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/junit")
        .join(name)
}

/// An action workspace whose primary input artifact is `Reports`.
struct Workspace {
    dir: TempDir,
}

impl Workspace {
    fn new() -> Workspace {
        let ws = Workspace {
            dir: tempfile::tempdir().expect("tempdir"),
        };
        std::fs::create_dir_all(ws.reports()).expect("input dir");
        ws
    }

    fn reports(&self) -> PathBuf {
        self.dir.path().join("inputs").join("Reports")
    }

    /// Copies fixture `name` to `rel` inside the input artifact.
    fn place(&self, name: &str, rel: &str) -> &Workspace {
        let dest = self.reports().join(rel);
        std::fs::create_dir_all(dest.parent().expect("parent")).expect("mkdir");
        std::fs::copy(fixture(name), &dest).unwrap_or_else(|e| panic!("copy {name}: {e}"));
        self
    }

    /// Writes `text` to `rel` inside the input artifact.
    fn write(&self, rel: &str, text: &str) -> &Workspace {
        let dest = self.reports().join(rel);
        std::fs::create_dir_all(dest.parent().expect("parent")).expect("mkdir");
        std::fs::write(dest, text).expect("write");
        self
    }

    async fn run(&self, config: &[(&str, &str)]) -> Run {
        let request = RunRequest {
            workspace: self.dir.path().to_path_buf(),
            pipeline: "shop".to_string(),
            execution_id: "exec-1".to_string(),
            stage: "Test".to_string(),
            action: "UnitTests".to_string(),
            category: "Test".to_string(),
            config: config
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            inputs: vec!["Reports".to_string()],
            timeout: Duration::from_secs(60),
            attempt: 1,
            ..Default::default()
        };
        let (tx, mut rx) = mpsc::unbounded_channel();
        let outcome = host().run(&plugin(), request, tx).await;
        let mut log = Vec::new();
        while let Ok(chunk) = rx.try_recv() {
            log.extend_from_slice(&chunk);
        }
        Run {
            outcome,
            log: String::from_utf8_lossy(&log).into_owned(),
        }
    }
}

struct Run {
    outcome: RunOutcome,
    log: String,
}

impl Run {
    fn tests(&self) -> &[TestCase] {
        match &self.outcome {
            RunOutcome::Succeeded { tests, .. } | RunOutcome::Failed { tests, .. } => tests,
        }
    }

    /// Summary and output variables; panics with the log if the action failed.
    fn succeeded(&self) -> (&str, &BTreeMap<String, String>) {
        match &self.outcome {
            RunOutcome::Succeeded {
                summary,
                output_variables,
                ..
            } => (summary, output_variables),
            RunOutcome::Failed { message, .. } => {
                panic!("action failed: {message}\nlog:\n{}", self.log)
            }
        }
    }

    /// The failure message; panics with the log if the action succeeded.
    fn failed(&self) -> &str {
        match &self.outcome {
            RunOutcome::Failed { message, .. } => message,
            other => panic!("action should have failed: {other:?}\nlog:\n{}", self.log),
        }
    }

    /// How many cases have each status: (passed, failed, errored, skipped).
    fn counts(&self) -> (usize, usize, usize, usize) {
        let n = |s: TestStatus| self.tests().iter().filter(|c| c.status == s).count();
        (
            n(TestStatus::Passed),
            n(TestStatus::Failed),
            n(TestStatus::Errored),
            n(TestStatus::Skipped),
        )
    }

    fn case(&self, name: &str) -> &TestCase {
        self.tests()
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no test case {name:?} in {:#?}", self.tests()))
    }
}

fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[tokio::test]
async fn surefire_reports_fail_the_action_with_their_failures_errors_and_skips() {
    let ws = Workspace::new();
    ws.place(
        "TEST-com.example.shop.CartTest.xml",
        "target/surefire-reports/TEST-com.example.shop.CartTest.xml",
    )
    .place(
        "TEST-com.example.shop.PriceTest.xml",
        "target/surefire-reports/TEST-com.example.shop.PriceTest.xml",
    )
    .write(
        "target/surefire-reports/com.example.shop.CartTest.txt",
        "not a report",
    );
    let run = ws
        .run(&[("ReportPaths", "target/surefire-reports/TEST-*.xml")])
        .await;

    assert_eq!(
        run.failed(),
        "2 of 8 tests failed: com.example.shop.CartTest/appliesDiscount: expected: <90.00> but \
         was: <100.00>; com.example.shop.CartTest/checksOutEmptyCart: Cannot invoke \
         \"java.util.List.size()\" because \"this.items\" is null"
    );
    assert_eq!(run.tests().len(), 8, "{:#?}", run.tests());
    assert_eq!(run.counts(), (5, 1, 1, 1));

    let failure = run.case("appliesDiscount");
    assert_eq!(failure.suite, "com.example.shop.CartTest");
    assert_eq!(failure.classname, "com.example.shop.CartTest");
    assert_eq!(failure.status, TestStatus::Failed);
    assert_eq!(failure.duration_ms, 27);
    assert_eq!(
        failure.message.as_deref(),
        Some("expected: <90.00> but was: <100.00>")
    );
    let details = failure.details.as_deref().expect("failure details");
    assert!(
        details.starts_with("org.opentest4j.AssertionFailedError: expected: <90.00>"),
        "{details}"
    );
    assert!(details.contains("CartTest.java:42"), "{details}");
    assert!(
        !details.contains("SUMMER10"),
        "system-out must be ignored: {details}"
    );

    let error = run.case("checksOutEmptyCart");
    assert_eq!(error.status, TestStatus::Errored);
    assert!(
        error
            .details
            .as_deref()
            .is_some_and(|d| d.contains("Cart.java:58")),
        "{error:?}"
    );
    let skipped = run.case("persistsCart");
    assert_eq!(skipped.status, TestStatus::Skipped);
    assert_eq!(skipped.message.as_deref(), Some("database not available"));
    assert_eq!(skipped.details, None);
    assert_eq!(skipped.duration_ms, 0);

    let passed = run.case("convertsCurrencies");
    assert_eq!(passed.suite, "com.example.shop.PriceTest");
    assert_eq!(passed.status, TestStatus::Passed);
    assert_eq!(passed.duration_ms, 2500);
    assert_eq!(
        (passed.message.as_deref(), passed.details.as_deref()),
        (None, None)
    );

    for line in [
        "ERROR: com.example.shop.CartTest/appliesDiscount failed: expected: <90.00> but was: <100.00>\n",
        "ERROR: com.example.shop.CartTest/checksOutEmptyCart errored: Cannot invoke",
        "Reports/target/surefire-reports/TEST-com.example.shop.CartTest.xml: 5 test case(s)\n",
        "2 report file(s): 8 test(s), 5 passed, 1 failed, 1 errored, 1 skipped\n",
    ] {
        assert!(
            run.log.contains(line),
            "missing {line:?} in log:\n{}",
            run.log
        );
    }
    assert!(!run.log.contains("persistsCart"), "{}", run.log);
}

#[tokio::test]
async fn pytest_xunit1_report_with_setup_error_and_skips() {
    let ws = Workspace::new();
    ws.place("pytest-xunit1.xml", "junit.xml");
    let run = ws.run(&[("ReportPaths", "junit.xml")]).await;

    assert_eq!(
        run.failed(),
        "2 of 6 tests failed: pytest/test_total[3-31]: assert 30 == 31; pytest/test_refund: \
         failed on setup with \"ConnectionRefusedError: [Errno 111] Connection refused\""
    );
    assert_eq!(run.counts(), (2, 1, 1, 2));
    let failure = run.case("test_total[3-31]");
    assert_eq!(failure.suite, "pytest");
    assert_eq!(failure.classname, "tests.test_orders");
    assert_eq!(failure.duration_ms, 3);
    assert_eq!(
        failure.message.as_deref(),
        Some("assert 30 == 31\n +  where 30 = total(3)")
    );
    assert!(
        failure
            .details
            .as_deref()
            .is_some_and(|d| d.contains(">       assert total(n) == expected")),
        "{failure:?}"
    );
    assert_eq!(run.case("test_refund").status, TestStatus::Errored);
    let skip = run.case("test_export");
    assert_eq!(skip.status, TestStatus::Skipped);
    assert_eq!(skip.message.as_deref(), Some("needs S3 credentials"));
    assert_eq!(
        skip.details.as_deref(),
        Some("tests/test_orders.py:50: needs S3 credentials")
    );
    let xfail = run.case("test_legacy_api");
    assert_eq!(xfail.status, TestStatus::Skipped);
    assert_eq!(xfail.message.as_deref(), Some("legacy API is broken"));
}

#[tokio::test]
async fn pytest_xunit2_report_that_passes_sets_the_output_variables() {
    let ws = Workspace::new();
    ws.place("pytest-xunit2.xml", "reports/pytest.xml");
    let run = ws.run(&[("ReportPaths", "reports/*.xml")]).await;

    let (summary, variables) = run.succeeded();
    assert_eq!(summary, "4 tests: 3 passed, 1 skipped");
    assert_eq!(
        *variables,
        vars(&[
            ("Total", "4"),
            ("Passed", "3"),
            ("Failed", "0"),
            ("Errored", "0"),
            ("Skipped", "1"),
        ])
    );
    assert_eq!(run.counts(), (3, 0, 0, 1));
    let slow = run.case("test_search[shoes]");
    assert_eq!(slow.classname, "tests.api.test_catalog");
    assert_eq!(slow.duration_ms, 1052);
    assert_eq!(
        run.case("test_search_unicode").message.as_deref(),
        Some("ICU not installed")
    );
    assert!(
        run.log
            .contains("1 report file(s): 4 test(s), 3 passed, 0 failed, 0 errored, 1 skipped\n"),
        "{}",
        run.log
    );
    assert!(!run.log.contains("ERROR"), "{}", run.log);
}

#[tokio::test]
async fn fail_on_skipped_fails_a_run_whose_only_problem_is_a_skip() {
    let ws = Workspace::new();
    ws.place("pytest-xunit2.xml", "reports/pytest.xml");
    let run = ws
        .run(&[("ReportPaths", "reports/*.xml"), ("FailOnSkipped", "true")])
        .await;
    assert_eq!(
        run.failed(),
        "1 of 4 tests failed or were skipped (FailOnSkipped): \
         pytest/test_search_unicode: ICU not installed"
    );
    assert_eq!(run.counts(), (3, 0, 0, 1));
    assert!(
        run.log
            .contains("WARN: pytest/test_search_unicode skipped: ICU not installed"),
        "{}",
        run.log
    );

    let run = ws
        .run(&[("ReportPaths", "reports/*.xml"), ("FailOnSkipped", "false")])
        .await;
    assert_eq!(run.succeeded().0, "4 tests: 3 passed, 1 skipped");

    let run = ws
        .run(&[
            ("ReportPaths", "reports/*.xml"),
            ("FailOnSkipped", "sometimes"),
        ])
        .await;
    let message = run.failed();
    assert!(
        message.contains("FailOnSkipped") && message.contains("\"sometimes\""),
        "{message}"
    );
}

#[tokio::test]
async fn jest_junit_report_takes_the_message_from_the_failure_text() {
    let ws = Workspace::new();
    ws.place("jest-junit.xml", "web/junit.xml");
    let run = ws.run(&[("ReportPaths", "web/junit.xml")]).await;

    assert_eq!(
        run.failed(),
        "1 of 4 tests failed: cart reducer/cart reducer removes an item: Error: \
         expect(received).toEqual(expected) // deep equality"
    );
    assert_eq!(run.counts(), (2, 1, 0, 1));
    let failure = run.case("cart reducer removes an item");
    assert_eq!(failure.suite, "cart reducer");
    assert_eq!(failure.classname, "cart reducer removes an item");
    assert_eq!(failure.duration_ms, 12);
    let details = failure.details.as_deref().expect("details");
    assert!(details.contains("+   \"count\": 1,"), "{details}");
    assert!(details.contains("cart.test.js:21:29"), "{details}");
    let skipped = run.case("cart reducer clears the cart");
    assert_eq!(skipped.status, TestStatus::Skipped);
    assert_eq!(
        (skipped.message.as_deref(), skipped.details.as_deref()),
        (None, None)
    );
    assert_eq!(
        run.case("price formatting formats euros").suite,
        "price formatting"
    );
}

#[tokio::test]
async fn cargo2junit_and_nextest_reports_from_rust_test_runs() {
    let ws = Workspace::new();
    ws.place("cargo2junit.xml", "target/cargo2junit.xml")
        .place("nextest-junit.xml", "target/nextest/ci/junit.xml");
    let run = ws
        .run(&[(
            "ReportPaths",
            "target/cargo2junit.xml\ntarget/nextest/*/junit.xml",
        )])
        .await;

    assert_eq!(
        run.failed(),
        "2 of 9 tests failed: shop_core/cart::tests::applies_discount: failed \
         cart::tests::applies_discount; shop-core/cart::tests::applies_discount: thread \
         'cart::tests::applies_discount' panicked at src/cart.rs:88:9:"
    );
    assert_eq!(run.tests().len(), 9);
    assert_eq!(run.counts(), (6, 2, 0, 1));

    let cargo: Vec<&TestCase> = run
        .tests()
        .iter()
        .filter(|c| c.suite == "shop_core")
        .collect();
    assert_eq!(cargo.len(), 4);
    let failure = cargo
        .iter()
        .find(|c| c.status == TestStatus::Failed)
        .expect("cargo2junit failure");
    assert_eq!(failure.classname, "shop_core::cart::tests");
    assert_eq!(failure.duration_ms, 1);
    assert!(
        failure
            .details
            .as_deref()
            .is_some_and(|d| d.contains("assertion `left == right` failed")),
        "{failure:?}"
    );
    assert_eq!(run.case("checkout_flow").duration_ms, 250);

    // nextest: the message is the failure text's first line; a flaky test passed.
    let nextest = run
        .tests()
        .iter()
        .find(|c| c.suite == "shop-core" && c.status == TestStatus::Failed)
        .expect("nextest failure");
    assert_eq!(nextest.duration_ms, 15);
    assert_eq!(
        nextest.message.as_deref(),
        Some("thread 'cart::tests::applies_discount' panicked at src/cart.rs:88:9:")
    );
    let flaky = run.case("price::tests::flaky_clock");
    assert_eq!((flaky.status, flaky.duration_ms), (TestStatus::Passed, 31));
    assert!(
        run.tests()
            .iter()
            .any(|c| c.suite == "shop-core::integration" && c.duration_ms == 440)
    );
}

#[tokio::test]
async fn nested_suites_are_joined_and_missing_times_are_zero() {
    let ws = Workspace::new();
    ws.place("nested.xml", "build/logs/junit.xml");
    let run = ws.run(&[("ReportPaths", "build/**/*.xml")]).await;

    assert_eq!(
        run.failed(),
        "1 of 4 tests failed: Shop Test Suite / Unit / Tests\\Unit\\PriceTest/testRound: \
         Tests\\Unit\\PriceTest::testRound"
    );
    let add = run.case("testAdd");
    assert_eq!(add.suite, "Shop Test Suite / Unit / Tests\\Unit\\CartTest");
    assert_eq!(add.classname, "Tests.Unit.CartTest");
    assert_eq!(add.duration_ms, 1);
    assert_eq!(run.case("testRemove").duration_ms, 1);
    let round = run.case("testRound");
    assert_eq!(round.status, TestStatus::Failed);
    assert_eq!(
        round.suite,
        "Shop Test Suite / Unit / Tests\\Unit\\PriceTest"
    );
    assert!(
        round
            .details
            .as_deref()
            .is_some_and(|d| d.contains("Failed asserting that 1.0 is identical to 1.")),
        "{round:?}"
    );
    let smoke = run.case("testSmoke");
    assert_eq!(smoke.suite, "Shop Test Suite");
    assert_eq!((smoke.status, smoke.duration_ms), (TestStatus::Passed, 0));
}

#[tokio::test]
async fn globs_collect_several_files_and_leave_the_rest() {
    let ws = Workspace::new();
    ws.place("pytest-xunit2.xml", "services/api/reports/pytest.xml")
        .place(
            "TEST-com.example.shop.PriceTest.xml",
            "services/billing/target/surefire-reports/TEST-com.example.shop.PriceTest.xml",
        )
        .place(
            "pytest-xunit1.xml",
            "services/api/reports/old/pytest.xml.bak",
        )
        .place("jest-junit.xml", "web/junit.xml")
        .write("services/api/reports/notes.txt", "not xml at all <")
        .write("reports/summary.html", "<html>");
    let run = ws
        .run(&[(
            "ReportPaths",
            "services/*/reports/**/*.xml,\n services/{billing,shipping}/target/surefire-reports/TEST-*.xml",
        )])
        .await;

    let (summary, variables) = run.succeeded();
    assert_eq!(summary, "7 tests: 6 passed, 1 skipped");
    assert_eq!(variables.get("Total").map(String::as_str), Some("7"));
    assert_eq!(run.counts(), (6, 0, 0, 1));
    assert!(
        run.log.contains("2 report file(s): 7 test(s)"),
        "{}",
        run.log
    );
    assert!(
        run.log
            .contains("Reports/services/api/reports/pytest.xml: 4 test case(s)"),
        "{}",
        run.log
    );
}

#[tokio::test]
async fn a_pattern_that_matches_nothing_fails_unless_allow_empty() {
    let ws = Workspace::new();
    ws.place("pytest-xunit2.xml", "reports/pytest.xml");
    let paths = "reports/*.xml, target/surefire-reports/*.xml";

    let run = ws.run(&[("ReportPaths", paths)]).await;
    let message = run.failed();
    assert!(
        message.contains(
            "ReportPaths: no report file matches \"target/surefire-reports/*.xml\" in input \
             artifact Reports"
        ),
        "{message}"
    );
    assert!(message.contains("AllowEmpty"), "{message}");
    assert!(!message.contains("\"reports/*.xml\""), "{message}");
    assert!(run.tests().is_empty());

    let run = ws
        .run(&[("ReportPaths", paths), ("AllowEmpty", "true")])
        .await;
    assert_eq!(run.succeeded().0, "4 tests: 3 passed, 1 skipped");
    assert!(
        run.log.contains(
            "WARN: ReportPaths: no report file matches \"target/surefire-reports/*.xml\""
        ),
        "{}",
        run.log
    );

    let empty = Workspace::new();
    let run = empty
        .run(&[("ReportPaths", "**/*.xml"), ("AllowEmpty", "true")])
        .await;
    let (summary, variables) = run.succeeded();
    assert_eq!(summary, "0 tests: no report file matched ReportPaths");
    assert_eq!(variables.get("Total").map(String::as_str), Some("0"));
    assert!(run.tests().is_empty());
}

#[tokio::test]
async fn malformed_xml_fails_with_the_file_and_position() {
    let ws = Workspace::new();
    ws.place("pytest-xunit2.xml", "reports/A-good.xml")
        .place("broken.xml", "reports/TEST-broken.xml");
    let run = ws.run(&[("ReportPaths", "reports/*.xml")]).await;
    assert_eq!(
        run.failed(),
        "report Reports/reports/TEST-broken.xml is not well-formed XML: line 5, column 34: \
         expected 'failure' tag, not 'failre'; fix the report or leave it out of ReportPaths"
    );
    // Nothing is recorded, not even the cases of the good file read before it.
    assert!(run.tests().is_empty(), "{:#?}", run.tests());
}

#[tokio::test]
async fn other_xml_and_bad_configuration_are_refused_with_the_reason() {
    let ws = Workspace::new();
    ws.write(
        "pom.xml",
        "<project><modelVersion>4.0.0</modelVersion></project>",
    );
    let run = ws.run(&[("ReportPaths", "pom.xml")]).await;
    let message = run.failed();
    assert!(
        message.contains(
            "report Reports/pom.xml is not a JUnit XML report: its root element is <project>"
        ),
        "{message}"
    );

    let run = ws.run(&[("ReportPaths", "../other/*.xml")]).await;
    let message = run.failed();
    assert!(message.contains("ReportPaths"), "{message}");
    assert!(message.contains("no '..'"), "{message}");

    let run = ws.run(&[]).await;
    let message = run.failed();
    assert!(
        message.contains("configuration key ReportPaths is required"),
        "{message}"
    );
}

#[tokio::test]
async fn large_reports_are_reported_whole_in_batches_and_details_are_cut() {
    let ws = Workspace::new();
    let mut xml = String::from("<testsuite name=\"big\">\n");
    for i in 0..2500 {
        xml.push_str(&format!(
            "<testcase classname=\"big.Case\" name=\"case{i}\" time=\"0.000{}\"/>\n",
            i % 10
        ));
    }
    let trace = "é".repeat(5000);
    xml.push_str(&format!(
        "<testcase classname=\"big.Case\" name=\"huge\"><failure message=\"boom\">{trace}</failure></testcase>\n</testsuite>\n"
    ));
    ws.write("big.xml", &xml);
    let run = ws.run(&[("ReportPaths", "big.xml")]).await;
    assert_eq!(run.failed(), "1 of 2501 tests failed: big/huge: boom");
    assert_eq!(run.tests().len(), 2501);
    assert_eq!(run.counts(), (2500, 1, 0, 0));
    let details = run.case("huge").details.as_deref().expect("details");
    assert!(details.len() <= 4096, "{} bytes", details.len());
    assert!(details.len() > 4000, "{} bytes", details.len());
    assert!(
        details.starts_with("éé") && details.ends_with("é…"),
        "{details}"
    );
}
