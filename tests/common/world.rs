//! The service's parts below HTTP: the journal on disk, the actors, and the live projector the
//! journal tells every append, started as the service starts them; and a restart, which drops
//! them all (as a crash would, past what was acknowledged) and starts them again on the same
//! directory.

use std::sync::Arc;

use flotilla::alarms::AlarmTable;
use flotilla::projector::Projector;
use flotilla_actors::aggregate::{Aggregate, Groups};
use flotilla_actors::clock::ManualClock;
use flotilla_actors::domain::group::{GroupCommand, NewGroup};
use flotilla_actors::domain::policy::{PolicyCommand, PolicyDefinition};
use flotilla_actors::domain::scaling::AdjustmentType;
use flotilla_actors::domain::{GroupId, PolicyId, TenantId};
use flotilla_actors::supervisor::{Config, Supervisor};
use flotilla_journal::Journal;

/// The service's parts that matter here: the journal, the actors, and the live projector.
pub struct World {
    pub dir: tempfile::TempDir,
    pub clock: ManualClock,
    pub system: actix::SystemRunner,
    supervisor: Option<Supervisor>,
    pub projector: Arc<Projector>,
}

impl World {
    /// Opens the journal in `dir`, restores the projector from its checkpoint, catches it up
    /// and has the journal tell it every append, as the service's start does.
    pub fn open(dir: tempfile::TempDir, clock: ManualClock) -> World {
        let journal = Journal::open(dir.path()).unwrap();
        let projector = Arc::new(Projector::new(
            Arc::default(),
            Arc::new(AlarmTable::default()),
        ));
        projector.restore(&journal).unwrap();
        let head = journal.head().unwrap();
        projector.replay(&journal, head.seq, 2).unwrap();
        projector.checkpoint(&journal, head).unwrap();
        let live = projector.clone();
        journal
            .follow(head.seq, move |records| live.take_live(records))
            .unwrap();
        let system = actix::System::new();
        let supervisor = system.block_on(async {
            Supervisor::start(journal, Arc::new(clock.clone()), Config::default())
        });
        World {
            dir,
            clock,
            system,
            supervisor: Some(supervisor),
            projector,
        }
    }

    pub fn supervisor(&self) -> &Supervisor {
        self.supervisor.as_ref().unwrap()
    }

    pub fn journal(&self) -> &Journal {
        self.supervisor().journal()
    }

    pub fn restart(mut self, checkpoint: bool) -> World {
        if checkpoint {
            self.projector.checkpoint_live(self.journal(), 0).unwrap();
        }
        // The last handle on the supervisor stops its arbiters and lets the journal go.
        drop(self.supervisor.take());
        let World { dir, clock, .. } = self;
        World::open(dir, clock)
    }

    /// Runs `command` against `id`; a refusal is an answer like any other here.
    pub fn run<A: Aggregate>(&self, id: &str, command: A::Command) -> bool {
        let supervisor = self.supervisor().clone();
        let id = id.to_owned();
        self.system
            .block_on(async move { supervisor.execute::<A>(&id, command).await })
            .is_ok()
    }

    pub fn group_servers(&self, id: &GroupId) -> Vec<String> {
        let supervisor = self.supervisor().clone();
        let id = id.clone();
        self.system.block_on(async move {
            supervisor
                .get::<Groups>(id.as_str())
                .await
                .unwrap()
                .state
                .map(|g| g.servers.keys().map(ToString::to_string).collect())
                .unwrap_or_default()
        })
    }
}

/// The creation of group `id` of `tenant`: 0 to 10 servers, no cooldown, simulated.
pub fn new_group(id: &GroupId, tenant: &TenantId, metrics_token_hash: String) -> GroupCommand {
    GroupCommand::Create(NewGroup {
        id: id.clone(),
        tenant_id: tenant.clone(),
        name: "web".into(),
        min_size: 0,
        max_size: 10,
        desired_capacity: None,
        cooldown_seconds: Some(0),
        launch: serde_json::json!({"provider": "simulated"}),
        metadata: None,
        metrics_token_hash,
    })
}

/// The creation of policy `id` (+1, no cooldown) of `tenant`'s group `group`.
pub fn new_policy(id: &PolicyId, group: &GroupId, tenant: &TenantId) -> PolicyCommand {
    PolicyCommand::Create {
        id: id.clone(),
        group_id: group.clone(),
        tenant_id: tenant.clone(),
        definition: PolicyDefinition {
            cooldown_seconds: Some(0),
            ..PolicyDefinition::simple("up", AdjustmentType::Change, 1)
        },
    }
}
