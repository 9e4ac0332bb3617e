//! The console's pages, as HTML (maud escapes every value it is given). Semantic elements,
//! one `h1` a page, tables with captions and header cells, forms with labels; states are
//! written out in words, never shown by colour alone; instants are `<time>` elements in UTC
//! that the page's script shows in the viewer's zone (UTC on hover).

use std::collections::HashMap;

use flotilla_actors::aggregate::{Alarms, Policies, Receivers, Schedules, Webhooks};
use flotilla_actors::clock::Timestamp;
use flotilla_actors::domain::group::{Group, GroupEvent, Outcome};
use flotilla_actors::domain::policy::{Mode, Policy, PolicyType};
use flotilla_actors::domain::scaling::{AdjustmentType, Constraint};
use flotilla_actors::domain::{Cause, DomainEvent, GroupId, Kind};
use flotilla_journal::Journal;
use maud::{html, Markup, DOCTYPE};

use super::history::{self, Entry, History, Recorded};
use super::session::{Flash, Session};
use super::{Action, RANGES};
use crate::api::{resource, AppState};
use crate::audit::format_millis;

/// Groups on one page of the groups list.
pub const GROUPS_PER_PAGE: usize = 50;

/// Timeline entries on one page of a group's timeline.
pub const ENTRIES_PER_PAGE: usize = 50;

/// Servers listed on a group's page.
const SERVERS_SHOWN: usize = 100;

fn layout(title: &str, session: Option<&Session>, flash: Option<&Flash>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Flotilla" }
                link rel="stylesheet" href="/console/assets/style.css";
                script src="/console/assets/app.js" defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/" { "Flotilla" }
                    @if let Some(session) = session {
                        nav aria-label="Main" { a href="/" { "Groups" } }
                        form.sign-out method="post" action="/console/sign-out" {
                            input type="hidden" name="csrf" value=(session.csrf);
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main #main {
                    @if let Some(flash) = flash {
                        p class=(if flash.error { "flash error" } else { "flash" })
                            role=(if flash.error { "alert" } else { "status" }) {
                            @if flash.error { strong { "Not done. " } } @else { strong { "Done. " } }
                            (flash.text)
                        }
                    }
                    (body)
                }
            }
        }
    }
}

/// An instant, in UTC, that the page's script shows in the viewer's zone.
fn time(at_ms: i64) -> Markup {
    let text = format_millis(at_ms);
    html! { time datetime=(text) title={ (text) " UTC" } { (text.replace('T', " ").trim_end_matches('Z')) " UTC" } }
}

/// A page that only says something.
pub fn message(title: &str, text: &str, link: Option<(&str, &str)>) -> Markup {
    layout(
        title,
        None,
        None,
        html! {
            h1 { (title) }
            p { (text) }
            @if let Some((label, href)) = link { p { a href=(href) { (label) } } }
        },
    )
}

/// The sign-in page, with why the last attempt failed.
pub fn sign_in(error: Option<&str>) -> Markup {
    layout(
        "Sign in",
        None,
        None,
        html! {
            h1 { "Sign in" }
            p { "Sign in with your tenant's token. It is sent once, checked, and not kept in this browser." }
            @if let Some(error) = error {
                p.flash.error role="alert" #sign-in-error { strong { "Not signed in. " } (error) }
            }
            form.card method="post" action="/console/sign-in" {
                label for="token" { "Tenant token" }
                input #token type="password" name="token" autocomplete="off" required
                    aria-describedby=[error.map(|_| "sign-in-error")];
                button type="submit" { "Sign in" }
            }
        },
    )
}

/// What a draining group (a forced deletion that could not finish at once) is doing, for its
/// row and its page; `None` for any other group.
fn draining_text(group: &Group) -> Option<String> {
    group.draining.then(|| {
        let left = group.servers.len();
        match left {
            0 => "Being deleted: no servers left; delete it again to finish".to_owned(),
            1 => "Being deleted: 1 server still stopping".to_owned(),
            n => format!("Being deleted: {n} servers still stopping"),
        }
    })
}

fn pause_text(group: &Group) -> &'static str {
    match (group.pause.scale_in, group.pause.scale_out) {
        (true, true) => "scale-in and scale-out",
        (true, false) => "scale-in",
        (false, true) => "scale-out",
        (false, false) => "no",
    }
}

/// The newest activity of group `id` in the journal: when, and what.
pub fn last_activity(journal: &Journal, id: &GroupId) -> Option<(i64, String)> {
    journal
        .read_stream_back(id.as_str(), u64::MAX)
        .filter_map(Result::ok)
        .find_map(|record| {
            let event = record
                .decode::<GroupEvent>(GroupEvent::SCHEMA)
                .ok()
                .filter(GroupEvent::is_activity)?;
            Some((record.timestamp_ms, headline(&event, &HashMap::new())))
        })
}

/// The groups page.
pub fn groups(
    session: &Session,
    rows: &[(Group, Option<(i64, String)>)],
    next: Option<&GroupId>,
    flash: Option<&Flash>,
) -> Markup {
    layout(
        "Groups",
        Some(session),
        flash,
        html! {
            h1 { "Groups" }
            @if rows.is_empty() {
                p { "No groups yet. Create one through the API (" code { "POST /v1/groups" } ")." }
            } @else {
                div.scroll tabindex="0" role="region" aria-label="Groups" {
                    table {
                        caption { "Each group's bounds, desired and current capacity, and last activity" }
                        thead { tr {
                            th scope="col" { "Group" }
                            th scope="col" { "Min" }
                            th scope="col" { "Desired" }
                            th scope="col" { "Max" }
                            th scope="col" { "Active" }
                            th scope="col" { "Pending" }
                            th scope="col" { "Paused" }
                            th scope="col" { "Last activity" }
                        } }
                        tbody {
                            @for (group, last) in rows {
                                tr {
                                    th scope="row" {
                                        a href={ "/console/groups/" (group.id) } { (group.name) }
                                        br; small.id { (group.id) }
                                        @if let Some(draining) = draining_text(group) {
                                            br; strong.draining { (draining) }
                                        }
                                    }
                                    td.num { (group.min_size) }
                                    td.num.desired { (group.desired_capacity) }
                                    td.num { (group.max_size) }
                                    td.num.active { (group.count(flotilla_actors::domain::server::ServerState::Active)) }
                                    td.num { (group.count(flotilla_actors::domain::server::ServerState::Pending)) }
                                    td { (pause_text(group)) }
                                    td {
                                        @if let Some((at, what)) = last { (what) br; small { (time(*at)) } }
                                        @else { "none" }
                                    }
                                }
                            }
                        }
                    }
                }
                @if let Some(next) = next {
                    nav.pages aria-label="Pages" { a href={ "/?cursor=" (next) } rel="next" { "Next page" } }
                }
            }
        },
    )
}

/// Everything a group's page shows, read once.
pub struct GroupPage {
    group: Group,
    range: (&'static str, i64),
    before: Option<u64>,
    history: History,
    policies: Vec<Policy>,
    schedules: Vec<crate::api::schedules::ScheduleView>,
    alarms: Vec<(
        flotilla_actors::domain::alarm::Alarm,
        Option<Vec<Option<f64>>>,
    )>,
    webhooks: Vec<flotilla_actors::domain::webhook::Webhook>,
    receivers: Vec<flotilla_actors::domain::receiver::Receiver>,
    names: HashMap<String, String>,
}

impl GroupPage {
    /// Reads group `group`'s page: its history over `range` up to `now` from the journal, and
    /// its policies, schedules, alarms, webhooks and receivers.
    pub async fn load(
        state: &AppState,
        group: Group,
        range: (&'static str, i64),
        before: Option<u64>,
        now: Timestamp,
    ) -> Result<GroupPage, flotilla_journal::Error> {
        let to_ms = now.as_millis();
        let history = read_history(
            state.supervisor.journal(),
            &group.id,
            to_ms - range.1,
            to_ms,
        )?;
        let mut page = GroupPage {
            group,
            range,
            before,
            history,
            policies: Vec::new(),
            schedules: Vec::new(),
            alarms: Vec::new(),
            webhooks: Vec::new(),
            receivers: Vec::new(),
            names: HashMap::new(),
        };
        let id = page.group.id.clone();
        for pid in state.index.policies_of(&id, None, 1000).items {
            if let Ok(policy) = resource::load::<Policies>(state, &pid).await {
                for wid in state.index.webhooks_of(&pid, None, 1000).items {
                    if let Ok(webhook) = resource::load::<Webhooks>(state, &wid).await {
                        page.webhooks.push(webhook);
                    }
                }
                page.policies.push(policy);
            }
        }
        for sid in state.index.schedules_of(&id, None, 1000).items {
            if let Ok(scheduled) = resource::load::<Schedules>(state, &sid).await {
                page.schedules
                    .push(crate::api::schedules::ScheduleView::of(&scheduled, now));
            }
        }
        for rid in state.index.receivers_of(&id, None, 1000).items {
            if let Ok(receiver) = resource::load::<Receivers>(state, &rid).await {
                page.receivers.push(receiver);
            }
        }
        let tenant = page.group.tenant_id.clone();
        for aid in state.index.alarms_of(&tenant, None, 1000).items {
            let of_group = state
                .index
                .owner(Kind::Alarm, aid.as_str())
                .is_some_and(|owner| owner.group == id);
            if !of_group {
                continue;
            }
            if let Ok(alarm) = resource::load::<Alarms>(state, &aid).await {
                let recent = state.evaluator.table().recent(&aid, now);
                page.alarms.push((alarm, recent));
            }
        }
        let mut names = HashMap::new();
        for policy in &page.policies {
            names.insert(policy.id.to_string(), policy.definition.name.clone());
        }
        for webhook in &page.webhooks {
            names.insert(webhook.id.to_string(), webhook.name.clone());
        }
        for (alarm, _) in &page.alarms {
            names.insert(alarm.id.to_string(), alarm.definition.name.clone());
        }
        for schedule in &page.schedules {
            names.insert(schedule.id.clone(), schedule.name.clone());
        }
        for receiver in &page.receivers {
            names.insert(receiver.id.to_string(), receiver.name.clone());
        }
        page.names = names;
        Ok(page)
    }

    /// The page, for `session`, with an action's outcome.
    pub fn render(&self, session: &Session, flash: Option<&Flash>) -> Markup {
        let group = &self.group;
        let base = format!("/console/groups/{}", group.id);
        let entries: Vec<&Entry> = self
            .history
            .entries
            .iter()
            .filter(|e| self.before.is_none_or(|before| e.record.version < before))
            .take(ENTRIES_PER_PAGE + 1)
            .collect();
        let older = (entries.len() > ENTRIES_PER_PAGE)
            .then(|| entries[ENTRIES_PER_PAGE - 1].record.version);
        let active = group.count(flotilla_actors::domain::server::ServerState::Active);
        let pending = group.count(flotilla_actors::domain::server::ServerState::Pending);
        let deleting = group.count(flotilla_actors::domain::server::ServerState::Deleting);
        layout(
            &group.name,
            Some(session),
            flash,
            html! {
                nav.crumbs aria-label="Breadcrumb" { a href="/" { "Groups" } " / " span { (group.name) } }
                h1 { (group.name) " " small.id { (group.id) } }
                @if let Some(draining) = draining_text(group) {
                    p.draining #draining role="status" { (draining) }
                }
                dl.facts {
                    div { dt { "Desired" } dd #desired { (group.desired_capacity) } }
                    div { dt { "Active" } dd #active { (active) } }
                    div { dt { "Pending" } dd { (pending) } }
                    div { dt { "Deleting" } dd #deleting { (deleting) } }
                    div { dt { "Min" } dd { (group.min_size) } }
                    div { dt { "Max" } dd { (group.max_size) } }
                    div { dt { "Paused" } dd #paused { (pause_text(group)) } }
                    div { dt { "Cooldown" } dd { (group.cooldown_seconds) " s" } }
                }

                section aria-labelledby="capacity-h" {
                    h2 #capacity-h { "Capacity" }
                    nav.ranges aria-label="Range" {
                        @for (name, _) in RANGES {
                            @if name == self.range.0 {
                                a href={ (base) "?range=" (name) } aria-current="page" { (name) }
                            } @else {
                                a href={ (base) "?range=" (name) } { (name) }
                            }
                        }
                    }
                    (super::plot::capacity(&self.history))
                }

                @if !group.draining {
                section aria-labelledby="actions-h" {
                    h2 #actions-h { "Actions" }
                    p.hint { "Each action is confirmed on the next page before it is done." }
                    div.actions {
                        form.card method="post" action={ (base) "/confirm" } {
                            input type="hidden" name="csrf" value=(session.csrf);
                            input type="hidden" name="action" value="pause";
                            fieldset {
                                legend { "Pause" }
                                label { input type="checkbox" name="scale_in" value="on"; " scale-in" }
                                label { input type="checkbox" name="scale_out" value="on"; " scale-out" }
                            }
                            button type="submit" #pause { "Pause…" }
                        }
                        form.card method="post" action={ (base) "/confirm" } {
                            input type="hidden" name="csrf" value=(session.csrf);
                            input type="hidden" name="action" value="resume";
                            p { "Resume both directions." }
                            button type="submit" #resume { "Resume…" }
                        }
                        form.card method="post" action={ (base) "/confirm" } {
                            input type="hidden" name="csrf" value=(session.csrf);
                            input type="hidden" name="action" value="desired";
                            label for="desired-input" { "Desired capacity (" (group.min_size) " to " (group.max_size) ")" }
                            input #desired-input type="number" name="desired" min=(group.min_size)
                                max=(group.max_size) value=(group.desired_capacity) required;
                            button type="submit" #set-desired { "Set…" }
                        }
                        @if !self.policies.is_empty() {
                            form.card method="post" action={ (base) "/confirm" } {
                                input type="hidden" name="csrf" value=(session.csrf);
                                input type="hidden" name="action" value="execute";
                                label for="policy-input" { "Execute a policy" }
                                select #policy-input name="policy" {
                                    @for policy in &self.policies {
                                        option value=(policy.id) { (policy.definition.name) }
                                    }
                                }
                                button type="submit" #execute { "Execute…" }
                            }
                        }
                    }
                }
                }

                section aria-labelledby="timeline-h" {
                    h2 #timeline-h { "Activity" }
                    @if entries.is_empty() {
                        p { "Nothing happened in this range." }
                    } @else {
                        ol.timeline {
                            @for entry in entries.iter().take(ENTRIES_PER_PAGE) {
                                (self.entry(entry))
                            }
                        }
                        @if let Some(older) = older {
                            nav.pages aria-label="Activity pages" {
                                a rel="next" href={ (base) "?range=" (self.range.0) "&before=" (older) } { "Older activity" }
                            }
                        }
                    }
                }

                (self.servers())
                (self.policies())
                (self.alarms())
                (self.schedules())
                (self.webhooks_and_receivers())
            },
        )
    }

    fn name(&self, id: &str) -> Markup {
        match self.names.get(id) {
            Some(name) => html! { (name) " " small.id { (id) } },
            None => html! { small.id { (id) } },
        }
    }

    fn entry(&self, entry: &Entry) -> Markup {
        let record = &entry.record;
        let shadow = matches!(
            &record.event,
            GroupEvent::PolicyExecuted {
                outcome: Outcome::Shadow { .. },
                ..
            }
        );
        html! {
            li.entry.shadow[shadow] {
                article aria-label=(headline(&record.event, &self.names)) {
                    header {
                        (time(record.at_ms)) " "
                        strong { (headline(&record.event, &self.names)) }
                        @if shadow { " " span.badge { "shadow: nothing changed" } }
                    }
                    (self.chain(entry))
                    p.seq { "journal seq " (record.seq) }
                }
            }
        }
    }

    /// The cause chain of a decision: what set it off, the policy and its arithmetic, the
    /// change, and the servers it launched or deleted.
    fn chain(&self, entry: &Entry) -> Markup {
        let event = &entry.record.event;
        html! {
            ol.chain {
                @match event {
                    GroupEvent::PolicyExecuted { policy_id, cause, outcome, computation, breach, step, .. } => {
                        li { span.label { "Cause" } (self.cause(cause)) }
                        li {
                            span.label { "Policy" } (self.name(policy_id.as_str()))
                            @if let Some(breach) = breach {
                                " — breach " (breach.metric_value) " against " (breach.breach_threshold)
                                @if let Some(step) = step { ", step " (step + 1) }
                            }
                        }
                        li {
                            span.label { "Arithmetic" }
                            "from " (computation.current) ", "
                            (adjustment(computation.adjustment.kind, computation.adjustment.value))
                            " → raw " (computation.raw)
                            @for constraint in &computation.constraints { ", " (constraint_text(constraint)) }
                            " → " (computation.result)
                        }
                        li { span.label { "Outcome" } (outcome_text(outcome)) }
                    }
                    GroupEvent::ScheduleRan { schedule_id, min_size, max_size, outcome, refused, .. } => {
                        li { span.label { "Cause" } "schedule " (self.name(schedule_id.as_str())) }
                        li { span.label { "Bounds" } (min_size) " to " (max_size) }
                        li { span.label { "Outcome" } (outcome_text(outcome))
                            @if let Some(refused) = refused { " — refused: " (refused) } }
                    }
                    GroupEvent::CapacityChanged { from, to, cause, .. } => {
                        li { span.label { "Cause" } (self.cause(cause)) }
                        li { span.label { "Capacity" } (from) " → " (to) }
                    }
                    GroupEvent::ServerFailed { server_id, reason, .. } => {
                        li { span.label { "Server" } (server_id) " failed: " (reason) }
                    }
                    GroupEvent::ServerDeleteFailed { server_id, reason, .. } => {
                        li { span.label { "Server" } (server_id) " " (reason) }
                    }
                    _ => {}
                }
                @if !entry.launched.is_empty() {
                    li { span.label { "Servers launched" } (entry.launched.join(", ")) }
                }
                @if !entry.deleted.is_empty() {
                    li { span.label { "Servers deleted" } (entry.deleted.join(", ")) }
                }
            }
        }
    }

    fn cause(&self, cause: &Cause) -> Markup {
        html! {
            @match cause {
                Cause::Direct => { "direct: the tenant, through the API or this console" }
                Cause::Webhook { webhook_id } => { "webhook " (self.name(webhook_id.as_str())) }
                Cause::Alarm { alarm_id, reason } => {
                    "datapoints: " (reason) " → alarm " (self.name(alarm_id.as_str())) " went to ALARM"
                }
                Cause::Schedule { schedule_id } => {
                    "schedule " @if let Some(id) = schedule_id { (self.name(id.as_str())) }
                }
                Cause::Alertmanager { receiver_id, alertname, .. } => {
                    "Alertmanager alert " (alertname) " through receiver " (self.name(receiver_id.as_str()))
                }
                Cause::TargetTracking => { "target tracking" }
                Cause::Bounds => { "the group's bounds changed" }
            }
        }
    }

    fn servers(&self) -> Markup {
        let group = &self.group;
        html! {
            section aria-labelledby="servers-h" {
                h2 #servers-h { "Servers" }
                @if group.servers.is_empty() { p { "No servers." } } @else {
                    div.scroll tabindex="0" role="region" aria-label="Servers" { table {
                        caption { "Servers, with their state and the provider's handle" }
                        thead { tr { th scope="col" { "Server" } th scope="col" { "State" } th scope="col" { "Provider handle" } } }
                        tbody {
                            @for (_, server) in group.servers.iter().take(SERVERS_SHOWN) {
                                tr {
                                    th scope="row" { small.id { (server.id) } }
                                    td { (format!("{:?}", server.state).to_lowercase()) }
                                    td { code { (server.provider.value()) } }
                                }
                            }
                        }
                    } }
                    @if group.servers.len() > SERVERS_SHOWN {
                        p { "And " (group.servers.len() - SERVERS_SHOWN) " more (" code { "GET /v1/groups/" (group.id) "/servers" } ")." }
                    }
                }
            }
        }
    }

    fn policies(&self) -> Markup {
        html! {
            section aria-labelledby="policies-h" {
                h2 #policies-h { "Policies" }
                @if self.policies.is_empty() { p { "No policies." } } @else {
                    div.scroll tabindex="0" role="region" aria-label="Policies" { table {
                        caption { "Scaling policies" }
                        thead { tr { th scope="col" { "Policy" } th scope="col" { "Type" } th scope="col" { "Mode" } th scope="col" { "Does" } } }
                        tbody {
                            @for policy in &self.policies {
                                @let d = &policy.definition;
                                tr {
                                    th scope="row" { (d.name) br; small.id { (policy.id) } }
                                    td { (match d.policy_type { PolicyType::Simple => "simple", PolicyType::Step => "step", PolicyType::TargetTracking => "target tracking" }) }
                                    td { (match d.mode { Mode::Live => "live", Mode::Shadow => "shadow" }) }
                                    td {
                                        @match d.policy_type {
                                            PolicyType::Simple => { (adjustment(d.adjustment_type, d.adjustment)) }
                                            PolicyType::Step => { (d.steps.len()) " steps" }
                                            PolicyType::TargetTracking => {
                                                @if let Some(t) = &d.tracking { "keep " (t.metric) " at " (t.target.target) }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    } }
                }
            }
        }
    }

    fn alarms(&self) -> Markup {
        html! {
            section aria-labelledby="alarms-h" {
                h2 #alarms-h { "Alarms" }
                @if self.alarms.is_empty() { p { "No alarms." } } @else {
                    ul.cards {
                        @for (alarm, recent) in &self.alarms {
                            @let d = &alarm.definition;
                            @let state = format!("{:?}", alarm.state);
                            li.card {
                                h3 { (d.name) " " small.id { (alarm.id) } }
                                p { span class={ "state " (state.to_lowercase()) } { (state_text(&state)) } " — " (alarm.state_reason) }
                                p { (d.metric) " " (format!("{:?}", d.comparison)) " " (d.threshold) }
                                @if let Some(points) = recent {
                                    (super::plot::datapoints(points, d.threshold, &d.name))
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    fn schedules(&self) -> Markup {
        html! {
            section aria-labelledby="schedules-h" {
                h2 #schedules-h { "Schedules" }
                @if self.schedules.is_empty() { p { "No scheduled actions." } } @else {
                    div.scroll tabindex="0" role="region" aria-label="Schedules" { table {
                        caption { "Scheduled actions and their next run" }
                        thead { tr { th scope="col" { "Action" } th scope="col" { "When" } th scope="col" { "Sets" } th scope="col" { "Next run" } } }
                        tbody {
                            @for s in &self.schedules {
                                tr {
                                    th scope="row" { (s.name) br; small.id { (s.id) } }
                                    td { @if let Some(r) = &s.recurrence { code { (r) } " (" (s.time_zone) ")" } @else if let Some(at) = &s.at { (at) } }
                                    td {
                                        @if let Some(v) = s.min_size { "min " (v) " " }
                                        @if let Some(v) = s.max_size { "max " (v) " " }
                                        @if let Some(v) = s.desired_capacity { "desired " (v) }
                                    }
                                    td { @if let Some(next) = &s.next_run { time datetime=(next) title={ (next) " UTC" } { (next) } } @else { "none left" } }
                                }
                            }
                        }
                    } }
                }
            }
        }
    }

    fn webhooks_and_receivers(&self) -> Markup {
        html! {
            section aria-labelledby="webhooks-h" {
                h2 #webhooks-h { "Webhooks" }
                @if self.webhooks.is_empty() { p { "No webhooks." } } @else {
                    div.scroll tabindex="0" role="region" aria-label="Webhooks" { table {
                        caption { "Webhooks (their secrets are never shown here)" }
                        thead { tr { th scope="col" { "Webhook" } th scope="col" { "Executes" } } }
                        tbody {
                            @for w in &self.webhooks {
                                tr { th scope="row" { (w.name) br; small.id { (w.id) } } td { (self.name(w.policy_id.as_str())) } }
                            }
                        }
                    } }
                }
            }
            section aria-labelledby="receivers-h" {
                h2 #receivers-h { "Alertmanager receivers" }
                @if self.receivers.is_empty() { p { "No receivers." } } @else {
                    div.scroll tabindex="0" role="region" aria-label="Receivers" { table {
                        caption { "Receivers and the policies they execute" }
                        thead { tr { th scope="col" { "Receiver" } th scope="col" { "Firing" } th scope="col" { "Resolved" } } }
                        tbody {
                            @for r in &self.receivers {
                                tr {
                                    th scope="row" { (r.name) br; small.id { (r.id) } }
                                    td { (self.name(r.firing.as_str())) }
                                    td { @if let Some(p) = &r.resolved { (self.name(p.as_str())) } @else { "none" } }
                                }
                            }
                        }
                    } }
                }
            }
        }
    }
}

/// Days back from a range's first day that a kept start is looked for; also how long one is
/// kept. A page shows 7 days at most.
const KEPT_DAYS: i64 = 8;

/// The name a group's start of day `day` is kept under, a snapshot of its stream: one of
/// `KEPT_DAYS + 1` slots, each day's start replacing the one that many days older, so a group
/// keeps at most that many. (A start names its day, which a load checks.)
fn day_start_name(day: i64) -> String {
    format!("console-day-{}", day.rem_euclid(KEPT_DAYS + 1))
}

/// Forgets the starts of days kept for group `id` (a deleted group's page is never shown
/// again). Only a cache: one that cannot be removed costs a few small values, and is said.
pub fn forget_day_starts(journal: &Journal, id: &GroupId) {
    let names: Vec<String> = (0..=KEPT_DAYS).map(day_start_name).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    if let Err(error) = journal.drop_named_snapshots(id.as_str(), &names) {
        tracing::warn!(group = %id, %error, "the starts of days kept for a deleted group could not be removed");
    }
}

/// The start of day `day` kept for group `id`, if one is and it still matches the journal.
/// Only a cache: one that cannot be read is as none, and the page folds from further back.
fn kept_start(journal: &Journal, id: &GroupId, day: i64) -> Option<history::DayStart> {
    let snapshot = match journal.load_named_snapshot(id.as_str(), &day_start_name(day)) {
        Ok(snapshot) => snapshot?,
        Err(error) => {
            tracing::warn!(group = %id, day, %error, "a kept start of day could not be read");
            return None;
        }
    };
    let start = serde_json::from_slice::<history::DayStart>(&snapshot.state).ok()?;
    (start.day == day && start.resume.version == snapshot.version).then_some(start)
}

/// Group `id`'s history over `[from_ms, to_ms]`, from its stream in the journal: folded from
/// the latest start of a day at or before the range that the console kept, else from the
/// stream's first record. The starts of the days that fold went into, up to [`KEPT_DAYS`]
/// before `to_ms`'s, are kept for the next pages (each once), so a page folds the records of
/// the days it shows, not of the group's whole life.
pub fn read_history(
    journal: &Journal,
    id: &GroupId,
    from_ms: i64,
    to_ms: i64,
) -> Result<History, flotilla_journal::Error> {
    let first_day = from_ms.div_euclid(history::DAY_MS);
    let kept = (first_day - KEPT_DAYS..=first_day)
        .rev()
        .filter_map(|day| kept_start(journal, id, day))
        .find(|start| start.resume.at_ms < from_ms);
    let since = kept.as_ref().map_or(1, |start| start.resume.version + 1);
    let mut records = Vec::new();
    for record in journal.read_stream(id.as_str(), since) {
        let record = record?;
        if let Ok(event) = record.decode::<GroupEvent>(GroupEvent::SCHEMA) {
            records.push(Recorded {
                seq: record.seq,
                version: record.version,
                at_ms: record.timestamp_ms,
                event,
            });
        }
    }
    let kept_day = kept.as_ref().map(|start| start.day);
    let last_day = to_ms.div_euclid(history::DAY_MS);
    let (history, days) = history::fold_from(
        kept.map(|start| start.resume),
        records,
        (from_ms, to_ms),
        last_day - KEPT_DAYS,
    );
    for start in days {
        // Written once: a start already kept (by an earlier view) is not written again.
        if kept_day.is_some_and(|kept| start.day <= kept)
            || kept_start(journal, id, start.day).is_some()
        {
            continue;
        }
        // Kept as a cache: a page that cannot keep one still shows, and folds more next time.
        let state = match serde_json::to_vec(&start) {
            Ok(state) => state,
            Err(error) => {
                tracing::warn!(group = %id, %error, "a start of day could not be encoded");
                continue;
            }
        };
        if let Err(error) = journal.save_named_snapshot(
            id.as_str(),
            &day_start_name(start.day),
            start.resume.version,
            &state,
            &[],
        ) {
            tracing::warn!(group = %id, %error, "a start of day could not be kept");
        }
    }
    Ok(history)
}

/// An alarm's state in words, with a shape for the eye (not read aloud).
fn state_text(state: &str) -> Markup {
    let (shape, words) = match state {
        "Alarm" => ("▲", "ALARM"),
        "Ok" => ("●", "OK"),
        _ => ("?", "INSUFFICIENT DATA"),
    };
    html! { span aria-hidden="true" { (shape) } " " (words) }
}

fn adjustment(kind: AdjustmentType, value: i64) -> String {
    match kind {
        AdjustmentType::Change => format!("change by {value:+}"),
        AdjustmentType::Exact => format!("set to {value}"),
        AdjustmentType::Percent => format!("change by {value:+}%"),
    }
}

fn constraint_text(constraint: &Constraint) -> String {
    match constraint {
        Constraint::RoundedToOne { delta } => format!("rounded to {delta:+}"),
        Constraint::MinStep { step, delta_before } => {
            format!("raised from {delta_before:+} to the minimum step {step}")
        }
        Constraint::WarmingUp {
            warming,
            delta_before,
        } => format!("{warming} warming up, from {delta_before:+}"),
        Constraint::ClampedToMin { min_size } => format!("clamped to min {min_size}"),
        Constraint::ClampedToMax { max_size } => format!("clamped to max {max_size}"),
    }
}

fn outcome_text(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Executed { from, to, .. } => format!("executed: {from} → {to}"),
        Outcome::NoChange { capacity } => format!("no change: stays {capacity}"),
        Outcome::Cooldown {
            retry_after_seconds,
        } => format!("cooling down: not executed ({retry_after_seconds} s left)"),
        Outcome::Paused => "paused: not executed".to_owned(),
        Outcome::Shadow { from, to, .. } => {
            format!("shadow: would have gone {from} → {to}; nothing changed")
        }
    }
}

/// One line saying what a decision was.
pub fn headline(event: &GroupEvent, names: &HashMap<String, String>) -> String {
    let name = |id: &str| names.get(id).cloned().unwrap_or_else(|| id.to_owned());
    match event {
        GroupEvent::PolicyExecuted {
            policy_id,
            outcome,
            cause,
            ..
        } => {
            let by = match cause {
                Cause::Webhook { webhook_id } => {
                    format!(" by webhook {}", name(webhook_id.as_str()))
                }
                Cause::Alarm { alarm_id, .. } => format!(" by alarm {}", name(alarm_id.as_str())),
                Cause::Alertmanager { alertname, .. } => format!(" by alert {alertname}"),
                Cause::Schedule { .. } => " by a schedule".to_owned(),
                Cause::Direct => " directly".to_owned(),
                Cause::TargetTracking => " by target tracking".to_owned(),
                Cause::Bounds => String::new(),
            };
            format!(
                "Policy {} executed{by}: {}",
                name(policy_id.as_str()),
                outcome_text(outcome)
            )
        }
        GroupEvent::ScheduleRan {
            schedule_id,
            outcome,
            ..
        } => format!(
            "Schedule {} ran: {}",
            name(schedule_id.as_str()),
            outcome_text(outcome)
        ),
        GroupEvent::CapacityChanged {
            from, to, cause, ..
        } => match cause {
            Cause::Bounds => format!("Capacity {from} → {to} to fit new bounds"),
            _ => format!("Desired capacity set directly: {from} → {to}"),
        },
        GroupEvent::Created {
            desired_capacity, ..
        } => format!("Created with desired capacity {desired_capacity}"),
        GroupEvent::Updated {
            min_size, max_size, ..
        } => format!("Configuration changed: bounds {min_size} to {max_size}"),
        GroupEvent::Paused {
            scale_in,
            scale_out,
            ..
        } => match (scale_in, scale_out) {
            (true, true) => "Paused scale-in and scale-out".to_owned(),
            (true, false) => "Paused scale-in".to_owned(),
            (false, true) => "Paused scale-out".to_owned(),
            (false, false) => "Paused nothing".to_owned(),
        },
        GroupEvent::Resumed { .. } => "Resumed".to_owned(),
        GroupEvent::Deleted { .. } => "Deleted".to_owned(),
        GroupEvent::Draining { .. } => "Draining: its servers are being deleted".to_owned(),
        GroupEvent::ServerLaunchRequested {
            server_id,
            replacement,
            ..
        } => {
            if *replacement {
                format!("Server {server_id} launched to replace a failed one")
            } else {
                format!("Server {server_id} launched")
            }
        }
        GroupEvent::ServerLaunched { server_id, .. } => format!("Server {server_id} started"),
        GroupEvent::ServerActive { server_id, .. } => format!("Server {server_id} is running"),
        GroupEvent::ServerFailed { server_id, .. } => format!("Server {server_id} failed"),
        GroupEvent::ServerDeleteRequested { server_id, .. } => {
            format!("Server {server_id} to be deleted")
        }
        GroupEvent::ServerDeleted { server_id, .. } => format!("Server {server_id} deleted"),
        GroupEvent::ServerDeleteFailed { server_id, .. } => {
            format!("Server {server_id} could not be deleted")
        }
        GroupEvent::MetricsTokenRotated { .. } => "Metrics token replaced".to_owned(),
    }
}

/// The page confirming `action` on `group`.
pub fn confirm(
    session: &Session,
    group: &Group,
    action: &Action,
    policy: Option<&Policy>,
) -> Markup {
    let base = format!("/console/groups/{}", group.id);
    let what = match action {
        Action::Pause(pause) => format!(
            "Pause {} of {}: executions in that direction will do nothing until resumed.",
            match (pause.scale_in, pause.scale_out) {
                (true, true) => "scale-in and scale-out",
                (true, false) => "scale-in",
                _ => "scale-out",
            },
            group.name
        ),
        Action::Resume => format!(
            "Resume {}: policies execute in both directions.",
            group.name
        ),
        Action::Desired(to) => format!(
            "Set the desired capacity of {} from {} to {to} (no cooldown is started or honoured).",
            group.name, group.desired_capacity
        ),
        Action::Execute(_) => format!(
            "Execute policy {} on {} now, as if its alarm or webhook had fired.",
            policy.map_or("?", |p| p.definition.name.as_str()),
            group.name
        ),
    };
    layout(
        "Confirm",
        Some(session),
        None,
        html! {
            h1 { "Confirm" }
            p #confirm-what { (what) }
            form.card method="post" action={ (base) "/act" } {
                input type="hidden" name="csrf" value=(session.csrf);
                @match action {
                    Action::Pause(pause) => {
                        input type="hidden" name="action" value="pause";
                        @if pause.scale_in { input type="hidden" name="scale_in" value="on"; }
                        @if pause.scale_out { input type="hidden" name="scale_out" value="on"; }
                    }
                    Action::Resume => { input type="hidden" name="action" value="resume"; }
                    Action::Desired(to) => {
                        input type="hidden" name="action" value="desired";
                        input type="hidden" name="desired" value=(to);
                    }
                    Action::Execute(pid) => {
                        input type="hidden" name="action" value="execute";
                        input type="hidden" name="policy" value=(pid);
                    }
                }
                button type="submit" #confirm autofocus aria-describedby="confirm-what" { "Confirm" }
                " "
                a href=(base) { "Cancel" }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_actors::aggregate::Groups;
    use flotilla_actors::clock::Timestamp;
    use flotilla_actors::domain::Cause;
    use flotilla_journal::ExpectedVersion;
    use history::DAY_MS;

    /// A day well after the epoch, so that the days before it are too.
    const DAY0: i64 = 20_000;

    fn at(day: i64, hour: i64) -> Timestamp {
        Timestamp::from_millis((DAY0 + day) * DAY_MS + hour * 3_600_000)
    }

    fn append(journal: &Journal, events: &[(Timestamp, GroupEvent)]) {
        for (when, event) in events {
            let records =
                flotilla_actors::store::records::<Groups>(std::slice::from_ref(event), *when)
                    .unwrap();
            journal
                .append("grp_1", ExpectedVersion::Any, records)
                .unwrap();
        }
    }

    fn change(when: Timestamp, from: u32, to: u32) -> (Timestamp, GroupEvent) {
        let event = GroupEvent::CapacityChanged {
            from,
            to,
            cause: Cause::Direct,
            at: when,
        };
        (when, event)
    }

    /// Group grp_1 made on day 0 at 01:00 with `desired`.
    fn created(desired: u32) -> GroupEvent {
        history::tests::created(at(0, 1).as_millis(), desired)
    }

    fn desired_at_start(history: &History) -> u32 {
        history.points[0].desired
    }

    #[test]
    fn a_page_keeps_the_starts_of_the_days_it_folds_and_the_next_folds_from_them() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        let id = GroupId::new("grp_1");
        let created = created(1);
        append(
            &journal,
            &[
                (at(0, 1), created),
                change(at(1, 2), 1, 2),
                change(at(2, 3), 2, 3),
                change(at(3, 1), 3, 4),
            ],
        );
        let day = |n: i64| (DAY0 + n) * DAY_MS;
        let (from, to) = (day(3), day(3) + 2 * 3_600_000);
        let first = read_history(&journal, &id, from, to).unwrap();
        assert_eq!(desired_at_start(&first), 3);
        assert_eq!(first.points.last().unwrap().desired, 4);

        // The start of each day the fold crossed is kept, as the state after the day before.
        let kept = |n: i64| kept_start(&journal, &id, DAY0 + n);
        let starts: Vec<(i64, u64, u32)> = (1..=3)
            .map(|n| {
                let start = kept(n).unwrap();
                let desired = start.resume.state.as_ref().unwrap().desired_capacity;
                (start.day - DAY0, start.resume.version, desired)
            })
            .collect();
        assert_eq!(starts, [(1, 1, 1), (2, 2, 2), (3, 3, 3)]);
        assert!(kept(0).is_none() && kept(4).is_none());

        // The next page folds from the start it finds, not from the stream's first record: a
        // start kept with another capacity shows.
        let mut altered = kept(3).unwrap();
        altered.resume.state.as_mut().unwrap().desired_capacity = 9;
        journal
            .save_named_snapshot(
                "grp_1",
                &day_start_name(DAY0 + 3),
                3,
                &serde_json::to_vec(&altered).unwrap(),
                &[],
            )
            .unwrap();
        assert_eq!(
            desired_at_start(&read_history(&journal, &id, from, to).unwrap()),
            9
        );
        // A range starting the day before folds from that day's start, and shows the truth.
        let earlier = read_history(&journal, &id, day(2), to).unwrap();
        assert_eq!(desired_at_start(&earlier), 2);

        // A start kept under another day's name is not trusted.
        journal
            .save_named_snapshot(
                "grp_1",
                &day_start_name(DAY0 + 3),
                2,
                &serde_json::to_vec(&kept(2).unwrap()).unwrap(),
                &[],
            )
            .unwrap();
        assert_eq!(
            desired_at_start(&read_history(&journal, &id, from, to).unwrap()),
            3
        );

        // A deleted group's starts are all forgotten.
        forget_day_starts(&journal, &id);
        for slot in 0..=KEPT_DAYS {
            let name = day_start_name(slot);
            assert_eq!(journal.load_named_snapshot("grp_1", &name).unwrap(), None);
        }
    }

    #[test]
    fn a_quiet_group_keeps_the_start_of_the_day_shown() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        let id = GroupId::new("grp_1");
        let created = created(2);
        append(&journal, &[(at(0, 1), created), change(at(0, 2), 2, 3)]);
        // Nothing happened since day 0: no record goes into days 1 to 5, yet their starts are
        // kept, the same state each.
        let day = |n: i64| (DAY0 + n) * DAY_MS;
        let history = read_history(&journal, &id, day(5), day(5) + 3_600_000).unwrap();
        assert_eq!(desired_at_start(&history), 3);
        let kept: Vec<(i64, u64)> = (0..=6)
            .filter_map(|n| kept_start(&journal, &id, DAY0 + n))
            .map(|start| (start.day - DAY0, start.resume.version))
            .collect();
        assert_eq!(kept, [(1, 2), (2, 2), (3, 2), (4, 2), (5, 2)]);
        // The next day's page folds from yesterday's start, and keeps today's.
        let history = read_history(&journal, &id, day(5) + 1, day(6) + 1).unwrap();
        assert_eq!(desired_at_start(&history), 3);
        assert!(kept_start(&journal, &id, DAY0 + 6).is_some());
        // At most one start a slot: day 6's replaced nothing, day 10's replaces day 1's.
        read_history(&journal, &id, day(10), day(10) + 1).unwrap();
        assert!(kept_start(&journal, &id, DAY0 + 1).is_none());
        assert!(kept_start(&journal, &id, DAY0 + 10).is_some());
    }
}
