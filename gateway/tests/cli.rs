//! The binary's command line: `mint-token`, exit status 64 with a one-line error naming the
//! option on invalid configuration, environment fallbacks `GATEWAY_<FLAG>`, JSON logs.

mod support;

use std::process::Stdio;
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{json, Value};
use support::gateway::BINARY;
use support::*;

const SECRET: &str = "an-hs256-secret-of-more-than-32-bytes-0123456789";

/// Runs the binary to completion (bounded); returns (status code, stdout, stderr).
async fn run(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let mut command = tokio::process::Command::new(BINARY);
    command
        .args(args)
        .envs(env.iter().copied())
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = command.spawn().expect("spawn the gateway binary");
    let output = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("`sse-gateway {args:?}` did not exit within 10s"))
        .expect("wait for the binary");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn mint_token_prints_a_working_hs256_token() {
    bounded(TEST_LIMIT, async {
        let (code, stdout, stderr) = run(
            &[
                "mint-token",
                "--jwt-secret",
                SECRET,
                "--sub",
                "u1",
                "--role",
                "publisher",
                "--jobs",
                "j1,j2",
                "--ttl",
                "1h",
            ],
            &[],
        )
        .await;
        assert_eq!(code, Some(0), "mint-token exit status; stderr {stderr}");
        let token = stdout.trim();
        assert_eq!(
            stdout.trim_end().lines().count(),
            1,
            "one token on stdout: {stdout:?}"
        );
        let header = jsonwebtoken::decode_header(token).expect("a JWT");
        assert_eq!(header.alg, Algorithm::HS256);
        let mut validation = Validation::new(Algorithm::HS256);
        validation.validate_aud = false;
        let claims = jsonwebtoken::decode::<Value>(
            token,
            &DecodingKey::from_secret(SECRET.as_bytes()),
            &validation,
        )
        .expect("signed with the given secret")
        .claims;
        assert_eq!(claims["sub"], "u1");
        assert_eq!(claims["role"], "publisher");
        assert_eq!(claims["jobs"], json!(["j1", "j2"]));
        let exp = claims["exp"].as_u64().expect("exp");
        let now = now_secs();
        assert!(
            exp >= now + 3590 && exp <= now + 3610,
            "exp is an hour from now: {exp} vs {now}"
        );

        // The minted tokens work against a gateway with that secret.
        let (_, viewer, _) = run(
            &[
                "mint-token",
                "--jwt-secret",
                SECRET,
                "--sub",
                "u2",
                "--jobs",
                "j1",
                "--topics",
                "team.7.*,news",
            ],
            &[],
        )
        .await;
        let viewer = viewer.trim().to_owned();
        let gw = Gateway::builder(Backend::Embedded)
            .without_secret()
            .flag("--jwt-secret", SECRET)
            .start()
            .await;
        let response = gw
            .send(
                Request::post("/v1/jobs/j1/events")
                    .bearer(token)
                    .json(&json!({"owner": "u1", "type": "progress", "data": {"progress": 1}})),
            )
            .await;
        assert_eq!(
            response.status,
            201,
            "publish with a minted publisher token: {}",
            response.text()
        );
        let mut stream = gw
            .open(Request::get("/v1/jobs/j1/events").bearer(&viewer))
            .await
            .stream();
        expect_opening(&mut stream, "status").await;
        for (topic, status) in [
            ("team.7.builds", 200),
            ("news", 200),
            ("team.8.builds", 404),
        ] {
            let response = gw
                .send(Request::get(format!("/v1/topics/{topic}")).bearer(&viewer))
                .await;
            assert_eq!(
                response.status, status,
                "{topic} with --topics team.7.*,news"
            );
        }
        let (code, _, stderr) = run(
            &[
                "mint-token",
                "--jwt-secret",
                SECRET,
                "--sub",
                "u2",
                "--topics",
                "a/b",
            ],
            &[],
        )
        .await;
        assert_eq!(code, Some(64), "a bad --topics pattern: {stderr}");
        assert!(stderr.contains("--topics"), "names the option: {stderr}");
        let response = gw
            .send(
                Request::post("/v1/jobs/j1/events")
                    .bearer(&viewer)
                    .json(&json!({"type": "log"})),
            )
            .await;
        assert_error(&response, 403, "forbidden");
    })
    .await
}

#[tokio::test]
async fn invalid_config_exits_64_naming_the_option() {
    bounded(TEST_LIMIT, async {
        let base = ["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"];
        // (arguments, environment, names the error may use for the option)
        type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a [&'a str]);
        let cases: Vec<Case> = vec![
            (vec!["--jwt-secret", "short"], vec![], &["jwt-secret"]),
            (
                vec![],
                vec![("GATEWAY_JWT_SECRET", "short")],
                &["jwt-secret", "JWT_SECRET"],
            ),
            (
                vec!["--jwt-secret", SECRET, "--heartbeat", "soon"],
                vec![],
                &["heartbeat"],
            ),
            (
                vec![
                    "--jwt-secret",
                    SECRET,
                    "--redis-url",
                    // TLS to Redis is built in; turning verification off by a URL
                    // fragment is not (--redis-tls-insecure says it out loud).
                    "rediss://127.0.0.1:1/#insecure",
                ],
                vec![],
                &["redis-url"],
            ),
            (
                vec!["--jwt-secret", SECRET, "--redis-cluster", "no-port"],
                vec![],
                &["redis-cluster"],
            ),
            (
                vec!["--jwt-secret", SECRET, "--drain-timeout", "forever"],
                vec![],
                &["drain-timeout"],
            ),
            (
                vec!["--jwt-secret", SECRET, "--max-connections", "lots"],
                vec![],
                &["max-connections"],
            ),
            (
                vec!["--jwt-secret", SECRET, "--log-format", "xml"],
                vec![],
                &["log-format"],
            ),
            (
                vec![
                    "--jwt-secret",
                    SECRET,
                    "--jwt-public-key-file",
                    "/nonexistent/key.pem",
                ],
                vec![],
                &["jwt-public-key-file"],
            ),
            (
                vec!["--jwt-secret", SECRET, "--no-such-flag", "1"],
                vec![],
                &["no-such-flag"],
            ),
        ];
        // Every case is checked before failing, so one report lists them all.
        let mut failures = Vec::new();
        let mut check = |what: String, code: Option<i32>, stderr: &str, names: &[&str]| {
            let line = stderr.trim();
            if code != Some(64) {
                failures.push(format!(
                    "{what}: exit status {code:?} instead of 64; stderr {stderr:?}"
                ));
            } else if line.is_empty() || line.contains('\n') {
                failures.push(format!(
                    "{what}: not a one-line error on stderr: {stderr:?}"
                ));
            } else if !names.iter().any(|n| line.contains(n)) {
                failures.push(format!(
                    "{what}: the error does not name the option: {line:?}"
                ));
            }
        };
        for (args, env, names) in cases {
            let mut all: Vec<&str> = base.to_vec();
            all.extend(&args);
            let (code, _, stderr) = run(&all, &env).await;
            check(format!("args {args:?} env {env:?}"), code, &stderr, names);
        }
        // The listen address must be valid too.
        let listen = [
            "--listen",
            "nonsense",
            "--metrics-listen",
            "127.0.0.1:0",
            "--jwt-secret",
            SECRET,
        ];
        let (code, _, stderr) = run(&listen, &[]).await;
        check("--listen nonsense".to_owned(), code, &stderr, &["listen"]);
        assert!(
            failures.is_empty(),
            "invalid configurations:\n{}",
            failures.join("\n")
        );
    })
    .await
}

#[tokio::test]
async fn options_fall_back_to_environment_and_logs_are_json() {
    bounded(TEST_LIMIT, async {
        let gw = Gateway::builder(Backend::Embedded)
            .without_secret()
            .env("GATEWAY_JWT_SECRET", SECRET)
            .env("GATEWAY_HEARTBEAT", "200ms")
            .env("GATEWAY_RETRY", "1500ms")
            .start()
            .await;
        let publisher = support::tokens::hs256(
            SECRET,
            &support::tokens::claims_with("w", json!({"role": "publisher"})),
        );
        let response = gw
            .send(
                Request::post("/v1/jobs/j1/events")
                    .bearer(&publisher)
                    .json(&json!({"owner": "u1", "type": "log"})),
            )
            .await;
        assert_eq!(
            response.status,
            201,
            "GATEWAY_JWT_SECRET is the secret: {}",
            response.text()
        );
        let viewer = support::tokens::hs256(SECRET, &support::tokens::claims("u1"));
        let mut stream = gw
            .open(Request::get("/v1/jobs/j1/events").bearer(&viewer))
            .await
            .stream();
        assert_stream_headers(&stream);
        expect_retry(&mut stream, 1500).await;
        let status = stream.next_event().await;
        assert_eq!(status.event, "status");
        let frame = stream
            .next_frame_within(Duration::from_secs(1))
            .await
            .expect("a heartbeat");
        assert_eq!(
            frame.raw, ": hb\n\n",
            "GATEWAY_HEARTBEAT=200ms gives a heartbeat within a second"
        );
        drop(stream);
        for line in gw.log_lines().iter().filter(|l| !l.starts_with("[stderr]")) {
            let value: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}"));
            assert!(value.is_object(), "log line is a JSON object: {line}");
        }
    })
    .await
}

/// A port nothing listens on (and, below the ephemeral range, that nothing will be given).
fn closed_port() -> u16 {
    sse_publisher::testing::free_port()
}

#[tokio::test]
async fn a_node_that_cannot_reach_redis_at_start_exits_1_naming_it_masked() {
    bounded(TEST_LIMIT, async {
        let port = closed_port();
        let url = format!("redis://worker:s3cret-pass@127.0.0.1:{port}/0");
        let started = std::time::Instant::now();
        let (code, stdout, stderr) = run(
            &[
                "--listen",
                "127.0.0.1:0",
                "--metrics-listen",
                "127.0.0.1:0",
                "--jwt-secret",
                SECRET,
                "--log-format",
                "text",
                "--redis-url",
                &url,
                "--redis-connect-timeout",
                "1500ms",
            ],
            &[],
        )
        .await;
        let elapsed = started.elapsed();
        assert_eq!(code, Some(1), "exit status; stderr {stderr:?}");
        let line = stderr.trim();
        assert!(
            !line.is_empty() && !line.contains('\n'),
            "one line: {stderr:?}"
        );
        let masked = format!("redis://worker:***@127.0.0.1:{port}/0");
        assert!(
            line.contains(&masked),
            "names the address, masked: {line:?}"
        );
        assert!(line.contains("--redis-connect-timeout"), "{line:?}");
        assert!(
            !stdout.contains("s3cret") && !stderr.contains("s3cret"),
            "the password is never printed: {stdout}{stderr}"
        );
        assert!(
            stdout.contains(&masked) && stdout.contains("retrying"),
            "the retries are logged with the address: {stdout}"
        );
        assert!(
            elapsed >= Duration::from_millis(1500) && elapsed < Duration::from_secs(6),
            "gave up after --redis-connect-timeout (took {elapsed:?})"
        );
        // Logs on a pipe (not a terminal) carry no colour codes.
        assert!(stdout.contains(" WARN "), "text logs: {stdout}");
        assert!(!stdout.contains('\u{1b}'), "no ANSI escapes in {stdout:?}");
    })
    .await
}

#[tokio::test]
async fn a_starting_node_waits_for_a_redis_that_comes_up_later() {
    bounded(TEST_LIMIT, async {
        let port = closed_port();
        let gw = Gateway::builder(Backend::Embedded)
            .flag("--redis-url", format!("redis://127.0.0.1:{port}"))
            .flag("--redis-connect-timeout", "30s")
            .start()
            .await;
        wait_until(
            "a failed attempt is logged",
            Duration::from_secs(10),
            || async {
                gw.log_lines()
                    .iter()
                    .any(|l| l.contains("redis unreachable; retrying"))
            },
        )
        .await;
        let _redis = sse_publisher::testing::RedisServer::start_on(port, &[]);
        gw.wait_ready(Duration::from_secs(20)).await;
        let response = gw.send(Request::get("/healthz")).await;
        assert_eq!(response.status, 200);
    })
    .await
}

#[tokio::test]
async fn switches_take_1_0_true_false_yes_no_on_off_from_the_environment() {
    bounded(TEST_LIMIT, async {
        for (value, on) in [("1", true), ("Yes", true), ("off", false), ("0", false)] {
            let gw = Gateway::builder(Backend::Embedded)
                .env("GATEWAY_DEMO", value)
                .start()
                .await;
            let status = gw.send(Request::get("/")).await.status;
            assert_eq!(
                status == 200,
                on,
                "GATEWAY_DEMO={value}: the dashboard answered {status}"
            );
        }
        let (code, _, stderr) = run(
            &[
                "--listen",
                "127.0.0.1:0",
                "--metrics-listen",
                "127.0.0.1:0",
                "--jwt-secret",
                SECRET,
            ],
            &[("GATEWAY_DEMO", "maybe")],
        )
        .await;
        assert_eq!(code, Some(64), "{stderr}");
        let line = stderr.trim();
        assert!(
            !line.contains('\n')
                && line.contains("--demo")
                && line.contains("1, 0, true, false, yes, no, on, off"),
            "one line naming the option and the accepted values: {stderr:?}"
        );
    })
    .await
}
