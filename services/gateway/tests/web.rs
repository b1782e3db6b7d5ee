//! How the gateway serves the customer portal (the app itself is driven in a real browser by
//! `browser.rs`): the shell, content-hashed files with long-lived caching and compression, a strict
//! Content-Security-Policy, and CSRF protection for requests made with the session cookie.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use reqwest::{StatusCode, header};

fn csp(r: &reqwest::Response) -> String {
    r.headers()[header::CONTENT_SECURITY_POLICY].to_str().unwrap().to_owned()
}

fn assert_strict(policy: &str) {
    assert!(!policy.contains("unsafe-inline") && !policy.contains("unsafe-eval"), "{policy}");
    assert!(
        policy.contains("default-src 'none'") && policy.contains("script-src 'self'") && policy.contains("frame-ancestors 'none'"),
        "{policy}"
    );
}

#[tokio::test]
async fn the_portal_is_served_with_hashed_cached_compressed_files_under_a_strict_policy() {
    let sys = common::start(&[], &[]).await;
    let web = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();

    let r = web.get(sys.url("/")).send().await.unwrap();
    assert!(r.status().is_redirection(), "{}", r.status());
    assert_eq!(r.headers()[header::LOCATION], "/app/");

    // Every client-side route answers the same shell, revalidated on each load.
    let mut shell = String::new();
    for path in ["/app/", "/app/login", "/app/tickets/00000000-0000-0000-0000-000000000000", "/app/no/such/page"] {
        let r = web.get(sys.url(path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        assert!(r.headers()[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/html"));
        assert_eq!(r.headers()[header::CACHE_CONTROL], "no-cache");
        assert_strict(&csp(&r));
        let body = r.text().await.unwrap();
        assert!(!body.contains("<script>") && !body.contains(" style="), "nothing inline in the shell");
        assert!(shell.is_empty() || body == shell, "{path} answers another shell");
        shell = body;
    }

    // The files the shell names: content-hashed names, cached for a year, gzip when accepted.
    let names: Vec<&str> = shell.split('"').filter(|s| s.starts_with("/assets/")).collect();
    assert_eq!(names.len(), 3, "{names:?}");
    for name in &names {
        let file = name.trim_start_matches("/assets/");
        let parts: Vec<&str> = file.split('.').collect();
        assert!(parts.len() == 3 && parts[1].len() == 12 && parts[1].chars().all(|c| c.is_ascii_hexdigit()), "{file}");
        let r = web.get(sys.url(name)).header(header::ACCEPT_ENCODING, "gzip").send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{name}");
        assert_eq!(r.headers()[header::CACHE_CONTROL], "public, max-age=31536000, immutable");
        assert_eq!(r.headers()[header::CONTENT_ENCODING], "gzip", "{name}");
        let plain = web.get(sys.url(name)).send().await.unwrap();
        assert!(plain.headers().get(header::CONTENT_ENCODING).is_none());
        assert!(!plain.bytes().await.unwrap().is_empty());
    }
    // A name that is not a current file (an old hash, a path trick) is a problem+json 404.
    for bad in ["/assets/app.000000000000.js", "/assets/..%2fCargo.toml", "/assets/app.js"] {
        let r = web.get(sys.url(bad)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{bad}");
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/problem+json", "{bad}");
    }

    // The API reference: the vendored docs UI from this gateway, under the same policy, naming
    // nothing from elsewhere.
    let r = web.get(sys.url("/docs")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_strict(&csp(&r));
    let docs = r.text().await.unwrap();
    assert!(!docs.contains("http://") && !docs.contains("https://") && !docs.contains("<script>"), "{docs}");
    let files: Vec<&str> = docs.split('"').filter(|s| s.starts_with("/assets/")).collect();
    for prefix in ["/assets/swagger-ui-bundle.", "/assets/swagger-ui.", "/assets/docs."] {
        let name = files.iter().find(|f| f.starts_with(prefix)).unwrap_or_else(|| panic!("/docs names no {prefix}: {files:?}"));
        let r = web.get(sys.url(name)).header(header::ACCEPT_ENCODING, "gzip").send().await.unwrap();
        assert_eq!((r.status(), r.headers()[header::CONTENT_ENCODING].to_str().unwrap()), (StatusCode::OK, "gzip"), "{name}");
    }

    // The local checkout pages share the stylesheet and the policy (no inline style any more).
    let u = sys.signup("web-csp@example.com").await;
    let (status, c) = common::send(web.post(sys.url("/v1/billing/checkout")).bearer_auth(&u.token)).await;
    assert_eq!(status, 201, "{c}");
    let page = web.get(c["url"].as_str().unwrap()).bearer_auth(&u.token).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert_strict(&csp(&page));
    let html = page.text().await.unwrap();
    assert!(html.contains(names.iter().find(|n| n.ends_with(".css")).unwrap()), "{html}");
    sys.stop().await;
}

#[tokio::test]
async fn a_state_changing_request_with_the_cookie_alone_must_come_from_our_own_pages() {
    let sys = common::start(&[], &[]).await;
    let u = sys.signup("web-csrf@example.com").await;
    let cookie = format!("sb_session={}", u.token);
    let me = |c: &str| sys.web.get(sys.url("/v1/me")).header(header::COOKIE, c.to_owned());

    // Another site's page (or no browser at all) cannot change anything with the cookie.
    for origin in [None, Some("http://evil.example"), Some("null"), Some("http://127.0.0.1.evil.example")] {
        let mut req = sys.web.patch(sys.url("/v1/me")).header(header::COOKIE, &cookie).json(&serde_json::json!({"name": "Mallory"}));
        if let Some(o) = origin {
            req = req.header(header::ORIGIN, o);
        }
        let (status, p) = common::send(req).await;
        assert_eq!((status, p["code"].as_str().unwrap()), (403, "cross_site_request"), "{origin:?}");
        let r = sys
            .web
            .post(sys.url("/v1/logout"))
            .header(header::COOKIE, &cookie)
            .header("sec-fetch-site", "cross-site")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
    }
    // Nothing changed: the name is the same and the session still works.
    let (status, body) = common::send(me(&cookie)).await;
    assert_eq!(status, 200);
    assert_ne!(body["user"]["name"], "Mallory");

    // Our own pages can: the browser says same-origin, or the Origin is this gateway's address.
    let (status, body) = common::send(
        sys.web
            .patch(sys.url("/v1/me"))
            .header(header::COOKIE, &cookie)
            .header("sec-fetch-site", "same-origin")
            .json(&serde_json::json!({"name": "Ada"})),
    )
    .await;
    assert_eq!((status, body["name"].as_str().unwrap()), (200, "Ada"));
    // A bearer token is not a cookie a browser sends by itself: not refused, whatever the origin.
    let (status, _) = common::send(
        sys.web
            .patch(sys.url("/v1/me"))
            .bearer_auth(&u.token)
            .header(header::ORIGIN, "http://evil.example")
            .json(&serde_json::json!({"name": "Bea"})),
    )
    .await;
    assert_eq!(status, 200);
    // Reads are not affected, and logging out from our own page works.
    assert_eq!(me(&cookie).send().await.unwrap().status(), StatusCode::OK);
    let r =
        sys.web.post(sys.url("/v1/logout")).header(header::COOKIE, &cookie).header(header::ORIGIN, sys.base.clone()).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(me(&cookie).send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
    sys.stop().await;
}
