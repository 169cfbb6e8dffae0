//! The sandbox over a real socket: signing, result codes, the report flow, billing and faults,
//! as a client of the vendor API would see them.

use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use vmr::sandbox::{
    DEFAULT_APP_ID, DEFAULT_APP_SECRET, Fate, GENERATE_PATH, GET_PATH, Ledger, ReadyAfter, Sandbox,
    SandboxConfig, synth,
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
fn vin_with(cfg: &SandboxConfig, wmi: &str, fate: Fate) -> String {
    (0..100_000)
        .map(|i| format!("{wmi}AB{i:012}"))
        .find(|v| cfg.truth(v).fate == fate)
        .expect("some VIN has that fate")
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
    let vin = vin_with(&cfg, "LSV", Fate::Deferred);
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
    let vin = vin_with(&cfg, "LFV", Fate::Inline);
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
    let vin = vin_with(&cfg, "LHG", Fate::Deferred);
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
    let vin = vin_with(&cfg, "LGB", Fate::Deferred);
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
    let vin = vin_with(&cfg, "LBV", Fate::Fails702);
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

fn short_timeout(ms: u64) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_millis(ms))
        .build()
        .expect("client builds")
}

#[tokio::test]
async fn late_billed_generate_is_billed_at_once_and_answered_after_the_stall() {
    let stall = Duration::from_millis(700);
    let cfg = SandboxConfig {
        late_bill_rate: 1.0,
        stall,
        ready_after: ReadyAfter::Polls(0),
        ..SandboxConfig::default()
    };
    let vin = vin_with(&cfg, "LSV", Fate::Deferred);
    let (sb, c) = start(cfg.clone()).await;
    let form = c.signed(now_ms(), &[("vin", &vin), ("licenseImgUrl", LICENSE)]);

    // A client with a shorter timeout never sees the answer...
    let sent = short_timeout(200)
        .post(format!("{}{GENERATE_PATH}", c.base))
        .form(&form)
        .send()
        .await;
    let err = sent.expect_err("the answer is held for the stall");
    assert!(err.is_timeout(), "{err}");
    // ...but it was billed, and the task exists: a get with its requestId works (gets are not
    // late unless late_bill_get).
    let l = sb.ledger();
    assert_eq!(
        (l.billed_total, l.generate_billed, l.late_billed),
        (1, 1, 1)
    );
    let per = &l.per_vin[&vin];
    assert_eq!((per.generate, per.late_generate, per.late_get), (1, 1, 0));
    assert_eq!(per.late_request_ids.len(), 1);
    let r = c.get(&per.late_request_ids[0]).await;
    assert_eq!(r["code"], 200, "{r}");
    assert_eq!(r["data"], synth::report(&vin, cfg.seed));

    // A patient client gets the real success body after the stall.
    let t = std::time::Instant::now();
    let (status, body) = c.generate(&vin).await;
    assert!(t.elapsed() >= stall, "answered after {:?}", t.elapsed());
    assert_eq!((status, body["code"].clone()), (200, json!(200)), "{body}");
    assert_eq!(body["msg"], "成功");
    let l = sb.ledger();
    assert_eq!((l.generate_billed, l.get_billed, l.late_billed), (2, 1, 2));
    assert_eq!(l.per_vin[&vin].late_request_ids[1], request_id(&body));
}

#[tokio::test]
async fn late_inline_generate_carries_the_report_and_gets_can_be_late_too() {
    let cfg = SandboxConfig {
        late_bill_rate: 1.0,
        late_bill_get: true,
        stall: Duration::from_millis(300),
        ..SandboxConfig::default()
    };
    let vin = vin_with(&cfg, "LFV", Fate::Inline);
    let (sb, c) = start(cfg.clone()).await;
    let (_, body) = c.generate(&vin).await;
    assert_eq!(body["code"], 200);
    assert_eq!(body["data"]["info"], synth::report(&vin, cfg.seed));
    let id = request_id(&body);
    let t = std::time::Instant::now();
    assert_eq!(c.get(&id).await["code"], 200);
    assert!(t.elapsed() >= Duration::from_millis(300));
    let l = sb.ledger();
    assert_eq!((l.billed_total, l.late_billed), (2, 2));
    let per = &l.per_vin[&vin];
    assert_eq!((per.late_generate, per.late_get), (1, 1));
    assert_eq!(per.late_request_ids, [id]);
}

#[tokio::test]
async fn late_bill_applies_only_to_billed_answers() {
    let cfg = SandboxConfig {
        late_bill_rate: 1.0,
        late_bill_get: true,
        ..SandboxConfig::default()
    };
    let (sb, c) = start(cfg).await;
    let fast = Client {
        http: short_timeout(2_000),
        ..Client::new(&sb)
    };
    assert_eq!(fast.generate("LRWAB123456789012").await.1["code"], 703);
    assert_eq!(
        fast.post(GET_PATH, &[("requestId", "nope")]).await.1["code"],
        400
    );
    assert_eq!(
        c.ledger().await,
        Ledger {
            calls_total: 2,
            ..Ledger::default()
        }
    );
}

#[tokio::test]
async fn gateway_errors_are_503_or_429_with_retry_after_and_never_billed() {
    let cfg = SandboxConfig {
        gateway_error_rate: 1.0,
        retry_after_secs: 3,
        ..SandboxConfig::default()
    };
    let (sb, c) = start(cfg).await;
    let (mut n503, mut n429) = (0, 0);
    for i in 0..40 {
        let vin = format!("LSVAB{i:012}");
        let (path, form) = if i % 2 == 0 {
            (
                GENERATE_PATH,
                c.signed(now_ms(), &[("vin", &vin), ("licenseImgUrl", LICENSE)]),
            )
        } else {
            (GET_PATH, c.signed(now_ms(), &[("requestId", "anything")]))
        };
        let r = c
            .http
            .post(format!("{}{path}", c.base))
            .form(&form)
            .send()
            .await
            .expect("sandbox answers");
        let status = r.status().as_u16();
        assert_eq!(r.headers()["retry-after"], "3");
        assert_eq!(r.headers()["content-type"], "application/json");
        let (_, body) = read(r).await;
        match status {
            503 => {
                n503 += 1;
                assert_eq!(body, json!({"code": 503, "msg": "Service Unavailable"}));
            }
            429 => {
                n429 += 1;
                assert_eq!(body, json!({"code": 429, "msg": "Too Many Requests"}));
            }
            other => panic!("HTTP {other}: {body}"),
        }
    }
    assert!(n503 > 0 && n429 > 0, "{n503} 503s, {n429} 429s");
    let l = sb.ledger();
    assert_eq!(
        (l.billed_total, l.gateway_errors, l.calls_total),
        (0, 40, 40)
    );
    assert!(l.per_vin.is_empty());
}

async fn post_outage(c: &Client, on: bool) -> Value {
    let r = c
        .http
        .post(format!("{}/__sandbox/outage", c.base))
        .header("content-type", "application/json")
        .body(json!({ "outage": on }).to_string())
        .send()
        .await
        .expect("admin answers");
    assert!(r.status().is_success());
    read(r).await.1
}

#[tokio::test]
async fn outage_switches_on_and_off_and_bills_nothing_while_on() {
    let cfg = SandboxConfig {
        ready_after: ReadyAfter::Polls(0),
        ..SandboxConfig::default()
    };
    let vin = vin_with(&cfg, "LHG", Fate::Deferred);
    let (sb, c) = start(cfg).await;
    let (_, body) = c.generate(&vin).await;
    assert_eq!(body["code"], 200);
    let id = request_id(&body);
    assert!(!sb.outage());

    assert_eq!(post_outage(&c, true).await, json!({"outage": true}));
    assert!(sb.outage());
    let maintenance = json!({"msg": "系统维护,请稍候再试", "code": 500});
    assert_eq!(c.generate(&vin).await, (200, maintenance.clone()));
    assert_eq!(
        c.post(GET_PATH, &[("requestId", &id)]).await,
        (200, maintenance.clone())
    );
    // Even a call that would fail its checks gets the maintenance answer.
    assert_eq!(c.generate("LRWAB123456789012").await, (200, maintenance));
    let state = c
        .http
        .get(format!("{}/__sandbox/outage", c.base))
        .send()
        .await
        .expect("admin answers");
    assert_eq!(read(state).await.1, json!({"outage": true}));

    assert_eq!(post_outage(&c, false).await, json!({"outage": false}));
    assert_eq!(c.get(&id).await["code"], 200);
    sb.set_outage(true);
    assert_eq!(c.generate(&vin).await.1["code"], 500);
    sb.set_outage(false);
    assert_eq!(c.generate(&vin).await.1["code"], 200);

    let l = sb.ledger();
    assert_eq!((l.outage_answers, l.calls_total), (4, 7));
    assert_eq!((l.generate_billed, l.get_billed), (2, 1));
}

#[tokio::test]
async fn a_sandbox_can_start_in_an_outage() {
    let cfg = SandboxConfig {
        outage: true,
        ..SandboxConfig::default()
    };
    let (sb, c) = start(cfg).await;
    assert!(sb.outage());
    assert_eq!(c.generate("LSVAB123456789012").await.1["code"], 500);
    sb.set_outage(false);
    assert_eq!(c.generate("LSVAB123456789012").await.1["code"], 200);
    assert_eq!(sb.ledger().outage_answers, 1);
}

#[tokio::test]
async fn unusable_answers_are_billed_with_empty_data() {
    let cfg = SandboxConfig {
        unusable_rate: 1.0,
        ..SandboxConfig::default()
    };
    let inline = vin_with(&cfg, "LSV", Fate::Inline);
    let deferred = vin_with(&cfg, "LFV", Fate::Deferred);
    let (sb, c) = start(cfg).await;
    for vin in [&inline, &deferred] {
        let (status, body) = c.generate(vin).await;
        assert_eq!(status, 200);
        let task_no = body["taskNo"].as_str().expect("taskNo").to_owned();
        assert_eq!(
            body,
            json!({"msg": "成功", "code": 200, "taskNo": task_no, "data": {}})
        );
    }
    // Not for answers that are not billed.
    assert_eq!(c.generate("LNBAB123456789012").await.1["code"], 703);
    let l = sb.ledger();
    assert_eq!((l.billed_total, l.generate_billed, l.unusable), (2, 2, 2));
    for vin in [&inline, &deferred] {
        assert_eq!((l.per_vin[vin].generate, l.per_vin[vin].unusable), (1, 1));
    }
}

#[tokio::test]
async fn unusable_respects_the_balance() {
    let cfg = SandboxConfig {
        unusable_rate: 1.0,
        late_bill_rate: 1.0,
        stall: Duration::from_millis(100),
        balance: Some(1),
        ..SandboxConfig::default()
    };
    let (sb, c) = start(cfg).await;
    let (_, body) = c.generate("LSVAB123456789012").await;
    assert_eq!(body["data"], json!({}));
    assert_eq!(c.generate("LSVAB123456789013").await.1["code"], 603);
    let l = sb.ledger();
    assert_eq!((l.billed_total, l.unusable, l.late_billed), (1, 1, 1));
    let per = &l.per_vin["LSVAB123456789012"];
    assert_eq!((per.unusable, per.late_generate), (1, 1));
    assert!(
        per.late_request_ids.is_empty(),
        "an unusable answer has no requestId"
    );
}

#[tokio::test]
async fn same_vin_and_seed_give_the_same_report() {
    let vin = vin_with(&SandboxConfig::default(), "LVG", Fate::Deferred);
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
fn cli_rejects_a_rate_outside_0_to_1() {
    for flag in [
        "--fault-rate",
        "--late-bill-rate",
        "--gateway-error-rate",
        "--unusable-rate",
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_vmr"))
            .args(["sandbox", flag, "1.5"])
            .output()
            .expect("vmr runs");
        assert_eq!(out.status.code(), Some(2), "{flag}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("between 0 and 1"),
            "{flag}"
        );
    }
}
