//! Items 2-4 and 5's callbacks: the gateway against nginx over the same fake endpoint,
//! RSA operations per cached GET, session coalescing, callbacks per second.

use std::time::{Duration, Instant};

use bunq_testkit::FakeBunq;
use serde_json::json;

use super::gateway::{self, GatewayProcess};
use super::load::{self, CpuMeter, Latency, WrkResult};
use super::nginx::{self, Nginx};
use super::report::{Report, Verdict};
use super::{BenchArgs, Connected};

/// What starting a second gateway over the first one's database needs.
pub struct Relaunch<'a> {
    /// The release binary.
    pub bin: &'a std::path::Path,
    /// The first gateway's config.
    pub config: &'a std::path::Path,
}

/// Item 3.
pub async fn gateway_vs_nginx(
    args: &BenchArgs,
    report: &mut Report,
    fake: &FakeBunq,
    gw: &GatewayProcess,
    user: &Connected,
    dir: &std::path::Path,
    relaunch: Relaunch<'_>,
) -> Result<(), String> {
    let Relaunch { bin, config } = relaunch;
    let sid = user.session_user_id;
    let direct_url = format!("{}/user/{sid}/monetary-account-bank", fake.api_base());
    let gateway_url = format!(
        "{}/v1/users/{}/bunq/user/{}/monetary-account-bank",
        gw.url, user.user_ref, user.bunq_user_id
    );
    let bearer = vec![("Authorization".to_owned(), user.bearer.clone())];
    let mut direct_headers = user.session_headers.clone();
    direct_headers.push(("X-Bunq-Client-Request-Id".into(), "bench-direct".into()));

    // The three must answer the same thing, or the comparison is void.
    let http = reqwest::Client::new();
    let body_of = |url: &str, headers: &[(String, String)]| {
        let mut rq = http.get(url);
        for (n, v) in headers {
            rq = rq.header(n.as_str(), v.as_str());
        }
        async move {
            let r = rq.send().await.map_err(|e| e.to_string())?;
            let status = r.status();
            let body = r.bytes().await.map_err(|e| e.to_string())?;
            if !status.is_success() {
                return Err(format!("{status}: {}", String::from_utf8_lossy(&body)));
            }
            Ok::<_, String>(body)
        }
    };
    let direct_body = body_of(&direct_url, &direct_headers)
        .await
        .map_err(|e| format!("direct GET: {e}"))?;
    let gateway_body = body_of(&gateway_url, &bearer)
        .await
        .map_err(|e| format!("gateway GET: {e}"))?;
    if direct_body != gateway_body {
        report.note(
            "the gateway's body differs from the fake's direct body (compared sizes still apply)",
        );
    }

    let fake_pid = std::process::id();
    let (t, c, d) = (2, args.connections, args.seconds);
    println!("  wrk -t{t} -c{c} -d{d}s, direct to the fake (its ceiling) ...");
    let fake_cpu = CpuMeter::start(vec![fake_pid]);
    let direct = load::wrk(&direct_url, &direct_headers, t, c, d)?;
    let (fake_cpu_s, _) = fake_cpu.stop();
    check_clean("direct", &direct, report);

    println!("  wrk -t{t} -c{c} -d{d}s, through the gateway ...");
    let gw_pid = gw.pid().ok_or("gateway has no pid")?;
    let gw_cpu = CpuMeter::start(vec![gw_pid]);
    let through_gateway = load::wrk(&gateway_url, &bearer, t, c, d)?;
    let (gw_cpu_s, _) = gw_cpu.stop();
    check_clean("gateway", &through_gateway, report);

    let fake_us = 1e6 * fake_cpu_s / direct.requests.max(1) as f64;
    report.row(
        "3",
        "bunq-fake alone (direct, its ceiling)",
        format!("{:.0} req/s; fake CPU {fake_us:.0} us/req", direct.rps),
        "",
        Verdict::Info,
    );
    let gw_us = 1e6 * gw_cpu_s / through_gateway.requests.max(1) as f64;
    report.row(
        "3",
        "gateway",
        format!(
            "{:.0} req/s; gateway CPU {gw_us:.0} us/req",
            through_gateway.rps
        ),
        "",
        Verdict::Info,
    );

    let mut figures = json!({
        "wrk": { "threads": t, "connections": c, "seconds": d },
        "direct": direct, "gateway": through_gateway,
        "fake_cpu_us_per_request": fake_us, "gateway_cpu_us_per_request": gw_us,
    });

    // The same with every response verified by RSA, so that the verification cache's
    // share is in plain sight (the fake answers the same list every time, which is
    // the cache's best case).
    match without_verify_cache(args, user, dir, bin, config).await {
        Ok((run, us)) => {
            check_clean("gateway, verification cache off", &run, report);
            report.row(
                "3",
                "gateway, verification cache off (RSA verify per response)",
                format!("{:.0} req/s; gateway CPU {us:.0} us/req", run.rps),
                "",
                Verdict::Info,
            );
            figures["gateway_verify_cache_off"] = json!(run);
            figures["gateway_verify_cache_off_cpu_us_per_request"] = json!(us);
        }
        Err(e) => report.skip("3", "gateway, verification cache off", e),
    }

    let tools = if args.no_install {
        Err("--no-install given".to_owned())
    } else {
        nginx::ensure_tools()
    };
    let nginx_run = match tools {
        Ok(how) => {
            report.note(format!("tools: {how}"));
            let port = gateway::free_port()?;
            let upstream = fake.local_addr().to_string();
            Nginx::start(&dir.join("nginx"), port, &upstream, &user.session_headers)
                .map(|n| (n, port))
        }
        Err(e) => Err(e),
    };
    let (nginx, nginx_port) = match nginx_run {
        Ok(n) => n,
        Err(e) => {
            report.skip(
                "3",
                "gateway / nginx requests per second",
                format!("nginx unavailable: {e}"),
            );
            report.section("proxy", figures);
            return Ok(());
        }
    };
    let nginx_url = format!("http://127.0.0.1:{nginx_port}/v1/user/{sid}/monetary-account-bank");
    let nginx_body = body_of(&nginx_url, &[])
        .await
        .map_err(|e| format!("nginx GET: {e}"))?;
    if nginx_body != direct_body {
        report.note("nginx's body differs from the fake's direct body");
    }
    println!("  wrk -t{t} -c{c} -d{d}s, through nginx ...");
    let mut pids = nginx.workers();
    pids.extend(nginx.master_pid());
    let ng_cpu = CpuMeter::start(pids);
    let through_nginx = load::wrk(&nginx_url, &[], t, c, d)?;
    let (ng_cpu_s, _) = ng_cpu.stop();
    check_clean("nginx", &through_nginx, report);
    let ng_us = 1e6 * ng_cpu_s / through_nginx.requests.max(1) as f64;
    report.row(
        "3",
        "nginx proxy_pass",
        format!(
            "{:.0} req/s; nginx CPU {ng_us:.0} us/req",
            through_nginx.rps
        ),
        "",
        Verdict::Info,
    );
    let rps_ratio = through_gateway.rps / through_nginx.rps.max(1e-9);
    report.row(
        "3",
        "gateway / nginx requests per second",
        format!("{rps_ratio:.2}x"),
        ">= 0.8x",
        Verdict::of(rps_ratio >= 0.8),
    );
    let cpu_ratio = gw_us / ng_us.max(1e-9);
    report.row(
        "3",
        "gateway / nginx CPU per request",
        format!("{cpu_ratio:.2}x ({gw_us:.0} vs {ng_us:.0} us)"),
        "<= 2x",
        Verdict::of(cpu_ratio <= 2.0),
    );

    // Latency at a moderate fixed rate, same for all three.
    let rate = args.rate;
    let (warm, dur) = (
        Duration::from_secs(1),
        Duration::from_secs(args.latency_seconds),
    );
    println!(
        "  fixed rate {rate}/s for {}s each: direct, gateway, nginx ...",
        args.latency_seconds
    );
    let lat_direct = load::fixed_rate(&direct_url, &direct_headers, rate, warm, dur).await?;
    let lat_gateway = load::fixed_rate(&gateway_url, &bearer, rate, warm, dur).await?;
    let lat_nginx = load::fixed_rate(&nginx_url, &[], rate, warm, dur).await?;
    nginx.stop();
    let added = |l: &Latency| (l.p99_us as f64 - lat_direct.p99_us as f64) / 1000.0;
    for (name, l) in [
        ("direct", &lat_direct),
        ("gateway", &lat_gateway),
        ("nginx", &lat_nginx),
    ] {
        if l.errors > 0 {
            report.note(format!(
                "fixed-rate run {name}: {} of {} requests failed",
                l.errors, l.measured
            ));
        }
    }
    report.row(
        "3",
        format!("p99 added over direct at {rate} req/s (gateway)"),
        format!(
            "{:.2} ms (p99 {:.2} ms vs direct {:.2} ms; nginx adds {:.2} ms)",
            added(&lat_gateway),
            lat_gateway.p99_us as f64 / 1000.0,
            lat_direct.p99_us as f64 / 1000.0,
            added(&lat_nginx)
        ),
        "<= 1 ms",
        Verdict::of(added(&lat_gateway) <= 1.0),
    );
    figures["nginx"] = json!(through_nginx);
    figures["nginx_cpu_us_per_request"] = json!(ng_us);
    figures["rps_ratio"] = json!(rps_ratio);
    figures["cpu_ratio"] = json!(cpu_ratio);
    figures["latency"] =
        json!({ "direct": lat_direct, "gateway": lat_gateway, "nginx": lat_nginx });
    report.section("proxy", figures);
    Ok(())
}

/// A second gateway over the same database and session, with
/// `BUNQ_GATEWAY_BUNQ_VERIFY_CACHE=false`, under the same wrk load; stopped after.
async fn without_verify_cache(
    args: &BenchArgs,
    user: &Connected,
    dir: &std::path::Path,
    bin: &std::path::Path,
    config: &std::path::Path,
) -> Result<(WrkResult, f64), String> {
    let facts = gateway::read_config(config)?;
    let port = gateway::free_port()?;
    let variant = dir.join("gateway-verify-cache-off.toml");
    gateway::write_variant(&facts, &variant, port, &dir.join("gateway.sqlite3"))?;
    let url = format!("http://127.0.0.1:{port}");
    let off = GatewayProcess::start_with_env(
        bin,
        &variant,
        &url,
        &dir.join("gateway-verify-cache-off.log"),
        &[("BUNQ_GATEWAY_BUNQ_VERIFY_CACHE", "false")],
    )
    .await?;
    let target = format!(
        "{url}/v1/users/{}/bunq/user/{}/monetary-account-bank",
        user.user_ref, user.bunq_user_id
    );
    let bearer = vec![("Authorization".to_owned(), user.bearer.clone())];
    let (t, c, d) = (2, args.connections, args.seconds);
    println!("  wrk -t{t} -c{c} -d{d}s, through a gateway with the verification cache off ...");
    let cpu = CpuMeter::start(vec![off.pid().ok_or("gateway has no pid")?]);
    let run = load::wrk(&target, &bearer, t, c, d)?;
    let (cpu_s, _) = cpu.stop();
    let _ = off.terminate();
    let us = 1e6 * cpu_s / run.requests.max(1) as f64;
    Ok((run, us))
}

fn check_clean(name: &str, r: &WrkResult, report: &mut Report) {
    if r.non_2xx > 0 || r.socket_errors > 0 {
        report.note(format!(
            "wrk {name}: {} non-2xx responses, {} socket errors of {} requests",
            r.non_2xx, r.socket_errors, r.requests
        ));
    }
}

/// Item 4 (the hard case): the fake kills every session while the gateway still holds
/// it as live, then 1,000 concurrent GETs arrive. Each gets bunq's 401; all must share
/// one renewal. Counted at the fake.
pub async fn coalescing_after_expiry(
    report: &mut Report,
    fake: &FakeBunq,
    gw: &GatewayProcess,
    user: &Connected,
) -> Result<(), String> {
    let url = format!(
        "{}/v1/users/{}/bunq/user/{}/monetary-account-bank",
        gw.url, user.user_ref, user.bunq_user_id
    );
    let http = reqwest::Client::new();
    let metric = "bunq_gateway_session_creations_total";
    let gw_before = gateway::metric(&http, &gw.url, metric)
        .await
        .unwrap_or(f64::NAN);
    let before = fake.calls("POST /session-server");
    fake.knobs().expire_all_sessions();
    let (ok, failed) = concurrent_gets(&url, &user.bearer, 1000).await?;
    let calls = fake.calls("POST /session-server") - before;
    let gw_after = gateway::metric(&http, &gw.url, metric)
        .await
        .unwrap_or(f64::NAN);
    report.note(format!(
        "after expiry the gateway's own {metric} rose by {}",
        gw_after - gw_before
    ));
    report.row(
        "4",
        "session-server calls, 1,000 concurrent GETs after bunq dropped the session",
        format!("{calls} ({ok} x 200, {failed} failed)"),
        "exactly 1",
        Verdict::of(calls == 1 && failed == 0),
    );
    report.section(
        "coalescing_after_expiry",
        json!({ "session_server_calls": calls, "ok": ok, "failed": failed }),
    );
    Ok(())
}

/// Item 4 (the cold case): a connected user whose stored context has no session.
pub async fn coalescing_cold(
    report: &mut Report,
    fake: &FakeBunq,
    gw: &GatewayProcess,
    user_ref: &str,
    bearer: &str,
) -> Result<(), String> {
    // The session's user id is not known before the session exists: ask for `GET /user`.
    let url = format!("{}/v1/users/{user_ref}/bunq/user", gw.url);
    let before = fake.calls("POST /session-server");
    let (ok, failed) = concurrent_gets(&url, bearer, 1000).await?;
    let calls = fake.calls("POST /session-server") - before;
    report.row(
        "4",
        "session-server calls, 1,000 concurrent GETs for a user with no session",
        format!("{calls} ({ok} x 200, {failed} failed)"),
        "exactly 1",
        Verdict::of(calls == 1 && failed == 0),
    );
    report.section(
        "coalescing_cold",
        json!({ "session_server_calls": calls, "ok": ok, "failed": failed }),
    );
    Ok(())
}

/// `n` GETs started together (one connection each), bounded by 60 s. (ok, failed).
async fn concurrent_gets(url: &str, bearer: &str, n: usize) -> Result<(usize, usize), String> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(n)
        .build()
        .map_err(|e| e.to_string())?;
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(n));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..n {
        let (http, url, bearer, barrier) = (
            http.clone(),
            url.to_owned(),
            bearer.to_owned(),
            barrier.clone(),
        );
        tasks.spawn(async move {
            barrier.wait().await;
            match http.get(&url).header("Authorization", bearer).send().await {
                Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                Err(_) => false,
            }
        });
    }
    let (mut ok, mut failed) = (0, 0);
    while let Some(joined) = tasks.join_next().await {
        if joined.map_err(|e| e.to_string())? {
            ok += 1;
        } else {
            failed += 1;
        }
    }
    Ok((ok, failed))
}

/// Item 5: OAuth callbacks completed per second end to end (authorization, consent at
/// the fake, callback, code exchange, installation, device, session).
pub async fn callbacks_per_second(
    report: &mut Report,
    gw: &GatewayProcess,
    bearer: &str,
    n: usize,
    concurrency: usize,
) -> Result<(), String> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let (mut next, mut done, mut failed) = (0, 0, Vec::new());
    while done + failed.len() < n {
        while tasks.len() < concurrency && next < n {
            let (http, url, bearer) = (http.clone(), gw.url.clone(), bearer.to_owned());
            let user_ref = format!("bench-callback-{next}");
            next += 1;
            tasks
                .spawn(async move { gateway::connect_user(&http, &bearer, &url, &user_ref).await });
        }
        match tasks.join_next().await {
            Some(Ok(Ok(_))) => done += 1,
            Some(Ok(Err(e))) => failed.push(e),
            Some(Err(e)) => failed.push(e.to_string()),
            None => break,
        }
    }
    let rate = done as f64 / started.elapsed().as_secs_f64();
    if let Some(first) = failed.first() {
        report.note(format!(
            "{} of {n} callbacks failed; first: {first}",
            failed.len()
        ));
    }
    report.row(
        "5",
        format!("OAuth callbacks completed end to end ({concurrency} at a time)"),
        format!("{rate:.1}/s ({done} of {n})"),
        "",
        Verdict::Info,
    );
    report.section("callbacks", json!({ "completed": done, "failed": failed.len(), "per_second": rate, "concurrency": concurrency }));
    Ok(())
}
