//! The VM harness's user-mode network ([`VmRun::user_net`]): a guest reaches a server on the
//! host's 127.0.0.1 at `10.0.2.2`, directly and through an emulated link
//! ([`tests::netem`]), and the server sees the requests.

use std::time::Duration;

use tests::netem::{Link, LinkSpec};
use tests::registry::Registry;
use tests::vm::{GUEST_HOST, VmRun};

#[test]
fn guest_reaches_a_host_registry_through_a_link() {
    let Some(reg) = Registry::plain("user-net-registry") else {
        return;
    };
    let link = Link::start(
        reg.addr(),
        LinkSpec {
            rtt: Duration::from_millis(20),
            bytes_per_sec: 25_000_000,
        },
    );
    let port = |hostport: String| hostport.rsplit_once(':').unwrap().1.to_string();
    let script = format!(
        "check direct sh -c 'wget -q -O - http://{GUEST_HOST}:{}/v2/direct-probe; true'\n\
         if [ \"$(wget -q -O - http://{GUEST_HOST}:{}/v2/)\" = '{{}}' ]; then pass link; \
         else fail link \"$(wget -O - http://{GUEST_HOST}:{}/v2/ 2>&1)\"; fi\n",
        reg.addr().port(),
        port(link.host()),
        port(link.host()),
    );
    let Some(out) = VmRun::new("user-net")
        .user_net()
        .script(&script)
        .timeout(Duration::from_secs(120))
        .run()
    else {
        return;
    };
    out.assert_passed(&["net-up", "direct", "link"]);
    let log = reg.access_log();
    let targets: Vec<&str> = log.iter().map(|e| e.target.as_str()).collect();
    assert!(
        targets.contains(&"/v2/direct-probe"),
        "{targets:?}\n{}\n{}",
        reg.log(),
        out.report()
    );
    assert!(
        log.iter().any(|e| e.target == "/v2/" && e.status == 200),
        "{targets:?}"
    );
    assert!(link.downstream_bytes() > 0);
}
