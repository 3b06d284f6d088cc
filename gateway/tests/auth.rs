//! Authentication (token sources and their order, HS/RS/ES/EdDSA keys, every rejection with
//! its status, code and `WWW-Authenticate`) and authorization (owner, `jobs` claim, admin;
//! `404` for another user's job, the same as for an unknown job).

mod support;

use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{json, Value};
use support::tokens::{self, generate_key_pair};
use support::*;

backend_tests!(
    every_token_source_opens_a_stream,
    first_token_source_found_wins,
    cookie_and_query_names_are_configurable,
    hmac_family_is_accepted_with_the_secret,
    every_bad_token_is_refused_with_its_code,
    issuer_and_audience_are_checked_when_configured,
    public_keys_rs256_es256_eddsa_by_kid => 60,
    another_users_job_is_404_unless_shared_or_admin,
    tokens_never_appear_in_logs,
);

async fn job_with_owner(gw: &Gateway, job: &str, owner: &str) -> String {
    gw.publish(
        job,
        json!({"owner": owner, "type": "progress", "data": {"progress": 1}}),
    )
    .await
}

/// Opens the job stream with `request` and asserts its `status` shows the job.
async fn assert_watches(gw: &Gateway, request: Request, job: &str, what: &str) {
    let mut stream = match gw.open(request).await {
        Ok(stream) => stream,
        Err(response) => panic!(
            "{what}: refused with {} {}",
            response.status,
            response.text()
        ),
    };
    let (_, state) = expect_opening(&mut stream, "status").await;
    assert_eq!(state["jobId"], job, "{what}");
}

async fn every_token_source_opens_a_stream(backend: Backend) {
    let gw = Gateway::start(backend).await;
    job_with_owner(&gw, "j1", "u1").await;
    let token = gw.token("u1");
    let target = "/v1/jobs/j1/events";
    assert_watches(
        &gw,
        Request::get(target).bearer(&token),
        "j1",
        "Authorization: Bearer",
    )
    .await;
    assert_watches(
        &gw,
        Request::get(target).header("Cookie", format!("sse_token={token}")),
        "j1",
        "cookie",
    )
    .await;
    assert_watches(
        &gw,
        Request::get(target).header("Cookie", format!("theme=dark; sse_token={token}; lang=en")),
        "j1",
        "cookie among others",
    )
    .await;
    assert_watches(
        &gw,
        Request::get(format!("{target}?token={token}")),
        "j1",
        "query",
    )
    .await;
    assert_watches(
        &gw,
        Request::get(format!("{target}?x=1&token={token}&y=2")),
        "j1",
        "query among others",
    )
    .await;
    // The identity is the token's sub, whatever the source.
    for request in [
        Request::get("/v1/users/me/events").bearer(&token),
        Request::get("/v1/users/me/events").header("Cookie", format!("sse_token={token}")),
        Request::get(format!("/v1/users/me/events?token={token}")),
    ] {
        let mut stream = gw.open(request).await.stream();
        let (_, data) = expect_opening(&mut stream, "jobs").await;
        assert_eq!(data["userId"], "u1");
    }
    // No token at all.
    for request in [
        Request::get(target),
        Request::get("/v1/users/me/events"),
        Request::get("/v1/jobs/j1"),
    ] {
        assert_error(&gw.open(request).await.refused(), 401, "missing_token");
    }
}

async fn first_token_source_found_wins(backend: Backend) {
    let gw = Gateway::start(backend).await;
    job_with_owner(&gw, "j1", "u1").await;
    let (u1, u2) = (gw.token("u1"), gw.token("u2"));
    let garbage = "not.a.token";
    let target = "/v1/jobs/j1/events";
    let cookie = |t: &str| format!("sse_token={t}");

    // Header first: a bad header is not rescued by a good cookie or query.
    let response = gw
        .open(
            Request::get(format!("{target}?token={u1}"))
                .bearer(garbage)
                .header("Cookie", cookie(&u1)),
        )
        .await;
    assert_error(&response.refused(), 401, "invalid_token");
    assert_watches(
        &gw,
        Request::get(target)
            .bearer(&u1)
            .header("Cookie", cookie(garbage)),
        "j1",
        "header over bad cookie",
    )
    .await;
    // Cookie before query.
    let response = gw
        .open(Request::get(format!("{target}?token={u1}")).header("Cookie", cookie(garbage)))
        .await;
    assert_error(&response.refused(), 401, "invalid_token");
    assert_watches(
        &gw,
        Request::get(format!("{target}?token={garbage}")).header("Cookie", cookie(&u1)),
        "j1",
        "cookie over bad query",
    )
    .await;
    // Which identity wins, seen on the user stream.
    for (request, expected) in [
        (
            Request::get("/v1/users/me/events")
                .bearer(&u2)
                .header("Cookie", cookie(&u1)),
            "u2",
        ),
        (
            Request::get(format!("/v1/users/me/events?token={u2}")).header("Cookie", cookie(&u1)),
            "u1",
        ),
        (
            Request::get(format!("/v1/users/me/events?token={u2}")).bearer(&u1),
            "u1",
        ),
    ] {
        let mut stream = gw.open(request).await.stream();
        let (_, data) = expect_opening(&mut stream, "jobs").await;
        assert_eq!(data["userId"], expected);
    }
    // A header token of a user who may not watch j1: 404, the cookie does not help.
    let response = gw
        .open(
            Request::get(target)
                .bearer(&u2)
                .header("Cookie", cookie(&u1)),
        )
        .await
        .refused();
    assert_error(&response, 404, "not_found");
}

async fn cookie_and_query_names_are_configurable(backend: Backend) {
    let gw = Gateway::builder(backend)
        .flag("--cookie-name", "auth")
        .flag("--query-token-param", "access_token")
        .start()
        .await;
    job_with_owner(&gw, "j1", "u1").await;
    let token = gw.token("u1");
    let target = "/v1/jobs/j1/events";
    assert_watches(
        &gw,
        Request::get(target).header("Cookie", format!("auth={token}")),
        "j1",
        "custom cookie",
    )
    .await;
    assert_watches(
        &gw,
        Request::get(format!("{target}?access_token={token}")),
        "j1",
        "custom query",
    )
    .await;
    let response = gw
        .open(Request::get(target).header("Cookie", format!("sse_token={token}")))
        .await
        .refused();
    assert_error(&response, 401, "missing_token");
    let response = gw
        .open(Request::get(format!("{target}?token={token}")))
        .await
        .refused();
    assert_error(&response, 401, "missing_token");
}

async fn hmac_family_is_accepted_with_the_secret(backend: Backend) {
    let gw = Gateway::start(backend).await;
    job_with_owner(&gw, "j1", "u1").await;
    let key = EncodingKey::from_secret(gw.secret.as_deref().unwrap().as_bytes());
    for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
        let token = tokens::sign(alg, &key, None, &tokens::claims("u1"));
        assert_watches(
            &gw,
            Request::get("/v1/jobs/j1/events").bearer(&token),
            "j1",
            &format!("{alg:?}"),
        )
        .await;
    }
}

async fn every_bad_token_is_refused_with_its_code(backend: Backend) {
    let gw = Gateway::builder(backend)
        .flag("--jwt-leeway", "0s")
        .start()
        .await;
    job_with_owner(&gw, "j1", "u1").await;
    let secret = gw.secret.clone().unwrap();
    let now = now_secs();
    let good = gw.token("u1");
    let other_secret = tokens::hs256(
        "another-secret-that-is-long-enough-0123456789",
        &tokens::claims("u1"),
    );
    let tampered = {
        // Same header and signature, payload changed to another sub.
        let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
        parts[1] = tokens::b64url(tokens::claims("admin").to_string().as_bytes());
        parts.join(".")
    };
    let dir = TempDir::new("rs");
    let rsa = generate_key_pair(&dir, "rsa", Algorithm::RS256);

    let cases: Vec<(&str, String, &str)> = vec![
        ("garbage", "abc".into(), "invalid_token"),
        ("three garbage parts", "a.b.c".into(), "invalid_token"),
        (
            "truncated",
            good[..good.len() - 10].to_owned(),
            "invalid_token",
        ),
        (
            "bad signature (other secret)",
            other_secret.clone(),
            "invalid_token",
        ),
        (
            "signature of another token",
            tokens::with_signature_of(&good, &other_secret),
            "invalid_token",
        ),
        ("tampered payload", tampered, "invalid_token"),
        (
            "alg none",
            tokens::alg_none(&tokens::claims("u1")),
            "invalid_token",
        ),
        (
            "alg not configured (RS256)",
            rsa.sign(Some("rsa"), &tokens::claims("u1")),
            "invalid_token",
        ),
        (
            "expired",
            tokens::hs256(&secret, &json!({"sub": "u1", "exp": now - 30})),
            "token_expired",
        ),
        (
            "just expired",
            tokens::hs256(&secret, &json!({"sub": "u1", "exp": now - 1})),
            "token_expired",
        ),
        (
            "not yet valid",
            tokens::hs256(
                &secret,
                &json!({"sub": "u1", "exp": now + 3600, "nbf": now + 600}),
            ),
            "invalid_token",
        ),
        (
            "missing sub",
            tokens::hs256(&secret, &json!({"exp": now + 3600})),
            "invalid_token",
        ),
        (
            "missing exp",
            tokens::hs256(&secret, &json!({"sub": "u1"})),
            "invalid_token",
        ),
    ];
    let failures_before = gw.metric("sse_gateway_auth_failures_total").await;
    for (what, token, code) in &cases {
        for request in [
            Request::get("/v1/jobs/j1/events").bearer(token),
            Request::get("/v1/jobs/j1/events").header("Cookie", format!("sse_token={token}")),
            Request::get(format!(
                "/v1/users/me/events?token={}",
                support::http::encode_query_value(token)
            )),
            Request::get("/v1/jobs/j1").bearer(token),
        ] {
            let target = request.target.clone();
            let response = gw.open(request).await;
            match response {
                Ok(stream) => panic!(
                    "{what}: {target} opened a stream (status {})",
                    stream.status
                ),
                Err(response) => {
                    assert_eq!(
                        response.status,
                        401,
                        "{what}: {target}: {}",
                        response.text()
                    );
                    assert_error(&response, 401, code);
                }
            }
        }
    }
    // Valid with nbf in the past.
    let token = tokens::hs256(
        &secret,
        &json!({"sub": "u1", "exp": now + 3600, "nbf": now - 10}),
    );
    assert_watches(
        &gw,
        Request::get("/v1/jobs/j1/events").bearer(&token),
        "j1",
        "nbf in the past",
    )
    .await;

    let failures_after = gw.metric("sse_gateway_auth_failures_total").await;
    assert!(
        failures_after >= failures_before + cases.len() as f64,
        "auth failures counted: {failures_before} -> {failures_after}"
    );
    let series = metric_series(&gw.metrics().await, "sse_gateway_auth_failures_total");
    assert!(
        series.iter().all(|(labels, _)| labels.contains("reason=")),
        "auth failures labelled by reason: {series:?}"
    );
}

async fn issuer_and_audience_are_checked_when_configured(backend: Backend) {
    let gw = Gateway::builder(backend)
        .flag("--jwt-issuer", "https://issuer.example")
        .flag("--jwt-audience", "sse")
        .token_claims(json!({"iss": "https://issuer.example", "aud": "sse"}))
        .start()
        .await;
    job_with_owner(&gw, "j1", "u1").await;
    // Exactly the claims given (no harness defaults).
    let secret = gw.secret.clone().unwrap();
    let token = |extra: Value| tokens::hs256(&secret, &tokens::claims_with("u1", extra));
    let good = [
        json!({"iss": "https://issuer.example", "aud": "sse"}),
        json!({"iss": "https://issuer.example", "aud": ["other", "sse"]}),
    ];
    for extra in good {
        assert_watches(
            &gw,
            Request::get("/v1/jobs/j1/events").bearer(&token(extra.clone())),
            "j1",
            &extra.to_string(),
        )
        .await;
    }
    let bad = [
        json!({"iss": "https://evil.example", "aud": "sse"}),
        json!({"iss": "https://issuer.example", "aud": "other"}),
        json!({"aud": "sse"}),
        json!({"iss": "https://issuer.example"}),
        json!({"iss": "https://issuer.example", "aud": ["other"]}),
    ];
    for extra in bad {
        let response = gw
            .open(Request::get("/v1/jobs/j1/events").bearer(&token(extra.clone())))
            .await
            .refused();
        assert_eq!(response.status, 401, "{extra}: {}", response.text());
        assert_error(&response, 401, "invalid_token");
    }
}

async fn public_keys_rs256_es256_eddsa_by_kid(backend: Backend) {
    let dir = TempDir::new("keys");
    let rsa = generate_key_pair(&dir, "rsa", Algorithm::RS256);
    let rsa_next = generate_key_pair(&dir, "rsa-next", Algorithm::RS256);
    let ec = generate_key_pair(&dir, "ec", Algorithm::ES256);
    let ed = generate_key_pair(&dir, "ed", Algorithm::EdDSA);
    let stranger = generate_key_pair(&dir, "stranger", Algorithm::RS256);
    let stranger_ec = generate_key_pair(&dir, "stranger-ec", Algorithm::ES256);
    let path = |k: &tokens::KeyPair| k.public_pem.to_str().unwrap().to_owned();
    // Public keys only: no HMAC secret is configured.
    let gw = Gateway::builder(backend)
        .without_secret()
        .flag("--jwt-public-key-file", path(&rsa))
        .flag("--jwt-public-key-file", path(&rsa_next))
        .flag("--jwt-public-key-file", path(&ec))
        .flag("--jwt-public-key-file", format!("signer-ed={}", path(&ed)))
        .start()
        .await;
    // The publisher's token is signed with a configured key too.
    let publisher = rsa.sign(
        Some("rsa"),
        &tokens::claims_with("worker", json!({"role": "publisher"})),
    );
    let response = gw
        .send(
            Request::post("/v1/jobs/j1/events")
                .bearer(&publisher)
                .json(&json!({"owner": "u1", "type": "progress", "data": {"progress": 1}})),
        )
        .await;
    assert_eq!(
        response.status,
        201,
        "publish with an RS256 token: {}",
        response.text()
    );

    let claims = tokens::claims("u1");
    let accepted = [
        ("RS256, kid = file stem", rsa.sign(Some("rsa"), &claims)),
        (
            "RS256, second key (rotation)",
            rsa_next.sign(Some("rsa-next"), &claims),
        ),
        ("ES256, kid = file stem", ec.sign(Some("ec"), &claims)),
        ("EdDSA, explicit kid", ed.sign(Some("signer-ed"), &claims)),
    ];
    for (what, token) in accepted {
        assert_watches(
            &gw,
            Request::get("/v1/jobs/j1/events").bearer(&token),
            "j1",
            what,
        )
        .await;
        assert_watches(
            &gw,
            Request::get(format!("/v1/jobs/j1/events?token={token}")),
            "j1",
            what,
        )
        .await;
    }

    let rsa_public = std::fs::read(&rsa.public_pem).unwrap();
    let refused = [
        ("unknown kid", rsa.sign(Some("nope"), &claims)),
        (
            "EdDSA file's default kid is replaced by the explicit one",
            ed.sign(Some("ed"), &claims),
        ),
        (
            "right kid, another RSA key (bad signature)",
            stranger.sign(Some("rsa"), &claims),
        ),
        (
            "right kid, another EC key (bad signature)",
            stranger_ec.sign(Some("ec"), &claims),
        ),
        (
            "RS256 token naming the EC key",
            rsa.sign(Some("ec"), &claims),
        ),
        (
            "ES256 token naming the RSA key",
            ec.sign(Some("rsa"), &claims),
        ),
        (
            "algorithm confusion: HS256 keyed with the RSA public key",
            tokens::sign(
                Algorithm::HS256,
                &EncodingKey::from_secret(&rsa_public),
                Some("rsa"),
                &claims,
            ),
        ),
        (
            "HS256 when no secret is configured",
            tokens::hs256("a-secret-that-is-long-enough-for-hs256-0123", &claims),
        ),
        ("alg none", tokens::alg_none(&claims)),
        (
            "expired RS256",
            rsa.sign(Some("rsa"), &json!({"sub": "u1", "exp": now_secs() - 60})),
        ),
    ];
    for (what, token) in refused {
        let response = gw
            .open(Request::get("/v1/jobs/j1/events").bearer(&token))
            .await;
        let response = match response {
            Ok(_) => panic!("{what}: a stream was opened"),
            Err(response) => response,
        };
        let code = if what.starts_with("expired") {
            "token_expired"
        } else {
            "invalid_token"
        };
        assert_eq!(response.status, 401, "{what}: {}", response.text());
        assert_error(&response, 401, code);
    }
}

async fn another_users_job_is_404_unless_shared_or_admin(backend: Backend) {
    let gw = Gateway::start(backend).await;
    let id = job_with_owner(&gw, "j1", "u1").await;
    let target = "/v1/jobs/j1/events";

    let unknown = gw
        .open(Request::get("/v1/jobs/nope/events").bearer(&gw.token("u2")))
        .await
        .refused();
    assert_error(&unknown, 404, "not_found");
    let unknown_message = unknown.json()["message"]
        .as_str()
        .unwrap()
        .replace("nope", "JOB");
    let denied_tokens = [
        ("another user", gw.token("u2")),
        (
            "another user sharing another job",
            gw.token_with("u2", json!({"jobs": ["j2", "j10"]})),
        ),
        (
            "a publisher",
            gw.token_with("u2", json!({"role": "publisher"})),
        ),
        (
            "an unknown role",
            gw.token_with("u2", json!({"role": "superuser"})),
        ),
    ];
    for (what, token) in &denied_tokens {
        for request in [
            Request::get(target).bearer(token),
            Request::get(target).bearer(token).last_event_id("0-0"),
            Request::get("/v1/jobs/j1").bearer(token),
        ] {
            let response = gw.open(request).await.refused();
            assert_error(&response, 404, "not_found");
            let message = response.json()["message"]
                .as_str()
                .unwrap()
                .replace("j1", "JOB");
            assert_eq!(
                message, unknown_message,
                "{what}: indistinguishable from an unknown job"
            );
        }
    }
    // The owner, a token sharing the job, and an admin may watch.
    let allowed = [
        ("owner", gw.token("u1")),
        (
            "jobs claim",
            gw.token_with("u2", json!({"jobs": ["j0", "j1"]})),
        ),
        ("admin", gw.token_with("u3", json!({"role": "admin"}))),
    ];
    let mut streams = Vec::new();
    for (what, token) in &allowed {
        let mut stream = gw.open(Request::get(target).bearer(token)).await.stream();
        let (status, _) = expect_opening(&mut stream, "status").await;
        assert_eq!(status.id, id, "{what}");
        let response = gw.send(Request::get("/v1/jobs/j1").bearer(token)).await;
        assert_eq!(
            response.status,
            200,
            "{what}: GET /v1/jobs/j1: {}",
            response.text()
        );
        assert_state(&response.json(), "j1", "u1", false);
        streams.push(stream);
    }
    // All of them get the live events.
    let next = gw
        .publish("j1", json!({"type": "progress", "data": {"progress": 2}}))
        .await;
    for stream in &mut streams {
        assert_eq!(stream.next_event().await.id, next);
    }
    // A shared job does not appear in the sharer's user snapshot (it is not theirs).
    let mut user = gw.open_as("u2", "/v1/users/me/events").await.stream();
    let (_, data) = expect_opening(&mut user, "jobs").await;
    assert_eq!(data["jobs"], json!([]), "u2 owns no job");
}

async fn tokens_never_appear_in_logs(backend: Backend) {
    let gw = Gateway::start(backend).await;
    job_with_owner(&gw, "j1", "u1").await;
    let token = gw.token("u1");
    let bad = tokens::hs256(
        "another-secret-that-is-long-enough-0123456789",
        &tokens::claims("u1"),
    );
    let mut stream = gw
        .open(Request::get(format!("/v1/jobs/j1/events?token={token}")))
        .await
        .stream();
    expect_opening(&mut stream, "status").await;
    let refused = gw
        .open(Request::get(format!("/v1/jobs/j1/events?token={bad}")))
        .await
        .refused();
    assert_error(&refused, 401, "invalid_token");
    let refused = gw
        .open(Request::get("/v1/jobs/j1/events").bearer(&bad))
        .await
        .refused();
    assert_error(&refused, 401, "invalid_token");
    drop(stream);
    // Wait until the closed connection has been logged (its close line), then look.
    let signatures: Vec<&str> = [token.as_str(), bad.as_str()]
        .iter()
        .map(|t| t.rsplit('.').next().unwrap())
        .collect();
    wait_until(
        "the stream's close to be counted",
        std::time::Duration::from_secs(5),
        || async { gw.metric("sse_gateway_open_connections").await == 0.0 },
    )
    .await;
    let lines = gw.log_lines();
    assert!(!lines.is_empty(), "the gateway logs");
    for line in &lines {
        for signature in &signatures {
            assert!(
                !line.contains(signature),
                "a token leaked into the log: {line}"
            );
        }
    }
}
