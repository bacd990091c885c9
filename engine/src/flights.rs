//! Coalescing: while one call for a key is on its way upstream (a miss or a
//! refresh), identical calls wait for it instead of calling again, then
//! replay what it recorded. The caller that leads holds a [`Lead`]; the
//! others a [`Follow`]. A lead may also share something live (the proxy
//! shares a stream's chunks as they arrive) for followers to read.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use cacheow_storage::{CallKey, OutcomeId};
use tokio::sync::watch;

/// How a lead's call ended, as its followers learn it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Landing {
    /// It recorded (or repeated) this outcome: replay it.
    Recorded(OutcomeId),
    /// It left nothing to replay (a failure not kept, a reply over the size
    /// cap, a caller that went away): call on your own.
    Unrecorded,
}

/// What followers of a flight can see of it so far.
#[derive(Clone, Default)]
struct Progress {
    live: Option<Arc<dyn Any + Send + Sync>>,
    landing: Option<Landing>,
}

struct Flight {
    progress: watch::Sender<Progress>,
}

/// What a follower found when it stopped waiting.
pub enum Waited<T> {
    /// The lead shared its result live: read it as it arrives.
    Live(Arc<T>),
    /// The lead landed.
    Landed(Landing),
}

/// The calls on their way upstream of one function, by key.
#[derive(Default)]
pub(crate) struct Flights {
    by_key: Mutex<HashMap<CallKey, Arc<Flight>>>,
}

/// A call joined or started.
pub(crate) enum Joined {
    Lead(Lead),
    Follow(Follow),
}

impl Flights {
    /// Leads the flight of `key` if there is none, else follows it.
    pub(crate) fn join(self: &Arc<Self>, key: CallKey) -> Joined {
        let mut map = self.by_key.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(flight) = map.get(&key) {
            return Joined::Follow(Follow {
                progress: flight.progress.subscribe(),
            });
        }
        let flight = Arc::new(Flight {
            progress: watch::channel(Progress::default()).0,
        });
        map.insert(key, flight.clone());
        Joined::Lead(Lead {
            flight,
            flights: Arc::downgrade(self),
            key,
        })
    }

    /// Leads the flight of `key` only if nobody does.
    pub(crate) fn lead(self: &Arc<Self>, key: CallKey) -> Option<Lead> {
        match self.join(key) {
            Joined::Lead(lead) => Some(lead),
            Joined::Follow(_) => None,
        }
    }
}

/// The one call of a flight that goes upstream. Dropping it without
/// `land` tells the followers to call on their own.
pub struct Lead {
    flight: Arc<Flight>,
    flights: Weak<Flights>,
    key: CallKey,
}

impl std::fmt::Debug for Lead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lead").field("key", &self.key).finish()
    }
}

impl Lead {
    /// Shares `live` with the followers (once; later calls are ignored).
    pub fn share_live<T: Any + Send + Sync>(&self, live: Arc<T>) {
        self.flight.progress.send_if_modified(|progress| {
            if progress.live.is_some() {
                return false;
            }
            progress.live = Some(live);
            true
        });
    }

    /// Ends the flight: followers replay `outcome`, or call on their own
    /// when it is `None`.
    pub fn land(self, outcome: Option<OutcomeId>) {
        self.end(outcome.map_or(Landing::Unrecorded, Landing::Recorded));
    }

    fn end(&self, landing: Landing) {
        // Internal: out of the map first, so a call arriving after the
        // landing finds the recorded outcome, not a finished flight.
        if let Some(flights) = self.flights.upgrade() {
            let mut map = flights.by_key.lock().unwrap_or_else(|e| e.into_inner());
            if map
                .get(&self.key)
                .is_some_and(|f| Arc::ptr_eq(f, &self.flight))
            {
                map.remove(&self.key);
            }
        }
        self.flight.progress.send_if_modified(|progress| {
            if progress.landing.is_some() {
                return false;
            }
            progress.landing = Some(landing);
            true
        });
    }
}

impl Drop for Lead {
    fn drop(&mut self) {
        self.end(Landing::Unrecorded);
    }
}

/// A call waiting for the flight of its key.
pub struct Follow {
    progress: watch::Receiver<Progress>,
}

impl std::fmt::Debug for Follow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Follow").finish_non_exhaustive()
    }
}

impl Follow {
    /// Waits up to `patience` until the lead shares a live `T` or lands;
    /// `None` when it did neither in time.
    pub async fn wait<T: Any + Send + Sync>(mut self, patience: Duration) -> Option<Waited<T>> {
        let seen = self.progress.wait_for(|progress| {
            progress.landing.is_some() || progress.live.as_ref().is_some_and(|live| live.is::<T>())
        });
        // Internal: the sender lives as long as its lead, and a dropped lead
        // lands first, so the channel closing is never the only news.
        let progress = tokio::time::timeout(patience, seen)
            .await
            .ok()?
            .ok()?
            .clone();
        if let Some(live) = progress.live.and_then(|live| live.downcast::<T>().ok()) {
            return Some(Waited::Live(live));
        }
        progress.landing.map(Waited::Landed)
    }

    /// Waits up to `patience` for the lead to land (on a tokio runtime).
    pub async fn landed(self, patience: Duration) -> Option<Landing> {
        tokio::time::timeout(patience, self.landed_unbounded())
            .await
            .ok()
            .flatten()
    }

    /// Waits for the lead to land, on any executor; the caller bounds it.
    pub async fn landed_unbounded(mut self) -> Option<Landing> {
        let landed = self
            .progress
            .wait_for(|progress| progress.landing.is_some());
        landed.await.ok()?.landing
    }

    /// `landed` for a caller on a plain thread, which it parks.
    pub fn landed_blocking(self, patience: Duration) -> Option<Landing> {
        crate::park::park_until(self.landed_unbounded(), Some(Instant::now() + patience)).flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> CallKey {
        CallKey::from_bytes([n; 32])
    }

    #[tokio::test]
    async fn followers_learn_what_the_lead_recorded_and_a_new_call_leads_again() {
        let flights = Arc::new(Flights::default());
        let Joined::Lead(lead) = flights.join(key(1)) else {
            panic!("the first call leads");
        };
        let Joined::Follow(follow) = flights.join(key(1)) else {
            panic!("the second call follows");
        };
        assert!(
            flights.lead(key(2)).is_some(),
            "another key has its own flight"
        );
        let outcome = OutcomeId::from_bytes([7; 8]);
        lead.land(Some(outcome));
        assert_eq!(
            follow.landed(Duration::from_secs(1)).await,
            Some(Landing::Recorded(outcome))
        );
        assert!(flights.lead(key(1)).is_some(), "a landed flight is gone");
    }

    #[tokio::test]
    async fn a_lead_dropped_unlanded_frees_its_followers() {
        let flights = Arc::new(Flights::default());
        let lead = flights.lead(key(1)).unwrap();
        let Joined::Follow(follow) = flights.join(key(1)) else {
            panic!("follows");
        };
        drop(lead);
        assert_eq!(
            follow.landed(Duration::from_secs(1)).await,
            Some(Landing::Unrecorded)
        );
    }

    #[tokio::test]
    async fn a_follower_reads_what_the_lead_shares_live() {
        let flights = Arc::new(Flights::default());
        let lead = flights.lead(key(1)).unwrap();
        let join = || match flights.join(key(1)) {
            Joined::Follow(follow) => follow,
            Joined::Lead(_) => panic!("follows"),
        };
        let (early, other_type) = (join(), join());
        lead.share_live(Arc::new(5u32));
        let Some(Waited::Live(live)) = early.wait::<u32>(Duration::from_secs(1)).await else {
            panic!("the live value");
        };
        assert_eq!(*live, 5);
        lead.land(None);
        assert!(matches!(
            other_type.wait::<String>(Duration::from_secs(1)).await,
            Some(Waited::Landed(Landing::Unrecorded))
        ));
    }

    #[test]
    fn a_follower_on_a_plain_thread_waits_for_the_landing_or_its_patience() {
        let flights = Arc::new(Flights::default());
        let lead = flights.lead(key(1)).unwrap();
        let join = || match flights.join(key(1)) {
            Joined::Follow(follow) => follow,
            Joined::Lead(_) => panic!("follows"),
        };
        let (waiter, impatient) = (join(), join());
        assert_eq!(impatient.landed_blocking(Duration::from_millis(20)), None);
        let waiting = std::thread::spawn(move || waiter.landed_blocking(Duration::from_secs(5)));
        std::thread::sleep(Duration::from_millis(20));
        lead.land(None);
        assert_eq!(waiting.join().unwrap(), Some(Landing::Unrecorded));
    }

    #[tokio::test]
    async fn a_follower_gives_up_after_its_patience() {
        let flights = Arc::new(Flights::default());
        let _lead = flights.lead(key(1)).unwrap();
        let Joined::Follow(follow) = flights.join(key(1)) else {
            panic!("follows");
        };
        assert_eq!(follow.landed(Duration::from_millis(20)).await, None);
    }
}
