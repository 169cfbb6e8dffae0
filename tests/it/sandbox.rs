//! The sandbox over a real socket: signing, result codes, the report flow, billing and faults,
//! as a client of the vendor API would see them.

use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use vmr::sandbox::{
    DEFAULT_APP_ID, DEFAULT_APP_SECRET, GENERATE_PATH, GET_PATH, Ledger, Outcome, ReadyAfter,
    Sandbox, SandboxConfig, synth,
};

const LICENSE: &str = "https://img.example.com/license/1.jpg";

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().expect("a valid address")
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

/// A VIN (17 characters, WMI `wmi`) for which the sandbox with `cfg` does `outcome`.
fn vin_with(cfg: &SandboxConfig, wmi: &str, outcome: Outcome) -> String {
    (0..100_000)
        .map(|i| format!("{wmi}AB{i:012}"))
        .find(|v| cfg.truth(v).outcome == outcome)
        .expect("some VIN has the outcome")
}

/// A minimal vendor client: signs with the given credentials and returns (HTTP status, JSON).
struct Client {
    http: reqwest::Client,
    base: String,
    app_id: String,
    secret: String,
}

impl Client {
    fn new(sb: &Sandbox) -> Self {
        Client {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .expect("client builds"),
            base: sb.base_url(),
            app_id: DEFAULT_APP_ID.into(),
            secret: DEFAULT_APP_SECRET.into(),
        }
    }

    fn signed(&self, ts: i64, params: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut all = vec![
            ("appId".to_owned(), self.app_id.clone()),
            ("timestamp".to_owned(), ts.to_string()),
            (
                "sign".to_owned(),
                vmr::api::sign(&self.app_id, &self.secret, ts),
            ),
        ];
        all.extend(params.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        all
    }

    async fn post(&self, path: &str, params: &[(&str, &str)]) -> (u16, Value) {
        self.post_at(path, now_ms(), params).await
    }

    async fn post_at(&self, path: &str, ts: i64, params: &[(&str, &str)]) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .form(&self.signed(ts, params))
            .send()
            .await
            .expect("sandbox answers");
        read(r).await
    }

    async fn get_query(&self, path: &str, params: &[(&str, &str)]) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .query(&self.signed(now_ms(), params))
            .send()
            .await
            .expect("sandbox answers");
        read(r).await
    }

    async fn post_json(&self, path: &str, params: &[(&str, &str)]) -> (u16, Value) {
        let mut body = serde_json::Map::new();
        for (k, v) in self.signed(now_ms(), params) {
            body.insert(k, Value::String(v));
        }
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&body).expect("serializes"))
            .send()
            .await
            .expect("sandbox answers");
        read(r).await
    }

    async fn generate(&self, vin: &str) -> (u16, Value) {
        self.post(GENERATE_PATH, &[("vin", vin), ("licenseImgUrl", LICENSE)])
            .await
    }

    async fn get(&self, request_id: &str) -> Value {
        self.post(GET_PATH, &[("requestId", request_id)]).await.1
    }

    async fn ledger(&self) -> Ledger {
        let body = self
            .http
            .get(format!("{}/__sandbox/ledger", self.base))
            .send()
            .await
            .expect("ledger answers")
            .bytes()
            .await
            .expect("ledger body");
        serde_json::from_slice(&body).expect("ledger is JSON")
    }
}

async fn read(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let body = r.bytes().await.expect("body arrives");
    (status, serde_json::from_slice(&body).expect("body is JSON"))
}

async fn start(cfg: SandboxConfig) -> (Sandbox, Client) {
    let sb = Sandbox::start(cfg, any_port())
        .await
        .expect("sandbox starts");
    let c = Client::new(&sb);
    (sb, c)
}

fn request_id(body: &Value) -> String {
    body["data"]["requestId"]
        .as_str()
        .expect("data.requestId")
        .to_owned()
}

#[tokio::test]
async fn signed_generate_succeeds_by_form_query_and_json() {
    let cfg = SandboxConfig::default();
    let vin = vin_with(&cfg, "LSV", Outcome::Deferred);
    let (_sb, c) = start(cfg).await;
    let params = [("vin", vin.as_str()), ("licenseImgUrl", LICENSE)];
    let mut ids = Vec::new();
    for (status, body) in [
        c.post(GENERATE_PATH, &params).await,
        c.get_query(GENERATE_PATH, &params).await,
        c.post_json(GENERATE_PATH, &params).await,
    ] {
        assert_eq!(status, 200);
        assert_eq!(body["code"], 200, "{body}");
        assert_eq!(body["msg"], "成功");
        let task_no = body["taskNo"].as_str().expect("taskNo");
        assert!(task_no.len() == 20 && task_no.bytes().all(|b| b.is_ascii_digit()));
        let id = request_id(&body);
        assert!(id.len() == 32 && id.bytes().all(|b| b.is_ascii_alphanumeric()));
        ids.push(id);
    }
    ids.dedup();
    assert_eq!(ids.len(), 3, "each generate gets its own requestId");
}

#[tokio::test]
async fn bad_credentials_and_stale_timestamps_get_400() {
    let (sb, mut c) = start(SandboxConfig::default()).await;
    let params = [("vin", "LSVAB123456789012"), ("licenseImgUrl", LICENSE)];

    let stale = now_ms() - 11 * 60 * 1000;
    assert_eq!(
        c.post_at(GENERATE_PATH, stale, &params).await.1["code"],
        400
    );
    let future = now_ms() + 11 * 60 * 1000;
    assert_eq!(
        c.post_at(GENERATE_PATH, future, &params).await.1["code"],
        400
    );

    c.secret = "wrong-secret".into();
    let (status, body) = c.post(GENERATE_PATH, &params).await;
    assert_eq!((status, body["code"].clone()), (200, json!(400)));
    assert_eq!(body["msg"], "签名错误");

    c.secret = DEFAULT_APP_SECRET.into();
    c.app_id = "someone-else".into();
    assert_eq!(c.post(GENERATE_PATH, &params).await.1["code"], 400);

    c.app_id = DEFAULT_APP_ID.into();
    assert_eq!(
        c.post(GENERATE_PATH, &[("vin", "LSVAB123456789012")])
            .await
            .1["code"],
        400
    );
    assert_eq!(
        c.post(GENERATE_PATH, &[("licenseImgUrl", LICENSE)]).await.1["code"],
        400
    );
    assert_eq!(
        c.post(GET_PATH, &[("requestId", "nope")]).await.1["code"],
        400
    );
    assert_eq!(sb.ledger().billed_total, 0);
}

#[tokio::test]
async fn unknown_path_is_404() {
    let (_sb, c) = start(SandboxConfig::default()).await;
    let (status, body) = c.post("/vehicle/maintenance-report/generat", &[]).await;
    assert_eq!(status, 404);
    assert_eq!(body, json!({"msg": "接口地址不正确", "code": 404}));
}

#[tokio::test]
async fn inline_report_comes_with_generate() {
    let cfg = SandboxConfig::default();
    let vin = vin_with(&cfg, "LFV", Outcome::Inline);
    let (_sb, c) = start(cfg.clone()).await;
    let (_, body) = c.generate(&vin).await;
    assert_eq!(body["code"], 200);
    assert_eq!(body["data"]["info"], synth::report(&vin, cfg.seed));
    assert!(body["data"]["info"]["overview"].is_object());
}

#[tokio::test]
async fn deferred_report_answers_701_until_ready_then_200() {
    let cfg = SandboxConfig {
        ready_after: ReadyAfter::Polls(2),
        ..SandboxConfig::default()
    };
    let vin = vin_with(&cfg, "LHG", Outcome::Deferred);
    let (sb, c) = start(cfg.clone()).await;
    let (_, body) = c.generate(&vin).await;
    let info = &body["data"]["info"];
    assert!(
        info.is_null() || info.as_object().is_some_and(|o| o.is_empty()),
        "no inline report: {info}"
    );
    let id = request_id(&body);
    for _ in 0..2 {
        let r = c.get(&id).await;
        assert_eq!(r["code"], 701);
        assert_eq!(r["msg"], "报告还未生成,请稍后查询");
    }
    let r = c.get(&id).await;
    assert_eq!(r["code"], 200);
    assert_eq!(r["data"], synth::report(&vin, cfg.seed));
    // Every successful get is billed again.
    assert_eq!(c.get(&id).await["code"], 200);
    let l = sb.ledger();
    assert_eq!((l.generate_billed, l.get_billed), (1, 2));
    assert_eq!((l.per_vin[&vin].generate, l.per_vin[&vin].get), (1, 2));
}

#[tokio::test]
async fn ready_after_a_duration() {
    let cfg = SandboxConfig {
        ready_after: ReadyAfter::Duration(Duration::from_millis(300)),
        ..SandboxConfig::default()
    };
    let vin = vin_with(&cfg, "LGB", Outcome::Deferred);
    let (_sb, c) = start(cfg).await;
    let id = request_id(&c.generate(&vin).await.1);
    assert_eq!(c.get(&id).await["code"], 701);
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(c.get(&id).await["code"], 200);
}

#[tokio::test]
async fn unsupported_make_gets_703_unbilled() {
    let (sb, c) = start(SandboxConfig::default()).await;
    let (_, body) = c.generate("LRWAB123456789012").await;
    assert_eq!(body["code"], 703);
    assert_eq!(body["msg"], "暂不支持该品牌");
    assert_eq!(sb.ledger().billed_total, 0);
}

#[tokio::test]
async fn failing_report_ends_in_702() {
    let cfg = SandboxConfig::default();
    let vin = vin_with(&cfg, "LBV", Outcome::Fails702);
    let (sb, c) = start(cfg).await;
    let id = request_id(&c.generate(&vin).await.1);
    assert_eq!(c.get(&id).await["code"], 701);
    let r = c.get(&id).await;
    assert_eq!(r["code"], 702);
    assert_eq!(r["msg"], "查询失败");
    assert_eq!(sb.ledger().get_billed, 0);
}

#[tokio::test]
async fn balance_runs_out_into_603_and_can_be_topped_up() {
    let cfg = SandboxConfig {
        balance: Some(3),
        ..SandboxConfig::default()
    };
    let (sb, c) = start(cfg).await;
    for i in 0..3 {
        assert_eq!(
            c.generate(&format!("LSVAB12345678901{i}")).await.1["code"],
            200
        );
    }
    for i in 0..3 {
        let (_, body) = c.generate(&format!("LFVAB12345678901{i}")).await;
        assert_eq!(body["code"], 603);
        assert_eq!(body["msg"], "余额不足请充值");
    }
    assert_eq!(sb.ledger().billed_total, 3);

    let topped = c
        .http
        .post(format!("{}/__sandbox/balance", c.base))
        .header("content-type", "application/json")
        .body(r#"{"balance": 1}"#)
        .send()
        .await
        .expect("admin answers");
    assert!(topped.status().is_success());
    assert_eq!(c.generate("LHGAB123456789012").await.1["code"], 200);
    assert_eq!(c.generate("LHGAB123456789013").await.1["code"], 603);
    sb.set_balance(None);
    assert_eq!(c.generate("LHGAB123456789014").await.1["code"], 200);
    assert_eq!(sb.ledger().billed_total, 5);
}

#[tokio::test]
async fn ledger_counts_exactly_the_200s() {
    let cfg = SandboxConfig::default();
    let vins: Vec<String> = (0..60).map(|i| format!("LC0AB{i:012}")).collect();
    let (sb, c) = start(cfg).await;
    let mut expected = Ledger::default();
    let mut calls = 0;
    for vin in vins.iter().chain(["LNBAB123456789012".to_owned()].iter()) {
        let (_, body) = c.generate(vin).await;
        calls += 1;
        if body["code"] != 200 {
            continue;
        }
        expected.generate_billed += 1;
        expected.per_vin.entry(vin.clone()).or_default().generate += 1;
        let id = request_id(&body);
        for _ in 0..3 {
            let r = c.get(&id).await;
            calls += 1;
            if r["code"] == 200 {
                expected.get_billed += 1;
                expected.per_vin.entry(vin.clone()).or_default().get += 1;
            }
        }
    }
    expected.billed_total = expected.generate_billed + expected.get_billed;
    expected.calls_total = calls;
    let over_http = c.ledger().await;
    assert_eq!(over_http, expected);
    assert_eq!(sb.ledger(), expected);
    assert!(expected.get_billed > 0 && expected.get_billed < 3 * 60);
}

#[tokio::test]
async fn every_call_faults_and_nothing_is_billed_at_fault_rate_1() {
    let cfg = SandboxConfig {
        fault_rate: 1.0,
        stall: Duration::from_millis(300),
        ..SandboxConfig::default()
    };
    let (sb, c) = start(cfg).await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_millis(150))
        .build()
        .expect("client builds");
    let (mut transport, mut html, mut code500, mut broken) = (0, 0, 0, 0);
    for i in 0..60 {
        let form = c.signed(
            now_ms(),
            &[
                ("vin", &format!("LSVAB{i:012}")),
                ("licenseImgUrl", LICENSE),
            ],
        );
        let sent = http
            .post(format!("{}{GENERATE_PATH}", c.base))
            .form(&form)
            .send()
            .await;
        let Ok(r) = sent else {
            transport += 1;
            continue;
        };
        let status = r.status().as_u16();
        let Ok(body) = r.bytes().await else {
            transport += 1;
            continue;
        };
        match serde_json::from_slice::<Value>(&body) {
            _ if status == 502 => html += 1,
            Ok(v) => {
                assert_eq!(v["code"], 500, "{v}");
                code500 += 1;
            }
            Err(_) => broken += 1,
        }
    }
    assert!(transport > 0 && html > 0 && code500 > 0 && broken > 0);
    let l = sb.ledger();
    assert_eq!(l.billed_total, 0);
    assert_eq!(l.faults, 60);
}

#[tokio::test]
async fn same_vin_and_seed_give_the_same_report() {
    let vin = vin_with(&SandboxConfig::default(), "LVG", Outcome::Deferred);
    let mut reports = Vec::new();
    for seed in [7, 7, 8] {
        let cfg = SandboxConfig {
            seed,
            ready_after: ReadyAfter::Polls(0),
            inline_rate: 0.0,
            ..SandboxConfig::default()
        };
        let (_sb, c) = start(cfg).await;
        let id = request_id(&c.generate(&vin).await.1);
        reports.push(c.get(&id).await["data"].clone());
    }
    assert_eq!(reports[0], reports[1]);
    assert_ne!(reports[0], reports[2]);
}

#[test]
fn runs_in_its_own_thread_for_sync_callers() {
    use std::io::{Read, Write};
    let sb = Sandbox::start_in_thread(SandboxConfig::default(), any_port()).expect("starts");
    let mut s = std::net::TcpStream::connect(sb.addr()).expect("connects");
    s.write_all(b"GET /__sandbox/ledger HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("writes");
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("reads");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"billed_total\":0"), "{answer}");
    let addr = sb.addr();
    sb.shutdown();
    assert!(std::net::TcpStream::connect(addr).is_err(), "stopped");
}

/// Kills the child process when the test ends, pass or fail.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn cli_serves_with_a_user_secret_and_never_prints_it() {
    use std::io::{BufRead, BufReader};
    let mut child = Child(
        std::process::Command::new(env!("CARGO_BIN_EXE_vmr"))
            .args([
                "sandbox",
                "--listen",
                "127.0.0.1:0",
                "--app-id",
                "fleet-team",
            ])
            .env("VMR_SANDBOX_APP_SECRET", "s3cret-value")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("vmr starts"),
    );
    let stdout = child.0.stdout.take().expect("stdout is piped");
    let lines: Vec<String> = BufReader::new(stdout)
        .lines()
        .take(5)
        .map(|l| l.expect("a line of output"))
        .collect();
    let banner = lines.join("\n");
    assert!(!banner.contains("s3cret-value"), "{banner}");
    assert!(banner.contains("fleet-team"), "{banner}");
    let base = lines[0]
        .split_whitespace()
        .find(|w| w.starts_with("http://127.0.0.1:"))
        .expect("the base URL is printed")
        .to_owned();

    let c = Client {
        http: reqwest::Client::new(),
        base,
        app_id: "fleet-team".into(),
        secret: "s3cret-value".into(),
    };
    assert_eq!(c.generate("LSVAB123456789012").await.1["code"], 200);
    let default = Client {
        app_id: "fleet-team".into(),
        secret: DEFAULT_APP_SECRET.into(),
        ..c
    };
    assert_eq!(default.generate("LSVAB123456789012").await.1["code"], 400);
}

#[test]
fn cli_rejects_a_fault_rate_outside_0_to_1() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vmr"))
        .args(["sandbox", "--fault-rate", "1.5"])
        .output()
        .expect("vmr runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("between 0 and 1"));
}
