//! `GET /openapi.json`: the OpenAPI document, generated from the handlers' `#[utoipa::path]`
//! annotations and the bodies' types, so it cannot drift from the code.

use actix_web::HttpResponse;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{
    alarms, groups, hooks, journal, ops, policies, receivers, remote_write, samples, schedules,
    tenants, webhooks,
};

/// The API's document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Flotilla",
        description = "An event-sourced autoscaling service (SPEC section 3). Errors are \
                       `{\"error\": {\"code\", \"message\"}}`; lists are `{items, next_cursor}`."
    ),
    paths(
        ops::healthz,
        ops::readyz,
        ops::metrics,
        document,
        tenants::create,
        tenants::rotate_token,
        groups::create,
        groups::list,
        groups::show,
        groups::update,
        groups::delete,
        groups::rotate_metrics_token,
        groups::pause,
        groups::resume,
        groups::servers,
        groups::activity,
        policies::create,
        policies::list,
        policies::show,
        policies::update,
        policies::delete,
        policies::execute,
        webhooks::create,
        webhooks::list,
        webhooks::show,
        webhooks::rotate,
        webhooks::revoke,
        receivers::create,
        receivers::list,
        receivers::show,
        receivers::delete,
        receivers::notify,
        schedules::create,
        schedules::list,
        schedules::show,
        schedules::update,
        schedules::delete,
        alarms::create,
        alarms::list,
        alarms::show,
        alarms::update,
        alarms::delete,
        hooks::execute,
        samples::ingest,
        remote_write::write,
        journal::dump,
    ),
    modifiers(&Bearer),
    tags(
        (name = "ops", description = "health, readiness, metrics and this document"),
        (name = "tenants", description = "the operator creates tenants"),
        (name = "groups", description = "groups of servers kept between their bounds"),
        (name = "policies", description = "rules that change a group's size"),
        (name = "webhooks", description = "revocable, signed capabilities to execute a policy"),
        (name = "receivers", description = "Alertmanager receivers and their notifications (SPEC 5.3)"),
        (name = "schedules", description = "scheduled actions that set a group's size (SPEC 2.2)"),
        (name = "alarms", description = "threshold rules over a group's metric samples"),
        (name = "hooks", description = "signed webhook calls (SPEC section 4)"),
        (name = "metrics", description = "metric samples from servers (SPEC section 5)"),
        (name = "journal", description = "the journal as stored, for audits through the service"),
    )
)]
pub struct ApiDoc;

/// The `bearer` security scheme the authenticated operations name.
struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                "bearer",
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
    }
}

/// `GET /openapi.json`.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "ops",
    responses((status = 200, description = "this document", body = Object)),
)]
pub async fn document(state: actix_web::web::Data<super::AppState>) -> HttpResponse {
    HttpResponse::Ok().json(document_for(&state.settings))
}

/// The document as this service answers it: the launch configurations it accepts depend on the
/// operator's settings (`--allow-process-provider`, `--provider-http-secret`), so their schema
/// (the domain's, beside its checks) is set in here rather than derived.
pub fn document_for(settings: &crate::settings::Settings) -> serde_json::Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).expect("the document is JSON");
    let launch = flotilla_actors::domain::group::launch::schema(
        settings.allow_process_provider,
        settings.provider_http_secret.is_some(),
    );
    let schemas = &mut doc["components"]["schemas"];
    schemas["Launch"] = launch;
    let reference = serde_json::json!({"$ref": "#/components/schemas/Launch"});
    schemas["CreateGroup"]["properties"]["launch"] = reference.clone();
    schemas["UpdateGroup"]["properties"]["launch"] =
        serde_json::json!({"oneOf": [reference, {"type": "null"}]});
    doc
}

/// Schema mirrors of the domain enums that appear in bodies: the actors crate knows nothing of
/// utoipa. Each serializes exactly as its domain enum (a test holds them together, and the
/// `From` impls are exhaustive, so a new domain variant does not compile until mirrored).
pub mod mirror {
    use flotilla_actors::domain::{alarm, policy, scaling, tracking};
    use serde::Serialize;
    use utoipa::ToSchema;

    /// How a policy's `adjustment` is read.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
    #[serde(rename_all = "snake_case")]
    pub enum AdjustmentType {
        /// Add `adjustment` to the capacity.
        Change,
        /// Add `adjustment` percent of the current capacity.
        Percent,
        /// Set the capacity to `adjustment`.
        Exact,
    }

    /// How a policy decides.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
    #[serde(rename_all = "snake_case")]
    pub enum PolicyType {
        /// One adjustment, behind the group's cooldown.
        Simple,
        /// The adjustment of the step the breach falls in, with a warm-up.
        Step,
        /// Capacity follows a metric to a target at each closed period.
        TargetTracking,
    }

    /// How a target-tracking policy reads its metric.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
    #[serde(rename_all = "snake_case")]
    pub enum TargetKind {
        /// A per-server figure such as CPU: ceil(capacity × value / target).
        Average,
        /// A group total such as a queue's depth: ceil(value / target).
        Total,
    }

    /// What a target-tracking policy does when a period has no datapoint.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
    #[serde(rename_all = "snake_case")]
    pub enum MissingData {
        /// The group stays where it is.
        Hold,
        /// After `fallback_after_periods` missing periods, `fallback_capacity`.
        Fallback,
        /// After `fallback_after_periods` missing periods, at least `fallback_capacity`.
        FallbackIfHigher,
    }

    impl From<tracking::TargetKind> for TargetKind {
        fn from(value: tracking::TargetKind) -> Self {
            match value {
                tracking::TargetKind::Average => Self::Average,
                tracking::TargetKind::Total => Self::Total,
            }
        }
    }

    impl From<tracking::MissingData> for MissingData {
        fn from(value: tracking::MissingData) -> Self {
            use tracking::MissingData as D;
            match value {
                D::Hold => Self::Hold,
                D::Fallback => Self::Fallback,
                D::FallbackIfHigher => Self::FallbackIfHigher,
            }
        }
    }

    /// Whether a policy's executions move capacity.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
    #[serde(rename_all = "snake_case")]
    pub enum Mode {
        /// Its executions change capacity.
        Live,
        /// Its executions are recorded with the outcome `shadow`; capacity is left alone.
        Shadow,
    }

    /// How a period's samples are reduced to its datapoint.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
    #[serde(rename_all = "snake_case")]
    pub enum Statistic {
        /// The mean.
        Avg,
        /// The smallest sample.
        Min,
        /// The largest sample.
        Max,
        /// The sum.
        Sum,
        /// The number of samples.
        Count,
    }

    /// A datapoint breaches when `value <comparison> threshold`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
    #[serde(rename_all = "snake_case")]
    pub enum Comparison {
        /// `>`
        Gt,
        /// `>=`
        Ge,
        /// `<`
        Lt,
        /// `<=`
        Le,
    }

    /// How periods without samples count.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
    #[serde(rename_all = "snake_case")]
    pub enum TreatMissing {
        /// Skipped; all missing gives `insufficient_data`.
        Missing,
        /// Counted as breaching.
        Breaching,
        /// Counted as not breaching.
        NotBreaching,
        /// The state stays as it was.
        Ignore,
    }

    /// An alarm's state.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
    #[serde(rename_all = "snake_case")]
    pub enum AlarmState {
        /// Not enough data to decide; where every alarm starts.
        InsufficientData,
        /// Not breaching.
        Ok,
        /// Breaching.
        Alarm,
    }

    impl From<scaling::AdjustmentType> for AdjustmentType {
        fn from(value: scaling::AdjustmentType) -> Self {
            use scaling::AdjustmentType as D;
            match value {
                D::Change => Self::Change,
                D::Percent => Self::Percent,
                D::Exact => Self::Exact,
            }
        }
    }

    impl From<policy::PolicyType> for PolicyType {
        fn from(value: policy::PolicyType) -> Self {
            match value {
                policy::PolicyType::Simple => Self::Simple,
                policy::PolicyType::Step => Self::Step,
                policy::PolicyType::TargetTracking => Self::TargetTracking,
            }
        }
    }

    impl From<policy::Mode> for Mode {
        fn from(value: policy::Mode) -> Self {
            match value {
                policy::Mode::Live => Self::Live,
                policy::Mode::Shadow => Self::Shadow,
            }
        }
    }

    impl From<alarm::Statistic> for Statistic {
        fn from(value: alarm::Statistic) -> Self {
            use alarm::Statistic as D;
            match value {
                D::Avg => Self::Avg,
                D::Min => Self::Min,
                D::Max => Self::Max,
                D::Sum => Self::Sum,
                D::Count => Self::Count,
            }
        }
    }

    impl From<alarm::Comparison> for Comparison {
        fn from(value: alarm::Comparison) -> Self {
            use alarm::Comparison as D;
            match value {
                D::Gt => Self::Gt,
                D::Ge => Self::Ge,
                D::Lt => Self::Lt,
                D::Le => Self::Le,
            }
        }
    }

    impl From<alarm::TreatMissing> for TreatMissing {
        fn from(value: alarm::TreatMissing) -> Self {
            use alarm::TreatMissing as D;
            match value {
                D::Missing => Self::Missing,
                D::Breaching => Self::Breaching,
                D::NotBreaching => Self::NotBreaching,
                D::Ignore => Self::Ignore,
            }
        }
    }

    impl From<alarm::AlarmState> for AlarmState {
        fn from(value: alarm::AlarmState) -> Self {
            use alarm::AlarmState as D;
            match value {
                D::InsufficientData => Self::InsufficientData,
                D::Ok => Self::Ok,
                D::Alarm => Self::Alarm,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use flotilla_actors::domain::alarm::{AlarmState, Comparison, Statistic, TreatMissing};
    use flotilla_actors::domain::scaling::AdjustmentType;
    use serde::Serialize;
    use serde_json::{json, Value};
    use utoipa::PartialSchema;

    use super::*;

    /// The mirror serializes as the domain value, and its schema lists every value.
    fn same<D, M>(values: &[D])
    where
        D: Serialize + Copy,
        M: Serialize + From<D> + PartialSchema,
    {
        let schema = serde_json::to_value(M::schema()).unwrap();
        let listed = schema["enum"].as_array().cloned().unwrap_or_default();
        assert_eq!(listed.len(), values.len(), "{schema}");
        for &value in values {
            let domain = serde_json::to_value(value).unwrap();
            assert_eq!(domain, serde_json::to_value(M::from(value)).unwrap());
            assert!(listed.contains(&domain), "{domain} is not in {schema}");
        }
    }

    #[test]
    fn the_mirrors_serialize_and_list_exactly_the_domain_values() {
        use AdjustmentType as A;
        same::<_, mirror::AdjustmentType>(&[A::Change, A::Percent, A::Exact]);
        use flotilla_actors::domain::policy::Mode as M;
        same::<_, mirror::Mode>(&[M::Live, M::Shadow]);
        use flotilla_actors::domain::policy::PolicyType as P;
        same::<_, mirror::PolicyType>(&[P::Simple, P::Step, P::TargetTracking]);
        use flotilla_actors::domain::tracking::{MissingData as D, TargetKind as K};
        same::<_, mirror::TargetKind>(&[K::Average, K::Total]);
        same::<_, mirror::MissingData>(&[D::Hold, D::Fallback, D::FallbackIfHigher]);
        use Statistic as S;
        same::<_, mirror::Statistic>(&[S::Avg, S::Min, S::Max, S::Sum, S::Count]);
        use Comparison as C;
        same::<_, mirror::Comparison>(&[C::Gt, C::Ge, C::Lt, C::Le]);
        use TreatMissing as T;
        same::<_, mirror::TreatMissing>(&[T::Missing, T::Breaching, T::NotBreaching, T::Ignore]);
        use AlarmState as L;
        same::<_, mirror::AlarmState>(&[L::InsufficientData, L::Ok, L::Alarm]);
    }

    #[test]
    fn the_document_names_the_bearer_scheme_and_the_error_body() {
        let doc: Value = serde_json::to_value(ApiDoc::openapi()).unwrap();
        assert_eq!(
            doc["components"]["securitySchemes"]["bearer"],
            json!({"type": "http", "scheme": "bearer"})
        );
        let error = &doc["components"]["schemas"]["ErrorBody"];
        assert_eq!(error["required"], json!(["error"]), "{error}");
    }

    #[test]
    fn the_documented_bounds_are_the_domains() {
        use flotilla_actors::domain::{
            alarm, group, samples, MAX_COOLDOWN_SECONDS, MAX_NAME_CHARS,
        };
        let doc = document_for(&crate::settings::Settings::default());
        let schemas = &doc["components"]["schemas"];
        let field = |schema: &str, field: &str| schemas[schema]["properties"][field].clone();
        for schema in [
            "CreateGroup",
            "CreatePolicy",
            "CreateAlarm",
            "CreateWebhook",
            "CreateTenant",
        ] {
            assert_eq!(
                field(schema, "name")["maxLength"],
                json!(MAX_NAME_CHARS),
                "{schema}"
            );
            assert_eq!(field(schema, "name")["minLength"], json!(1), "{schema}");
        }
        let size = json!(group::MAX_GROUP_SIZE);
        for name in ["min_size", "max_size", "desired_capacity"] {
            assert_eq!(field("CreateGroup", name)["maximum"], size, "{name}");
        }
        assert_eq!(
            field("CreateGroup", "cooldown_seconds")["maximum"],
            json!(MAX_COOLDOWN_SECONDS)
        );
        assert_eq!(field("CreatePolicy", "adjustment")["maximum"], size);
        assert_eq!(
            field("CreateAlarm", "period_seconds")["maximum"],
            json!(alarm::MAX_PERIOD_SECONDS)
        );
        assert_eq!(
            field("CreateAlarm", "evaluation_periods")["maximum"],
            json!(alarm::MAX_EVALUATION_PERIODS)
        );
        assert_eq!(
            field("CreateAlarm", "alarm_actions")["maxItems"],
            json!(alarm::MAX_ACTIONS)
        );
        assert_eq!(
            field("SampleBody", "metric")["maxLength"],
            json!(samples::MAX_METRIC_BYTES)
        );
        // One alphabet of metric names (`samples::validate_metric`), wherever one is named.
        for (schema, name) in [
            ("CreateAlarm", "metric"),
            ("CreatePolicy", "metric"),
            ("UpdatePolicy", "metric"),
        ] {
            let metric = field(schema, name);
            for key in ["maxLength", "pattern"] {
                assert_eq!(
                    metric[key],
                    field("SampleBody", "metric")[key],
                    "{schema}.{name}"
                );
            }
        }
        assert_eq!(
            schemas["MetricsBody"]["properties"]["samples"]["maxItems"],
            json!(crate::api::samples::MAX_SAMPLES)
        );
        assert_eq!(schemas["SampleBody"]["additionalProperties"], json!(false));
    }

    #[test]
    fn one_name_pattern_is_documented_and_it_agrees_with_the_domain() {
        // The pattern is written out at each name (utoipa takes a literal), so it is checked
        // here: the same everywhere, and what it accepts the domain accepts.
        let doc = document_for(&crate::settings::Settings::default());
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        let patterns: std::collections::BTreeSet<String> = schemas
            .values()
            .filter_map(|schema| schema["properties"]["name"]["pattern"].as_str())
            .map(str::to_owned)
            .collect();
        // Every request body with a name has the pattern.
        for schema in [
            "CreateTenant",
            "CreateGroup",
            "UpdateGroup",
            "CreatePolicy",
            "UpdatePolicy",
            "CreateWebhook",
            "CreateAlarm",
            "UpdateAlarm",
            "CreateSchedule",
            "UpdateSchedule",
            "CreateReceiver",
        ] {
            let name = &schemas[schema]["properties"]["name"];
            assert!(name["pattern"].is_string(), "{schema}: {name}");
        }
        assert_eq!(patterns.len(), 1, "{patterns:?}");
        let pattern = regex::Regex::new(patterns.first().unwrap()).unwrap();
        let names = [
            "web",
            " web ",
            "Web Tier 2",
            "שרתים",
            "\u{FEFF}web",
            "",
            "   ",
            "\u{FEFF}",
            " \u{200B} ",
            "\u{00AD}\u{2060}",
            "a\nb",
            "tab\there",
            "web\u{202E}gpj.exe",
            "web\u{2066}",
            "\u{85}",
        ];
        let agree = |name: &str| {
            let domain = flotilla_actors::domain::validate_name("name", name).is_ok();
            assert_eq!(pattern.is_match(name), domain, "{name:?}");
        };
        names.into_iter().for_each(agree);
        // Every character the rule names, alone and after a visible one.
        let refused = ('\u{0}'..='\u{A0}')
            .chain('\u{2000}'..='\u{2070}')
            .chain([
                '\u{00AD}', '\u{034F}', '\u{061C}', '\u{115F}', '\u{1160}', '\u{180E}',
            ])
            .chain(['\u{3164}', '\u{FEFF}', '\u{FFA0}'])
            .chain('\u{FE00}'..='\u{FE0F}');
        for c in refused {
            agree(&c.to_string());
            agree(&format!("a{c}"));
        }
    }

    #[test]
    fn the_launch_schema_follows_the_operators_settings() {
        let providers = |settings: &crate::settings::Settings| {
            let doc = document_for(settings);
            doc["components"]["schemas"]["Launch"]["oneOf"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    (
                        p["properties"]["provider"]["const"].clone(),
                        p["required"].clone(),
                    )
                })
                .collect::<Vec<_>>()
        };
        let default = crate::settings::Settings::default();
        assert_eq!(
            providers(&default),
            [
                (json!("http"), json!(["provider", "url", "secret"])),
                (json!("simulated"), json!(["provider"])),
            ]
        );
        let open = crate::settings::Settings {
            allow_process_provider: true,
            provider_http_secret: Some("whsec_QUFBQQ==".into()),
            ..default
        };
        assert_eq!(
            providers(&open),
            [
                (json!("process"), json!(["provider", "command"])),
                (json!("http"), json!(["provider", "url"])),
                (json!("simulated"), json!(["provider"])),
            ]
        );
        let doc = document_for(&open);
        assert_eq!(
            doc["components"]["schemas"]["CreateGroup"]["properties"]["launch"],
            json!({"$ref": "#/components/schemas/Launch"})
        );
    }

    #[test]
    fn each_lists_cursor_pattern_names_the_ids_it_lists() {
        let doc = document_for(&crate::settings::Settings::default());
        for (path, prefix) in [
            ("/v1/groups", "^grp_"),
            ("/v1/alarms", "^alm_"),
            ("/v1/groups/{id}/policies", "^pol_"),
            ("/v1/groups/{id}/schedules", "^sch_"),
            ("/v1/groups/{id}/receivers", "^rcv_"),
            ("/v1/groups/{id}/policies/{pid}/webhooks", "^whk_"),
            ("/v1/groups/{id}/servers", "^srv_"),
            ("/v1/groups/{id}/activity", "^[1-9]"),
        ] {
            let params = doc["paths"][path]["get"]["parameters"].as_array().unwrap();
            let cursor = params.iter().find(|p| p["name"] == "cursor").unwrap();
            let pattern = cursor["schema"]["pattern"].as_str().unwrap();
            assert!(pattern.starts_with(prefix), "{path}: {pattern}");
            let limit = params.iter().find(|p| p["name"] == "limit").unwrap();
            assert_eq!(
                (
                    limit["schema"]["minimum"].clone(),
                    limit["schema"]["maximum"].clone()
                ),
                (json!(1), json!(1000)),
                "{path}"
            );
        }
    }
}
