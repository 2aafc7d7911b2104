//! The OpenAPI description, generated from the handlers' annotations and
//! the DTOs' types so it cannot drift from the code, served at
//! `GET /api/openapi.json`, and the interactive docs (Swagger UI, its files
//! compiled into the binary) at `/api/docs/`. Both need no API key: the
//! spec holds no data, and the docs page sends the key the reader enters.
//!
//! What a request may hold depends on the configuration (which transports
//! exist and what they deliver, whether keys are required), so the served
//! description is the generated one made exact for this server's
//! configuration, once, when the server starts ([`Spec::new`]): transport
//! names become enums, the enqueue body becomes one shape per deliverable
//! channel, and without `[[api_keys]]` no operation asks for a key.

use actix_web::web::{self, Bytes};
use actix_web::{HttpResponse, http::header};
use serde_json::{Map, Value, json};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{ObjectBuilder, RefOr, Type, schema::Schema};
use utoipa::{Modify, OpenApi, PartialSchema, ToSchema};
use utoipa_swagger_ui::{Config, SwaggerUi};

use super::{
    AppState, alerts, analytics, feedback, health, messages, metrics, queue, suppressions,
    transports,
};
use crate::domain::{Channel, EnqueuePolicy};

/// Where the spec is served.
pub const SPEC_PATH: &str = "/api/openapi.json";
/// Where the docs page is served (with the trailing slash).
pub const DOCS_PATH: &str = "/api/docs/";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Herald",
        description = "Notification delivery and tracking engine. Errors are \
            `{\"error\": {\"code\", \"message\", \"field\"?}}`. With API keys configured, \
            every /api route but this spec needs `Authorization: Bearer <key>` and the role \
            named in its security requirement (enqueue, read or admin)."
    ),
    paths(
        health::live,
        health::ready,
        messages::enqueue,
        messages::enqueue_batch,
        messages::list_messages,
        messages::count_messages,
        messages::get_message,
        messages::cancel,
        messages::retry,
        queue::dead_letters,
        queue::dead_letter_groups,
        queue::replay_dead_letters,
        queue::start_replay_job,
        queue::replay_jobs,
        queue::replay_job,
        analytics::queue,
        analytics::transport_performance_report,
        analytics::failures,
        analytics::bottleneck_report,
        analytics::message_flow_report,
        analytics::deliverability_report,
        alerts::list,
        feedback::receive,
        suppressions::list,
        suppressions::add,
        suppressions::remove,
        transports::list,
        transports::pause,
        transports::resume,
        metrics::render,
        spec,
    ),
    components(schemas(
        crate::domain::Stamp,
        crate::domain::Fingerprint,
        crate::domain::Category,
        crate::domain::IdempotencyKey,
        Instant,
        ErrorClassName,
        crate::domain::PushPayload,
        crate::domain::ChatPayload,
        TransportName,
        Window,
        Bucket,
        Include,
    )),
    modifiers(&BearerKeys),
    tags(
        (name = "messages", description = "Enqueue, read, cancel and retry messages"),
        (name = "queue", description = "The dead-letter queue"),
        (name = "analytics", description = "Queue and transport analytics from the rollups"),
        (name = "alerts", description = "Alert incidents from the configured rules"),
        (name = "feedback", description = "Providers' event webhooks: delivered, bounced, complained, ..."),
        (name = "suppressions", description = "Addresses, numbers and tokens not sent to"),
        (name = "transports", description = "Transports' live state; pause and resume"),
        (name = "health", description = "Liveness and readiness probes"),
        (name = "meta", description = "This description"),
    )
)]
pub struct ApiDoc;

/// Declares the `bearer` scheme the paths' security requirements name.
struct BearerKeys;

impl Modify for BearerKeys {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut scheme = Http::new(HttpAuthScheme::Bearer);
        scheme.description = Some(
            "An API key from `[[api_keys]]` in the config; the requirement lists the role it needs."
                .to_owned(),
        );
        components.add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

/// What the derives cannot state, written on the JSON form (utoipa has no
/// builder for `allowEmptyValue`, `propertyNames`, `not`, or an `anyOf`
/// beside `properties`): that an empty query value counts as absent
/// (`extract::Query`), rules across fields, header names, and "any JSON
/// but null".
fn beyond_derives(spec: &mut Value) {
    if let Some(paths) = spec["paths"].as_object_mut() {
        for parameter in paths
            .values_mut()
            .filter_map(Value::as_object_mut)
            .flat_map(|item| item.values_mut())
            .filter_map(|operation| operation.get_mut("parameters"))
            .filter_map(Value::as_array_mut)
            .flatten()
            .filter(|parameter| parameter["in"] == "query")
        {
            parameter["allowEmptyValue"] = json!(true);
        }
    }
    let non_blank = r"^[\s\S]*\S[\s\S]*$";
    if let Some(email) = spec.pointer_mut("/components/schemas/EmailPayload") {
        email["properties"]["headers"] = json!({
            "type": "object",
            "maxProperties": 50,
            "propertyNames": {"pattern": "^[!-9;-~]+$"},
            "additionalProperties": {"type": "string", "pattern": r"^[^\x00-\x1F\x7F-\x9F]*$"},
            "description": email["properties"]["headers"]["description"],
        });
        email["anyOf"] = json!([
            {"required": ["text"], "properties": {"text": {"type": "string", "pattern": non_blank}}},
            {"required": ["html"], "properties": {"html": {"type": "string", "pattern": non_blank}}},
        ]);
    }
    if let Some(payload) = spec.pointer_mut("/components/schemas/GenericPayload/properties/payload")
    {
        payload["not"] = json!({"type": "null"});
    }
    if let Some(push) = spec.pointer_mut("/components/schemas/PushPayload") {
        push["anyOf"] = json!([
            {"required": ["title"]},
            {"required": ["body"]},
            {"required": ["data"], "properties": {"data": {"type": "object", "minProperties": 1}}},
        ]);
        // The same push to several devices, one message each: `tokens`
        // for `token`.
        let mut tokens = push.clone();
        if let Some(properties) = tokens["properties"].as_object_mut()
            && let Some(token) = properties.remove("token")
        {
            properties.insert(
                "tokens".to_owned(),
                json!({
                    "type": "array",
                    "items": token,
                    "minItems": 1,
                    "maxItems": crate::domain::MAX_PUSH_TOKENS,
                    "description": "Device tokens; a message is made for each",
                }),
            );
            tokens["required"] = json!(["tokens"]);
            tokens["description"] = json!("A push to several devices: one message per token.");
            if let Some(schemas) = spec
                .pointer_mut("/components/schemas")
                .and_then(Value::as_object_mut)
            {
                schemas.insert("PushTokensPayload".to_owned(), tokens);
            }
        }
    }
}

/// A configured transport's name; [`Spec::new`] lists them.
pub struct TransportName;

impl PartialSchema for TransportName {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some("A configured transport"))
            .into()
    }
}

impl ToSchema for TransportName {}

/// An analytics window, e.g. `15m`, `1h`, `7d`.
pub struct Window;

impl PartialSchema for Window {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(analytics::WINDOW_PATTERN))
            .description(Some("A whole number of s, m, h or d, from 1m to 30d"))
            .examples(["15m", "1h", "24h", "7d"])
            .into()
    }
}

impl ToSchema for Window {}

/// A throughput series' bucket.
pub struct Bucket;

impl PartialSchema for Bucket {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(analytics::BUCKETS))
            .into()
    }
}

impl ToSchema for Bucket {}

/// An instant, as `since` and `until` take it.
pub struct Instant;

impl PartialSchema for Instant {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                utoipa::openapi::KnownFormat::DateTime,
            )))
            .pattern(Some(messages::INSTANT_PATTERN))
            .into()
    }
}

impl ToSchema for Instant {}

/// The class of a message's last error
/// ([`crate::delivery::errors::class_of_error`]).
pub struct ErrorClassName;

impl PartialSchema for ErrorClassName {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(crate::delivery::errors::CLASSES))
            .into()
    }
}

impl ToSchema for ErrorClassName {}

/// What a message read may include besides its own fields.
pub struct Include;

impl PartialSchema for Include {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(["payload"]))
            .into()
    }
}

impl ToSchema for Include {}

/// The description this server serves, serialised once.
#[derive(Clone)]
pub struct Spec(Bytes);

impl Spec {
    /// The generated description made exact for a server whose enqueues
    /// `policy` decides, with or without API keys.
    pub fn new(policy: &EnqueuePolicy, authenticated: bool) -> Spec {
        // utoipa's document is plain data with string keys: serialising it
        // cannot fail.
        let mut spec = serde_json::to_value(ApiDoc::openapi()).unwrap_or(Value::Null);
        let mut names: Vec<&str> = policy.transports.keys().map(String::as_str).collect();
        names.sort_unstable();
        if let Some(schema) = spec.pointer_mut("/components/schemas/TransportName") {
            schema["enum"] = json!(names);
        }
        beyond_derives(&mut spec);
        tie_payload_to_channel(&mut spec, policy);
        optional_replay_body(&mut spec);
        if !authenticated {
            drop_security(&mut spec);
        }
        // Nor can serialising the Value made from it.
        Spec(Bytes::from(serde_json::to_vec(&spec).unwrap_or_default()))
    }
}

/// `EnqueueRequest` as one schema per channel that some transport
/// delivers and payload shape its transports take (push and chat go to a
/// provider kind in the provider's shape, to a webhook kind as `{payload,
/// url?}`), each naming the payload it must carry and the transports it
/// may name; without a route to one of those, `transport` is required.
/// A channel nothing delivers has no schema: every such message is
/// refused.
fn tie_payload_to_channel(spec: &mut Value, policy: &EnqueuePolicy) {
    let Some(schemas) = spec
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    let Some(base) = schemas.get("EnqueueRequest").cloned() else {
        return;
    };
    let mut variants = Vec::new();
    let mut mapping = Map::new();
    let mut two_shapes = false;
    for &channel in Channel::ALL {
        // The transports of the channel, apart by the payload shape they
        // take: the provider kinds' own, and `{payload, url?}`.
        let mut by_shape: [(bool, Vec<&str>); 2] = [(false, Vec::new()), (true, Vec::new())];
        for (name, intake) in &policy.transports {
            if intake.channels.contains(&channel) {
                let native = intake.native.contains(&channel);
                by_shape[usize::from(native)].1.push(name.as_str());
            }
        }
        let shapes: Vec<(bool, Vec<&str>)> = by_shape
            .into_iter()
            .filter(|(_, transports)| !transports.is_empty())
            .collect();
        two_shapes |= shapes.len() > 1;
        for (native, mut transports) in shapes {
            transports.sort_unstable();
            let Some(variant) =
                channel_variant(&base, schemas, policy, channel, native, &transports)
            else {
                return;
            };
            let name = match native {
                false => format!("{}EnqueueRequest", capitalised(channel.as_str())),
                true => format!("{}ProviderEnqueueRequest", capitalised(channel.as_str())),
            };
            let reference = format!("#/components/schemas/{name}");
            mapping.insert(channel.as_str().to_owned(), json!(reference));
            variants.push(json!({"$ref": reference}));
            schemas.insert(name, variant);
        }
    }
    if variants.is_empty() {
        return;
    }
    let mut request = json!({
        "description": base["description"],
        "oneOf": variants,
    });
    // A channel with two shapes has two schemas, which one discriminator
    // value cannot name: the payload's own required fields tell them apart.
    if !two_shapes {
        request["discriminator"] = json!({"propertyName": "channel", "mapping": mapping});
    }
    schemas.insert("EnqueueRequest".to_owned(), request);
}

/// The enqueue body of `channel` through `transports`, which all take
/// its payload in the provider shape (`native`) or all as `{payload,
/// url?}`; `None` when the generated schema is not as expected.
fn channel_variant(
    base: &Value,
    schemas: &Map<String, Value>,
    policy: &EnqueuePolicy,
    channel: Channel,
    native: bool,
    transports: &[&str],
) -> Option<Value> {
    let mut variant = base.clone();
    let properties = variant["properties"].as_object_mut()?;
    for other in Channel::ALL.iter().filter(|c| **c != channel) {
        properties.remove(other.as_str());
    }
    let generated = properties
        .get(channel.as_str())
        .and_then(|p| p["oneOf"].as_array())
        .and_then(|alternatives| alternatives.iter().find(|a| a.get("$ref").is_some()))
        .map(|reference| json!({"$ref": reference["$ref"]}))?;
    let payload = match (native, channel) {
        (true, Channel::Push) => json!({"oneOf": [
            {"$ref": "#/components/schemas/PushPayload"},
            {"$ref": "#/components/schemas/PushTokensPayload"},
        ]}),
        (true, Channel::Chat) => json!({"$ref": "#/components/schemas/ChatPayload"}),
        _ if generated["$ref"] == "#/components/schemas/GenericPayload" => {
            let generic = schemas.get("GenericPayload")?;
            with_allowed_urls(generic.clone(), channel, policy)
        }
        _ => generated,
    };
    properties.insert(channel.as_str().to_owned(), payload);
    properties.insert(
        "channel".to_owned(),
        json!({"type": "string", "enum": [channel.as_str()]}),
    );
    let routed = policy
        .routes
        .get(&channel)
        .is_some_and(|route| transports.contains(&route.as_str()));
    let transport = if routed {
        let mut names: Vec<Value> = transports.iter().map(|t| json!(t)).collect();
        names.push(Value::Null);
        json!({"type": ["string", "null"], "enum": names,
               "description": "A transport that delivers this channel; without it, the channel's route decides"})
    } else {
        json!({"type": "string", "enum": transports,
               "description": "A transport that delivers this channel (the channel has no route to one of these)"})
    };
    properties.insert("transport".to_owned(), transport);
    let mut required = vec!["channel", channel.as_str()];
    if !routed {
        required.push("transport");
    }
    variant["required"] = json!(required);
    variant["description"] = json!(match native {
        false => format!("A `{channel}` message."),
        true => format!("A `{channel}` message through a provider kind, in its shape."),
    });
    Some(variant)
}

/// A generic payload whose `url` names a host some transport of
/// `channel` allows; without any such host, no `url` at all.
fn with_allowed_urls(mut generic: Value, channel: Channel, policy: &EnqueuePolicy) -> Value {
    let mut hosts: Vec<String> = policy
        .transports
        .values()
        .filter(|intake| intake.channels.contains(&channel))
        .filter_map(|intake| intake.allowed_url_hosts.as_ref())
        .flatten()
        .map(|host| host.to_ascii_lowercase().replace('.', "\\."))
        .collect();
    hosts.sort_unstable();
    hosts.dedup();
    if let Some(properties) = generic["properties"].as_object_mut() {
        if hosts.is_empty() {
            properties.remove("url");
        } else {
            properties.insert(
                "url".to_owned(),
                json!({
                    "type": ["string", "null"],
                    "pattern": format!("^https?://(?:{})(?::[0-9]{{1,4}})?(?:[/?#]\\S*)?$", hosts.join("|")),
                    "description": "Only a host on the transport's `allowed_url_hosts`",
                }),
            );
        }
    }
    generic
}

fn capitalised(word: &str) -> String {
    let mut chars = word.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// The replay body may be left out (an empty body replays everything),
/// but when given it is an object: `null` is refused like any non-object.
fn optional_replay_body(spec: &mut Value) {
    if let Some(body) =
        spec.pointer_mut("/paths/~1api~1queue~1dead-letters~1replay/post/requestBody")
    {
        body["required"] = json!(false);
    }
}

/// Without API keys every route is open: no operation needs a key, and
/// none answers 401 or 403.
fn drop_security(spec: &mut Value) {
    if let Some(paths) = spec["paths"].as_object_mut() {
        for operation in paths
            .values_mut()
            .filter_map(Value::as_object_mut)
            .flat_map(|item| item.values_mut())
            .filter_map(Value::as_object_mut)
        {
            operation.remove("security");
            if let Some(responses) = operation
                .get_mut("responses")
                .and_then(Value::as_object_mut)
            {
                responses.remove("401");
                responses.remove("403");
            }
        }
    }
    if let Some(components) = spec["components"].as_object_mut() {
        components.remove("securitySchemes");
    }
}

/// This API's OpenAPI description.
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    tag = "meta",
    responses((status = 200, description = "The OpenAPI document", body = serde_json::Value))
)]
pub async fn spec(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "application/json"))
        .body(state.spec.0.clone())
}

/// The docs page and its assets, reading the spec from [`SPEC_PATH`].
pub fn docs() -> SwaggerUi {
    SwaggerUi::new(format!("{DOCS_PATH}{{_:.*}}")).config(Config::new([SPEC_PATH]))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::domain::TransportIntake;

    #[test]
    fn a_channel_two_shapes_serve_is_two_schemas_each_naming_its_transports() {
        let intake = |native: Vec<Channel>| TransportIntake {
            channels: vec![Channel::Push],
            max_attempts: 3,
            allowed_url_hosts: None,
            native,
        };
        let policy = EnqueuePolicy {
            transports: HashMap::from([
                ("hooks".to_string(), intake(vec![])),
                ("phones".to_string(), intake(vec![Channel::Push])),
            ]),
            routes: HashMap::from([(Channel::Push, "hooks".to_string())]),
            ..EnqueuePolicy::default()
        };
        let Spec(bytes) = Spec::new(&policy, false);
        let spec: Value = serde_json::from_slice(&bytes).expect("JSON");
        let schemas = &spec["components"]["schemas"];
        let generic = &schemas["PushEnqueueRequest"]["properties"];
        assert_eq!(generic["transport"]["enum"], json!(["hooks", null]));
        assert!(generic["push"]["properties"]["payload"].is_object());
        let native = &schemas["PushProviderEnqueueRequest"];
        assert_eq!(native["properties"]["transport"]["enum"], json!(["phones"]));
        assert_eq!(
            native["properties"]["push"]["oneOf"],
            json!([
                {"$ref": "#/components/schemas/PushPayload"},
                {"$ref": "#/components/schemas/PushTokensPayload"},
            ])
        );
        let tokens = &schemas["PushTokensPayload"];
        assert_eq!(tokens["required"], json!(["tokens"]));
        assert!(tokens["properties"]["token"].is_null());
        assert_eq!(tokens["properties"]["tokens"]["maxItems"], 500);
        assert_eq!(schemas["PushPayload"]["additionalProperties"], false);
        assert_eq!(tokens["additionalProperties"], false);
        assert_eq!(native["required"], json!(["channel", "push", "transport"]));
        assert!(schemas["EnqueueRequest"]["discriminator"].is_null());
        assert_eq!(
            schemas["EnqueueRequest"]["oneOf"].as_array().map(Vec::len),
            Some(2)
        );
    }
}
