//! The projector: the one place the service's read models are fed. It takes the journal's
//! records in sequence order and hands each to the read models that want it:
//!
//! - the [`Index`] (owners, tokens, lists), and the [`AlarmTable`] (definitions and states):
//!   what a checkpoint holds, built the same by anyone who follows the same journal;
//! - the converger's [`Quiet`] set (a group whose stream grows is converged again) and the
//!   count of events by type in `/metrics`: what this process does with the records it sees
//!   live, from its start on.
//!
//! At start the projector is restored from the last checkpoint and catches up on the records
//! after it ([`Projector::replay`]); then the journal tells it every append once durable and
//! before the appender hears of it ([`flotilla_journal::Journal::follow`]), so a handler reads
//! its own writes. No handler, actor or loop updates a read model itself.
//!
//! A checkpoint is the projector's read models at an exact sequence number. The service keeps
//! one close to the head by saving its live read models between two of the follower's batches
//! ([`Projector::checkpoint_live`]). It used to build a second projector from the last
//! checkpoint and the journal after it instead: that read every record since back through
//! sled, whose cache then held the pages it read far beyond its budget (sled counts a page only
//! once 64 accesses have gathered in its shard of 256: 89 MB with 100k servers).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use flotilla_actors::clock::Timestamp;
use flotilla_actors::domain::alarm::AlarmEvent;
use flotilla_actors::domain::policy::{Policy, PolicyEvent};
use flotilla_actors::domain::scheduled::{Scheduled, ScheduledEvent};
use flotilla_actors::domain::{AlarmId, DomainEvent, GroupId, Kind, PolicyId, ScheduleId};
use flotilla_journal::{Head, Journal, Record};

use crate::alarms::{AlarmTable, SavedAlarm};
use crate::converger::Quiet;
use crate::index::{self, Index};
use crate::schedules::ScheduleTable;
use crate::telemetry::EventCounts;

/// The name of the service's checkpoint in the journal.
pub const CHECKPOINT: &str = "service";

/// What a checkpoint holds: the index, the alarms and the target-tracking policies, as of its
/// head.
#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Checkpoint {
    /// The index.
    pub index: index::Saved,
    /// The alarms, in id order.
    pub alarms: Vec<SavedAlarm>,
    /// The target-tracking policies, in id order. Required: a checkpoint from before them does
    /// not decode, and the read models are rebuilt from the journal.
    pub tracking: Vec<Policy>,
    /// The scheduled actions, in id order.
    pub schedules: Vec<Scheduled>,
}

/// The read models as copied for a checkpoint, with the follower stopped: each part as it is
/// held, in no order.
struct Copied {
    index: index::Copied,
    alarms: Vec<SavedAlarm>,
    tracking: Vec<Policy>,
    schedules: Vec<Scheduled>,
}

impl Copied {
    /// The copy as a checkpoint keeps it, every part in id order. The live checkpoint sorts once
    /// it has let go of the follower, so the journal's writer does not wait for this.
    fn sorted(self) -> Checkpoint {
        let mut saved = Checkpoint {
            index: self.index.sorted(),
            alarms: self.alarms,
            tracking: self.tracking,
            schedules: self.schedules,
        };
        saved.alarms.sort_by(|a, b| a.id.cmp(&b.id));
        saved.tracking.sort_by(|a, b| a.id.cmp(&b.id));
        saved.schedules.sort_by(|a, b| a.id.cmp(&b.id));
        saved
    }
}

/// Feeds the read models from the journal's records, in sequence order.
pub struct Projector {
    index: Arc<Index>,
    alarms: Arc<AlarmTable>,
    schedules: Arc<ScheduleTable>,
    live: Option<Live>,
    /// The last sequence number taken in.
    seq: AtomicU64,
    /// The head of the last record taken in, once known (from a checkpoint saved at the head,
    /// or a record told live). Held while the follower takes in a batch, and while a live
    /// checkpoint copies the read models, so that the copy is of one sequence number.
    taken: Mutex<Option<Head>>,
}

/// The read models only a live process keeps.
struct Live {
    quiet: Arc<Quiet>,
    events: Arc<EventCounts>,
}

impl Projector {
    /// A projector feeding `index` and `alarms` (both empty) and a schedule table of its own,
    /// at sequence number 0.
    pub fn new(index: Arc<Index>, alarms: Arc<AlarmTable>) -> Projector {
        Projector {
            index,
            alarms,
            schedules: Arc::default(),
            live: None,
            seq: AtomicU64::new(0),
            taken: Mutex::new(None),
        }
    }

    fn taken(&self) -> std::sync::MutexGuard<'_, Option<Head>> {
        self.taken
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The projector, also feeding what the service does with the records it sees live.
    pub fn live(mut self, quiet: Arc<Quiet>, events: Arc<EventCounts>) -> Projector {
        self.live = Some(Live { quiet, events });
        self
    }

    /// The index it feeds.
    pub fn index(&self) -> &Arc<Index> {
        &self.index
    }

    /// The alarm table it feeds.
    pub fn alarms(&self) -> &Arc<AlarmTable> {
        &self.alarms
    }

    /// The schedule table it feeds.
    pub fn schedules(&self) -> &Arc<ScheduleTable> {
        &self.schedules
    }

    /// The last sequence number taken in.
    pub fn seq(&self) -> u64 {
        self.seq.load(Ordering::Acquire)
    }

    /// Whether `record` can change a checkpointed read model (a replay decodes only those).
    pub fn wants(record: &Record) -> bool {
        Index::wants(record)
            || matches!(
                Kind::of(&record.stream),
                Some(Kind::Alarm | Kind::Policy | Kind::Schedule)
            )
            || (Kind::of(&record.stream) == Some(Kind::Group) && record.event_type == "deleted")
    }

    /// Takes in one record into the checkpointed read models.
    fn take(&self, record: &Record) -> anyhow::Result<()> {
        self.index.take(record)?;
        if Kind::of(&record.stream) == Some(Kind::Alarm) {
            let event: AlarmEvent = record.decode(AlarmEvent::SCHEMA)?;
            let at = Timestamp::from_millis(record.timestamp_ms);
            self.alarms
                .feed(AlarmId::new(record.stream.as_str()), event, at);
        }
        if Kind::of(&record.stream) == Some(Kind::Policy) {
            let event: PolicyEvent = record.decode(PolicyEvent::SCHEMA)?;
            let at = Timestamp::from_millis(record.timestamp_ms);
            self.alarms
                .feed_policy(PolicyId::new(record.stream.as_str()), event, at);
        }
        if Kind::of(&record.stream) == Some(Kind::Group) && record.event_type == "deleted" {
            // A deleted group's policies and schedules act no more.
            let group = GroupId::new(record.stream.as_str());
            self.alarms.forget_group(group.clone());
            self.schedules.forget_group(&group);
        }
        if Kind::of(&record.stream) == Some(Kind::Schedule) {
            let event: ScheduledEvent = record.decode(ScheduledEvent::SCHEMA)?;
            self.schedules
                .feed(ScheduleId::new(record.stream.as_str()), &event);
        }
        Ok(())
    }

    /// Takes in records told by the journal as they become durable (the follower of
    /// [`Journal::follow`]): every read model, live ones included. A record that cannot be
    /// taken in (it does not decode) fails it, as it fails a replay: the journal then refuses
    /// appends, since the read models no longer follow it.
    pub fn take_live(&self, records: &[Record]) -> Result<(), String> {
        let mut taken = self.taken();
        for record in records {
            // Unknown while a record is being taken in: if it fails part-way (an error, or a
            // panic, which the journal catches), no checkpoint is saved from read models
            // holding part of it.
            *taken = None;
            if let Err(error) = self.take(record) {
                return Err(format!(
                    "record {} cannot be projected: {error}",
                    record.seq
                ));
            }
            if let Some(live) = &self.live {
                live.events.count(&record.event_type);
                if Kind::of(&record.stream) == Some(Kind::Group) {
                    live.quiet.changed(&record.stream);
                    self.alarms.group_changed(&record.stream);
                }
            }
            self.seq.store(record.seq, Ordering::Release);
            *taken = Some(Head {
                seq: record.seq,
                hash: record.hash,
            });
        }
        Ok(())
    }

    /// Takes in the records after the last one taken in, up to `to`, reading and decoding on
    /// `workers` threads. Answers how many records were read.
    pub fn replay(&self, journal: &Journal, to: u64, workers: usize) -> anyhow::Result<u64> {
        let from = self.seq() + 1;
        if to < from {
            return Ok(0);
        }
        let read = journal.scan(from, to, workers, Self::wants, |record| self.take(&record))?;
        self.seq.store(to.max(self.seq()), Ordering::Release);
        Ok(read)
    }

    /// The checkpointed read models as they stand, copied with the follower stopped, as a
    /// checkpoint copies them.
    pub fn save(&self) -> Checkpoint {
        let (copied, taken) = self.copy();
        drop(taken);
        copied.sorted()
    }

    /// Restores the last checkpoint of `journal`, if there is one that still matches it and
    /// decodes (into empty read models). Answers the sequence number it is at.
    pub fn restore(&self, journal: &Journal) -> anyhow::Result<u64> {
        let Some((head, bytes)) = journal.load_checkpoint(CHECKPOINT)? else {
            return Ok(0);
        };
        match serde_json::from_slice::<Checkpoint>(&bytes) {
            Ok(checkpoint) => {
                self.index.restore(checkpoint.index);
                self.alarms.restore(checkpoint.alarms);
                self.alarms.restore_policies(checkpoint.tracking);
                self.schedules.restore(checkpoint.schedules);
                self.seq.store(head.seq, Ordering::Release);
                Ok(head.seq)
            }
            Err(error) => {
                tracing::warn!(%error, "ignoring a checkpoint that does not decode");
                Ok(0)
            }
        }
    }

    /// Saves the read models as the checkpoint at `head`, which must be where they are.
    pub fn checkpoint(&self, journal: &Journal, head: Head) -> anyhow::Result<()> {
        let (copied, mut taken) = self.copy();
        anyhow::ensure!(
            head.seq == self.seq(),
            "the read models are at {}, not at {}",
            self.seq(),
            head.seq
        );
        save_as_checkpoint(journal, head, copied)?;
        *taken = Some(head);
        Ok(())
    }

    /// A copy of the read models, made with the follower stopped: answered with the lock that
    /// stops it. The alarm table is held first, as an alarm tick's pass holds it, so the
    /// follower is stopped only once any pass under way is done; every caller takes the two in
    /// this order. The copy is unsorted: sorting it is left until the lock is let go of.
    fn copy(&self) -> (Copied, std::sync::MutexGuard<'_, Option<Head>>) {
        let alarms = self.alarms.hold();
        let taken = self.taken();
        let (alarms, tracking) = alarms.copy();
        let copied = Copied {
            index: self.index.copy(),
            alarms,
            tracking,
            schedules: self.schedules.copy(),
        };
        (copied, taken)
    }

    /// Saves the live read models as the checkpoint at the last record they took in, if that
    /// is past `after` (the last checkpoint's sequence number); answers its head if it did.
    /// The follower, and with it the journal's writer, waits while the read models are copied
    /// (not while the copy is sorted, encoded and written, nor for an alarm tick's pass, which
    /// the copy waits out first). A projector that has not reached its start's head saves
    /// nothing.
    pub fn checkpoint_live(&self, journal: &Journal, after: u64) -> anyhow::Result<Option<Head>> {
        if self.taken().is_none_or(|head| head.seq <= after) {
            return Ok(None);
        }
        let started = std::time::Instant::now();
        let (copied, taken) = self.copy();
        let Some(head) = *taken else {
            return Ok(None);
        };
        drop(taken);
        let copied_ms = started.elapsed().as_millis() as u64;
        save_as_checkpoint(journal, head, copied)?;
        tracing::debug!(
            seq = head.seq,
            copied_ms,
            saved_ms = started.elapsed().as_millis() as u64 - copied_ms,
            "read models copied and saved as a checkpoint"
        );
        Ok(Some(head))
    }
}

/// Sorts `copied` into a checkpoint's order and saves it as the checkpoint at `head`.
fn save_as_checkpoint(journal: &Journal, head: Head, copied: Copied) -> anyhow::Result<()> {
    let saved = copied.sorted();
    journal.save_checkpoint(CHECKPOINT, head, &serde_json::to_vec(&saved)?)?;
    Ok(())
}
