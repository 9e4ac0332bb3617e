//! The owner's work under a lease (SPEC 9), on a real PostgreSQL (see
//! `flotilla_journal::testing`): commands `Aggregate::leased_by` names are refused on a node
//! that does not hold the group's shard, and carry its fencing token, which the journal refuses
//! once the lease has passed on; what callers ask through the API is decided by any node.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use flotilla_actors::aggregate::Groups;
use flotilla_actors::clock::{ManualClock, Timestamp};
use flotilla_actors::domain::group::{GroupCommand, NewGroup};
use flotilla_actors::domain::server::LaunchRequest;
use flotilla_actors::domain::{GroupId, TenantId};
use flotilla_actors::error::Error;
use flotilla_actors::supervisor::{Config, Fencing, Supervisor};
use flotilla_journal::{testing, Fence, Journal};

/// What the test says this node holds: see [`Fencing`].
type Holding = Arc<Mutex<Option<Option<Fence>>>>;

fn launch(n: usize) -> GroupCommand {
    GroupCommand::LaunchServers(vec![LaunchRequest {
        server_id: format!("srv_{n}"),
        metrics_token_hash: String::new(),
    }])
}

#[actix::test]
async fn the_owners_work_needs_the_lease_and_is_refused_once_it_passed_on() {
    let Some(url) = testing::fresh_database("the_owners_work_needs_the_lease") else {
        return;
    };
    let journal = Journal::connect(&url, flotilla_journal::Config::default()).unwrap();
    let holding: Holding = Arc::new(Mutex::new(Some(None)));
    let fencing = {
        let holding = holding.clone();
        Fencing(Arc::new(move |_group: &str, _now: Timestamp| {
            holding.lock().unwrap().clone()
        }))
    };
    let clock = ManualClock::new(Timestamp::from_millis(1_795_564_800_000));
    let config = Config {
        fencing: Some(fencing),
        ..Config::default()
    };
    let supervisor = Supervisor::start(journal.clone(), Arc::new(clock), config);
    let group = GroupId::generate();
    let created = GroupCommand::Create(NewGroup {
        id: group.clone(),
        tenant_id: TenantId::new("ten_test"),
        name: "web".into(),
        min_size: 0,
        max_size: 10,
        desired_capacity: Some(5),
        cooldown_seconds: Some(0),
        launch: serde_json::json!({"provider": "simulated"}),
        metadata: None,
        metrics_token_hash: String::new(),
    });
    supervisor
        .execute::<Groups>(group.as_str(), created)
        .await
        .unwrap();

    // Given node-a holds the shard with token 1, its launches go through.
    let ttl = Duration::from_secs(600);
    let lease = journal
        .acquire_lease("shard-01", "node-a", ttl)
        .unwrap()
        .unwrap();
    *holding.lock().unwrap() = Some(Some(Fence {
        lease: lease.name.clone(),
        holder: "node-a".into(),
        token: lease.token,
    }));
    supervisor
        .execute::<Groups>(group.as_str(), launch(1))
        .await
        .unwrap();
    let version = journal.stream_version(group.as_str()).unwrap();

    // When node-x takes the shard over (the lease expired on the database's clock) while
    // node-a still believes it holds it, node-a's next launch is refused by the journal, and
    // nothing of it is written.
    testing::execute(
        &url,
        "UPDATE flotilla_leases SET expires_at = clock_timestamp() - interval '1 second'",
    )
    .unwrap();
    let taken = journal
        .acquire_lease("shard-01", "node-x", ttl)
        .unwrap()
        .unwrap();
    assert_eq!(taken.token, 2);
    let refused = supervisor
        .execute::<Groups>(group.as_str(), launch(2))
        .await;
    assert!(
        matches!(
            &refused,
            Err(Error::Journal(flotilla_journal::Error::Fenced {
                token: 1,
                ..
            }))
        ),
        "{refused:?}"
    );
    assert_eq!(journal.stream_version(group.as_str()).unwrap(), version);
    assert_eq!(refused.unwrap_err().status(), 503);

    // Once node-a knows it has lost the shard, it does not even try.
    *holding.lock().unwrap() = None;
    let not_owner = supervisor
        .execute::<Groups>(group.as_str(), launch(3))
        .await;
    assert!(
        matches!(&not_owner, Err(Error::NotOwner(g)) if g == group.as_str()),
        "{not_owner:?}"
    );
    assert_eq!(journal.stream_version(group.as_str()).unwrap(), version);

    // A caller's request is any node's to decide: it is not the owner's work.
    let set = GroupCommand::SetDesired {
        desired_capacity: 3,
    };
    supervisor
        .execute::<Groups>(group.as_str(), set)
        .await
        .unwrap();
    assert_eq!(journal.stream_version(group.as_str()).unwrap(), version + 1);
}
