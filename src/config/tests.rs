use std::path::Path;

use super::*;
use crate::storage::{RetentionOverride, RetentionRule};

const FULL: &str = r#"
[server]
listen = "127.0.0.1:8080"
max_body_bytes = 10485760

[storage]
url = "sqlite://data/herald.db"
pool_size = 16

[[api_keys]]
key_env = "HERALD_ADMIN_KEY"
roles = ["enqueue", "read", "admin"]

[defaults]
rate_limit = 600
burst_limit = 20
concurrency = 8
batch_size = 10
prefetch_count = 5
lease_ms = 30000
max_retries = 3
retry_delay_ms = 1000
retry_multiplier = 2.0
max_retry_delay_ms = 60000
circuit_failure_threshold = 5
circuit_open_ms = 30000
dlq_max_age_s = 86400

[transports.outbox]
kind = "file"
path = "outbox"

[transports.smtp-main]
kind = "smtp"
host = "127.0.0.1"
port = 2525
tls = "none"
rate_limit = 120

[transports.hooks]
kind = "webhook"
url = "http://127.0.0.1:9000/notify"
secret_env = "HERALD_WEBHOOK_SECRET"
timeout_ms = 5000

[transports.sink]
kind = "null"

[transports.mail]
kind = "failover"
members = ["smtp-main", "outbox"]

[routes]
email = "outbox"
sms = "hooks"
chat = "hooks"
push = "hooks"
webhook = "hooks"

[priority]
default = 4
categories = { alert = 9, critical = 9 }
"#;

fn env(name: &str) -> Option<String> {
    match name {
        "HERALD_ADMIN_KEY" => Some("admin-key-0123456789".into()),
        "HERALD_WEBHOOK_SECRET" => Some("s3cret".into()),
        "HERALD_SENDGRID_KEY" => Some("SG.key".into()),
        "HERALD_POSTMARK_TOKEN" => Some("pm-token".into()),
        "HERALD_MAILGUN_KEY" => Some("mg-key".into()),
        "HERALD_SES_KEY_ID" => Some("AKIDEXAMPLE".into()),
        "HERALD_SES_SECRET" => Some("ses-secret".into()),
        "HERALD_FEEDBACK_SECRET" => Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into()),
        "HERALD_FEEDBACK_UNPREFIXED" => Some("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into()),
        "HERALD_FEEDBACK_NOT_BASE64" => Some("whsec_not base64!".into()),
        _ => None,
    }
}

fn load(text: &str) -> Result<Settings, ConfigError> {
    Settings::from_toml(text, Path::new("test.toml"), env)
}

fn problem_keys(text: &str) -> Vec<String> {
    match load(text) {
        Ok(_) => Vec::new(),
        Err(e) => e.problems().iter().map(|p| p.key.clone()).collect(),
    }
}

#[test]
fn the_design_example_loads() {
    let settings = load(FULL).expect("the DESIGN.md example is valid");
    assert_eq!(settings.transports.len(), 5);
    let smtp = &settings.transports["smtp-main"];
    assert_eq!(smtp.delivery.rate_limit.get(), 120);
    assert_eq!(smtp.delivery.burst_limit.get(), 20);
    assert_eq!(smtp.delivery.max_attempts(), 4);
    assert_eq!(settings.transports["mail"].channels, vec![Channel::Email]);
    assert_eq!(settings.routes[&Channel::Sms], "hooks");
    assert_eq!(settings.priority.categories["alert"], Priority::MAX);
    assert_eq!(settings.api_keys.len(), 1);
    assert!(
        !format!("{settings:?}").contains("admin-key-0123456789"),
        "secrets never print"
    );
}

#[test]
fn the_shipped_config_toml_loads_without_environment() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml"))
        .expect("config.toml at the repository root");
    let settings = Settings::from_toml(&text, Path::new("config.toml"), |_| None)
        .expect("the default config works on a fresh machine");
    assert!(settings.storage.url.starts_with("sqlite://"));
    assert_eq!(
        settings.server.listen,
        vec!["127.0.0.1:8080".parse().unwrap()]
    );
    assert_eq!(
        settings.transports[&settings.routes[&Channel::Email]]
            .kind
            .name(),
        "file"
    );
}

#[test]
fn environment_overrides_the_file() {
    let settings = Settings::from_toml(FULL, Path::new("t"), |name| match name {
        "HERALD_DATABASE_URL" => Some("postgres://postgres@127.0.0.1:5432/postgres".into()),
        "HERALD_LISTEN" => Some("127.0.0.1:9999".into()),
        other => env(other),
    })
    .expect("valid");
    assert_eq!(
        settings.storage.url,
        "postgres://postgres@127.0.0.1:5432/postgres"
    );
    assert_eq!(
        settings.server.listen,
        vec!["127.0.0.1:9999".parse().unwrap()]
    );
}

#[test]
fn an_unknown_kind_is_named() {
    let text = FULL.replace("kind = \"null\"", "kind = \"pigeon\"");
    assert_eq!(problem_keys(&text), vec!["transports.sink.kind"]);
}

#[test]
fn a_zero_rate_limit_names_the_key_that_set_it() {
    let text = FULL.replace("rate_limit = 120", "rate_limit = 0");
    assert_eq!(problem_keys(&text), vec!["transports.smtp-main.rate_limit"]);
    let text = FULL.replace("rate_limit = 600", "rate_limit = 0");
    assert_eq!(
        problem_keys(&text),
        vec!["defaults.rate_limit"],
        "reported once, not per transport"
    );
}

#[test]
fn a_route_to_a_missing_transport_is_named() {
    let text = FULL.replace("email = \"outbox\"", "email = \"nowhere\"");
    assert_eq!(problem_keys(&text), vec!["routes.email"]);
    let text = FULL.replace("sms = \"hooks\"", "sms = \"outbox\"");
    assert_eq!(
        problem_keys(&text),
        vec!["routes.sms"],
        "a file transport cannot send SMS"
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = FULL
        .replace("rate_limit = 120", "rate_limit = 0")
        .replace(
            "members = [\"smtp-main\", \"outbox\"]",
            "members = [\"smtp-main\", \"ghost\"]",
        )
        .replace("listen = \"127.0.0.1:8080\"", "listen = \"nowhere\"");
    let keys = problem_keys(&text);
    assert!(keys.contains(&"server.listen".to_string()), "{keys:?}");
    assert!(
        keys.contains(&"transports.smtp-main.rate_limit".to_string()),
        "{keys:?}"
    );
    assert!(
        keys.contains(&"transports.mail.members[1]".to_string()),
        "{keys:?}"
    );
}

#[test]
fn keys_of_another_kind_and_unknown_keys_are_errors() {
    let text = FULL.replace("path = \"outbox\"", "path = \"outbox\"\nhost = \"x\"");
    assert_eq!(problem_keys(&text), vec!["transports.outbox.host"]);
    let text = FULL.replace("pool_size = 16", "pool_size = 16\npoolsize = 3");
    let err = load(&text).expect_err("unknown key");
    assert!(err.to_string().contains("poolsize"), "{err}");
}

#[test]
fn a_kind_key_of_the_wrong_type_or_unknown_is_named_with_the_others() {
    let text = FULL
        .replace("port = 2525", "port = \"2525\"")
        .replace("tls = \"none\"", "tls = \"ssl\"")
        .replace("path = \"outbox\"", "path = \"outbox\"\ncolour = \"red\"")
        .replace(
            "timeout_ms = 5000",
            "timeout_ms = 5000\nallowed_url_hosts = [1]",
        );
    let problems = load(&text).expect_err("bad keys").problems().to_vec();
    let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        vec![
            "transports.hooks.allowed_url_hosts[0]",
            "transports.outbox.colour",
            "transports.smtp-main.port",
        ],
        "{problems:?}"
    );
    assert_eq!(problems[1].message, "not a key of a `file` transport");
    assert_eq!(
        problems[2].message,
        "invalid type: string \"2525\", expected u16"
    );
    // A shared key of the wrong type is still refused as the file is read.
    let text = FULL.replace("rate_limit = 120", "rate_limit = \"120\"");
    assert!(matches!(load(&text), Err(ConfigError::Parse { .. })));
}

/// A service account key file with an RSA key made for the test by the
/// system's openssl (no key is committed).
fn service_account_file(dir: &Path) -> std::path::PathBuf {
    let key = dir.join("key.pem");
    let made = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&key)
        .status()
        .expect("openssl runs");
    assert!(made.success());
    let account = serde_json::json!({
        "project_id": "herald-test",
        "client_email": "herald@herald-test.iam.gserviceaccount.com",
        "private_key": std::fs::read_to_string(&key).expect("the key"),
    });
    let file = dir.join("service-account.json");
    std::fs::write(&file, account.to_string()).expect("write");
    file
}

#[test]
fn every_kind_loads_and_names_itself_as_registered() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let fcm = format!(
        "[transports.phones]\nkind = \"fcm\"\nservice_account_file = \"{}\"\n\n",
        service_account_file(dir.path()).display()
    );
    // An apns key is read at load: a P-256 key made for the test.
    let key_file = dir.path().join("AuthKey.p8");
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("a key");
    std::fs::write(&key_file, key.serialize_pem()).expect("write");
    let apns = format!(
        "[transports.ios]\nkind = \"apns\"\nkey_file = {:?}\nkey_id = \"ABC123DEFG\"\n\
         team_id = \"DEF123GHIJ\"\ntopic = \"com.example.app\"\n\n",
        key_file.display().to_string()
    );
    let text = FULL.replace(
        "[routes]",
        &(fcm
            + &apns
            + "[transports.spread]\nkind = \"round_robin\"\nmembers = [\"outbox\"]\n\n\
         [transports.texts]\nkind = \"twilio\"\naccount_sid = \"AC0123456789abcdef0123456789abcdef\"\n\
         auth_token_env = \"HERALD_WEBHOOK_SECRET\"\nfrom = \"+14155550000\"\n\n\
         [transports.team]\nkind = \"slack\"\ntoken_env = \"HERALD_WEBHOOK_SECRET\"\n\n\
         [transports.sg]\nkind = \"sendgrid\"\napi_key_env = \"HERALD_SENDGRID_KEY\"\n\n\
         [transports.pm]\nkind = \"postmark\"\nserver_token_env = \"HERALD_POSTMARK_TOKEN\"\n\n\
         [transports.mg]\nkind = \"mailgun\"\ndomain = \"mg.example.com\"\n\
         api_key_env = \"HERALD_MAILGUN_KEY\"\nregion = \"eu\"\n\n\
         [transports.ses]\nkind = \"ses\"\nregion = \"eu-west-1\"\n\
         access_key_id_env = \"HERALD_SES_KEY_ID\"\nsecret_access_key_env = \"HERALD_SES_SECRET\"\n\n\
         [routes]"),
    );
    let settings = load(&text).expect("valid");
    let mut loaded: Vec<&str> = settings
        .transports
        .values()
        .map(|t| t.kind.name())
        .collect();
    let mut registered: Vec<&str> = crate::transports::KINDS.iter().map(|k| k.name).collect();
    loaded.sort_unstable();
    registered.sort_unstable();
    assert_eq!(loaded, registered);
}

#[test]
fn no_kind_takes_a_key_every_kind_shares() {
    // Such a key would be read as the shared one and never reach the kind.
    for spec in crate::transports::KINDS {
        for key in spec.keys {
            assert!(
                !raw::SHARED_TRANSPORT_KEYS.contains(key),
                "`{}` takes `{key}`",
                spec.name
            );
        }
    }
}

/// Every key a kind lists is read by its keys struct: a value no key
/// takes (a table of a number) set alone is reported under that key. A key
/// listed but left out of the struct would pass validation and be
/// ignored.
#[test]
fn every_key_a_kind_lists_is_read() {
    for spec in crate::transports::KINDS {
        for key in spec.keys {
            let problems = problems_with(&format!(
                "[transports.probe]\nkind = \"{}\"\n{key} = {{ probe = 1 }}\n",
                spec.name
            ));
            let named = format!("transports.probe.{key}");
            assert!(
                // A table-valued key names the entry it could not read.
                problems
                    .iter()
                    .any(|p| p.key == named || p.key.starts_with(&format!("{named}."))),
                "`{}` does not read `{key}`: {problems:?}",
                spec.name
            );
        }
    }
}

#[test]
fn a_ca_file_needs_tls() {
    let text = FULL.replace(
        "tls = \"none\"",
        "tls = \"none\"\nca_file = \"relay-ca.pem\"",
    );
    assert_eq!(problem_keys(&text), vec!["transports.smtp-main.ca_file"]);
    let text = FULL.replace(
        "tls = \"none\"",
        "tls = \"starttls\"\nca_file = \"relay-ca.pem\"",
    );
    assert!(problem_keys(&text).is_empty());
}

#[test]
fn missing_secrets_and_public_listen_without_keys_are_refused() {
    let text = FULL.replace("HERALD_WEBHOOK_SECRET", "UNSET_SECRET");
    assert_eq!(problem_keys(&text), vec!["transports.hooks.secret_env"]);
    let no_keys = FULL.replace(
        "[[api_keys]]\nkey_env = \"HERALD_ADMIN_KEY\"\nroles = [\"enqueue\", \"read\", \"admin\"]",
        "",
    );
    let public = no_keys.replace("listen = \"127.0.0.1:8080\"", "listen = \"0.0.0.0:8080\"");
    assert_eq!(problem_keys(&public), vec!["server.listen"]);
    assert!(load(&no_keys).is_ok());
}

#[test]
fn feedback_keys_default_to_no_standard_scheme_and_five_minutes() {
    let settings = load(FULL).expect("valid");
    let hooks = &settings.transports["hooks"].feedback;
    assert!(hooks.standard.is_none());
    assert!(hooks.native.is_none());
    assert_eq!(hooks.tolerance, crate::feedback::DEFAULT_TOLERANCE);
}

#[test]
fn feedback_secret_and_tolerance_load_on_any_kind() {
    let text = FULL.replace(
        "[transports.sink]\nkind = \"null\"",
        "[transports.sink]\nkind = \"null\"\n\
         feedback_secret_env = \"HERALD_FEEDBACK_SECRET\"\nfeedback_tolerance_s = 60",
    );
    let settings = load(&text).expect("valid");
    let sink = &settings.transports["sink"].feedback;
    assert_eq!(
        sink.standard.as_ref().map(|s| s.scheme()),
        Some("standard_webhooks")
    );
    assert_eq!(sink.tolerance, Duration::from_secs(60));
    assert!(
        !format!("{settings:?}").contains("MfKQ9r8"),
        "secrets never print"
    );
}

#[test]
fn bad_feedback_keys_are_named() {
    for (keys, expected) in [
        (
            "feedback_secret_env = \"UNSET_SECRET\"",
            "transports.sink.feedback_secret_env",
        ),
        (
            "feedback_secret_env = \"HERALD_FEEDBACK_UNPREFIXED\"",
            "transports.sink.feedback_secret_env",
        ),
        (
            "feedback_secret_env = \"HERALD_FEEDBACK_NOT_BASE64\"",
            "transports.sink.feedback_secret_env",
        ),
        (
            "feedback_tolerance_s = 0",
            "transports.sink.feedback_tolerance_s",
        ),
    ] {
        let text = FULL.replace(
            "[transports.sink]\nkind = \"null\"",
            &format!("[transports.sink]\nkind = \"null\"\n{keys}"),
        );
        assert_eq!(problem_keys(&text), vec![expected], "{keys}");
    }
}

fn sendgrid_with(keys: &str) -> String {
    FULL.replace(
        "[routes]",
        &format!(
            "[transports.sg]\nkind = \"sendgrid\"\napi_key_env = \"HERALD_SENDGRID_KEY\"\n{keys}\n\n[routes]"
        ),
    )
}

#[test]
fn a_sendgrid_event_webhook_key_loads_from_the_setting_or_its_file() {
    use base64::Engine;
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let shown = base64::engine::general_purpose::STANDARD
        .encode(rcgen::PublicKeyData::subject_public_key_info(&pair));
    let settings = load(&sendgrid_with(&format!(
        "event_webhook_public_key = \"{shown}\""
    )))
    .expect("valid");
    let feedback = &settings.transports["sg"].feedback;
    assert_eq!(
        feedback.native.as_ref().map(|s| s.scheme()),
        Some("sendgrid")
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sendgrid.pem");
    std::fs::write(&path, pair.public_key_pem()).unwrap();
    let from_file = format!(
        "event_webhook_public_key_file = {:?}",
        path.to_str().unwrap()
    );
    let settings = load(&sendgrid_with(&from_file)).expect("valid");
    assert!(settings.transports["sg"].feedback.native.is_some());
    let plain = load(&sendgrid_with("")).expect("valid");
    assert!(plain.transports["sg"].feedback.native.is_none());
}

#[test]
fn a_bad_or_doubled_sendgrid_event_webhook_key_is_named() {
    let cases = [
        (
            "event_webhook_public_key = \"bm90IGEga2V5\"".to_owned(),
            "transports.sg.event_webhook_public_key",
        ),
        (
            "event_webhook_public_key = \"bm90IGEga2V5\"\nevent_webhook_public_key_file = \"k.pem\"".to_owned(),
            "transports.sg.event_webhook_public_key_file",
        ),
        (
            "event_webhook_public_key_file = \"/nonexistent/sendgrid.pem\"".to_owned(),
            "transports.sg.event_webhook_public_key_file",
        ),
    ];
    for (keys, expected) in cases {
        assert_eq!(
            problem_keys(&sendgrid_with(&keys)),
            vec![expected],
            "{keys}"
        );
    }
}

#[test]
fn a_mailgun_signing_key_configures_its_webhooks_and_an_unset_one_is_named() {
    let mailgun = |keys: &str| {
        FULL.replace(
            "[routes]",
            &format!(
                "[transports.mg]\nkind = \"mailgun\"\ndomain = \"mg.example.com\"\n\
                 api_key_env = \"HERALD_MAILGUN_KEY\"\n{keys}\n\n[routes]"
            ),
        )
    };
    let settings = load(&mailgun("webhook_signing_key_env = \"HERALD_MAILGUN_KEY\"")).unwrap();
    let native = settings.transports["mg"].feedback.native.as_ref();
    assert_eq!(native.map(|s| s.scheme()), Some("mailgun"));
    assert!(
        !format!("{settings:?}").contains("mg-key"),
        "secrets never print"
    );
    assert_eq!(
        problem_keys(&mailgun("webhook_signing_key_env = \"UNSET_SECRET\"")),
        vec!["transports.mg.webhook_signing_key_env"]
    );
}

#[test]
fn postmark_webhook_credentials_come_as_a_pair() {
    let postmark = |keys: &str| {
        FULL.replace(
            "[routes]",
            &format!(
                "[transports.pm]\nkind = \"postmark\"\n\
                 server_token_env = \"HERALD_POSTMARK_TOKEN\"\n{keys}\n\n[routes]"
            ),
        )
    };
    let both = "webhook_username = \"postmark\"\nwebhook_password_env = \"HERALD_POSTMARK_TOKEN\"";
    let settings = load(&postmark(both)).unwrap();
    let native = settings.transports["pm"].feedback.native.as_ref();
    assert_eq!(native.map(|s| s.scheme()), Some("postmark"));
    for (keys, expected) in [
        (
            "webhook_username = \"postmark\"",
            "transports.pm.webhook_password_env",
        ),
        (
            "webhook_password_env = \"HERALD_POSTMARK_TOKEN\"",
            "transports.pm.webhook_username",
        ),
        (
            "webhook_username = \"post:mark\"\nwebhook_password_env = \"HERALD_POSTMARK_TOKEN\"",
            "transports.pm.webhook_username",
        ),
        (
            "webhook_username = \"postmark\"\nwebhook_password_env = \"UNSET_SECRET\"",
            "transports.pm.webhook_password_env",
        ),
    ] {
        assert_eq!(problem_keys(&postmark(keys)), vec![expected], "{keys}");
    }
}

#[test]
fn a_twilio_transport_verifies_its_status_callbacks_with_its_auth_token() {
    let text = FULL.replace(
        "[routes]",
        "[transports.texts]\nkind = \"twilio\"\naccount_sid = \"AC0123456789abcdef0123456789abcdef\"\n\
         auth_token_env = \"HERALD_WEBHOOK_SECRET\"\nfrom = \"+14155550000\"\n\
         status_callback = \"https://herald.example.com/api/feedback/texts\"\n\n[routes]",
    );
    let settings = load(&text).unwrap();
    let texts = &settings.transports["texts"].feedback;
    assert_eq!(texts.native.as_ref().map(|s| s.scheme()), Some("twilio"));
    assert!(texts.standard.is_none());
    assert!(
        !format!("{settings:?}").contains("s3cret"),
        "secrets never print"
    );
}

#[test]
fn groups_cannot_nest() {
    let text = FULL.replace(
        "[routes]",
        "[transports.outer]\nkind = \"round_robin\"\nmembers = [\"mail\"]\n\n[routes]",
    );
    assert_eq!(problem_keys(&text), vec!["transports.outer.members[0]"]);
}

#[test]
fn enqueue_policy_reflects_transports() {
    let settings = load(FULL).expect("valid");
    let policy = settings.enqueue_policy();
    assert_eq!(policy.transports["hooks"].max_attempts, 4);
    assert!(policy.transports["hooks"].allowed_url_hosts.is_none());
    assert_eq!(policy.routes[&Channel::Email], "outbox");
}

#[test]
fn analytics_retention_must_outlast_compaction() {
    let settings = load(FULL).expect("valid");
    assert_eq!(
        settings.analytics.compact_after,
        std::time::Duration::from_secs(48 * 3600)
    );
    let text = format!("{FULL}\n[analytics]\ncompact_after_hours = 48\nretention_days = 1\n");
    assert_eq!(problem_keys(&text), vec!["analytics.retention_days"]);
    let text = format!("{FULL}\n[analytics]\ncompact_after_hours = 0\n");
    assert_eq!(problem_keys(&text), vec!["analytics.compact_after_hours"]);
}

#[test]
fn enqueue_writers_default_to_two_and_stay_within_the_pool() {
    let settings = load(FULL).expect("valid");
    assert_eq!(settings.storage.enqueue_writers, 2);
    let one_connection = FULL.replace("pool_size = 16", "pool_size = 1");
    assert_eq!(
        load(&one_connection)
            .expect("valid")
            .storage
            .enqueue_writers,
        1,
        "the default never exceeds the pool"
    );
    let four = FULL.replace("pool_size = 16", "pool_size = 16\nenqueue_writers = 4");
    assert_eq!(load(&four).expect("valid").storage.enqueue_writers, 4);
    for bad in ["enqueue_writers = 0", "enqueue_writers = 17"] {
        let text = FULL.replace("pool_size = 16", &format!("pool_size = 16\n{bad}"));
        assert_eq!(
            problem_keys(&text),
            vec!["storage.enqueue_writers"],
            "{bad}"
        );
    }
}

const ALERTS: &str = r#"
[alerts]
transport = "hooks"
evaluate_every_s = 15
cooldown_s = 600

[[alerts.rules]]
name = "hooks-failing"
kind = "failure_rate"
transport = "hooks"
threshold = 0.25
window_s = 300

[[alerts.rules]]
name = "backlog"
kind = "queue_depth"
threshold = 1000
cooldown_s = 60
"#;

#[test]
fn engine_timings_load_and_zero_is_named() {
    let settings = load(FULL).expect("valid");
    assert_eq!(settings.engine, crate::engine::EngineOptions::default());
    let text = format!(
        "{FULL}\n[engine]\npoll_interval_ms = 50\nrecovery_interval_ms = 250\npurge_interval_s = 5\ndelivery_timeout_ms = 3000\n"
    );
    let engine = load(&text).expect("valid").engine;
    assert_eq!(
        (
            engine.poll_interval,
            engine.recovery_interval,
            engine.purge_interval,
            engine.delivery_timeout
        ),
        (
            Duration::from_millis(50),
            Duration::from_millis(250),
            Duration::from_secs(5),
            Duration::from_secs(3)
        )
    );
    let text = format!("{FULL}\n[engine]\npoll_interval_ms = 0\ndelivery_timeout_ms = 0\n");
    assert_eq!(
        problem_keys(&text),
        vec!["engine.poll_interval_ms", "engine.delivery_timeout_ms"]
    );
    let text = format!("{FULL}\n[engine]\npoll_ms = 5\n");
    assert!(load(&text).is_err(), "unknown keys are refused");
}

#[test]
fn node_id_and_heartbeat_load_and_bad_values_are_named() {
    let text = format!("{FULL}\n[engine]\nnode_id = \"web-1\"\nheartbeat_ms = 500\n");
    let engine = load(&text).expect("valid").engine;
    assert_eq!(engine.node_id.as_deref(), Some("web-1"));
    assert_eq!(engine.node_timeout(), Duration::from_millis(1500));
    let text = format!("{FULL}\n[engine]\nnode_id = \"web 1\"\nheartbeat_ms = 50\n");
    assert_eq!(
        problem_keys(&text),
        vec!["engine.heartbeat_ms", "engine.node_id"]
    );
}

#[test]
fn alert_rules_load_with_their_defaults() {
    let settings = load(&format!("{FULL}{ALERTS}")).expect("valid alerts");
    let alerts = settings.alerts.expect("alerting configured");
    assert_eq!(alerts.transport, "hooks");
    assert_eq!(
        alerts.channel,
        Channel::Webhook,
        "webhook transports default to webhook"
    );
    assert_eq!(alerts.evaluate_every, std::time::Duration::from_secs(15));
    assert_eq!(alerts.rules.len(), 2);
    let failing = &alerts.rules[0];
    assert_eq!(failing.kind, AlertKind::FailureRate);
    assert_eq!(failing.window, Some(std::time::Duration::from_secs(300)));
    assert_eq!(failing.cooldown, std::time::Duration::from_secs(600));
    assert_eq!(alerts.rules[1].transport, None, "every transport");
    assert_eq!(alerts.rules[1].cooldown, std::time::Duration::from_secs(60));
    assert!(load(FULL).expect("valid").alerts.is_none());
}

#[test]
fn alert_problems_are_named_by_key() {
    let with = |from: &str, to: &str| format!("{FULL}{}", ALERTS.replace(from, to));
    assert_eq!(
        problem_keys(&with(
            "transport = \"hooks\"\nevaluate",
            "transport = \"pager\"\nevaluate"
        )),
        vec!["alerts.transport"]
    );
    assert_eq!(
        problem_keys(&with("kind = \"queue_depth\"", "kind = \"vibes\"")),
        vec!["alerts.rules[1].kind"]
    );
    assert_eq!(
        problem_keys(&with("threshold = 1000\n", "")),
        vec!["alerts.rules[1].threshold"]
    );
    assert_eq!(
        problem_keys(&with("name = \"backlog\"", "name = \"hooks-failing\"")),
        vec!["alerts.rules[1].name"]
    );
    assert_eq!(
        problem_keys(&with(
            "transport = \"hooks\"\nthreshold",
            "transport = \"gone\"\nthreshold"
        )),
        vec!["alerts.rules[0].transport"]
    );
    assert_eq!(
        problem_keys(&with("window_s = 300\n", "")),
        vec!["alerts.rules[0].window_s"]
    );
    assert_eq!(
        problem_keys(&with("threshold = 1000", "threshold = 1000\nwindow_s = 60")),
        vec!["alerts.rules[1].window_s"],
        "a queue_depth rule has no window"
    );
    assert_eq!(
        problem_keys(&with("threshold = 0.25", "threshold = 25")),
        vec!["alerts.rules[0].threshold"],
        "a failure rate is a fraction"
    );
    assert_eq!(
        problem_keys(&with("evaluate_every_s = 15", "evaluate_every_s = 0")),
        vec!["alerts.evaluate_every_s"]
    );
    assert_eq!(
        problem_keys(&with(
            "cooldown_s = 60\n",
            "cooldown_s = 60\naction = \"stop\"\n"
        )),
        vec!["alerts.rules[1].action"],
        "notify or pause"
    );
    assert_eq!(
        problem_keys(&with(
            "window_s = 300",
            "window_s = 300\naction = \"pause\""
        )),
        vec!["alerts.rules[0].action"],
        "a pause rule cannot watch the notices' own transport"
    );
    assert_eq!(
        problem_keys(
            &with("kind = \"failure_rate\"", "kind = \"complaint_rate\"")
                .replace("threshold = 0.25", "threshold = 2")
        ),
        vec!["alerts.rules[0].threshold"],
        "a complaint rate is a fraction"
    );
}

#[test]
fn deliverability_rules_take_a_window_and_an_action() {
    let rules = ALERTS.replace(
        "kind = \"queue_depth\"\nthreshold = 1000",
        "kind = \"bounce_rate\"\nthreshold = 0.05\nwindow_s = 3600\naction = \"pause\"",
    );
    let settings = load(&format!("{FULL}{rules}")).expect("valid alerts");
    let alerts = settings.alerts.expect("alerting configured");
    let bouncing = &alerts.rules[1];
    assert_eq!(bouncing.kind, AlertKind::BounceRate);
    assert_eq!(bouncing.action, crate::config::AlertAction::Pause);
    assert_eq!(bouncing.window, Some(std::time::Duration::from_secs(3600)));
    assert_eq!(alerts.rules[0].action, crate::config::AlertAction::Notify);
}

#[test]
fn email_alerts_need_valid_addresses() {
    let email = ALERTS.replace(
        "transport = \"hooks\"\nevaluate",
        "transport = \"outbox\"\nevaluate",
    );
    assert_eq!(
        problem_keys(&format!("{FULL}{email}")),
        vec!["alerts.from", "alerts.to"]
    );
    let addressed = email.replace(
        "evaluate_every_s",
        "from = \"herald@example.com\"\nto = [\"ops@example.com\"]\nevaluate_every_s",
    );
    let settings = load(&format!("{FULL}{addressed}")).expect("valid");
    assert_eq!(settings.alerts.map(|a| a.channel), Some(Channel::Email));
    let bad = addressed.replace("ops@example.com", "not an address");
    assert_eq!(problem_keys(&format!("{FULL}{bad}")), vec!["alerts.to"]);
    let wrong_channel =
        addressed.replace("evaluate_every_s", "channel = \"sms\"\nevaluate_every_s");
    assert!(
        problem_keys(&format!("{FULL}{wrong_channel}")).contains(&"alerts.channel".to_string())
    );
}

#[test]
fn the_commented_alerts_example_in_config_toml_loads() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml"))
        .expect("config.toml at the repository root");
    let start = text
        .find("# [alerts]")
        .expect("the commented [alerts] example");
    let example: String = text[start..]
        .lines()
        .map(|line| {
            line.strip_prefix('#')
                .map_or(line, |l| l.strip_prefix(' ').unwrap_or(l))
        })
        .collect::<Vec<_>>()
        .join("\n");
    let settings = Settings::from_toml(
        &format!("{}\n{example}\n", &text[..start]),
        Path::new("config.toml"),
        |_| None,
    )
    .expect("the example is valid");
    let alerts = settings.alerts.expect("alerting configured");
    assert_eq!(alerts.channel, Channel::Email);
    assert_eq!(alerts.rules.len(), 2);
}

#[test]
fn listen_accepts_a_host_name_and_binds_every_address_it_names() {
    let text = FULL.replace("listen = \"127.0.0.1:8080\"", "listen = \"localhost:8080\"");
    let settings = load(&text).expect("a host name is accepted");
    let listen = &settings.server.listen;
    assert!(!listen.is_empty());
    assert!(listen.iter().all(|a| a.port() == 8080), "{listen:?}");
    assert!(
        listen.contains(&"127.0.0.1:8080".parse().unwrap()),
        "{listen:?}"
    );

    // HERALD_LISTEN is validated the same way, and without keys too: every
    // address localhost names is loopback.
    let no_keys = FULL.replace(
        "[[api_keys]]\nkey_env = \"HERALD_ADMIN_KEY\"\nroles = [\"enqueue\", \"read\", \"admin\"]",
        "",
    );
    let settings = Settings::from_toml(&no_keys, Path::new("t"), |name| match name {
        "HERALD_LISTEN" => Some("localhost:9998".into()),
        other => env(other),
    })
    .expect("localhost is loopback");
    assert!(settings.server.listen.iter().all(|a| a.port() == 9998));

    let text = FULL.replace(
        "listen = \"127.0.0.1:8080\"",
        "listen = \"no-such-host.invalid:8080\"",
    );
    assert_eq!(problem_keys(&text), vec!["server.listen"]);
}

#[test]
fn without_keys_every_address_a_name_resolves_to_must_be_loopback() {
    let loopback: Vec<std::net::SocketAddr> = vec![
        "127.0.0.1:8080".parse().unwrap(),
        "[::1]:8080".parse().unwrap(),
    ];
    assert_eq!(raw::non_loopback_listen("localhost:8080", &loopback), None);
    let mixed = vec![loopback[0], "10.1.2.3:8080".parse().unwrap()];
    let message = raw::non_loopback_listen("api.internal:8080", &mixed).expect("refused");
    assert!(message.contains("10.1.2.3:8080"), "{message}");
    assert!(message.contains("api.internal:8080"), "{message}");
}

#[test]
fn server_timeouts_have_defaults_and_cannot_be_turned_off() {
    let settings = load(FULL).expect("valid");
    assert_eq!(settings.server.head_timeout, Duration::from_secs(5));
    assert_eq!(settings.server.body_timeout, Duration::from_secs(30));
    assert_eq!(settings.server.keep_alive, Duration::from_secs(5));
    let text = FULL.replace(
        "max_body_bytes = 10485760",
        "max_body_bytes = 10485760\nhead_timeout_ms = 1500\nbody_timeout_ms = 2500\nkeep_alive_ms = 3500",
    );
    let server = load(&text).expect("valid").server;
    assert_eq!(
        (server.head_timeout, server.body_timeout, server.keep_alive),
        (
            Duration::from_millis(1500),
            Duration::from_millis(2500),
            Duration::from_millis(3500)
        )
    );
    let text = FULL.replace(
        "max_body_bytes = 10485760",
        "max_body_bytes = 10485760\nhead_timeout_ms = 0\nbody_timeout_ms = 0\nkeep_alive_ms = 0",
    );
    assert_eq!(
        problem_keys(&text),
        vec![
            "server.head_timeout_ms",
            "server.body_timeout_ms",
            "server.keep_alive_ms"
        ]
    );
}

#[test]
fn max_connections_stays_below_the_open_file_limit() {
    let limit = open_file_limit();
    // FULL: pool_size 16, five transports.
    let reserved = raw::reserved_fds(16, 5);
    let room = usize::try_from(limit.saturating_sub(reserved)).unwrap_or(usize::MAX);
    assert!(
        room > 0,
        "this test needs an open-file limit above {reserved}"
    );
    let settings = load(FULL).expect("valid");
    assert_eq!(
        settings.server.max_connections.get(),
        room,
        "the default is what the limit leaves"
    );

    let set = |n: String| {
        FULL.replace(
            "max_body_bytes = 10485760",
            &format!("max_body_bytes = 10485760\nmax_connections = {n}"),
        )
    };
    let settings = load(&set("10".into())).expect("valid");
    assert_eq!(settings.server.max_connections.get(), 10);
    assert_eq!(
        problem_keys(&set("0".into())),
        vec!["server.max_connections"]
    );
    if let Some(above) = room.checked_add(1) {
        let err = load(&set(above.to_string())).expect_err("above the limit");
        assert_eq!(err.problems()[0].key, "server.max_connections");
        assert!(err.to_string().contains(&limit.to_string()), "{err}");
    }
}

/// Two plain transports and nothing about retention.
const TWO_TRANSPORTS: &str = r#"
[transports.outbox]
kind = "file"
path = "outbox"

[transports.smtp-main]
kind = "smtp"
host = "127.0.0.1"
"#;

fn days(n: u64) -> Option<Duration> {
    Some(Duration::from_secs(n * 86_400))
}

fn retention(tables: &str) -> crate::storage::Retention {
    load(&format!("{TWO_TRANSPORTS}\n{tables}"))
        .expect("valid")
        .retention
}

fn problems_with(tables: &str) -> Vec<Problem> {
    match load(&format!("{TWO_TRANSPORTS}\n{tables}")) {
        Ok(_) => panic!("expected problems with {tables}"),
        Err(e) => e.problems().to_vec(),
    }
}

fn rule(
    sent: Option<Duration>,
    dead: Option<Duration>,
    cancelled: Option<Duration>,
    payload_after_sent: Option<Duration>,
) -> RetentionRule {
    RetentionRule {
        sent,
        dead,
        cancelled,
        payload_after_sent,
    }
}

#[test]
fn retention_defaults_keep_sent_and_cancelled_a_month_dead_two_weeks_and_payloads() {
    let retention = retention("");
    assert_eq!(retention.default, rule(days(30), days(14), days(30), None));
    assert!(retention.overrides.is_empty());
}

#[test]
fn each_retention_level_overrides_the_one_above() {
    let global = retention("[retention]\nsent_days = 7\npayload_after_sent_s = 3600\n");
    assert_eq!(
        global.default,
        rule(days(7), days(14), days(30), Some(Duration::from_secs(3600)))
    );
    assert!(global.overrides.is_empty());

    let transport = retention("[transports.smtp-main.retention]\ndead_days = 3\n");
    assert_eq!(
        transport.overrides,
        vec![RetentionOverride {
            transport: Some("smtp-main".into()),
            category: None,
            rule: rule(days(30), days(3), days(30), None),
        }]
    );
    assert_eq!(transport.rule_for("outbox", None), &transport.default);

    let category = retention("[retention.categories.otp]\nsent_days = 1\n");
    assert_eq!(
        category.overrides,
        vec![RetentionOverride {
            transport: None,
            category: Some("otp".into()),
            rule: rule(days(1), days(14), days(30), None),
        }]
    );
    assert_eq!(
        category.rule_for("outbox", Some("receipt")),
        &category.default
    );
}

#[test]
fn per_key_a_category_beats_a_transport_which_beats_retention() {
    let retention = retention(
        r#"
[retention]
sent_days = 10
dead_days = 5
cancelled_days = 20
payload_after_sent_s = 3600

[retention.categories.otp]
sent_days = 1

[transports.smtp-main.retention]
sent_days = 8
dead_days = 4
"#,
    );
    let hour = Some(Duration::from_secs(3600));
    assert_eq!(retention.default, rule(days(10), days(5), days(20), hour));
    assert_eq!(
        retention.overrides,
        vec![
            RetentionOverride {
                transport: Some("smtp-main".into()),
                category: Some("otp".into()),
                rule: rule(days(1), days(4), days(20), hour),
            },
            RetentionOverride {
                transport: None,
                category: Some("otp".into()),
                rule: rule(days(1), days(5), days(20), hour),
            },
            RetentionOverride {
                transport: Some("smtp-main".into()),
                category: None,
                rule: rule(days(8), days(4), days(20), hour),
            },
        ],
        "pairs first, then categories, then transports"
    );
    assert_eq!(
        retention.rule_for("smtp-main", Some("otp")).dead,
        days(4),
        "the transport's dead_days, which the category leaves unset"
    );
    assert_eq!(retention.rule_for("outbox", Some("otp")).dead, days(5));
}

#[test]
fn zero_days_keeps_for_ever_at_every_level() {
    let retention = retention(
        r#"
[retention]
sent_days = 0
dead_days = 5

[retention.categories.legal]
cancelled_days = 0

[transports.smtp-main.retention]
dead_days = 0
"#,
    );
    assert_eq!(retention.default, rule(None, days(5), days(30), None));
    assert_eq!(
        retention.rule_for("smtp-main", None),
        &rule(None, None, days(30), None),
        "a transport's 0 beats a finite [retention] value"
    );
    assert_eq!(
        retention.rule_for("outbox", Some("legal")),
        &rule(None, days(5), None, None)
    );
    assert_eq!(
        retention.rule_for("smtp-main", Some("legal")),
        &rule(None, None, None, None)
    );
}

#[test]
fn dlq_max_age_s_is_dead_retention_in_seconds_at_its_level() {
    let old = retention("[defaults]\ndlq_max_age_s = 7200\n");
    assert_eq!(old.default.dead, Some(Duration::from_secs(7200)));
    assert!(old.overrides.is_empty());

    let text = TWO_TRANSPORTS.replace(
        "host = \"127.0.0.1\"",
        "host = \"127.0.0.1\"\ndlq_max_age_s = 600",
    );
    let per_transport = load(&format!("{text}\n[retention]\ndead_days = 5\n"))
        .expect("the alias and dead_days at different levels do not conflict")
        .retention;
    assert_eq!(per_transport.default.dead, days(5));
    assert_eq!(
        per_transport.rule_for("smtp-main", None),
        &rule(days(30), Some(Duration::from_secs(600)), days(30), None)
    );
    assert_eq!(per_transport.rule_for("outbox", None).dead, days(5));

    let design = load(FULL).expect("valid").retention;
    assert_eq!(
        design.default.dead,
        Some(Duration::from_secs(86_400)),
        "the DESIGN.md example's [defaults] dlq_max_age_s"
    );
    let zero = TWO_TRANSPORTS.replace(
        "host = \"127.0.0.1\"",
        "host = \"127.0.0.1\"\ndlq_max_age_s = 0",
    );
    assert_eq!(
        problem_keys(&zero),
        vec!["transports.smtp-main.dlq_max_age_s"]
    );
}

#[test]
fn dlq_max_age_s_and_dead_days_at_one_level_conflict_naming_both() {
    let problems = problems_with("[defaults]\ndlq_max_age_s = 600\n[retention]\ndead_days = 5\n");
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].key, "defaults.dlq_max_age_s");
    assert!(
        problems[0].message.contains("retention.dead_days"),
        "{}",
        problems[0]
    );

    let text = TWO_TRANSPORTS.replace(
        "host = \"127.0.0.1\"",
        "host = \"127.0.0.1\"\ndlq_max_age_s = 600\nretention = { dead_days = 2 }",
    );
    let err = load(&text).expect_err("conflict");
    assert_eq!(err.problems().len(), 1, "{err}");
    assert_eq!(err.problems()[0].key, "transports.smtp-main.dlq_max_age_s");
    assert!(
        err.problems()[0]
            .message
            .contains("transports.smtp-main.retention.dead_days"),
        "{err}"
    );
}

#[test]
fn unknown_retention_keys_and_bad_types_are_refused() {
    for tables in [
        "[retention]\nsent_day = 3\n",
        "[retention.categories.otp]\nkeep = true\n",
        "[transports.smtp-main.retention]\ndlq_max_age_s = 60\n",
        "[retention]\nsent_days = \"30\"\n",
        "[retention]\ndead_days = -1\n",
        "[retention]\npayload_after_sent_s = 1.5\n",
    ] {
        let err = load(&format!("{TWO_TRANSPORTS}\n{tables}")).expect_err(tables);
        assert!(matches!(err, ConfigError::Parse { .. }), "{tables}: {err}");
    }
    let err = load(&format!("{TWO_TRANSPORTS}\n[retention]\nsent_day = 3\n")).expect_err("typo");
    assert!(err.to_string().contains("sent_day"), "{err}");

    let problems =
        problems_with("[transports.smtp-main.retention.categories.otp]\nsent_days = 1\n");
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].key, "transports.smtp-main.retention.categories");
}

/// Each name enqueue would refuse, put into `table`, is the one problem,
/// under `key_prefix.<name>`.
fn assert_bad_category_names_refused(table: impl Fn(&str) -> String, key_prefix: &str) {
    let long = "c".repeat(65);
    for name in ["has space", "", long.as_str(), "émoji"] {
        let problems = problems_with(&table(name));
        assert_eq!(problems.len(), 1, "{name}: {problems:?}");
        assert_eq!(problems[0].key, format!("{key_prefix}.{name}"));
        assert!(
            problems[0].message.contains("letters, digits"),
            "{}",
            problems[0]
        );
    }
}

#[test]
fn a_bad_category_name_is_refused_as_enqueue_would_refuse_it() {
    assert_bad_category_names_refused(
        |name| format!("[retention.categories.\"{name}\"]\nsent_days = 1\n"),
        "retention.categories",
    );
    let fine = retention("[retention.categories.\"order.receipt-v2_x\"]\nsent_days = 1\n");
    assert_eq!(fine.overrides.len(), 1);
}

#[test]
fn a_bad_category_name_is_refused_in_priorities_too() {
    assert_bad_category_names_refused(
        |name| format!("[priority.categories]\n\"{name}\" = 9\n"),
        "priority.categories",
    );
    let settings = load(&format!(
        "{TWO_TRANSPORTS}\n[priority.categories]\n\"order.receipt-v2_x\" = 9\n"
    ))
    .expect("a valid name");
    assert_eq!(
        settings.priority.categories["order.receipt-v2_x"],
        Priority::MAX
    );
}

#[test]
fn retention_values_out_of_range_name_their_key() {
    let problems = problems_with(
        r#"
[retention]
payload_after_sent_s = 0

[retention.categories.otp]
sent_days = 36501

[transports.outbox.retention]
payload_after_sent_s = 3153600001
"#,
    );
    let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        vec![
            "retention.payload_after_sent_s",
            "retention.categories.otp.sent_days",
            "transports.outbox.retention.payload_after_sent_s",
        ]
    );
    assert!(
        problems[0].message.contains("unset to keep payloads"),
        "{}",
        problems[0]
    );
    assert_eq!(
        retention("[retention]\ndead_days = 36500\n").default.dead,
        days(36_500)
    );
}

#[test]
fn the_commented_retention_example_in_config_toml_loads() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml"))
        .expect("config.toml at the repository root");
    let start = text
        .find("# [retention]")
        .expect("the commented [retention] example");
    let example: String = text[start..]
        .lines()
        .map_while(|line| line.strip_prefix('#'))
        .map(|l| l.strip_prefix(' ').unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n");
    let settings = Settings::from_toml(
        &format!("{}\n{example}\n", &text[..start]),
        Path::new("config.toml"),
        |_| None,
    )
    .expect("the example is valid");
    assert_ne!(settings.retention, crate::storage::Retention::default());
    assert!(!settings.retention.overrides.is_empty());
}

#[test]
fn suppression_and_feedback_keys_default_and_load() {
    let settings = load(FULL).expect("valid");
    let policy = &settings.storage.suppression;
    assert!(!policy.per_transport && policy.hard_bounce && policy.complaint);
    assert_eq!(policy.soft_bounce_limit, 3);
    assert_eq!(policy.expire_after, None);
    assert_eq!(settings.feedback.max_body_bytes, 4 * 1024 * 1024);
    assert_eq!(
        settings.storage.unmatched_keep,
        crate::storage::DEFAULT_UNMATCHED_KEEP
    );
    let text = format!(
        "{FULL}\n[suppression]\nscope = \"transport\"\ncomplaint = false\nsoft_bounce_limit = 0\n\
         soft_bounce_window_s = 60\nexpire_after_s = 86400\n\n\
         [feedback]\nunmatched_keep_s = 600\nmax_body_bytes = 1024\n"
    );
    let settings = load(&text).expect("valid");
    let policy = &settings.storage.suppression;
    assert!(policy.per_transport && !policy.complaint && policy.unsubscribe);
    assert_eq!(policy.soft_bounce_limit, 0);
    assert_eq!(
        policy.soft_bounce_window,
        std::time::Duration::from_secs(60)
    );
    assert_eq!(
        policy.expire_after,
        Some(std::time::Duration::from_secs(86_400))
    );
    assert_eq!(settings.feedback.max_body_bytes, 1024);
    assert_eq!(
        settings.storage.unmatched_keep,
        std::time::Duration::from_secs(600)
    );
}

#[test]
fn bad_suppression_and_feedback_keys_are_named() {
    let text = format!(
        "{FULL}\n[suppression]\nscope = \"everyone\"\nsoft_bounce_window_s = 0\n\n\
         [feedback]\nunmatched_keep_s = 0\nmax_body_bytes = 0\n"
    );
    let mut keys = problem_keys(&text);
    keys.sort();
    assert_eq!(
        keys,
        [
            "feedback.max_body_bytes",
            "feedback.unmatched_keep_s",
            "suppression.scope",
            "suppression.soft_bounce_window_s"
        ]
    );
    let unknown = format!("{FULL}\n[suppression]\nsoft_bounces = 3\n");
    assert!(load(&unknown).is_err(), "unknown keys are errors");
}
