//! The registry fixtures proven with independent clients (skopeo, and the fixtures' tiny
//! std-only HTTP client), never the code under test:
//!
//! - plain HTTP: skopeo pushes a hand-written OCI layout; the manifest and a byte range of a
//!   blob read back with plain `GET`s equal the layout's bytes (`206`, exact range); the
//!   registry's access log counts that blob request and its bytes; skopeo copies the image
//!   back byte for byte.
//! - htpasswd Basic over TLS with a test CA: skopeo pushes with the CA and credentials;
//!   without the CA it fails on the certificate, without credentials on authorization.
//! - `auth: token`: skopeo pushes through the token flow; the registry's `401` names the
//!   realm, service and scope; the token server honours the scope (anonymous: nothing, a
//!   token for another repository is refused by the registry), refuses a wrong password, and
//!   a token issued expired is refused by the registry itself.

use std::path::Path;

use base64::Engine;
use tests::http;
use tests::oci_images::{self, Image};
use tests::oci_layout::{OciLayout, Platform, media};
use tests::registry::Registry;
use tests::skopeo::Skopeo;

/// A small two-layer tar+gzip image in a fresh layout under `dir`.
fn small_image(dir: &Path) -> Option<(OciLayout, Image)> {
    let layers = oci_images::layered_tree(&dir.join("tree"), 200_000);
    let layout = OciLayout::create(&dir.join("layout"));
    let image = oci_images::targz_image(
        &layout,
        &layers.layers(),
        &Platform::host(),
        &dir.join("work"),
    )?;
    layout.tag("v1", &image.manifest);
    Some((layout, image))
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

#[test]
fn plain_registry_serves_what_skopeo_pushed() {
    let Some(reg) = Registry::plain("fixture_registry/plain") else {
        return;
    };
    let dir = reg.dir().to_path_buf();
    let Some(skopeo) = Skopeo::new(&dir.join("skopeo")) else {
        return;
    };
    let (layout, image) = small_image(&dir).unwrap();
    skopeo.push(layout.dir(), "v1", &reg, "demo/app:v1");
    assert_eq!(skopeo.list_tags(&reg, "demo/app"), vec!["v1".to_string()]);

    // The manifest by tag, with the OCI media type, equals the layout's bytes.
    let m = http::get(
        &format!("{}/v2/demo/app/manifests/v1", reg.url()),
        &[("Accept", media::MANIFEST)],
    )
    .unwrap();
    assert_eq!(m.status, 200);
    assert_eq!(
        m.header("docker-content-digest"),
        Some(image.manifest.digest.as_str())
    );
    assert_eq!(m.body, layout.read_blob(&image.manifest.digest));

    // A byte range of the big layer: 206 with exactly those bytes; HEAD gives the size.
    let layer = &image.layers[0];
    let blob = layout.read_blob(&layer.digest);
    let url = format!("{}/v2/demo/app/blobs/{}", reg.url(), layer.digest);
    let before = reg.blob_served(&layer.digest);
    let r = http::get(&url, &[("Range", "bytes=1000-5095")]).unwrap();
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &blob[1000..5096]);
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes 1000-5095/{}", blob.len()).as_str())
    );
    let h = http::request("HEAD", &url, &[]).unwrap();
    assert_eq!(
        h.header("content-length"),
        Some(blob.len().to_string().as_str())
    );
    // Counted at the registry: one GET of 4096 bytes, one HEAD with no body.
    let after = reg.blob_served(&layer.digest);
    assert_eq!(
        (after.0 - before.0, after.1 - before.1),
        (2, 4096),
        "{:?}",
        reg.access_log()
    );

    // skopeo copies it back byte for byte.
    let back = OciLayout::create(&dir.join("back"));
    skopeo.pull(&reg, "demo/app:v1", back.dir(), "v1");
    for d in image.layers.iter().chain([&image.config, &image.manifest]) {
        assert_eq!(
            back.read_blob(&d.digest),
            layout.read_blob(&d.digest),
            "{}",
            d.digest
        );
    }
}

#[test]
fn basic_tls_registry_needs_the_ca_and_the_password() {
    let Some(reg) = Registry::basic_tls("fixture_registry/basic_tls") else {
        return;
    };
    assert!(reg.url().starts_with("https://127.0.0.1:"));
    let dir = reg.dir().to_path_buf();
    let Some(skopeo) = Skopeo::new(&dir.join("skopeo")) else {
        return;
    };
    let (layout, image) = small_image(&dir).unwrap();
    skopeo.push(layout.dir(), "v1", &reg, "secure/app:v1");
    assert_eq!(
        skopeo.inspect_raw(&reg, "secure/app:v1"),
        layout.read_blob(&image.manifest.digest)
    );
    // Plain HTTP to a TLS port: the registry answers 400 ("client sent an HTTP request to an
    // HTTPS server"), never the manifest.
    let r = http::get(&format!("http://{}/v2/", reg.host()), &[]).unwrap();
    assert_eq!(r.status, 400);

    let (user, password) = reg.credentials().unwrap();
    let inspect = |args: &[&str]| {
        let mut c = skopeo.command();
        c.arg("inspect").arg("--raw").args(args);
        c.arg(format!("docker://{}", reg.reference("secure/app:v1")));
        c.output().unwrap()
    };
    let creds = format!("{user}:{password}");
    let cert_dir = reg.ca().unwrap().cert_dir.to_str().unwrap().to_string();
    // Without the CA: a certificate error.
    let out = inspect(&["--creds", &creds]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("certificate"),
        "{err}"
    );
    // With the CA, no credentials: unauthorized.
    let out = inspect(&["--cert-dir", &cert_dir, "--no-creds"]);
    let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(
        !out.status.success() && err.contains("unauthorized"),
        "{err}"
    );
    // A wrong password: unauthorized.
    let out = inspect(&["--cert-dir", &cert_dir, "--creds", &format!("{user}:wrong")]);
    assert!(!out.status.success());
    // With both: the manifest.
    let out = inspect(&["--cert-dir", &cert_dir, "--creds", &creds]);
    assert!(out.status.success());
    assert_eq!(out.stdout, layout.read_blob(&image.manifest.digest));
}

/// `GET realm?service=…&scope=…` with optional Basic credentials → the reply's JSON.
fn fetch_token(realm: &str, scope: &str, auth: Option<&str>) -> (u16, serde_json::Value) {
    let url = format!(
        "{realm}?service={}&scope={}",
        http::percent_encode(tests::token_server::SERVICE),
        http::percent_encode(scope)
    );
    let headers: Vec<(&str, &str)> = auth.map(|a| ("Authorization", a)).into_iter().collect();
    let r = http::get(&url, &headers).unwrap();
    (
        r.status,
        serde_json::from_slice(&r.body).unwrap_or_default(),
    )
}

#[test]
fn token_registry_follows_the_token_server() {
    let Some(reg) = Registry::token("fixture_registry/token") else {
        return;
    };
    let dir = reg.dir().to_path_buf();
    let Some(skopeo) = Skopeo::new(&dir.join("skopeo")) else {
        return;
    };
    let ts = reg.token_server().unwrap();
    let (layout, image) = small_image(&dir).unwrap();
    skopeo.push(layout.dir(), "v1", &reg, "private/app:v1");
    let issued = ts.issued();
    assert!(
        issued.iter().any(|t| t.user.as_deref() == Some("erofs")
            && t.access
                .iter()
                .any(|a| a.name == "private/app" && a.actions.contains(&"push".to_string()))),
        "{issued:?}"
    );

    let manifest_url = format!("{}/v2/private/app/manifests/v1", reg.url());
    let accept = ("Accept", media::MANIFEST);
    // Anonymous: 401 with the Bearer challenge.
    let r = http::get(&manifest_url, &[accept]).unwrap();
    assert_eq!(r.status, 401);
    let challenge = r.header("www-authenticate").unwrap();
    assert_eq!(
        challenge,
        format!(
            "Bearer realm=\"{}\",service=\"{}\",scope=\"repository:private/app:pull\"",
            ts.realm(),
            tests::token_server::SERVICE
        )
    );
    let get_with = |token: &str| {
        let bearer = format!("Bearer {token}");
        http::get(&manifest_url, &[accept, ("Authorization", &bearer)]).unwrap()
    };
    let scope = "repository:private/app:pull";
    let (user, password) = reg.credentials().unwrap();
    // An anonymous token grants nothing here: the registry refuses it.
    let (st, anon) = fetch_token(&ts.realm(), scope, None);
    assert_eq!(st, 200);
    assert_eq!(get_with(anon["token"].as_str().unwrap()).status, 401);
    // A wrong password: the token server refuses.
    let refused = ts.refused();
    let (st, _) = fetch_token(&ts.realm(), scope, Some(&basic(&user, "wrong")));
    assert_eq!((st, ts.refused()), (401, refused + 1));
    // The user's token for this repository: the manifest.
    let (st, good) = fetch_token(&ts.realm(), scope, Some(&basic(&user, &password)));
    assert_eq!(st, 200);
    assert_eq!(good["expires_in"], 300);
    let r = get_with(good["token"].as_str().unwrap());
    assert_eq!(r.status, 200);
    assert_eq!(r.body, layout.read_blob(&image.manifest.digest));
    // A token for another repository: refused.
    let (_, other) = fetch_token(
        &ts.realm(),
        "repository:other/app:pull",
        Some(&basic(&user, &password)),
    );
    assert_eq!(get_with(other["token"].as_str().unwrap()).status, 401);
    // A token issued expired: refused by the registry; the next one works.
    ts.expire_next(1);
    let (_, expired) = fetch_token(&ts.realm(), scope, Some(&basic(&user, &password)));
    assert!(ts.issued().last().unwrap().expired);
    assert_eq!(get_with(expired["token"].as_str().unwrap()).status, 401);
    let (_, fresh) = fetch_token(&ts.realm(), scope, Some(&basic(&user, &password)));
    assert_eq!(get_with(fresh["token"].as_str().unwrap()).status, 200);
    // Short-lived tokens: the reply says so.
    ts.set_expires_in(2);
    let (_, short) = fetch_token(&ts.realm(), scope, Some(&basic(&user, &password)));
    assert_eq!(short["expires_in"], 2);
    assert_eq!(get_with(short["token"].as_str().unwrap()).status, 200);
}

#[test]
fn anonymous_pull_tokens_grant_pull_only() {
    let opts = tests::registry::RegistryOptions {
        tls: false,
        auth: tests::registry::Auth::Token(tests::token_server::TokenOptions {
            anonymous_pull: true,
            ..Default::default()
        }),
    };
    let Some(reg) = Registry::start("fixture_registry/anonymous", opts) else {
        return;
    };
    let dir = reg.dir().to_path_buf();
    let Some(skopeo) = Skopeo::new(&dir.join("skopeo")) else {
        return;
    };
    let (layout, image) = small_image(&dir).unwrap();
    skopeo.push(layout.dir(), "v1", &reg, "public/app:v1");
    let ts = reg.token_server().unwrap();
    // Anonymous, asking for pull and push: only pull is granted, and it reads the manifest.
    let (st, anon) = fetch_token(&ts.realm(), "repository:public/app:pull,push", None);
    assert_eq!(st, 200);
    let last = ts.issued().pop().unwrap();
    assert_eq!(last.user, None);
    assert_eq!(last.access.len(), 1);
    assert_eq!(last.access[0].actions, vec!["pull".to_string()]);
    let r = http::get(
        &format!("{}/v2/public/app/manifests/v1", reg.url()),
        &[
            ("Accept", media::MANIFEST),
            (
                "Authorization",
                &format!("Bearer {}", anon["token"].as_str().unwrap()),
            ),
        ],
    )
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body, layout.read_blob(&image.manifest.digest));
}

#[test]
fn a_missing_tool_names_its_package() {
    let allow = std::env::var_os("EROFS_TESTS_ALLOW_SKIP").is_some_and(|v| v == "1");
    let got = std::panic::catch_unwind(|| {
        tests::require_package_tool("erofs-rs-no-such-tool", "erofs-rs-no-such-package")
    });
    match got {
        Ok(found) => {
            assert!(
                allow,
                "a missing tool passed without EROFS_TESTS_ALLOW_SKIP=1"
            );
            assert!(found.is_none());
        }
        Err(e) => {
            let msg = e.downcast_ref::<String>().cloned().unwrap_or_default();
            assert!(
                msg.contains("Debian package `erofs-rs-no-such-package`"),
                "{msg}"
            );
        }
    }
}

#[test]
fn docker_config_files_authenticate_skopeo() {
    use tests::docker_config::DockerConfig;
    let Some(reg) = Registry::token("fixture_registry/docker_config") else {
        return;
    };
    let dir = reg.dir().to_path_buf();
    let Some(skopeo) = Skopeo::new(&dir.join("skopeo")) else {
        return;
    };
    let (layout, image) = small_image(&dir).unwrap();
    skopeo.push(layout.dir(), "v1", &reg, "cfg/app:v1");
    let want = layout.read_blob(&image.manifest.digest);
    let (user, password) = reg.credentials().unwrap();
    let host = reg.host();
    // skopeo inspect with only the config file (and PATH for a helper) as credentials.
    let inspect = |cfg: &DockerConfig| {
        let mut c = skopeo.command();
        c.env("PATH", cfg.path_env())
            .args(["inspect", "--raw", "--tls-verify=false", "--authfile"])
            .arg(&cfg.file)
            .arg(format!("docker://{}", reg.reference("cfg/app:v1")));
        let out = c.output().unwrap();
        (
            out.status.success(),
            out.stdout,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    let cfg = DockerConfig::auths(&dir.join("cfg-auths"), &[(&host, &user, &password)]);
    let (ok, out, err) = inspect(&cfg);
    assert!(ok && out == want, "{err}");
    let cfg = DockerConfig::auths(&dir.join("cfg-wrong"), &[(&host, &user, "wrong")]);
    let (ok, _, err) = inspect(&cfg);
    assert!(!ok, "a wrong password in auths was accepted: {err}");
    let cfg = DockerConfig::auths(
        &dir.join("cfg-other"),
        &[("other.example:5000", &user, &password)],
    );
    assert!(!inspect(&cfg).0, "credentials for another host were used");

    let cfg = DockerConfig::cred_helper(
        &dir.join("cfg-helper"),
        "erofs-test",
        &host,
        &user,
        &password,
    );
    let (ok, out, err) = inspect(&cfg);
    assert!(ok && out == want, "{err}");
    assert!(cfg.helper_calls().iter().all(|h| h.contains(&host)) && !cfg.helper_calls().is_empty());

    // The helper alone: known host → JSON with the secret; another host → exit 1.
    let run_helper = |cfg: &DockerConfig, h: &str| {
        use std::io::Write;
        let bin = cfg
            .helper_dir
            .as_ref()
            .unwrap()
            .join("docker-credential-erofs-store");
        let mut child = std::process::Command::new(bin)
            .arg("get")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        writeln!(child.stdin.take().unwrap(), "{h}").unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let cfg = DockerConfig::creds_store(
        &dir.join("cfg-store"),
        "erofs-store",
        &host,
        &user,
        &password,
    );
    let (ok, out) = run_helper(&cfg, &host);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(ok);
    assert_eq!(
        (v["Username"].as_str(), v["Secret"].as_str()),
        (Some(user.as_str()), Some(password.as_str()))
    );
    assert!(!run_helper(&cfg, "other.example").0);
    let stored: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cfg.file).unwrap()).unwrap();
    assert_eq!(stored["credsStore"], "erofs-store");
}
